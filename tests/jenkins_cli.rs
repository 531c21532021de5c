//! The two Jenkins CLI transports against the emulator: what arrives is
//! exactly the words sent, errors are errors, and a hung command is bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Emulator, USER};
use serde_json::json;
use slave_manager::cli::CliTransport;
use slave_manager::jenkins::{CliError, JenkinsCli};
use slave_manager::tls::CertCheck;

fn keyed_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.path().join("id_rsa"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    dir
}

fn cli(kind: CliTransport, jenkins: &Emulator, dir: &Path, timeout: Duration) -> JenkinsCli {
    if kind == CliTransport::Jar {
        // The jar transport runs `java`: the stand-in in tests/support/bin.
        let path = std::env::join_paths(
            std::iter::once(common::repo().join("tests/support/bin"))
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        std::env::set_var("PATH", path);
        std::env::remove_var("JAVA_HOME");
    }
    JenkinsCli::new(kind, &jenkins.url(), USER, &dir.join("id_rsa"), dir, timeout)
}

fn words(ws: &[&str]) -> Vec<String> {
    ws.iter().map(|w| w.to_string()).collect()
}

fn transports_carry_words_exactly(kind: CliTransport) {
    let dir = keyed_dir();
    let jenkins = Emulator::start(dir.path());
    jenkins.set_state(&json!({"jobs": {"job": {"output": "Started job #1"}}}));
    let cli = cli(kind, &jenkins, dir.path(), Duration::from_secs(20));

    let out = cli.run(&words(&["who-am-i"]), b"").unwrap();
    assert!(out.stdout.contains(&format!("Authenticated as: {USER}")), "{out:?}");

    let hostile = words(&[
        "build",
        "job",
        "-p",
        "A=x\"; shutdown; echo \"",
        "-p",
        "B=$(reboot) `id` it's",
        "-p",
        "C=back\\slash\\",
        "-p",
        "D=ünï cödé",
        "-p",
        "E=a && safe-restart",
    ]);
    let out = cli.run(&hostile, b"").unwrap();
    assert_eq!(out.stdout.trim(), "Started job #1");

    let err = cli.run(&words(&["no-such-command"]), b"").unwrap_err();
    assert!(matches!(err, CliError::Failed { status: 255, .. }), "{err}");

    let script = "println 'hello'\n";
    let out = cli.run(&words(&["groovy", "=", "ami-0123456789abcdef0"]), script.as_bytes()).unwrap();
    assert!(out.stdout.contains("build_queue"), "{out:?}");

    let log = jenkins.commands();
    assert_eq!(log.len(), 4);
    assert_eq!(log[1], hostile, "every word arrives as it was sent, nothing more");
    assert_eq!(log[3], words(&["groovy", "=", "ami-0123456789abcdef0"]));
    if kind == CliTransport::Jar {
        assert!(dir.path().join("jenkins-cli.jar").exists(), "fetched into the working directory");
    }
}

#[test]
fn ssh_transport_carries_words_exactly() {
    transports_carry_words_exactly(CliTransport::Ssh);
}

#[test]
fn jar_transport_carries_words_exactly() {
    transports_carry_words_exactly(CliTransport::Jar);
}

#[test]
fn a_key_jenkins_does_not_know_is_refused() {
    let dir = keyed_dir();
    let jenkins = Emulator::start(dir.path());
    let stranger = keyed_dir();
    let cli = JenkinsCli::new(
        CliTransport::Ssh,
        &jenkins.url(),
        USER,
        &stranger.path().join("id_rsa"),
        dir.path(),
        Duration::from_secs(10),
    );
    let err = cli.run(&words(&["who-am-i"]), b"").unwrap_err();
    assert!(matches!(err, CliError::Ssh { .. }) && err.to_string().contains("authentication"), "{err}");
    assert!(jenkins.commands().is_empty());
}

#[test]
fn a_hung_command_is_bounded_by_the_timeout() {
    let dir = keyed_dir();
    let jenkins = Emulator::start(dir.path());
    jenkins.fault(&json!({"groovy": "hang"}));
    let cli = cli(CliTransport::Ssh, &jenkins, dir.path(), Duration::from_secs(2));
    let started = Instant::now();
    let err = cli.run(&words(&["groovy", "="]), b"println 1").unwrap_err();
    assert!(matches!(err, CliError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A secured Jenkins (anonymous users lack Overall/Read, the usual set-up)
/// refuses its root page to anonymous clients without naming the SSH
/// endpoint; only the login page (and pages drawn for a user who may read)
/// carry X-SSH-Endpoint. The endpoint is read where the official client
/// reads it, from URL/login, with or without a trailing slash.
#[test]
fn the_endpoint_comes_from_the_login_page_of_a_secured_jenkins() {
    let dir = keyed_dir();
    let jenkins = Emulator::start(dir.path());
    let root = ureq::get(&jenkins.url()).config().http_status_as_error(false).build().call().unwrap();
    assert_eq!(root.status(), 403);
    assert!(root.headers().get("X-SSH-Endpoint").is_none() && root.headers().get("X-Jenkins").is_some());
    assert!(root.headers().get("X-Instance-Identity").is_none(), "the 403 page has no page decorator headers");
    let login = ureq::get(&format!("{}login", jenkins.url())).call().unwrap();
    assert_eq!(login.headers().get("X-SSH-Endpoint").unwrap(), &format!("127.0.0.1:{}", jenkins.ssh));
    let identity = login.headers().get("X-Instance-Identity").expect("the instance-identity module's header");
    let key = slave_manager::jenkins::host_key::HostKey::from_identity(identity.to_str().unwrap()).unwrap();
    assert_eq!(key.algorithm(), "ssh-rsa", "Jenkins' identity is an RSA key");

    for url in [jenkins.url(), jenkins.url().trim_end_matches('/').to_string()] {
        let ep =
            slave_manager::jenkins::cli::discover_endpoint(&url, Duration::from_secs(5), CertCheck::Verify).unwrap();
        assert_eq!(ep, format!("127.0.0.1:{}", jenkins.ssh));
    }
}

/// What a command prints is read up to the cap; beyond it the command is
/// stopped (the client killed, the connection closed) and fails.
#[test]
fn output_beyond_the_cap_fails_on_both_transports() {
    let dir = keyed_dir();
    let jenkins = Emulator::start(dir.path());
    let big = "x".repeat(3 << 20);
    jenkins.set_state(&json!({"jobs": {"big": {"output": big}, "small": {"output": "x".repeat((1 << 20) - 1)}}}));
    for kind in [CliTransport::Ssh, CliTransport::Jar] {
        let cli = cli(kind, &jenkins, dir.path(), Duration::from_secs(120)).output_limit(1 << 20);
        let started = Instant::now();
        let err = cli.run(&words(&["build", "big"]), b"").unwrap_err();
        assert!(matches!(err, CliError::TooMuchOutput { .. }), "{kind:?}: {err}");
        assert!(err.to_string().contains("`build` printed more than 1 MiB"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30), "{kind:?}: {:?}", started.elapsed());
        // Exactly the cap (the emulator adds the newline) is read whole.
        let out = cli.run(&words(&["build", "small"]), b"").unwrap();
        assert_eq!(out.stdout.len(), 1 << 20, "{kind:?}");
    }
}

/// Jenkins' SSH host key is its instance identity, which /login publishes in
/// X-Instance-Identity. A server on the SSH path with another key (the
/// emulator's impostor) is refused before the user's key is offered to it and
/// before any command; Jenkins' own key is accepted again afterwards.
fn an_impostor_host_key_is_refused(kind: CliTransport) {
    let dir = keyed_dir();
    let jenkins = Emulator::start(dir.path());
    let cli = cli(kind, &jenkins, dir.path(), Duration::from_secs(20));
    cli.run(&words(&["who-am-i"]), b"").unwrap();

    jenkins.serve_host_key("impostor");
    let err = cli.run(&words(&["groovy", "=", "ami-0123456789abcdef0"]), b"println 1").unwrap_err();
    let said = err.to_string();
    assert!(said.contains("host key") && said.contains("instance identity"), "{said}");
    assert_eq!(jenkins.commands(), vec![words(&["who-am-i"])], "nothing ran");
    let offered: Vec<String> = jenkins.requests().into_iter().filter(|r| r.starts_with("ssh-auth")).collect();
    assert!(offered.iter().all(|r| r.ends_with(" identity")), "the key was offered to the impostor: {offered:?}");

    jenkins.serve_host_key("identity");
    cli.run(&words(&["who-am-i"]), b"").unwrap();
    assert_eq!(jenkins.commands().len(), 2);
}

#[test]
fn ssh_transport_refuses_an_impostor_host_key() {
    an_impostor_host_key_is_refused(CliTransport::Ssh);
}

#[test]
fn jar_transport_refuses_an_impostor_host_key() {
    an_impostor_host_key_is_refused(CliTransport::Jar);
}

//! Whom the manager trusts on its way to Jenkins (issue 16, points 2–4):
//! the SSH host key, pinned to Jenkins' instance identity or to a
//! known_hosts file; plain http, refused to any host but this one; the CLI
//! jar, taken from disk instead of downloaded; and `check`'s private
//! temporary directory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::{item, s, World};
use serde_json::json;

/// One pass that scales and does nothing else.
const ONE_PASS: [&str; 5] = ["--loop_counter", "1", "--skip_security_group", "--gc_job", ""];

/// A stopped dev agent and a job queued for dev: a pass that reads the dump
/// starts the agent.
fn world() -> World {
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    w
}

fn log(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

fn agent_state(w: &World) -> String {
    s(&w.instance(&s(&w.agent(0)["instance_id"]))["state"])
}

/// What one pass did: (jar_file_error, instances_started, the log).
fn one_pass(w: &World, extra: &[&str]) -> (u64, u64, String) {
    let out = w.run(&[&ONE_PASS[..], extra].concat());
    assert!(out.status.success(), "{extra:?}: the run ends normally: {}", log(&out));
    (w.csv("properties_error.csv")["jar_file_error"], w.csv("properties_run.csv")["instances_started"], log(&out))
}

fn impostor_offers(w: &World) -> Vec<String> {
    w.jenkins.requests().into_iter().filter(|r| r.starts_with("ssh-auth") && r.ends_with(" impostor")).collect()
}

#[test]
fn an_impostor_on_the_ssh_path_is_refused_counted_and_nothing_scales() {
    let w = world();
    w.jenkins.serve_host_key("impostor");
    for cli in ["ssh", "jar"] {
        let (errors, started, log) = one_pass(&w, &["--cli", cli]);
        assert_eq!((errors, started), (1, 0), "{cli}: {log}");
        assert!(log.contains("host key") && log.contains("instance identity"), "{cli}: {log}");
        assert!(log.contains("nothing scaled this pass"), "{cli}: {log}");
        assert_eq!(agent_state(&w), "stopped", "{cli}");
        assert!(w.jenkins.commands().is_empty(), "{cli}: no command reached the impostor");
        assert_eq!(impostor_offers(&w), Vec::<String>::new(), "{cli}: the key was never offered to it");
    }
    if cfg!(unix) {
        let java_home = w.path().join("jenkins-cli-home/.ssh/known_hosts");
        let mode = std::fs::metadata(&java_home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the jar's known_hosts is private");
    }

    // Jenkins' own key: the pass reads the dump and starts the agent.
    w.jenkins.serve_host_key("identity");
    let (errors, started, log) = one_pass(&w, &["--cli", "jar"]);
    assert_eq!((errors, started), (0, 1), "{log}");
    assert_eq!(w.jenkins.commands().len(), 1);
}

#[test]
fn a_known_hosts_file_pins_the_host_key_for_both_transports() {
    let w = world();
    // Another RSA key listed for Jenkins' SSH endpoint.
    let other = w.path().join("other");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(keygen.success());
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let wrong = format!("# not Jenkins\n[127.0.0.1]:{} {}\n", w.jenkins.ssh, other_key.join(" "));
    std::fs::write(w.path().join("wrong_known_hosts"), wrong).unwrap();
    for cli in ["ssh", "jar"] {
        let (errors, started, log) = one_pass(&w, &["--cli", cli, "--known_hosts", "wrong_known_hosts"]);
        assert_eq!((errors, started), (1, 0), "{cli}: {log}");
        assert!(log.contains("wrong_known_hosts"), "{cli}: the file is named: {log}");
        assert!(w.jenkins.commands().is_empty(), "{cli}");
        assert_eq!(agent_state(&w), "stopped");
    }

    // A file that lists Jenkins' key (made from X-Instance-Identity as the
    // docs/operating.md says): it works, and an impostor is refused by it too.
    std::fs::write(w.path().join("known_hosts"), w.jenkins.known_hosts_line() + "\n").unwrap();
    w.jenkins.serve_host_key("impostor");
    let (errors, _, log) = one_pass(&w, &["--cli", "ssh", "--known_hosts", "known_hosts"]);
    assert_eq!(errors, 1, "{log}");
    assert!(impostor_offers(&w).is_empty());
    w.jenkins.serve_host_key("identity");
    let (errors, started, log) = one_pass(&w, &["--cli", "ssh", "--known_hosts", "known_hosts"]);
    assert_eq!((errors, started), (0, 1), "{log}");
    let (errors, _, log) = one_pass(&w, &["--cli", "jar", "--known_hosts", "known_hosts"]);
    assert_eq!(errors, 0, "{log}");
    assert_eq!(w.jenkins.commands().len(), 2);
}

#[test]
fn check_names_an_impostor_host_key() {
    let w = world();
    w.jenkins.serve_host_key("impostor");
    let mut cmd = w.command();
    cmd.arg("check")
        .args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids(), "--skip_security_group"])
        .args(["--cli", "ssh"]);
    let out = common::output(cmd);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = table.lines().filter(|l| l.starts_with('✘')).collect();
    assert_eq!(failed.len(), 1, "{table}");
    assert!(failed[0].contains("host key") && failed[0].contains("instance identity"), "{table}");
    assert!(!table.contains("register the public half"), "the key is not at fault: {table}");
    assert!(w.jenkins.commands().is_empty() && impostor_offers(&w).is_empty());
}

#[test]
fn plain_http_to_another_host_is_refused_at_start() {
    let w = world();
    let ami_ids = w.ami_ids();
    let flags = |url: &'static str| {
        let mut cmd = w.command();
        cmd.args(["--url", url, "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
            .args(["--owner_email", "ops@example.com", "--ami_ids", &ami_ids])
            .args(ONE_PASS);
        cmd
    };
    let cases: [(&[&str], &str); 3] = [
        (&["--cli", "ssh"], "--allow_insecure_http"),
        (&["--cli", "jar"], "--allow_insecure_http"),
        // Allowed, but the jar would still come over plain http.
        (&["--cli", "jar", "--allow_insecure_http"], "--cli_jar"),
    ];
    for (extra, named) in cases {
        let mut cmd = flags("http://jenkins.example.com:8080/");
        cmd.args(extra);
        let out = common::output(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line for {extra:?}: {stderr}");
        assert!(stderr.contains("jenkins.example.com") && stderr.contains(named), "{extra:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // `check` refuses it as well, on its first row.
    let mut cmd = w.command();
    cmd.arg("check")
        .args(["--url", "http://jenkins.example.com/", "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &ami_ids]);
    let out = common::output(cmd);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("✘ flags and environment.json") && table.contains("--allow_insecure_http"), "{table}");

    assert!(w.fleet().iter().all(|i| s(&i["state"]) == "stopped"), "AWS was not changed");
    assert!(!w.path().join("properties_run.csv").exists());
    assert!(w.jenkins.requests().is_empty() && w.jenkins.commands().is_empty(), "Jenkins was not called");
}

#[test]
fn cli_jar_is_used_instead_of_a_download() {
    let w = world();
    // The master's own jar (for the stand-in any file will do).
    let lib = w.path().join("war/WEB-INF/lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("cli-2.479.3.jar"), b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let (errors, started, log) = one_pass(&w, &["--cli", "jar", "--cli_jar", "war/WEB-INF/lib/cli-2.479.3.jar"]);
    assert_eq!((errors, started), (0, 1), "{log}");
    let requests = w.jenkins.requests();
    assert!(!requests.iter().any(|r| r.contains("jnlpJars")), "no download: {requests:?}");
    assert!(!w.path().join("jenkins-cli.jar").exists());

    // A jar that is not there: one line, exit 2, before anything.
    let out = w.run(&[&ONE_PASS[..], &["--cli", "jar", "--cli_jar", "no/such/cli.jar"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.trim().lines().count() == 1 && stderr.contains("no/such/cli.jar"), "{stderr}");
}

/// `check` works in a temporary directory (the jar, java's known_hosts): a
/// private one with a random name, not `/tmp/slave_manager-check-<pid>`,
/// which another local user could create first. A `java` wrapper records
/// the directory the jar was put in.
#[test]
fn check_works_in_a_private_randomly_named_directory() {
    let w = world();
    let bin = w.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let record = w.path().join("java-saw");
    let wrapper = format!(
        "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -jar ]; then d=$(dirname \"$a\"); \
         echo \"$d $(stat -c %a \"$d\")\" >> '{}'; fi\n  prev=$a\ndone\nexec '{}' \"$@\"\n",
        record.display(),
        common::repo().join("tests/support/bin/java").display()
    );
    std::fs::write(bin.join("java"), wrapper).unwrap();
    std::fs::set_permissions(bin.join("java"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = w.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let mut cmd = w.command();
    let path = std::env::join_paths(
        std::iter::once(bin.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    cmd.env("PATH", path).env("TMPDIR", &tmp).arg("check");
    cmd.args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids(), "--skip_security_group"])
        .args(["--cli", "jar"]);
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");

    let saw = std::fs::read_to_string(&record).unwrap();
    let (dir, mode) = saw.lines().next().unwrap().rsplit_once(' ').unwrap();
    let dir = Path::new(dir);
    assert_eq!(dir.parent(), Some(tmp.as_path()), "under TMPDIR: {saw}");
    let name = dir.file_name().unwrap().to_string_lossy();
    assert_ne!(name, format!("slave_manager-check-{pid}"), "a name nobody can guess");
    assert!(name.starts_with("slave_manager-check-") && name.len() >= "slave_manager-check-".len() + 6, "{name}");
    assert_eq!(mode, "700", "private to the user: {saw}");
    assert!(!dir.exists(), "removed after the check");
}

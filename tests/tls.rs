//! Jenkins over https with a certificate of a private CA: refused until the
//! operator trusts the CA (SSL_CERT_FILE; the system store works the same
//! way) or turns the check off (--no_certificate_check), with the fix named
//! by `check` and in the run's log; and the jar transport, whose -ssh mode
//! reads the SSH endpoint with Java's trust store whatever
//! -noCertificateCheck says.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{item, Emulator, Tls, World};
use serde_json::json;

/// One pass that scales and does nothing else.
const ONE_PASS: [&str; 5] = ["--loop_counter", "1", "--skip_security_group", "--gc_job", ""];

/// A world whose Jenkins speaks https, with a job queued for `dev`.
fn tls_world() -> World {
    let w = World::with_tls(json!([]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    w
}

fn ca(w: &World) -> PathBuf {
    w.tls.as_ref().unwrap().ca.clone()
}

/// `check` with the world's flags plus `extra`: exit status and table.
fn check(w: &World, extra: &[&str], ssl_cert_file: Option<&Path>) -> (Option<i32>, String) {
    let mut cmd = w.command();
    cmd.arg("check")
        .args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids(), "--skip_security_group"])
        .args(extra);
    if let Some(file) = ssl_cert_file {
        cmd.env("SSL_CERT_FILE", file);
    }
    let out = common::output(cmd);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A known_hosts file pinning the emulator's SSH host key: what an unchecked
/// channel needs (its X-Instance-Identity would prove nothing).
fn known_hosts(w: &World) -> String {
    let path = w.path().join("known_hosts");
    std::fs::write(&path, w.jenkins.known_hosts_line() + "\n").unwrap();
    path.display().to_string()
}

fn row<'a>(table: &'a str, what: &str) -> &'a str {
    table.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no row {what:?}: {table}"))
}

/// What one pass did: (jar_file_error, instances_created, the log).
fn one_pass(w: &World, extra: &[&str], ssl_cert_file: Option<&Path>) -> (u64, u64, String) {
    let mut cmd = w.manager(&[&ONE_PASS[..], extra].concat());
    if let Some(file) = ssl_cert_file {
        cmd.env("SSL_CERT_FILE", file);
    }
    let out = common::output(cmd);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (w.csv("properties_error.csv")["jar_file_error"], w.csv("properties_run.csv")["instances_created"], log)
}

#[test]
fn over_ssh_a_private_ca_is_refused_until_trusted_or_unchecked() {
    let w = tls_world();
    let ssh = ["--cli", "ssh"];

    // Nothing trusts the CA: check names the three remedies, a pass counts
    // the failed dump and scales nothing.
    let (status, table) = check(&w, &ssh, None);
    assert_eq!(status, Some(1));
    let endpoint = row(&table, "Jenkins SSH endpoint");
    assert!(endpoint.starts_with('✘') && endpoint.contains("certificate is not trusted"), "{table}");
    for remedy in ["system store", "update-ca-certificates", "SSL_CERT_FILE", "--no_certificate_check"] {
        assert!(endpoint.contains(remedy), "{remedy}: {endpoint}");
    }
    let (errors, created, log) = one_pass(&w, &ssh, None);
    assert_eq!((errors, created), (1, 0));
    assert!(log.contains("certificate is not trusted"), "{log}");

    // SSL_CERT_FILE names the CA: trusted.
    let (_, table) = check(&w, &ssh, Some(&ca(&w)));
    for what in ["Jenkins SSH endpoint", "Jenkins accepts the key", "dump script runs"] {
        assert!(row(&table, what).starts_with('✔'), "{what}: {table}");
    }
    let (errors, created, _) = one_pass(&w, &ssh, Some(&ca(&w)));
    assert_eq!((errors, created), (0, 1));

    // --no_certificate_check: refused without a pinned host key (the
    // identity header would come over the same unchecked channel).
    let out = common::output(w.manager(&[&ONE_PASS[..], &ssh[..], &["--no_certificate_check"]].concat()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no_certificate_check needs --known_hosts"));

    // With --known_hosts: not checked, said once at the start. (The agent
    // launched above absorbs the queued job: the dump read is proof.)
    let kh = known_hosts(&w);
    let unchecked = [&ssh[..], &["--no_certificate_check", "--known_hosts", &kh]].concat();
    let (_, table) = check(&w, &unchecked, None);
    let endpoint = row(&table, "Jenkins SSH endpoint");
    assert!(endpoint.starts_with('✔') && endpoint.contains("certificate not checked"), "{table}");
    let dumps = || w.jenkins.commands().iter().filter(|c| c[0] == "groovy").count();
    let before = dumps();
    let (errors, _, log) = one_pass(&w, &unchecked, None);
    assert_eq!((errors, dumps()), (0, before + 1));
    let warning = format!("--no_certificate_check: the certificate of {} is not checked", w.jenkins.url());
    assert_eq!(log.matches(&warning).count(), 1, "{log}");
}

#[test]
fn the_jar_is_given_a_trust_store_of_ssl_cert_file_and_ignores_no_certificate_check() {
    let w = tls_world();
    let jar = ["--cli", "jar"];

    // The manager itself refuses to fetch the jar from an untrusted master.
    let (errors, created, log) = one_pass(&w, &jar, None);
    assert_eq!((errors, created), (1, 0));
    assert!(log.contains("jnlpJars/jenkins-cli.jar") && log.contains("certificate is not trusted"), "{log}");

    // SSL_CERT_FILE: the manager trusts the CA and hands java a trust store
    // made of it.
    let (errors, created, log) = one_pass(&w, &jar, Some(&ca(&w)));
    assert_eq!((errors, created), (0, 1), "{log}");
    assert!(log.contains(&format!("java trusts the certificates of SSL_CERT_FILE={} (1;", ca(&w).display())), "{log}");
    assert!(w.path().join("jenkins-cli-truststore.jks").is_file());
    let (_, table) = check(&w, &jar, Some(&ca(&w)));
    for what in ["Jenkins SSH endpoint", "Jenkins accepts the key", "dump script runs"] {
        assert!(row(&table, what).starts_with('✔'), "{what}: {table}");
    }

    // --no_certificate_check never fetches the jar it would run: refused at
    // start without --cli_jar.
    let kh = known_hosts(&w);
    let out = common::output(
        w.manager(&[&ONE_PASS[..], &jar[..], &["--no_certificate_check", "--known_hosts", &kh]].concat()),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --cli_jar PATH"));

    // With the jar on disk, -noCertificateCheck is passed, but the jar's -ssh
    // mode still reads URL/login with Java's trust store and refuses: the log
    // and check say so.
    let on_disk = w.path().join("jenkins-cli.jar").display().to_string();
    let unchecked = [&jar[..], &["--no_certificate_check", "--known_hosts", &kh, "--cli_jar", &on_disk]].concat();
    let (errors, created, log) = one_pass(&w, &unchecked, None);
    assert_eq!((errors, created), (1, 0));
    assert!(log.contains("jenkins-cli.jar -ssh still checks it"), "the start-up warning: {log}");
    assert!(log.contains("There's no Jenkins running at") && log.contains("java could not read the SSH endpoint"));
    let (status, table) = check(&w, &unchecked, None);
    assert_eq!(status, Some(1));
    let key = row(&table, "Jenkins accepts the key");
    assert!(key.starts_with('✘') && key.contains("SSL_CERT_FILE") && key.contains("--cli ssh"), "{table}");
    assert!(!key.contains("register the public half"), "the key was never offered: {key}");
}

/// The `java` stand-in must trust and refuse what a real JVM trusts and
/// refuses when jenkins-cli.jar -ssh reads URL/login: checked against Java 17
/// running SshEndpointProbe.java (SSHCLI's first lines) with the trust store
/// the manager writes. Needs a JDK (javac); skipped loudly without one.
#[test]
fn the_java_stand_in_trusts_what_a_real_jvm_trusts() {
    let Some(jdk) = jdk() else {
        eprintln!("SKIPPED the real-JVM comparison: no JDK 17 with javac (set JAVA_HOME to one)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut keygen = Command::new("ssh-keygen");
    keygen.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(dir.path().join("id_rsa"));
    assert!(keygen.status().unwrap().success());
    let tls = Tls::make(dir.path());
    let jenkins = Emulator::start_with(dir.path(), Some(&tls));
    let classes = dir.path().join("classes");
    let javac = Command::new(jdk.join("bin/javac"))
        .arg("-d")
        .arg(&classes)
        .arg(common::repo().join("tests/support/SshEndpointProbe.java"))
        .status()
        .unwrap();
    assert!(javac.success());

    let ca = ureq::tls::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
    let store = dir.path().join("store.jks");
    std::fs::write(&store, slave_manager::tls::jks(&[ca], "changeit", std::time::SystemTime::now())).unwrap();
    let list = Command::new(jdk.join("bin/keytool"))
        .args(["-list", "-storetype", "JKS", "-storepass", "changeit", "-keystore"])
        .arg(&store)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && listed.contains("ca-0") && listed.contains("trustedCertEntry"), "{listed}");
    std::fs::write(dir.path().join("jenkins-cli.jar"), b"").unwrap();
    let url = jenkins.url();
    let trust_store = format!("-Djavax.net.ssl.trustStore={}", store.display());
    let cases: [(&str, Vec<&str>, bool, bool); 5] = [
        ("Java's own cacerts", vec![], false, false),
        ("SSL_CERT_FILE", vec![], true, false),
        ("the manager's store", vec![&trust_store, "-Djavax.net.ssl.trustStoreType=JKS", PASSWORD], false, true),
        ("the store without its password", vec![&trust_store, "-Djavax.net.ssl.trustStoreType=JKS"], false, true),
        ("a wrong password", vec![&trust_store, "-Djavax.net.ssl.trustStorePassword=wrong"], false, false),
    ];
    for (case, options, ssl_cert_file, trusted) in cases {
        let with_env = |mut cmd: Command| {
            cmd.current_dir(dir.path()).env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
            if ssl_cert_file {
                cmd.env("SSL_CERT_FILE", &tls.ca);
            }
            cmd.output().unwrap()
        };
        let mut real = Command::new(jdk.join("bin/java"));
        real.args(&options).arg("-cp").arg(&classes).args(["SshEndpointProbe", &url]);
        let real = with_env(real);
        let mut stand_in = Command::new(common::repo().join("tests/support/bin/java"));
        // As the jar, it adds an unknown host key to ${user.home}/.ssh/known_hosts: not the tester's.
        stand_in.arg(format!("-Duser.home={}", dir.path().display())).args(&options);
        stand_in.args(["-jar", "jenkins-cli.jar", "-s", &url, "-ssh", "-user", common::USER]);
        stand_in.args(["-i", "id_rsa", "who-am-i"]);
        let stand_in = with_env(stand_in);
        let said = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert_eq!(real.status.success(), trusted, "{case}: real java said {}", said(&real));
        assert_eq!(stand_in.status.success(), trusted, "{case}: the stand-in said {}", said(&stand_in));
        if trusted {
            assert_eq!(String::from_utf8_lossy(&real.stdout).trim(), format!("127.0.0.1:{}", jenkins.ssh));
            assert!(String::from_utf8_lossy(&stand_in.stdout).contains("Authenticated as: slave-manager"));
        } else {
            assert_eq!(real.status.code(), Some(3), "{case}");
            assert_eq!(stand_in.status.code(), Some(3), "{case}");
            assert_eq!(said(&real), said(&stand_in), "{case}: the same message");
        }
    }
}

const PASSWORD: &str = "-Djavax.net.ssl.trustStorePassword=changeit";

/// A JDK 17 (the Java of the tests, NOTES.md): $JAVA_HOME, else Debian's.
fn jdk() -> Option<PathBuf> {
    let candidates = std::env::var_os("JAVA_HOME")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64")));
    candidates.into_iter().find(|home| home.join("bin/javac").is_file() && home.join("bin/java").is_file())
}

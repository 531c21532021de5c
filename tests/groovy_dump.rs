//! The two sides of the dump contract (SPEC A5.1) checked against each other:
//! the real `jenkins/get_queue_jobs.groovy`, run under Debian's groovy against
//! the Jenkins stubs on the `contract` scenario of `tests/groovy/fixtures.groovy`
//! (through `tests/groovy/run.sh dump`), is fed to the manager's own parser.
//! If either side renames, retypes or drops a field the manager relies on,
//! this fails.
//!
//! Without groovy (`scripts/ensure-groovy.sh` installs it) the test is skipped
//! loudly — unless `CI` is set, where a missing groovy is a failure.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use slave_manager::jenkins::dump::parse_dump;
use slave_manager::job_key::job_key;
use slave_manager::label::parse_label;
use slave_manager::model::Pricing;

/// The AMI ids of the scenario's envs, and the settings the manager appends
/// (src/world.rs `dump_args`: AMI ids, then `idle_minutes=…`, `hourly_billing=…`).
const CURRENT: &str = "ami-0123456789abcdef0";
const OLD: &str = "ami-0aaaaaaaaaaaaaaaa";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn groovy_present() -> bool {
    Command::new("sh")
        .args(["-c", "command -v groovy && command -v groovyc"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the dump script on a fixture scenario; None when the test is to be skipped.
fn dump(scenario: &str, args: &[&str]) -> Option<String> {
    if !groovy_present() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "groovy is not installed, and CI is set: run scripts/ensure-groovy.sh");
        // Straight to stderr: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED the Groovy dump test ({scenario}): groovy is not installed; scripts/ensure-groovy.sh installs it ***\n"
        );
        return None;
    }
    let out = Command::new("bash")
        .arg(repo().join("tests/groovy/run.sh"))
        .arg("dump")
        .arg(scenario)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("bash tests/groovy/run.sh");
    assert!(
        out.status.success(),
        "the dump script failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 dump"))
}

#[test]
fn the_groovy_dump_parses_into_what_the_manager_relies_on() {
    let Some(text) = dump("contract", &[CURRENT, "idle_minutes=45", "hourly_billing=false"]) else { return };
    let d = parse_dump(&text).unwrap_or_else(|e| panic!("parse_dump: {e}\n{text}"));
    let envs: BTreeSet<String> = ["dev".to_string(), "prod".to_string()].into();
    assert_eq!(d.controller_labels, ["built-in", "master_node"], "the GC job's label is the controller's");

    // Queue: freestyle with parameters, folder job without, a matrix
    // configuration, a Pipeline node block; the blocked item is absent.
    let names: Vec<&str> = d.queue.iter().map(|q| q.job_name.as_str()).collect();
    assert_eq!(names, ["job-000", "folder/job-001", "team/mx/label=dev_shared", "pipes/deploy"]);
    let q = &d.queue[0];
    assert_eq!(q.label, "dev_spot");
    assert_eq!(q.last_built_on.as_deref(), Some("dev-10.0.1.7"));
    assert_eq!(q.parameters.as_deref(), Some("\nBRANCH=master\nBUILD_NO=0"));
    assert_eq!(q.queue_id, Some(100));
    // The original's marker key, so markers written by the Python script still match.
    assert_eq!(job_key(&q.job_name, q.parameters.as_deref()), "job-000___0229e1082c8dd9a2f7f2d7f51901a614");
    assert_eq!(d.queue[1].last_built_on, None, "UNKNOWN means none");
    assert_eq!(d.queue[1].parameters, None, "NONE means none");
    assert_eq!(d.queue[2].label, "dev_shared");
    assert_eq!(d.queue[2].last_built_on.as_deref(), Some("dev-10.0.1.8"));
    let p = &d.queue[3];
    assert_eq!((p.label.as_str(), p.parameters.as_deref()), ("prod_spot", Some("\nENV=prod")));
    assert_eq!(p.last_built_on.as_deref(), Some("prod-10.2.0.5"));
    assert!(d.queue.iter().all(|q| q.queue_id.is_some()));
    let labels: Vec<_> =
        d.queue.iter().map(|q| parse_label(&q.label, &envs).expect("a label of a known env")).collect();
    assert_eq!(
        labels.iter().map(|l| l.pricing).collect::<Vec<_>>(),
        [Pricing::Spot, Pricing::OnDemand, Pricing::Shared, Pricing::Spot]
    );

    // Nodes: the built-in node is absent; ours idle → offline + terminate_me;
    // ours busy → kept, busy count read; ours on an old AMI → drained + gone;
    // a hand-made agent → never touched.
    let names: Vec<&str> = d.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["dev-10.0.1.7", "dev-10.0.1.8", "prod-10.2.0.9", "static-builder"]);
    let idle = &d.nodes[0];
    assert_eq!(idle.labels, ["dev_spot", "swarm"]);
    assert!(idle.has_label("swarm"));
    assert!(idle.offline && idle.terminate_me);
    assert_eq!(idle.instance_id.as_deref(), Some("i-0aaaaaaaaaaaaaaa1"));
    assert_eq!(idle.ami_id.as_deref(), Some(CURRENT));
    assert_eq!((idle.busy_executors, idle.num_executors, idle.idle_executors), (Some(0), Some(1), Some(1)));
    assert!(idle.idle_seconds.is_some_and(|s| (3000..3600).contains(&s)), "{:?}", idle.idle_seconds);
    let busy = &d.nodes[1];
    assert!(!busy.offline && !busy.terminate_me);
    assert_eq!((busy.busy_executors, busy.num_executors, busy.idle_executors), (Some(2), Some(5), Some(3)));
    assert_eq!(busy.idle_seconds, Some(0));
    let old = &d.nodes[2];
    assert_eq!(old.ami_id.as_deref(), Some(OLD));
    assert_eq!(old.ami_id.as_deref().map(str::len), Some(21), "today's AMI ids are not cut");
    assert!(old.offline && old.terminate_me);
    assert_eq!(old.instance_id.as_deref(), Some("i-0aaaaaaaaaaaaaaa3"));
    let hand_made = &d.nodes[3];
    assert!(!hand_made.offline && !hand_made.terminate_me);
    assert_eq!((hand_made.ami_id.as_deref(), hand_made.instance_id.as_deref()), (None, None));
    assert_eq!(hand_made.labels, ["docker", "linux"]);

    assert_eq!(d.messages.len(), 2, "{:?}", d.messages);
    assert!(d.messages.iter().any(|m| m.contains("groovy_script_killed_me")));
}

#[test]
fn the_idle_threshold_the_manager_passes_is_honoured() {
    // idle_minutes=60: the 50-minute idle agent of the scenario stays.
    let Some(text) = dump("contract", &[CURRENT, "idle_minutes=60", "hourly_billing=false"]) else { return };
    let d = parse_dump(&text).unwrap();
    let idle = d.nodes.iter().find(|n| n.name == "dev-10.0.1.7").unwrap();
    assert!(!idle.offline && !idle.terminate_me);
    // hourly_billing=true with idle_minutes=60: idle 50 min, connected 2 h → goes.
    let Some(text) = dump("contract", &[CURRENT, "idle_minutes=60", "hourly_billing=true"]) else { return };
    let d = parse_dump(&text).unwrap();
    assert!(d.nodes.iter().find(|n| n.name == "dev-10.0.1.7").unwrap().terminate_me);
}

/// Every `--flag` of the util_slave_manager job is one the binary knows.
#[test]
fn the_job_definition_uses_only_flags_the_binary_knows() {
    let job = std::fs::read_to_string(repo().join("jenkins/jobs/util_slave_manager/config.xml")).unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_slave_manager")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: BTreeSet<&str> = job
        .split(|c: char| c.is_whitespace() || c == '"')
        .filter(|w| w.starts_with("--") && w.len() > 2 && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(flags.contains("--jenkins_user") && flags.contains("--ami_ids"), "{flags:?}");
    for flag in flags {
        assert!(help.contains(flag), "{flag} is in the job but not in `slave_manager --help`");
    }
}

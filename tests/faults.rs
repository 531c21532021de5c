//! The promises under faults: nothing lost, nothing doubled, no build
//! killed, every failure counted, only bad configuration exits non-zero.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{item, World};
use serde_json::{json, Value};

fn live(w: &World, env: &str) -> Vec<Value> {
    w.fleet().into_iter().filter(|r| r["env"] == env && r["state"] != "terminated").collect()
}

#[test]
fn a_second_manager_in_the_same_directory_exits_at_once() {
    let w = World::new(json!([]));
    let mut first = w.command();
    first
        .args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids(), "--cli", "ssh"])
        .args(["--skip_security_group", "--loop_counter", "1000", "--pass_interval", "0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.jenkins.commands().is_empty() {
        assert!(Instant::now() < deadline, "the first manager never asked Jenkins");
        std::thread::sleep(Duration::from_millis(100));
    }

    let started = Instant::now();
    let second = w.run(&["--cli", "ssh", "--loop_counter", "1"]);
    assert_eq!(second.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another slave_manager is running"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "it exits at once");

    // SIGTERM (an aborted Jenkins build) ends the first run, CSVs written.
    let ok = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = first.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(w.path().join("properties_run.csv").exists());
    // The lock went with it: a new run works.
    assert!(w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group"]).status.success());
}

#[test]
fn a_launch_whose_markers_were_lost_is_not_repeated() {
    // As if the manager died between RunInstances and writing its markers:
    // the instance, tagged at launch, is seen booting and absorbs the item.
    let w = World::new(json!([]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    let args = ["--cli", "ssh", "--loop_counter", "1", "--skip_security_group"];
    assert!(w.run(&args).status.success());
    assert_eq!(live(&w, "dev").len(), 1);
    for entry in std::fs::read_dir(w.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".working") || name.ends_with(".start_instance") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let out = w.run(&["--cli", "ssh", "--loop_counter", "3", "--skip_security_group"]);
    assert!(out.status.success());
    assert_eq!(live(&w, "dev").len(), 1, "no second instance for the same item");
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 0);
}

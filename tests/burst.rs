//! Batched calls through the AWS proxy (issue 11): launches of one label go
//! out as one RunInstances per subnet, an env's stops as one call. Whatever
//! EC2 answers — a short fill, an answer lost after the launch, a crash
//! mid-call, one bad instance in a list, an empty request bucket — no item
//! gets two agents, no cap is passed, and what failed is tried again.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{item, World};
use serde_json::{json, Value};

/// Standard flags of these tests: SSH CLI, no SG or GC, passes back to back.
const QUIET: [&str; 7] = ["--cli", "ssh", "--skip_security_group", "--gc_job", "", "--pass_interval", "0"];

fn run_with(w: &World, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = QUIET.to_vec();
    args.extend_from_slice(extra);
    w.run(&args)
}

fn live(w: &World, env: &str) -> Vec<Value> {
    w.fleet().into_iter().filter(|r| r["env"] == env && r["state"] != "terminated").collect()
}

fn spot_items(n: usize, label: &str) -> Vec<Value> {
    (0..n).map(|k| item(&format!("job-{label}-{k}"), label, "UNKNOWN", &format!("BUILD_NO={k}"))).collect()
}

fn launches(w: &World) -> Vec<Value> {
    w.proxy().calls().into_iter().filter(|c| c["action"] == "RunInstances").collect()
}

/// The instances one RunInstances asked for.
fn asked(call: &Value) -> u64 {
    call["max_count"][0].as_u64().unwrap_or(1)
}

#[test]
fn a_batch_ec2_fills_only_partly_gets_the_rest_next_pass_within_the_cap() {
    let w = World::new(json!([])).with_proxy();
    w.jenkins.set_state(&json!({ "queue": spot_items(6, "dev_spot") }));
    // EC2 short of capacity: at most 2 instances per RunInstances.
    w.proxy().latency(json!({"max_count": [{"limit": 2}]}));
    let out = run_with(&w, &["--loop_counter", "4", "--max_num_of_spot_slaves_in_env", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(live(&w, "dev").len(), 5, "the cap of 5, reached over passes, never passed");
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 5);
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 0, "a short fill is no failure");
    let calls = launches(&w);
    let cut: Vec<&Value> = calls.iter().filter(|c| !c["max_count"].is_null()).collect();
    assert!(!cut.is_empty(), "no batch was cut short: {calls:#?}");
    assert!(cut.iter().all(|c| asked(c) > 2 && c["max_count"][1] == 2), "{cut:#?}");
    assert!(calls.iter().all(|c| asked(c) <= 5), "no launch asks past the cap: {calls:#?}");
}

#[test]
fn a_batch_whose_answer_timed_out_after_it_succeeded_makes_one_set_of_instances() {
    let w = World::new(json!([])).with_proxy();
    w.jenkins.set_state(&json!({ "queue": spot_items(6, "dev_spot") }));
    // The first launch reaches EC2, but its answer comes after the attempt
    // timeout (2 s): the SDK retries the batch with the same client token.
    w.proxy().faults(json!([
        {"service": "ec2", "action": "RunInstances", "fault": "succeed_then_timeout", "delay": 10, "count": 1},
    ]));
    let out = run_with(&w, &["--loop_counter", "3", "--aws_timeout", "6"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(live(&w, "dev").len(), 6, "one instance per item, not two");
    let replays = w.proxy().calls().iter().filter(|c| c["fault"] == "idempotent-replay").count();
    assert_eq!(replays, 1, "the retry was answered from the token");
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 6);
}

#[test]
fn kill_9_during_a_batched_launch_then_restart_makes_no_double() {
    let w = World::new(json!([])).with_proxy();
    w.jenkins.set_state(&json!({ "queue": spot_items(6, "dev_spot") }));
    // Launches happen at once in EC2; their answers are held a minute.
    w.proxy().latency(json!({"delays": [{"action": "RunInstances", "seconds": 60}]}));
    let mut cmd = w.command();
    cmd.args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids()])
        .args(QUIET)
        .args(["--aws_timeout", "300", "--loop_counter", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while live(&w, "dev").len() < 6 {
        assert!(Instant::now() < deadline, "the launches never happened: {:#?}", live(&w, "dev"));
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup, no markers written.
    child.wait().unwrap();
    let markers = std::fs::read_dir(w.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".working"))
        .count();
    assert_eq!(markers, 0, "killed before writing the markers");

    w.proxy().latency(json!({}));
    let out = run_with(&w, &["--loop_counter", "3", "--aws_timeout", "6"]);
    assert!(out.status.success(), "the lock died with the process");
    assert_eq!(live(&w, "dev").len(), 6, "no second launch for the same items");
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 0);
}

#[test]
fn a_batched_stop_with_one_bad_instance_stops_the_others() {
    let w = World::new(json!([
        {"env": "dev", "state": "running", "labels": "dev"},
        {"env": "dev", "state": "running", "labels": "dev"},
        {"env": "dev", "state": "running", "labels": "dev"},
    ]))
    .with_proxy();
    let id = |i: usize| w.agent(i)["instance_id"].as_str().unwrap().to_string();
    // Jenkins wants all three gone; EC2 refuses to stop the second, wherever
    // it stands in the list.
    w.jenkins
        .set_state(&json!({"nodes": [w.node(0, true, true, 0), w.node(1, true, true, 0), w.node(2, true, true, 0)]}));
    let refuse = |at: usize| {
        json!({"service": "ec2", "action": "StopInstances", "fault": "error500", "status": 400,
               "code": "IncorrectInstanceState", "message": "not stoppable",
               "params": {format!("InstanceId.{at}"): id(1)}})
    };
    w.proxy().faults(json!([refuse(1), refuse(2), refuse(3)]));
    let out = run_with(&w, &["--loop_counter", "1", "--aws_timeout", "6"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state = |i: usize| w.instance(&id(i))["state"].as_str().unwrap().to_string();
    assert_eq!([state(0), state(1), state(2)], ["stopped", "running", "stopped"]);
    let stops: Vec<Value> = w.proxy().calls().into_iter().filter(|c| c["action"] == "StopInstances").collect();
    assert_eq!(stops.len(), 4, "one call for all, then one per instance: {stops:#?}");
    assert_eq!(w.csv("properties_run.csv")["instances_stopped"], 2);
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("IncorrectInstanceState"));
}

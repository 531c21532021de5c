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

/// A burst of six launch specs (instance types) over two subnets, twelve
/// launches, against a RunInstances bucket of 1 refilled at 1 a second;
/// returns the throttled answers it met, after checking every item was
/// served within the cap.
fn throttled_burst(extra: &[&str]) -> usize {
    let w = World::new(json!([])).with_proxy();
    let labels =
        ["", "_t3.small", "_m5.large", "_c5.large", "_t3.medium", "_m5.xlarge"].map(|t| format!("dev_spot{t}"));
    let items: Vec<Value> = labels.iter().flat_map(|label| spot_items(3, label)).collect();
    w.jenkins.set_state(&json!({ "queue": items }));
    w.proxy().latency(json!({
        "delays": [{"action": "RunInstances", "seconds": 0.5}],
        "buckets": [{"action": "RunInstances", "burst": 1, "refill": 1}],
    }));
    // Eight launches at once: the first wave meets the bucket either way.
    let mut args = vec![
        "--loop_counter",
        "6",
        "--aws_timeout",
        "60",
        "--max_parallel_calls",
        "8",
        "--max_num_of_spot_slaves_in_env",
        "15",
    ];
    args.extend_from_slice(extra);
    let out = run_with(&w, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(live(&w, "dev").len(), 15, "the spot cap reached, never passed; no item served twice");
    let throttled = w.proxy().calls().iter().filter(|c| c["throttled"] == true).count();
    let errors = w.csv("properties_error.csv");
    assert_eq!(errors["ec2_throttled"], u64::try_from(throttled).unwrap(), "every throttled answer counted");
    throttled
}

#[test]
fn the_rate_limiter_meets_fewer_throttles_in_a_burst_than_unpaced_calls() {
    let unpaced = throttled_burst(&["--no_rate_limiter"]);
    let paced = throttled_burst(&[]);
    println!("throttled answers in the burst: {unpaced} unpaced, {paced} with the rate limiter");
    assert!(unpaced > 0, "the bucket was too big to prove anything");
    assert!(paced < unpaced, "{paced} throttles with the limiter, {unpaced} without");
}

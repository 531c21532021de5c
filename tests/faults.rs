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

/// Standard flags of these tests: SSH CLI, short AWS timeout, no SG or GC.
const QUIET: [&str; 7] = ["--cli", "ssh", "--skip_security_group", "--gc_job", "", "--aws_timeout", "6"];

fn run_with(w: &World, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = QUIET.to_vec();
    args.extend_from_slice(extra);
    w.run(&args)
}

/// One stopped dev agent to start, one prod item to create for.
fn two_env_world() -> World {
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}])).with_proxy();
    w.jenkins.set_state(&json!({"queue": [
        item("job-dev", "dev", "UNKNOWN", "NONE"),
        item("job-prod", "prod", "UNKNOWN", "NONE"),
    ]}));
    w
}

fn state_of(w: &World, i: usize) -> String {
    w.instance(w.agent(i)["instance_id"].as_str().unwrap())["state"].as_str().unwrap().to_string()
}

#[test]
fn throttling_and_server_errors_are_retried_then_counted() {
    let w = two_env_world();
    // Throttled twice, slowed down once: the SDK's retries absorb it.
    w.proxy().faults(json!([
        {"service": "ec2", "action": "DescribeInstances", "fault": "throttle", "count": 2},
        {"service": "ec2", "action": "StartInstances", "fault": "slowdown", "count": 1},
    ]));
    let out = run_with(&w, &["--loop_counter", "1"]);
    assert!(out.status.success());
    assert_eq!(state_of(&w, 0), "running", "the start went through after retries");
    assert_eq!(live(&w, "prod").len(), 1);
    assert_eq!(w.csv("properties_error.csv")["describe_failed"], 0);
    assert_eq!(w.csv("properties_error.csv")["ec2_throttled"], 2, "each throttled answer counted");

    // A launch that keeps failing: logged, counted, the run ends normally.
    let w = two_env_world();
    w.proxy().faults(json!([{"service": "ec2", "action": "RunInstances", "fault": "error500"}]));
    let out = run_with(&w, &["--loop_counter", "2"]);
    assert!(out.status.success(), "failures are not a failed run");
    assert_eq!(state_of(&w, 0), "running", "dev carried on");
    assert!(live(&w, "prod").is_empty());
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 2, "one failed launch per pass");
    let tries = w.proxy().calls().iter().filter(|c| c["action"] == "RunInstances").count();
    assert_eq!(tries, 8, "4 bounded attempts per launch");
    assert!(String::from_utf8_lossy(&out.stdout).contains("InternalError"));
}

#[test]
fn a_slow_env_times_out_and_the_others_carry_on() {
    let w = two_env_world();
    w.proxy().faults(json!([
        {"service": "ec2", "region": "us-west-2", "action": "DescribeInstances", "fault": "delay", "delay": 30},
    ]));
    let started = Instant::now();
    let out = run_with(&w, &["--loop_counter", "1"]);
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(25), "bounded by --aws_timeout, took {:?}", started.elapsed());
    assert_eq!(state_of(&w, 0), "running");
    assert!(live(&w, "prod").is_empty(), "an env not seen is left alone");
    assert_eq!(w.csv("properties_error.csv")["describe_failed"], 1);
}

#[test]
fn sts_failing_for_one_env_lets_the_others_carry_on() {
    let w = two_env_world();
    w.proxy().faults(json!([{"service": "sts", "region": "us-west-2", "fault": "access_denied"}]));
    let out = run_with(&w, &["--loop_counter", "2"]);
    assert!(out.status.success());
    assert_eq!(state_of(&w, 0), "running", "dev is reached");
    assert!(live(&w, "prod").is_empty());
    assert_eq!(w.csv("properties_error.csv")["describe_failed"], 2);
}

#[test]
fn a_launch_that_timed_out_but_succeeded_makes_one_instance() {
    let w = two_env_world();
    // The first attempt reaches EC2 and launches, but its answer comes after
    // the attempt timeout (2 s); the SDK retries with the same client token.
    w.proxy().faults(json!([
        {"service": "ec2", "action": "RunInstances", "fault": "succeed_then_timeout", "delay": 10, "count": 1},
    ]));
    let out = run_with(&w, &["--loop_counter", "3"]);
    assert!(out.status.success());
    assert_eq!(live(&w, "prod").len(), 1, "one instance, not two");
    let replays = w.proxy().calls().iter().filter(|c| c["fault"] == "idempotent-replay").count();
    assert_eq!(replays, 1, "the retry was answered from the token");
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 1);
}

#[test]
fn a_reset_connection_is_retried() {
    let w = two_env_world();
    w.proxy().faults(json!([{"service": "ec2", "action": "RunInstances", "fault": "reset", "count": 1}]));
    let out = run_with(&w, &["--loop_counter", "1"]);
    assert!(out.status.success());
    assert_eq!(live(&w, "prod").len(), 1);
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 0);
}

/// The RunInstances calls the proxy saw.
fn launches(w: &World) -> Vec<Value> {
    w.proxy().calls().into_iter().filter(|c| c["action"] == "RunInstances").collect()
}

/// No agent yet, and one `dev_spot` item queued, through the fault proxy.
fn one_spot_item() -> World {
    let w = World::new(json!([])).with_proxy();
    w.jenkins.set_state(&json!({"queue": [item("job-spot", "dev_spot", "UNKNOWN", "NONE")]}));
    w
}

/// `check`'s line about the capacity shortages it remembers.
fn shortages_line(w: &World) -> String {
    let mut check = w.command();
    check
        .arg("check")
        .args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids()])
        .args(QUIET);
    let table = String::from_utf8_lossy(&common::output(check).stdout).to_string();
    table.lines().find(|l| l.contains("capacity shortages")).unwrap_or_else(|| panic!("{table}")).to_string()
}

#[test]
fn capacity_short_in_one_subnet_lands_the_launch_in_the_other_in_the_same_pass() {
    let w = one_spot_item();
    // The first launch is refused, whichever subnet (AZ) it asks for.
    w.proxy().faults(json!([
        {"service": "ec2", "action": "RunInstances", "fault": "insufficient_capacity", "count": 1},
    ]));
    let out = run_with(&w, &["--loop_counter", "1"]);
    assert!(out.status.success());
    let calls = launches(&w);
    assert_eq!(calls.len(), 2, "one more call, in the other subnet: {calls:#?}");
    assert_eq!(calls[0]["fault"], "insufficient_capacity");
    assert!(calls[1]["fault"].is_null());
    assert_ne!(calls[0]["subnet"], calls[1]["subnet"]);
    let dev = live(&w, "dev");
    assert_eq!(dev.len(), 1);
    assert_eq!(dev[0]["lifecycle"], "spot", "room in another AZ: no fallback needed");
    assert_eq!(dev[0]["subnet"], calls[1]["subnet"]);
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 0);
}

#[test]
fn a_short_offering_is_skipped_on_the_next_pass() {
    let w = one_spot_item();
    w.proxy().faults(json!([{"service": "ec2", "action": "RunInstances", "fault": "insufficient_capacity"}]));
    let out = run_with(&w, &["--loop_counter", "3", "--pass_interval", "0.2", "--debug"]);
    assert!(out.status.success());
    let calls = launches(&w);
    assert_eq!(calls.len(), 2, "each subnet once in the first pass, then skipped for 3 minutes: {calls:#?}");
    assert_ne!(calls[0]["subnet"], calls[1]["subnet"]);
    assert!(live(&w, "dev").is_empty(), "the item waits");
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 1, "a skip is no failure");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("subnet skipped"), "--debug says why: {log}");

    // The next run (cron) skips them too, and `check` lists them.
    assert!(run_with(&w, &["--loop_counter", "1"]).status.success());
    assert_eq!(launches(&w).len(), 2, "skipped by the next run as well");
    let line = shortages_line(&w);
    assert!(line.starts_with('✔'), "a shortage is no set-up fault: {line}");
    for call in &calls {
        let subnet = call["subnet"].as_str().unwrap();
        assert!(line.contains(&format!("spot in {subnet}")), "{line}");
    }
}

#[test]
fn no_spot_capacity_falls_back_to_on_demand_only_when_asked_and_within_the_cap() {
    for fallback in [false, true] {
        let w = one_spot_item();
        // No spot room in either subnet; each answer is final for its call
        // (no SDK retry that would land the spot agent after all, seconds later).
        w.proxy().faults(json!([
            {"service": "ec2", "action": "RunInstances", "fault": "insufficient_capacity", "count": 2},
        ]));
        let mut extra = vec!["--loop_counter", "1"];
        if fallback {
            extra.push("--spot_fallback");
        }
        let out = run_with(&w, &extra);
        assert!(out.status.success());
        let calls = launches(&w);
        assert_eq!(calls.len(), if fallback { 3 } else { 2 }, "each subnet once, not retried: {calls:#?}");
        assert_ne!(calls[0]["subnet"], calls[1]["subnet"], "every subnet tried before the fallback");
        let dev = live(&w, "dev");
        if fallback {
            assert_eq!(dev.len(), 1, "{dev:#?}");
            assert_eq!(dev[0]["lifecycle"], "on-demand");
            assert_eq!(dev[0]["labels"], "dev_spot", "it still serves the spot label");
            assert_eq!(dev[0]["tags"]["is_spot"], "false");
        } else {
            assert!(dev.is_empty());
            assert_eq!(w.csv("properties_error.csv")["action_failed"], 1);
        }
    }
    // At the on-demand cap, no fallback is planned: the cap holds.
    let w = World::new(json!([{"env": "dev", "state": "running", "labels": "dev_c5.large"}])).with_proxy();
    w.jenkins.set_state(&json!({"queue": [item("job-spot", "dev_spot", "UNKNOWN", "NONE")]}));
    w.proxy()
        .faults(json!([{"service": "ec2", "action": "RunInstances", "fault": "insufficient_capacity", "count": 4}]));
    let out = run_with(&w, &["--loop_counter", "1", "--spot_fallback", "--max_num_of_slaves_in_env", "1"]);
    assert!(out.status.success());
    assert_eq!(live(&w, "dev").len(), 1, "only the agent that was there");
}

#[test]
fn a_spot_price_over_the_bid_tries_the_other_azs_and_never_falls_back() {
    let price_too_low = |count: u32| {
        json!([{
            "service": "ec2", "action": "RunInstances", "fault": "error500", "count": count, "status": 400,
            "code": "SpotMaxPriceTooLow", "message": "Your Spot request price of 0.2 is lower than the minimum required Spot request fulfillment price of 0.31.",
        }])
    };
    // Spot prices are per type and AZ: the next subnet, at the same bid.
    let w = one_spot_item();
    w.proxy().faults(price_too_low(1));
    assert!(run_with(&w, &["--loop_counter", "1", "--spot_fallback"]).status.success());
    let calls = launches(&w);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_ne!(calls[0]["subnet"], calls[1]["subnet"]);
    let dev = live(&w, "dev");
    assert_eq!(dev.len(), 1);
    assert_eq!(dev[0]["lifecycle"], "spot");
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 0);

    // Over the bid everywhere: the bid is a ceiling, no on-demand agent at
    // full price, neither now nor on the next pass (which asks EC2 nothing).
    let w = one_spot_item();
    w.proxy().faults(price_too_low(2));
    let out = run_with(&w, &["--loop_counter", "2", "--pass_interval", "0.2", "--spot_fallback"]);
    assert!(out.status.success());
    assert!(live(&w, "dev").is_empty(), "no on-demand agent at full price");
    let calls = launches(&w);
    assert_eq!(calls.len(), 2, "each subnet once, not retried, no fallback: {calls:#?}");
    assert_ne!(calls[0]["subnet"], calls[1]["subnet"]);
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 1);
}

#[test]
fn the_accounts_on_demand_quota_skips_the_envs_on_demand_launches_and_check_lists_it() {
    let w = World::new(json!([])).with_proxy();
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    w.proxy().faults(json!([{
        "service": "ec2", "action": "RunInstances", "fault": "error500", "count": 1, "status": 400,
        "code": "VcpuLimitExceeded", "message": "You have requested more vCPU capacity than your current vCPU limit of 32 allows.",
    }]));
    let out = run_with(&w, &["--loop_counter", "2", "--pass_interval", "0.2"]);
    assert!(out.status.success());
    let calls = launches(&w);
    assert_eq!(calls.len(), 1, "no other subnet, no second pass asks: {calls:#?}");
    assert!(live(&w, "dev").is_empty());
    assert_eq!(w.csv("properties_error.csv")["action_failed"], 1, "then skipped, not failed");

    let line = shortages_line(&w);
    assert!(line.contains("dev: every on-demand launch (the account's limit)"), "{line}");
}

#[test]
fn jenkins_faults_skip_scaling_and_are_counted() {
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("hang", vec!["--jenkins_timeout", "2"]),
        ("refused", vec!["--url", "http://127.0.0.1:9/"]),
        ("auth", vec!["--jenkins_user", "nobody"]),
    ];
    for (case, extra) in cases {
        if case == "hang" {
            w.jenkins.fault(&json!({"groovy": "hang"}));
        }
        let started = Instant::now();
        let mut args: Vec<&str> = vec!["--loop_counter", "2"];
        args.extend(extra);
        let out = run_with(&w, &args);
        w.jenkins.fault(&json!({"groovy": null}));
        assert!(out.status.success(), "{case}");
        assert!(started.elapsed() < Duration::from_secs(30), "{case}: bounded, took {:?}", started.elapsed());
        assert_eq!(w.csv("properties_error.csv")["jar_file_error"], 2, "{case}");
        assert_eq!(state_of(&w, 0), "stopped", "{case}: nothing scaled on a failed dump");
    }
}

#[test]
fn an_oversized_dump_fails_cleanly_and_is_counted() {
    // Huge queued parameters make a dump of 3 MiB; the cap is 1 MiB.
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}]));
    let big = format!("\nBIG={}", "x".repeat(3 << 20));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", &big)]}));
    for cli in ["ssh", "jar"] {
        let started = Instant::now();
        let out = run_with(
            &w,
            &["--cli", cli, "--loop_counter", "1", "--max_cli_output_mb", "1", "--jenkins_timeout", "120"],
        );
        let took = started.elapsed();
        assert!(out.status.success(), "{cli}");
        // Stopped at the cap, not waited out: the client is killed, never
        // left blocked on a full pipe.
        assert!(took < Duration::from_secs(60), "{cli}: took {took:?}");
        assert_eq!(w.csv("properties_error.csv")["jar_file_error"], 1, "{cli}");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(log.contains("`groovy` printed more than 1 MiB (--max_cli_output_mb)"), "{cli}: {log}");
        assert_eq!(state_of(&w, 0), "stopped", "{cli}: nothing scaled on a refused dump");
    }
    // Under a higher cap the same dump is read and served.
    let out = run_with(&w, &["--loop_counter", "1", "--max_cli_output_mb", "8"]);
    assert!(out.status.success());
    assert_eq!(w.csv("properties_error.csv")["jar_file_error"], 0);
    assert_eq!(state_of(&w, 0), "running");
}

#[test]
fn symlinks_planted_in_the_workspace_are_replaced_not_written_through() {
    // Anyone who can write the job's workspace could point a file the
    // manager writes at a file elsewhere that the Jenkins user may write.
    let w = World::new(json!([]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    let outside = tempfile::tempdir().unwrap();
    let marker = slave_manager::markers::working_file(&slave_manager::job_key::job_key("job-000", None));
    // What the manager writes, and the scratch names it used to write them by.
    let written = [
        "properties_run.csv",
        "properties_sqs.csv",
        "properties_error.csv",
        "properties_instance_count.csv",
        "metrics.prom",
        "report.html",
        "time_to_agent.json",
        "jenkins-cli.jar",
        marker.as_str(),
    ];
    let scratch = [".metrics.prom.tmp", "jenkins-cli.jar.part"];
    for (i, name) in written.iter().chain(&scratch).enumerate() {
        let target = outside.path().join(format!("precious-{i}"));
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, w.path().join(name)).unwrap();
    }
    // The marker's link is old, as an expired marker: the item is retried
    // and its marker written anew.
    let aged =
        std::process::Command::new("touch").args(["-h", "-d", "1 hour ago"]).arg(w.path().join(&marker)).status();
    assert!(aged.unwrap().success());
    let mut args: Vec<&str> = QUIET.to_vec();
    args.extend(["--cli", "jar", "--loop_counter", "1"]);
    let out = w.run(&args);
    assert!(out.status.success());
    assert_eq!(live(&w, "dev").len(), 1, "the pass worked: one agent for the item");

    let names: Vec<&str> = written.iter().chain(&scratch).copied().collect();
    let through: Vec<&str> = (0..names.len())
        .filter(|i| std::fs::read_to_string(outside.path().join(format!("precious-{i}"))).unwrap() != "precious")
        .map(|i| names[i])
        .collect();
    assert!(through.is_empty(), "written through the links at {through:?}");
    for name in written {
        let meta = std::fs::symlink_metadata(w.path().join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name}: the link was replaced by a file");
    }
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 1);
    assert!(std::fs::read_to_string(w.path().join("metrics.prom")).unwrap().contains("slave_manager_passes_total 1"));
}

#[test]
fn a_hanging_jenkins_cannot_stretch_a_run_past_max_minutes() {
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    w.jenkins.fault(&json!({"groovy": "hang"}));
    let started = Instant::now();
    // 300 passes of a 4-second hang (plus the GC) would take over 20 minutes.
    let out = run_with(&w, &["--loop_counter", "300", "--jenkins_timeout", "4", "--max_minutes", "0.2"]);
    let took = started.elapsed();
    assert!(out.status.success(), "a run ended by its time bound exits 0");
    assert!(took < Duration::from_secs(40), "bounded by --max_minutes: took {took:?}");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("the run ended on its time bound (--max_minutes 0.2)"), "{log}");
    let errors = w.csv("properties_error.csv");
    assert!((1..=4).contains(&errors["jar_file_error"]), "a few failed dumps, counted: {errors:?}");
    assert!(w.path().join("report.html").exists() && w.path().join("metrics.prom").exists());
}

#[test]
fn a_node_whose_instance_is_gone_counts_one_error_per_run_not_per_pass() {
    // Jenkins still lists a node of an instance EC2 forgot long ago.
    let w = World::new(json!([]));
    let gone = json!({
        "slaveName": "dev-10.9.9.9", "labels": "[dev, swarm]", "isOffLine": "true",
        "description": "Created by Swarm InstanceID=i-0000000000000dead AmiId=ami-0123",
        "ope_idle_count": "1", "busy_executors": "0", "num_executors": "1",
        "connectTime": "0", "idle_seconds": "3000", "terminate_me": "true",
    });
    w.jenkins.set_state(&json!({"nodes": [gone]}));
    let out = run_with(&w, &["--loop_counter", "3"]);
    assert!(out.status.success());
    assert_eq!(w.csv("properties_error.csv")["error_stopping_instance"], 1);
}

#[test]
fn sqs_errors_are_counted_and_no_request_is_lost_or_built_twice() {
    let w = World::with_args(json!([]), &["--sqs-region", "us-east-2"]).with_proxy();
    w.jenkins.set_state(&json!({"jobs": {"job-a": {"output": "ok"}}}));
    let sqs = aws_sdk_sqs::Client::new(&w.sdk("us-east-2"));
    let url = w.world["sqs"]["queue_url"].as_str().unwrap().to_string();
    common::block_on(sqs.send_message().queue_url(&url).message_body(r#"{"name": "job-a"}"#).send()).unwrap();
    let account = w.world["master_account"].as_str().unwrap().to_string();
    let sqs_flags = ["--aws_sqs_account_id", account.as_str(), "--aws_sqs_region", "us-east-2", "--loop_counter", "1"];
    let builds = |w: &World| w.jenkins.commands().iter().filter(|c| c[0] == "build").count();

    // Receiving fails: counted, nothing built.
    w.proxy().faults(json!([{"service": "sqs", "action": "ReceiveMessage", "fault": "access_denied"}]));
    assert!(run_with(&w, &sqs_flags).status.success());
    assert_eq!(w.csv("properties_error.csv")["sqs_failed"], 1);
    assert_eq!(builds(&w), 0);

    // Deleting fails: built, and remembered as run until it is deleted.
    w.proxy().faults(json!([{"service": "sqs", "action": "DeleteMessage", "fault": "access_denied"}]));
    assert!(run_with(&w, &sqs_flags).status.success());
    assert_eq!(w.csv("properties_error.csv")["sqs_failed"], 1);
    assert_eq!(builds(&w), 1);
    let remembered = |w: &World| {
        std::fs::read_dir(w.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("sqs_ran_"))
            .count()
    };
    assert_eq!(remembered(&w), 1);

    // The message comes back once it is visible again: deleted, not built again.
    w.proxy().faults(json!([]));
    common::block_on(
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "0")
            .send(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while remembered(&w) > 0 && Instant::now() < deadline {
        assert!(run_with(&w, &sqs_flags).status.success());
    }
    assert_eq!(remembered(&w), 0, "deleted at last");
    assert_eq!(builds(&w), 1, "the request is built exactly once");
    assert!(run_with(&w, &sqs_flags).status.success());
    assert_eq!(builds(&w), 1, "and not again");
}

#[test]
fn an_sqs_request_waits_while_jenkins_refuses_the_manager_and_is_built_once_it_takes_it() {
    // Found by the soak (issue 15): the request was deleted, its build then
    // never reached Jenkins, and it was gone.
    let w = World::with_args(json!([]), &["--sqs-region", "us-east-2"]);
    w.jenkins.set_state(&json!({"jobs": {"job-a": {"output": "ok"}}}));
    let sqs = aws_sdk_sqs::Client::new(&w.sdk("us-east-2"));
    let url = w.world["sqs"]["queue_url"].as_str().unwrap().to_string();
    // A message left in the queue is visible again at once.
    common::block_on(
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "0")
            .send(),
    )
    .unwrap();
    common::block_on(sqs.send_message().queue_url(&url).message_body(r#"{"name": "job-a"}"#).send()).unwrap();
    let account = w.world["master_account"].as_str().unwrap().to_string();
    let sqs_flags = ["--aws_sqs_account_id", account.as_str(), "--aws_sqs_region", "us-east-2", "--loop_counter", "1"];
    let builds = |w: &World| w.jenkins.commands().iter().filter(|c| c[0] == "build").count();

    // Jenkins refuses the manager's key: nothing runs, the request stays.
    let keys = w.path().join("authorized_keys");
    let key = std::fs::read(&keys).unwrap();
    std::fs::write(&keys, "").unwrap();
    assert!(run_with(&w, &sqs_flags).status.success());
    assert_eq!(builds(&w), 0);
    assert_eq!(w.csv("properties_sqs.csv")["sqs_dropped"], 0, "not dropped");
    assert_eq!(w.csv("properties_error.csv")["sqs_failed"], 1, "counted as a failure to handle it");

    std::fs::write(&keys, key).unwrap();
    assert!(run_with(&w, &sqs_flags).status.success());
    assert_eq!(builds(&w), 1, "built once Jenkins takes the manager again");
    assert_eq!(w.csv("properties_sqs.csv")["sqs_handled"], 1);
    assert!(run_with(&w, &sqs_flags).status.success());
    assert_eq!(builds(&w), 1, "and not again");
}

#[test]
fn kill_9_during_a_launch_then_restart_makes_one_instance() {
    let w = World::new(json!([])).with_proxy();
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    w.proxy().faults(json!([
        {"service": "ec2", "action": "RunInstances", "fault": "succeed_then_timeout", "delay": 60, "count": 1},
    ]));
    let mut cmd = w.command();
    cmd.args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
        .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids(), "--pass_interval", "0"])
        .args(QUIET)
        .args(["--aws_timeout", "120", "--loop_counter", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Wait until the launch has happened in EC2, its answer held back.
    let deadline = Instant::now() + Duration::from_secs(40);
    while live(&w, "dev").is_empty() {
        assert!(Instant::now() < deadline, "the launch never happened");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup, no markers written.
    child.wait().unwrap();
    assert!(
        !std::fs::read_dir(w.path())
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".working") }),
        "killed before writing the marker"
    );

    w.proxy().faults(json!([]));
    let out = run_with(&w, &["--loop_counter", "3"]);
    assert!(out.status.success(), "the lock died with the process");
    assert_eq!(live(&w, "dev").len(), 1, "no second launch for the same item");
}

#[test]
fn an_instance_without_our_name_tag_is_never_touched() {
    let w = World::new(json!([
        {"env": "dev", "state": "running", "labels": "dev", "name": "someone-elses"},
        {"env": "dev", "state": "stopped", "labels": "dev", "name": "someone-elses"},
        {"env": "dev", "state": "stopped", "labels": "dev", "name": "someone-elses", "ami": "old"},
    ]));
    // Jenkins says the running one should go, and a job waits for its label.
    w.jenkins.set_state(&json!({
        "queue": [item("job-000", "dev", "UNKNOWN", "NONE")],
        "nodes": [w.node(0, true, true, 0)],
    }));
    let out = run_with(&w, &["--loop_counter", "2", "--zombie_minutes", "1"]);
    assert!(out.status.success());
    assert_eq!(state_of(&w, 0), "running");
    assert_eq!(state_of(&w, 1), "stopped", "not started for our item");
    assert_eq!(state_of(&w, 2), "stopped", "not retired by the inventory");
    let ours: Vec<Value> = live(&w, "dev").into_iter().filter(|r| r["name"] == "jslave-in-house").collect();
    assert_eq!(ours.len(), 1, "the item got an agent of its own");
}

#[test]
fn another_masters_agents_with_our_name_are_never_touched_and_ours_are_adopted() {
    // A second master in the same account uses the same --slave_name.
    let other = "https://other-jenkins.example.com/";
    let w = World::new(json!([
        {"env": "dev", "state": "running", "labels": "dev", "jenkins_url": other},
        {"env": "dev", "state": "stopped", "labels": "dev", "jenkins_url": other},
        {"env": "dev", "state": "stopped", "labels": "dev", "jenkins_url": other, "ami": "old"},
        // One of ours from the Python era: Name and slave_data, no ownership tag.
        {"env": "prod", "state": "stopped", "labels": "prod_c5.large"},
    ]));
    w.jenkins.set_state(&json!({
        "queue": [item("job-000", "dev", "UNKNOWN", "NONE")],
        "nodes": [w.node(0, true, true, 0)],
    }));
    let out = run_with(&w, &["--loop_counter", "2", "--zombie_minutes", "1", "--max_num_of_slaves_in_env", "1"]);
    assert!(out.status.success());
    assert_eq!(state_of(&w, 0), "running", "not stopped for our Jenkins' idle node");
    assert_eq!(state_of(&w, 1), "stopped", "not started for our item");
    assert_eq!(state_of(&w, 2), "stopped", "not retired by the inventory, not taken to make room");
    let new: Vec<Value> =
        live(&w, "dev").into_iter().filter(|r| r["tags"]["jenkins_master"] == w.jenkins.url()).collect();
    assert_eq!(new.len(), 1, "the item got an agent of its own, tagged for this master, within our cap of 1");
    let adopted = w.instance(&common::s(&w.agent(3)["instance_id"]));
    assert_eq!(adopted["tags"]["jenkins_master"], w.jenkins.url(), "the Python-era agent is adopted");
    assert!(w.instance(&common::s(&w.agent(0)["instance_id"]))["tags"].get("jenkins_master").is_none());
}

/// The most calls among `calls` under way at one moment.
fn most_at_once(calls: &[&Value]) -> usize {
    let mut edges: Vec<(f64, i32)> =
        calls.iter().flat_map(|c| [(c["time"].as_f64().unwrap(), 1), (c["end"].as_f64().unwrap(), -1)]).collect();
    // An answer sent at the very moment another call arrives: not at once.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut now = 0;
    let mut most = 0;
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

#[test]
fn envs_launch_side_by_side_each_within_the_bound_of_calls_in_flight() {
    let w = World::new(json!([])).with_proxy();
    // Three instance types per env: three launch specs, three launches.
    let items: Vec<Value> = ["", "_t3.small", "_m5.large"]
        .iter()
        .flat_map(|size| {
            [
                item(&format!("job-dev{size}"), &format!("dev{size}"), "UNKNOWN", "NONE"),
                item(&format!("job-prod{size}"), &format!("prod{size}"), "UNKNOWN", "NONE"),
            ]
        })
        .collect();
    w.jenkins.set_state(&json!({ "queue": items }));
    // Launches answered after a second, as EC2's are, in both regions.
    w.proxy().latency(json!({"delays": [{"action": "RunInstances", "seconds": 1}]}));
    let out = run_with(&w, &["--loop_counter", "1", "--max_parallel_calls", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((live(&w, "dev").len(), live(&w, "prod").len()), (3, 3));

    let calls = w.proxy().calls();
    let launches = |region: &str| -> Vec<&Value> {
        calls.iter().filter(|c| c["action"] == "RunInstances" && c["region"] == region).collect()
    };
    let (dev, prod) = (launches("us-east-2"), launches("us-west-2"));
    assert_eq!((dev.len(), prod.len()), (3, 3), "{calls:#?}");
    // Within an env: two at a time, never three.
    assert_eq!(most_at_once(&dev), 2, "{dev:#?}");
    assert_eq!(most_at_once(&prod), 2, "{prod:#?}");
    // Across envs: prod's launches did not wait for dev's.
    let both: Vec<&Value> = dev.iter().chain(&prod).copied().collect();
    assert_eq!(most_at_once(&both), 4, "{both:#?}");
}

#[test]
fn a_timeout_beyond_an_hour_is_refused_in_one_line() {
    let w = World::new(json!([]));
    for timeout in ["--aws_timeout", "--jenkins_timeout"] {
        let out = run_with(&w, &["--loop_counter", "1", timeout, "18446744073709551615"]);
        assert_eq!(out.status.code(), Some(2), "{timeout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("must be at most 3600 seconds"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert!(w.proxy.is_none() && w.jenkins.commands().is_empty(), "nothing was called");
}

#[test]
fn max_parallel_calls_below_one_is_refused_in_one_line() {
    let w = World::new(json!([]));
    let out = run_with(&w, &["--loop_counter", "1", "--max_parallel_calls", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max_parallel_calls must be at least 1"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(w.proxy.is_none() && w.jenkins.commands().is_empty(), "nothing was called");
}

#[test]
fn a_throttled_burst_completes_and_every_throttled_answer_is_counted() {
    let w = World::new(json!([])).with_proxy();
    // Three launch specs (instance types), two subnets: up to six launches
    // of one pass, each batched, at once.
    let items: Vec<Value> = (0..6)
        .flat_map(|n| ["dev_spot", "dev_spot_t3.small", "dev_spot_m5.large"].map(|label| (n, label)))
        .map(|(n, label)| item(&format!("job-{label}-{n}"), label, "UNKNOWN", "NONE"))
        .collect();
    w.jenkins.set_state(&json!({ "queue": items }));
    // EC2's RunInstances bucket, small: 1 call at once, 1 more a second.
    w.proxy().latency(json!({
        "delays": [{"action": "RunInstances", "seconds": 0.5}],
        "buckets": [{"action": "RunInstances", "burst": 1, "refill": 1}],
    }));
    // A launch whose retries all met an empty bucket is counted failed and
    // planned again next pass (no marker was written): the burst completes.
    let out = run_with(
        &w,
        &[
            "--loop_counter",
            "4",
            "--pass_interval",
            "1",
            "--aws_timeout",
            "60",
            "--max_num_of_spot_slaves_in_env",
            "15",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = w.proxy().calls();
    let throttled = calls.iter().filter(|c| c["throttled"] == true).count();
    assert!(throttled > 0, "the bucket was too big to prove anything: {calls:#?}");
    assert_eq!(live(&w, "dev").len(), 15, "the spot cap reached, never passed; no item served twice");
    let errors = w.csv("properties_error.csv");
    assert_eq!(errors["ec2_throttled"], u64::try_from(throttled).unwrap());
}

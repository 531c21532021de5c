//! EC2 interruption events (issue 13 part 1): the built binary against
//! moto's SQS (a queue in each env's account and region, filled with
//! EventBridge envelopes of the documented shapes) and the Jenkins emulator,
//! which logs `offline-node` and takes the node offline as Jenkins does.

mod common;

use common::{item, s, World};
use serde_json::{json, Value};

const QUEUE: &str = "ec2-events";

/// An EventBridge envelope as EC2 sends it.
fn envelope(id: &str, detail_type: &str, w: &World, env: &str, detail: Value) -> String {
    let e = &w.world["envs"][env];
    json!({
        "version": "0", "id": id, "detail-type": detail_type, "source": "aws.ec2",
        "account": e["account"], "time": "2026-11-29T21:00:00Z", "region": e["region"],
        "resources": [format!("arn:aws:ec2:{}a:instance/{}", s(&e["region"]), s(&detail["instance-id"]))],
        "detail": detail,
    })
    .to_string()
}

fn warning(w: &World, id: &str, env: &str, instance: &str) -> Value {
    let detail = json!({"instance-id": instance, "instance-action": "terminate"});
    json!({"env": env, "body": envelope(id, "EC2 Spot Instance Interruption Warning", w, env, detail)})
}

fn rebalance(w: &World, id: &str, env: &str, instance: &str) -> Value {
    let detail = json!({"instance-id": instance});
    json!({"env": env, "body": envelope(id, "EC2 Instance Rebalance Recommendation", w, env, detail)})
}

fn offline_commands(w: &World) -> Vec<Vec<String>> {
    w.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect()
}

fn run(w: &World, passes: &str) -> String {
    let out = w.run(&["--loop_counter", passes, "--skip_security_group", "--interruption_queue", QUEUE]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ids of instances of `env` not among the pre-existing agents.
fn new_agents(w: &World, env: &str, known: usize) -> Vec<Value> {
    let ids: Vec<String> = (0..known).map(|i| s(&w.agent(i)["instance_id"])).collect();
    w.fleet().into_iter().filter(|r| r["env"] == env && !ids.contains(&s(&r["instance"]))).collect()
}

#[test]
fn a_warned_idle_agent_goes_offline_untouched_and_its_label_gets_another_agent_in_the_same_pass() {
    // Agent 0: an idle dev spot agent, warned. A dev_spot item is queued.
    let w = World::new(json!([{"env": "dev", "state": "running", "labels": "dev_spot"}]));
    let node = w.node(0, false, false, 0);
    w.jenkins.set_state(&json!({"queue": [item("job-a", "dev_spot", "UNKNOWN", "NONE")], "nodes": [node]}));
    let id = s(&w.agent(0)["instance_id"]);
    let left = w.events(QUEUE, json!([warning(&w, "e-1", "dev", &id)]));
    assert_eq!(left["dev"], 1);

    let log = run(&w, "1");
    let offline = offline_commands(&w);
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!(offline[0][1], s(&node["slaveName"]));
    assert_eq!(offline[0][2], "-m");
    assert!(offline[0][3].contains("spot interruption warning"), "{offline:?}");
    assert_eq!(s(&w.instance(&id)["state"]), "running", "EC2 takes it, not us");
    assert_eq!(new_agents(&w, "dev", 1).len(), 1, "the queued item got another agent in the same pass:\n{log}");
    assert_eq!(w.events(QUEUE, json!([]))["dev"], 0, "the message was deleted");
    assert_eq!(w.csv("properties_error.csv")["spot_interruptions"], 1);
    assert_eq!(w.csv("properties_error.csv")["replacements_launched"], 0, "nothing was running on it");
    assert!(w.path().join(format!("dev__{id}.interrupted")).exists());
}

#[test]
fn a_warned_busy_agent_gets_one_replacement_and_duplicates_foreign_and_garbage_events_do_nothing() {
    // Agent 0: a busy dev spot agent. Agent 1: a prod instance of somebody
    // else (another Name tag).
    let w = World::new(json!([
        {"env": "dev", "state": "running", "labels": "dev_spot"},
        {"env": "prod", "state": "running", "labels": "prod_spot", "name": "somebody-else"},
    ]));
    w.jenkins.set_state(&json!({"nodes": [w.node(0, false, false, 1)]}));
    let (mine, foreign) = (s(&w.agent(0)["instance_id"]), s(&w.agent(1)["instance_id"]));
    let mut bad = serde_json::from_str::<Value>(&s(&warning(&w, "e-4", "dev", &mine)["body"])).unwrap();
    bad["detail-type"] = json!("EC2 Instance Launch Successful");
    w.events(
        QUEUE,
        json!([
            warning(&w, "e-1", "dev", &mine),
            warning(&w, "e-1", "dev", &mine),
            warning(&w, "e-2", "prod", &foreign),
            {"env": "dev", "body": "this is not JSON"},
            {"env": "prod", "body": bad.to_string()},
        ]),
    );

    let log = run(&w, "3");
    assert_eq!(offline_commands(&w).len(), 1, "once, though warned twice");
    let replacements = new_agents(&w, "dev", 2);
    assert_eq!(replacements.len(), 1, "one replacement:\n{log}");
    assert_eq!(replacements[0]["labels"], "dev_spot");
    assert!(log.contains("its build is at risk"), "{log}");
    assert!(new_agents(&w, "prod", 2).is_empty());
    assert_eq!(s(&w.instance(&foreign)["state"]), "running", "not ours: ignored");
    let errors = w.csv("properties_error.csv");
    assert_eq!(
        (errors["spot_interruptions"], errors["replacements_launched"], errors["interruption_dropped"]),
        (1, 1, 2)
    );
    assert_eq!(errors["interruption_failed"], 0);
    let left = w.events(QUEUE, json!([]));
    assert_eq!((left["dev"], left["prod"]), (0, 0), "every message deleted");
}

#[test]
fn a_rebalanced_busy_agent_drains_and_is_terminated_once_idle() {
    let w = World::new(json!([{"env": "dev", "state": "running", "labels": "dev_spot"}]));
    w.jenkins.set_state(&json!({"nodes": [w.node(0, false, false, 1)]}));
    let id = s(&w.agent(0)["instance_id"]);
    w.events(QUEUE, json!([rebalance(&w, "e-1", "dev", &id)]));

    run(&w, "2");
    assert_eq!(offline_commands(&w).len(), 1);
    assert_eq!(s(&w.instance(&id)["state"]), "running", "not terminated while its build runs");
    assert_eq!(w.csv("properties_error.csv")["rebalance_recommendations"], 1);

    // The build finished; the node is still offline (the emulator took it
    // offline): the next run terminates the drained agent and forgets it.
    w.jenkins.set_state(&json!({"nodes": [w.node(0, true, false, 0)]}));
    run(&w, "2");
    assert_eq!(s(&w.instance(&id)["state"]), "terminated");
    assert_eq!(w.csv("properties_run.csv")["instances_terminated"], 1);
    assert!(!w.path().join(format!("dev__{id}.interrupted")).exists(), "forgotten once gone");
}

#[test]
fn offline_node_is_quoted_for_jenkins_tokenizer() {
    // A node name with blanks and quotes reaches Jenkins as one word.
    let w = World::new(json!([{"env": "dev", "state": "running", "labels": "dev_spot"}]));
    let mut node = w.node(0, false, false, 0);
    let name = format!("dev spot \"x\" {}", s(&w.agent(0)["private_ip"]));
    node["slaveName"] = json!(name);
    w.jenkins.set_state(&json!({"nodes": [node]}));
    let id = s(&w.agent(0)["instance_id"]);
    w.events(QUEUE, json!([warning(&w, "e-1", "dev", &id)]));
    for cli in ["ssh", "jar"] {
        let out = w.run(&["--cli", cli, "--loop_counter", "1", "--skip_security_group", "--interruption_queue", QUEUE]);
        assert!(out.status.success());
        if cli == "ssh" {
            // The marker now holds the agent; the jar run acts on another event.
            std::fs::remove_file(w.path().join(format!("dev__{id}.interrupted"))).unwrap();
            w.jenkins.set_state(&json!({"nodes": [node.clone()]}));
            w.events(QUEUE, json!([warning(&w, "e-2", "dev", &id)]));
        }
    }
    let offline = offline_commands(&w);
    assert_eq!(offline.len(), 2, "{offline:?}");
    for argv in offline {
        assert_eq!(argv[..3], ["offline-node".to_string(), name.clone(), "-m".to_string()]);
    }
}

#[test]
fn a_warning_sent_while_the_manager_naps_takes_the_node_offline_before_the_next_dump() {
    // A 30 s nap between the two passes; the warning comes after the first
    // pass. moto's SQS holds a long poll until a message arrives.
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let w = World::new(json!([{"env": "dev", "state": "running", "labels": "dev_spot"}]));
    let node = w.node(0, false, false, 0);
    w.jenkins.set_state(&json!({"nodes": [node]}));
    let id = s(&w.agent(0)["instance_id"]);
    w.events(QUEUE, json!([]));
    let mut manager = w.manager(&["--loop_counter", "2", "--skip_security_group", "--interruption_queue", QUEUE]);
    // --aws_timeout 3: an SDK attempt of 1 s; the poll's own timeouts let
    // it wait up to 20 s all the same.
    let mut child =
        manager.args(["--pass_interval", "30", "--aws_timeout", "3"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut log = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("pass 1/2") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the manager ended before its first pass");
    }
    let sent = Instant::now();
    w.events(QUEUE, json!([warning(&w, "e-1", "dev", &id)]));
    let mut rest = String::new();
    while !line.contains("offline-node") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "no offline-node:\n{rest}");
        rest.push_str(&line);
    }
    let acted = sent.elapsed();
    std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(acted < Duration::from_secs(15), "the run waited out its nap ({acted:?}):\n{rest}");
    let offline = offline_commands(&w);
    assert_eq!(offline.len(), 1, "{offline:?}\n{rest}");
    assert_eq!(offline[0][1], s(&node["slaveName"]));
    // From the nap itself: Jenkins hears before the next pass observes.
    let words: Vec<String> = w.jenkins.commands().into_iter().map(|c| c[0].clone()).collect();
    let dumps: Vec<usize> = words.iter().enumerate().filter(|(_, w)| *w == "groovy").map(|(at, _)| at).collect();
    assert_eq!(dumps.len(), 2, "{words:?}");
    let at = words.iter().position(|w| w == "offline-node").unwrap();
    assert!(dumps[0] < at && at < dumps[1], "offline-node not between the dumps: {words:?}");
    assert_eq!(w.csv("properties_error.csv")["spot_interruptions"], 1, "counted by the next pass");
    assert_eq!(w.events(QUEUE, json!([]))["dev"], 0, "the message was deleted");
    assert_eq!(w.csv("properties_error.csv")["interruption_failed"], 0, "{rest}");
}

#[test]
fn check_finds_the_interruption_queue_in_each_env_or_names_the_fix() {
    let w = World::new(json!([]));
    w.events(QUEUE, json!([]));
    let check = |queue: &str| {
        let mut cmd = w.command();
        cmd.arg("check")
            .args(["--url", &w.jenkins.url(), "--id_rsa", "id_rsa", "--jenkins_user", common::USER])
            .args(["--owner_email", "ops@example.com", "--ami_ids", &w.ami_ids(), "--cli", "ssh"])
            .args(["--skip_security_group", "--interruption_queue", queue]);
        common::output(cmd)
    };
    let out = check(QUEUE);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for env in ["dev", "prod"] {
        let row = format!("{env}: interruption queue {QUEUE}");
        assert!(table.lines().any(|l| l.starts_with('✔') && l.contains(&row)), "{row}: {table}");
    }

    let out = check("no-such-queue");
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = table.lines().filter(|l| l.starts_with('✘')).collect();
    assert_eq!(failed.len(), 2, "{table}");
    for (line, env) in failed.iter().zip(["dev", "prod"]) {
        assert!(line.contains(&format!("{env}: interruption queue no-such-queue")), "{line}");
        assert!(line.contains("create the queue"), "{line}");
    }
}

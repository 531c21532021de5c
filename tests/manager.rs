//! The built binary against moto's server (two envs in two accounts, reached
//! through assumed roles) and the Jenkins emulator, over both CLI transports.

mod common;

use common::{item, s, World};
use serde_json::{json, Value};

const ORIGINAL_KEY: &str = "job-000___0229e1082c8dd9a2f7f2d7f51901a614";

/// Pre-existing agents, by index:
/// 0 dev stopped, last used by job-000 · 1 dev stopped, another candidate ·
/// 2 dev running, idle node → stop · 3 dev stopped on the old AMI → retire ·
/// 4 prod running spot, idle node → terminate · 5 dev running, node marked
/// to go but a build is on it → keep.
fn fleet_world() -> World {
    World::new(json!([
        {"env": "dev", "state": "stopped", "labels": "dev"},
        {"env": "dev", "state": "stopped", "labels": "dev"},
        {"env": "dev", "state": "running", "labels": "dev"},
        {"env": "dev", "state": "stopped", "labels": "dev", "ami": "old"},
        {"env": "prod", "state": "running", "labels": "prod_spot"},
        {"env": "dev", "state": "running", "labels": "dev"},
    ]))
}

fn scales_up_and_down_across_two_accounts(cli: &str) {
    let w = fleet_world();
    let last_used = format!("dev-{}", s(&w.agent(0)["private_ip"]));
    w.jenkins.set_state(&json!({
        "queue": [
            item("job-000", "dev", &last_used, "\nBRANCH=master\nBUILD_NO=0"),
            item("folder/job-001", "dev_spot_c6i.large", "UNKNOWN", "NONE"),
            item("job-002", "prod_shared", "UNKNOWN", "NONE"),
            item("job-003", "linux && docker", "UNKNOWN", "NONE"),
        ],
        "nodes": [w.node(2, true, true, 0), w.node(4, true, true, 0), w.node(5, true, true, 1)],
    }));

    let out = w.run(&["--cli", cli, "--loop_counter", "2", "--skip_security_group"]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);

    let id = |i: usize| s(&w.agent(i)["instance_id"]);
    let state = |i: usize| s(&w.instance(&id(i))["state"]);
    assert_eq!(state(0), "running", "the last-used stopped agent is started");
    assert_eq!(state(1), "stopped", "the other candidate is left alone");
    assert_eq!(state(2), "stopped", "the idle agent is stopped");
    assert_eq!(state(3), "terminated", "the stopped agent on the old AMI is retired");
    assert_eq!(state(4), "terminated", "an idle spot agent is terminated");
    assert_eq!(state(5), "running", "an agent with a busy executor is never stopped");
    for i in [0, 1, 2, 5] {
        let volumes = &w.instance(&id(i))["volumes"];
        assert_eq!(volumes[0]["delete_on_termination"], true, "the inventory set it on agent {i}: {volumes}");
    }

    let fleet = w.fleet();
    let known: Vec<String> = (0..6).map(id).collect();
    let new: Vec<&Value> = fleet.iter().filter(|r| !known.contains(&s(&r["instance"]))).collect();
    assert_eq!(new.len(), 2, "one spot agent in dev, one shared agent in prod: {new:#?}");
    assert!(fleet.iter().all(|r| r["env"] != "(master)"), "nothing lands in the master's account");

    let env = |name: &str| &w.world["envs"][name];
    let spot = new.iter().find(|r| r["env"] == "dev").expect("a new dev agent");
    assert_eq!(spot["lifecycle"], "spot");
    assert_eq!(spot["type"], "c6i.large");
    assert_eq!(spot["labels"], "dev_spot_c6i.large");
    assert_eq!(spot["ami"], env("dev")["ami"]);
    assert_eq!(spot["groups"], json!([env("dev")["sg"]]));
    assert_eq!(spot["profile"], env("dev")["instance_profile_arn"]);
    assert_eq!(spot["key_name"], "jenkins.cloud");
    assert!(env("dev")["subnets"].as_array().unwrap().iter().any(|sn| sn["id"] == spot["subnet"]));
    assert_eq!(spot["tags"]["is_spot"], "true");
    assert_eq!(spot["tags"]["owner"], "ops@example.com");
    assert_eq!(spot["volumes"][0]["delete_on_termination"], true);

    let shared = new.iter().find(|r| r["env"] == "prod").expect("a new prod agent");
    assert_eq!(shared["lifecycle"], "on-demand");
    assert_eq!(shared["ami"], env("prod")["ami"]);
    let slave_data: Value = serde_json::from_str(shared["tags"]["slave_data"].as_str().unwrap()).unwrap();
    assert_eq!(slave_data["num_of_executors"], 5);
    assert_eq!(slave_data["slave_labels"], "prod_shared");
    assert_eq!(slave_data["description"], "Created by Swarm");

    // Markers named as the original named them.
    assert!(w.path().join(format!("working_on_{ORIGINAL_KEY}.working")).exists());
    let start = std::fs::read_to_string(w.path().join(format!("dev__{}.start_instance", id(0)))).unwrap();
    assert!(start.contains("labels=dev\n") && start.contains(&format!("instance_id={}", id(0))), "{start}");

    let run = w.csv("properties_run.csv");
    assert_eq!(
        (run["instances_started"], run["instances_created"], run["instances_stopped"], run["instances_terminated"]),
        (1, 2, 1, 2)
    );
    assert_eq!(
        w.csv("properties_error.csv")["job_on_queue"],
        0,
        "handled items waiting on markers are not job_on_queue"
    );
    let counts = w.csv("properties_instance_count.csv");
    assert_eq!(counts["dev"], 5, "the original's key: the label set joined by _");
    assert_eq!(counts.get("prod_spot"), None, "the spot agent terminated this pass is not counted");

    // Jenkins saw one dump command per pass, with both current AMIs, and the
    // GC build of the first pass.
    let mut amis = vec![s(&env("dev")["ami"]), s(&env("prod")["ami"])];
    amis.sort();
    let mut dump = vec!["groovy".to_string(), "=".to_string()];
    dump.extend(amis);
    dump.push(format!("ami:dev={}", s(&env("dev")["ami"])));
    dump.push(format!("ami:prod={}", s(&env("prod")["ami"])));
    dump.extend(["idle_minutes=45".to_string(), "hourly_billing=false".to_string()]);
    let gc = ["build", "util-slave-manager-garbage-collector", "-s", "-v"].map(String::from).to_vec();
    assert_eq!(w.jenkins.commands(), vec![dump.clone(), gc, dump]);

    let first = log.lines().find(|l| l.contains("pass 1/2, ")).expect("pass 1 line");
    assert!(first.contains("s left: queue 4, agents "), "{first}");
    assert!(log.contains("pass 2/2: queue 4, agents "), "{log}");
    assert!(!log.contains('\x1b'), "NO_COLOR: no escape codes");
    assert_eq!(log.matches("linux && docker").count(), 1, "an unusable label is reported once");
}

#[test]
fn scales_up_and_down_across_two_accounts_over_ssh() {
    scales_up_and_down_across_two_accounts("ssh");
}

#[test]
fn scales_up_and_down_across_two_accounts_with_the_jar() {
    scales_up_and_down_across_two_accounts("jar");
}

#[test]
fn a_failed_dump_scales_nothing_and_counts_jar_file_error() {
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    for fault in ["garbage", "truncated", "fail"] {
        w.jenkins.fault(&json!({"groovy": fault}));
        let out = w.run(&["--cli", "ssh", "--loop_counter", "1"]);
        assert!(out.status.success(), "a failed dump is not a failed run");
        assert_eq!(s(&w.instance(&s(&w.agent(0)["instance_id"]))["state"]), "stopped", "{fault}");
        assert_eq!(w.csv("properties_error.csv")["jar_file_error"], 1, "{fault}");
        assert_eq!(w.csv("properties_run.csv")["instances_started"], 0);
    }
}

#[test]
fn honours_the_original_scripts_markers() {
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev"}]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "\nBRANCH=master\nBUILD_NO=0")]}));
    // Left by the Python script a moment ago: the item is being handled.
    std::fs::write(w.path().join(format!("working_on_{ORIGINAL_KEY}.working")), "").unwrap();
    // And one for a job that has left the queue: to be cleaned up.
    std::fs::write(w.path().join("working_on_gone___b50339a10e1de285ac99d4c3990b8693.working"), "").unwrap();

    let out = w.run(&["--cli", "ssh", "--loop_counter", "1"]);
    assert!(out.status.success());
    assert_eq!(s(&w.instance(&s(&w.agent(0)["instance_id"]))["state"]), "stopped");
    // Waiting behind a marker is not the original's job_on_queue (an item
    // waiting while an online agent of its label has a free executor).
    assert_eq!(w.csv("properties_error.csv")["job_on_queue"], 0);
    assert!(w.path().join(format!("working_on_{ORIGINAL_KEY}.working")).exists());
    assert!(!w.path().join("working_on_gone___b50339a10e1de285ac99d4c3990b8693.working").exists());
}

#[test]
fn at_the_cap_room_is_made_in_the_items_own_env() {
    // dev is at its cap of 1 with a stopped agent of another label; prod has
    // a stopped agent that must not be touched.
    let w = World::new(json!([
        {"env": "dev", "state": "stopped", "labels": "dev_c5.large"},
        {"env": "prod", "state": "stopped", "labels": "prod_c5.large"},
    ]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--max_num_of_slaves_in_env", "1"]);
    assert!(out.status.success());
    assert_eq!(s(&w.instance(&s(&w.agent(0)["instance_id"]))["state"]), "terminated");
    assert_eq!(s(&w.instance(&s(&w.agent(1)["instance_id"]))["state"]), "stopped");
    let dev_live: Vec<Value> =
        w.fleet().into_iter().filter(|r| r["env"] == "dev" && r["state"] != "terminated").collect();
    assert_eq!(dev_live.len(), 1, "the cap holds: {dev_live:#?}");
    assert_eq!(dev_live[0]["labels"], "dev");
}

#[test]
fn over_the_cap_stopped_agents_go_and_nothing_is_created() {
    // The cap was lowered to 2 with six stopped agents (made by the Python
    // script: root volumes kept on termination) and four `dev` items queued.
    let stopped = json!({"env": "dev", "state": "stopped", "labels": "dev_c5.large"});
    let w = World::new(json!([stopped, stopped, stopped, stopped, stopped, stopped]));
    let queue: Vec<Value> = (0..4).map(|n| item(&format!("job-{n}"), "dev", "UNKNOWN", "NONE")).collect();
    w.jenkins.set_state(&json!({ "queue": queue }));
    let before = w.fleet().len();

    // Pass 1 is also an inventory pass (on the snapshot taken before the
    // make-room terminations).
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--max_num_of_slaves_in_env", "2"]);
    assert!(out.status.success());
    let fleet = w.fleet();
    assert_eq!(fleet.len(), before, "no RunInstances: {fleet:#?}");
    let live: Vec<&Value> = fleet.iter().filter(|r| r["env"] == "dev" && r["state"] != "terminated").collect();
    assert_eq!(live.len(), 2, "usage falls to the cap: {live:#?}");
    let run = w.csv("properties_run.csv");
    assert_eq!((run["instances_created"], run["instances_terminated"]), (0, 4), "each counted once");
    let errors = w.csv("properties_error.csv");
    assert_eq!((errors["action_failed"], errors["inventory_failed"]), (0, 0), "nothing acted twice");
    let leaked: Vec<Value> = w.volumes().into_iter().filter(|v| v["state"] == "available").collect();
    assert!(leaked.is_empty(), "volumes go with their instance: {leaked:#?}");
}

#[test]
fn an_agent_make_room_terminates_is_not_terminated_again_by_the_inventory() {
    // At the cap of 1, make-room takes the stopped agent on an old AMI, which
    // the first pass's inventory would retire too, from its older snapshot.
    let w = World::new(json!([{"env": "dev", "state": "stopped", "labels": "dev_c5.large", "ami": "old"}]));
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")]}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--max_num_of_slaves_in_env", "1"]);
    assert!(out.status.success());
    assert_eq!(s(&w.instance(&s(&w.agent(0)["instance_id"]))["state"]), "terminated");
    let run = w.csv("properties_run.csv");
    assert_eq!((run["instances_created"], run["instances_terminated"]), (1, 1), "terminated and counted once");
    let errors = w.csv("properties_error.csv");
    assert_eq!((errors["action_failed"], errors["inventory_failed"]), (0, 0));
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.matches(&format!("terminate {}", s(&w.agent(0)["instance_id"]))).count(), 1, "{log}");
}

#[test]
fn bad_input_exits_before_touching_aws_or_jenkins() {
    let w = World::new(json!([]));
    std::fs::write(w.path().join("broken.json"), r#"{"jenkins-master": {}}"#).unwrap();
    let url = w.jenkins.url();
    let ami_ids = w.ami_ids();
    let base = ["--url", url.as_str(), "--id_rsa", "id_rsa", "--owner_email", "ops@example.com"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--ami_ids", &ami_ids, "--environment", "broken.json"], "jenkins-master-sg-name"),
        (vec!["--ami_ids", "nowhere:ami-0123"], "\"nowhere\" is not in"),
        (vec!["--ami_ids", &ami_ids, "--required_ip_list", "443:0.0.0.0/0", "22:1.2.3.4"], "22:1.2.3.4"),
        (vec!["--ami_ids", &ami_ids, "--id_rsa", "no-such-key"], "no-such-key"),
        (vec!["--ami_ids", &ami_ids, "--max_spot_price", "cheap"], "--max_spot_price"),
        (vec!["--ami_ids", &ami_ids, "--gc_job", "@/etc/passwd"], "--gc_job"),
        (vec!["--ami_ids", &ami_ids, "--sqs_jobs", " , "], "--sqs_jobs"),
        (vec!["--ami_ids", &ami_ids, "--sqs_senders", "arn:aws:iam::123456789012:user/ci"], "--sqs_senders"),
    ];
    for (args, expect) in cases {
        let mut cmd = w.command();
        cmd.args(base).args(["--jenkins_user", common::USER]).args(&args);
        let out = common::output(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line for {args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // No --url at all.
    let mut cmd = w.command();
    cmd.args(["--id_rsa", "id_rsa", "--owner_email", "x@example.com", "--jenkins_user", "u", "--ami_ids", &ami_ids]);
    let out = common::output(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    // No Jenkins user at all.
    let mut cmd = w.command();
    cmd.args(base).args(["--ami_ids", &ami_ids]);
    let out = common::output(cmd);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jenkins_user"));

    assert!(w.jenkins.commands().is_empty(), "Jenkins was not called");
    assert!(w.fleet().is_empty(), "AWS was not changed");
    assert!(!w.path().join("properties_run.csv").exists());
}

#[test]
fn aws_calls_per_pass_do_not_grow_with_the_queue() {
    let w = World::new(json!([]));
    let queue: Vec<Value> = (0..40).map(|i| item(&format!("job-{i:03}"), "dev", "UNKNOWN", "NONE")).collect();
    w.jenkins.set_state(&json!({"queue": queue}));
    let out = w.run(&[
        "--cli",
        "ssh",
        "--loop_counter",
        "3",
        "--max_num_of_slaves_in_env",
        "2",
        "--debug",
        "--skip_security_group",
    ]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    let cost = |pass: u32| -> u64 {
        let line = log.lines().find(|l| l.contains(&format!("pass {pass} cost "))).expect("cost line");
        line.split("cost ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    // One describe per env, plus one launch per subnet the two creates the
    // cap allows fall in (the env has two; which depends on their tokens).
    assert!((2 + 1..=2 + 2).contains(&cost(1)), "{}", cost(1));
    assert_eq!(cost(2), 2, "40 queued items, nothing to do: just the describes");
    assert_eq!(cost(3), 2);
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 2);
}

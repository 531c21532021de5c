//! The warm pool (`--warm`, issue 14) against moto's server and the Jenkins
//! emulator: filled on an empty queue, its agents taken offline once their
//! nodes are online and idle and stopped once the next dump shows them
//! offline and idle, a queued item of its label then served by a start.
//! With `--spare`, one idle executor of the label is kept online beside the
//! pool, refilled from it. The emulator registers no nodes by itself: each
//! run's dump is set to what Swarm would have registered by then.

mod common;

use common::{item, s, World};
use serde_json::{json, Value};

/// The dump entry of an online node of a fleet row.
fn online_node(row: &Value, busy: u32) -> Value {
    json!({
        "slaveName": format!("{}-{}", s(&row["env"]), s(&row["private_ip"])),
        "labels": format!("[{}, swarm]", s(&row["labels"])),
        "isOffLine": "false",
        "description": format!("Created by Swarm InstanceID={} AmiId={}", s(&row["instance"]), s(&row["ami"])),
        "ami_id": row["ami"],
        "ope_idle_count": if busy > 0 { "0" } else { "1" },
        "busy_executors": busy.to_string(),
        "num_executors": "1",
        "connectTime": "0",
        "idle_seconds": "10",
        "terminate_me": "false",
    })
}

fn dev_agents(w: &World) -> Vec<Value> {
    w.fleet().into_iter().filter(|r| r["env"] == "dev" && r["state"] != "terminated").collect()
}

#[test]
fn warm_pool_is_filled_taken_offline_then_stopped_once_set_up_and_serves_the_next_job_by_a_start() {
    let w = World::new(json!([]));
    w.jenkins.set_state(&json!({"queue": [], "nodes": []}));

    // An empty queue: two dev agents are created for the pool, once (the
    // second pass counts them as booting).
    let out = w.run(&["--cli", "ssh", "--loop_counter", "2", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    let pool = dev_agents(&w);
    assert_eq!(pool.len(), 2, "{pool:#?}");
    for agent in &pool {
        assert_eq!(agent["labels"], "dev");
        assert_eq!(agent["lifecycle"], "on-demand");
        assert_eq!(agent["tags"]["slave_manager:warm"], "dev", "told apart: {agent}");
        assert_eq!(agent["state"], "running");
    }
    assert!(w.fleet().iter().all(|r| r["env"] != "prod"), "no pool for prod");
    let run = w.csv("properties_run.csv");
    assert_eq!(run["instances_created"], 2);
    assert_eq!(w.csv("properties_error.csv")["warm_pool_created"], 2);
    let pool_ids: Vec<String> = pool.iter().map(|r| s(&r["instance"])).collect();
    assert!(
        !std::fs::read_dir(w.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".working")),
        "a pool agent waits for no queue item: no working marker"
    );

    // Their nodes came online; one is busy (a build found it): only the idle
    // one is taken offline, at once, not after the idle timeout — and not
    // stopped yet: a build Jenkins gave it since the dump would die. The
    // busy one serves builds, no pool member: its place is refilled.
    w.jenkins.set_state(&json!({"queue": [], "nodes": [online_node(&pool[0], 0), online_node(&pool[1], 1)]}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    let offline: Vec<Vec<String>> = w.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!(offline[0][1], s(&online_node(&pool[0], 0)["slaveName"]));
    assert!(offline[0][3].starts_with("warm pool"), "{offline:?}");
    for id in &pool_ids {
        assert_eq!(s(&w.instance(id)["state"]), "running", "nothing stopped from the dump that saw it online");
    }
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 1, "the busy one's place is refilled");
    let refill: Vec<String> =
        dev_agents(&w).iter().map(|r| s(&r["instance"])).filter(|id| !pool_ids.contains(id)).collect();
    assert_eq!(refill.len(), 1, "{refill:?}");

    // The next dump shows it offline by us with no build (the dump script
    // says terminate_me): stopped now, the pool's stop.
    let gone = json!({"isOffLine": "true", "terminate_me": "true"});
    let mut offline_idle = online_node(&pool[0], 0);
    offline_idle.as_object_mut().unwrap().extend(gone.as_object().unwrap().clone());
    w.jenkins.set_state(&json!({"queue": [], "nodes": [offline_idle, online_node(&pool[1], 1)]}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    assert_eq!(s(&w.instance(&pool_ids[0])["state"]), "stopped", "set up, offline and idle: stopped");
    assert_eq!(s(&w.instance(&pool_ids[1])["state"]), "running", "a build runs on it: kept");
    assert_eq!(w.instance(&pool_ids[0])["tags"]["slave_manager:warmed"], "true");
    assert_eq!(w.csv("properties_error.csv")["warm_pool_stopped"], 1);
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 0, "the refill, booting, counts");

    // Its build is done: taken offline, then stopped too.
    w.jenkins.set_state(&json!({"queue": [], "nodes": [online_node(&pool[1], 0)]}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    assert_eq!(s(&w.instance(&pool_ids[1])["state"]), "running");
    let mut offline_idle = online_node(&pool[1], 0);
    offline_idle.as_object_mut().unwrap().extend(gone.as_object().unwrap().clone());
    w.jenkins.set_state(&json!({"queue": [], "nodes": [offline_idle]}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    assert_eq!(s(&w.instance(&pool_ids[1])["state"]), "stopped");
    let run = w.csv("properties_run.csv");
    assert_eq!((run["instances_stopped"], run["instances_created"]), (1, 0), "the pool is full, and one over");

    // A dev job: a pool agent is started for it, not a new one created;
    // the pool keeps its two (the other, and the refill booting) and
    // creates nothing.
    w.jenkins.set_state(&json!({"queue": [item("job-000", "dev", "UNKNOWN", "NONE")], "nodes": []}));
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    let run = w.csv("properties_run.csv");
    assert_eq!(run["instances_started"], 1);
    let started: Vec<&String> = pool_ids.iter().filter(|id| s(&w.instance(id)["state"]) == "running").collect();
    assert_eq!(started.len(), 1, "one pool agent started for the job");
    assert_eq!(run["instances_created"], 0, "nothing is created");
    assert_eq!(s(&w.instance(&refill[0])["state"]), "running");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains(&format!("start {} for label dev (job-000", started[0])), "{log}");
}

/// `node` as the dump shows it once the pool's offline-node took hold.
fn offline_by_us(mut node: Value) -> Value {
    let gone = json!({"isOffLine": "true", "terminate_me": "true"});
    node.as_object_mut().unwrap().extend(gone.as_object().unwrap().clone());
    node
}

#[test]
fn a_spare_is_kept_idle_online_beside_the_pool_and_refilled_from_it() {
    let w = World::new(json!([]));
    w.jenkins.set_state(&json!({"queue": [], "nodes": []}));
    let flags = ["--cli", "ssh", "--skip_security_group", "--warm", "dev=1", "--spare", "dev=1"];
    let run = |passes: &str| {
        let out = w.run(&[&flags[..], &["--loop_counter", passes, "--debug"]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // An empty queue: one dev agent for the spare, one for the pool, once
    // (the second pass counts both on their way).
    let log = run("2");
    assert!(log.contains("spare dev: 0 of 1 idle executors ready"), "{log}");
    assert!(log.contains("spare dev: 1 of 1 idle executors ready"), "{log}");
    let agents = dev_agents(&w);
    assert_eq!(agents.len(), 2, "{agents:#?}");
    let (pool, spare): (Vec<&Value>, Vec<&Value>) =
        agents.iter().partition(|a| a["tags"]["slave_manager:warm"] == "dev");
    assert_eq!((pool.len(), spare.len()), (1, 1), "{agents:#?}");
    let (pool, spare) = (pool[0].clone(), spare[0].clone());
    let errors = w.csv("properties_error.csv");
    assert_eq!((errors["spare_created"], errors["warm_pool_created"]), (1, 1));
    assert_eq!(w.csv("properties_run.csv")["instances_created"], 2);
    assert!(
        !std::fs::read_dir(w.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".working")),
        "a spare waits for no queue item: no working marker"
    );

    // Both online and idle: the spare has its executor, so the pool agent
    // goes offline, then is stopped; the spare agent stays online.
    w.jenkins.set_state(&json!({"queue": [], "nodes": [online_node(&spare, 0), online_node(&pool, 0)]}));
    run("1");
    let offline: Vec<Vec<String>> = w.jenkins.commands().into_iter().filter(|c| c[0] == "offline-node").collect();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!(offline[0][1], s(&online_node(&pool, 0)["slaveName"]));
    w.jenkins.set_state(&json!({"queue": [], "nodes": [online_node(&spare, 0), offline_by_us(online_node(&pool, 0))]}));
    run("1");
    assert_eq!(s(&w.instance(&s(&pool["instance"]))["state"]), "stopped");
    assert_eq!(s(&w.instance(&s(&spare["instance"]))["state"]), "running", "one dev agent idle online");
    let run_csv = w.csv("properties_run.csv");
    assert_eq!((run_csv["instances_created"], run_csv["instances_started"]), (0, 0), "nothing more is needed");

    // A build takes the spare's executor: the pool's agent is started as
    // the new spare, and the pool refills by a create.
    w.jenkins.set_state(&json!({"queue": [], "nodes": [online_node(&spare, 1)]}));
    let log = run("1");
    assert_eq!(s(&w.instance(&s(&pool["instance"]))["state"]), "running", "{log}");
    let errors = w.csv("properties_error.csv");
    assert_eq!((errors["spare_started"], errors["spare_created"], errors["warm_pool_created"]), (1, 0, 1));
    assert!(
        log.contains(&format!("start {} for label dev (spare-dev-1, spare: 0 of 1", s(&pool["instance"]))),
        "{log}"
    );
}

#[test]
fn a_spot_label_in_spare_exits_2_with_one_line_before_touching_aws_or_jenkins() {
    let w = World::new(json!([])).with_proxy();
    for (spare, says) in [("dev_spot=1", "spot"), ("dev=0", "at least 1"), ("nowhere=1", "names no known environment")]
    {
        let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--spare", spare]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spare}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line for {spare}: {stderr}");
        assert!(stderr.contains("--spare") && stderr.contains(says), "{spare}: {stderr}");
        assert!(out.stdout.is_empty(), "{spare}");
    }
    assert!(w.jenkins.commands().is_empty(), "Jenkins was not called");
    assert!(w.jenkins.requests().is_empty(), "not even for its SSH endpoint");
    assert!(w.proxy().calls().is_empty(), "AWS was not called: {:?}", w.proxy().calls());
    assert!(w.fleet().is_empty(), "AWS was not changed");
}

#[test]
fn a_dry_run_plans_the_pool_and_touches_nothing() {
    let w = World::new(json!([]));
    w.jenkins.set_state(&json!({"queue": [], "nodes": []}));
    let out = w.run(&["--cli", "ssh", "--dry_run", "--skip_security_group", "--warm", "dev=2"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.matches("warm pool").count(), 2, "{table}");
    assert!(w.fleet().is_empty(), "nothing launched");
}

#[test]
fn bad_warm_flags_exit_2_with_one_line_before_touching_aws_or_jenkins() {
    // AWS through the recording proxy: not one call may reach it.
    let w = World::new(json!([])).with_proxy();
    for (warm, says) in [
        ("dev_spot=1", "spot"),
        ("nowhere=1", "names no known environment"),
        ("dev=many", "is not a number"),
        ("dev=2@7-19", "is not an hour"),
        ("dev=2@19-19", "empty window"),
        ("dev", "LABEL=N"),
    ] {
        let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--warm", warm]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{warm}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line for {warm}: {stderr}");
        assert!(stderr.contains("--warm") && stderr.contains(says), "{warm}: {stderr}");
        assert!(out.stdout.is_empty(), "{warm}");
    }
    assert!(w.jenkins.commands().is_empty(), "Jenkins was not called");
    assert!(w.jenkins.requests().is_empty(), "not even for its SSH endpoint");
    assert!(w.proxy().calls().is_empty(), "AWS was not called: {:?}", w.proxy().calls());
    assert!(w.fleet().is_empty(), "AWS was not changed");
    assert!(!w.path().join("properties_run.csv").exists());
    // The same flags with a plain label do reach both.
    let out = w.run(&["--cli", "ssh", "--loop_counter", "1", "--skip_security_group", "--warm", "dev=1"]);
    assert!(out.status.success());
    assert!(!w.proxy().calls().is_empty() && !w.jenkins.commands().is_empty());
}

//! The master's security group, the GC trigger and SQS build requests,
//! against moto's server and the Jenkins emulator.

mod common;

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{IpPermission, IpRange};
use common::{block_on, s, World};
use serde_json::{json, Value};
use slave_manager::plan::security_group::Rule;

const MASTER_REGION: &str = "us-east-2";

fn rules(w: &World) -> BTreeSet<Rule> {
    let ec2 = aws_sdk_ec2::Client::new(&w.sdk(MASTER_REGION));
    let sg = s(&w.world["master_sg"]);
    block_on(slave_manager::aws::security_group::ipv4_rules(&ec2, &sg)).unwrap().into_iter().map(|h| h.rule).collect()
}

fn add_rule(w: &World, protocol: &str, from: i32, to: i32, cidr: &str) {
    let ec2 = aws_sdk_ec2::Client::new(&w.sdk(MASTER_REGION));
    let perm = IpPermission::builder()
        .ip_protocol(protocol)
        .from_port(from)
        .to_port(to)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build();
    block_on(ec2.authorize_security_group_ingress().group_id(s(&w.world["master_sg"])).ip_permissions(perm).send())
        .unwrap();
}

fn rule(protocol: &str, from: i32, to: i32, cidr: &str) -> Rule {
    Rule { protocol: protocol.into(), from_port: from, to_port: to, cidr: cidr.into() }
}

fn sg_args<'a>(scm_host: &'a str, passes: &'a str) -> Vec<&'a str> {
    vec![
        "--cli",
        "ssh",
        "--gc_job",
        "",
        "--jenkins_master_region",
        MASTER_REGION,
        "--scm_host",
        scm_host,
        "--loop_counter",
        passes,
        "--required_ip_list",
        "443:0.0.0.0/0",
        "80:0.0.0.0/0",
    ]
}

#[test]
fn security_group_follows_the_prod_agents_over_several_passes() {
    // A running prod spot agent whose node Jenkins wants gone.
    let w = World::new(json!([{"env": "prod", "state": "running", "labels": "prod_spot"}]));
    let public_ip = s(&w.agent(0)["public_ip"]);
    w.jenkins.set_state(&json!({"nodes": [w.node(0, true, true, 0)]}));
    add_rule(&w, "tcp", 443, 443, "0.0.0.0/0");
    add_rule(&w, "tcp", 22, 22, "9.9.9.9/32");
    add_rule(&w, "udp", 53, 53, "0.0.0.0/0");
    add_rule(&w, "tcp", 1000, 2000, "10.0.0.0/8");

    // Pass 1 adds the agent's rule and terminates the agent; pass 4, the next
    // security-group round, sees it gone and revokes the rule.
    let out = w.run(&sg_args("localhost", "4"));
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    let agent_rule = format!("tcp 30001 {public_ip}/32");
    let added = log.find(&format!("added {agent_rule}")).expect("agent rule added");
    let revoked = log.find(&format!("revoked {agent_rule}")).expect("agent rule revoked");
    let pass_4 = log.find("pass 4/4").unwrap();
    assert!(added < log.find("pass 1/4").unwrap() && log.find("pass 3/4").unwrap() < revoked && revoked < pass_4);
    // Rules on ports the manager does not manage are other people's.
    for kept in ["tcp 22 9.9.9.9/32", "udp 53 0.0.0.0/0", "tcp 1000-2000 10.0.0.0/8"] {
        assert!(!log.contains(&format!("revoked {kept}")), "{kept}: {log}");
    }
    let wanted = BTreeSet::from([
        rule("tcp", 443, 443, "0.0.0.0/0"),
        rule("tcp", 80, 80, "0.0.0.0/0"),
        rule("tcp", 443, 443, "127.0.0.0/24"),
        rule("tcp", 22, 22, "9.9.9.9/32"),
        rule("udp", 53, 53, "0.0.0.0/0"),
        rule("tcp", 1000, 2000, "10.0.0.0/8"),
    ]);
    assert_eq!(rules(&w), wanted, "the agent's rule revoked, the rest added, unmanaged rules kept");
    assert_eq!(w.csv("properties_error.csv")["security_group_failed"], 0);
}

#[test]
fn the_security_group_never_locks_the_operators_out() {
    let w = World::new(json!([]));
    add_rule(&w, "tcp", 22, 22, "1.2.3.0/24");
    add_rule(&w, "tcp", 443, 443, "0.0.0.0/0");
    add_rule(&w, "tcp", 80, 80, "0.0.0.0/0");
    add_rule(&w, "tcp", 5432, 5432, "10.0.0.0/8");
    let base = ["--cli", "ssh", "--gc_job", "", "--jenkins_master_region", MASTER_REGION, "--scm_host", "localhost"];

    // No --required_ip_list: nothing on 22/443/80 (or anyone's port) goes.
    let out = w.run(&[&base[..], &["--loop_counter", "1"]].concat());
    assert!(out.status.success());
    let got = rules(&w);
    for kept in
        [rule("tcp", 22, 22, "1.2.3.0/24"), rule("tcp", 443, 443, "0.0.0.0/0"), rule("tcp", 80, 80, "0.0.0.0/0")]
    {
        assert!(got.contains(&kept), "{kept} survives an empty list: {got:?}");
    }
    assert!(got.contains(&rule("tcp", 5432, 5432, "10.0.0.0/8")));

    // Repeated flags add up, and a host-bits CIDR matches EC2's normalised rule.
    let out = w.run(
        &[
            &base[..],
            &["--loop_counter", "1", "--required_ip_list", "22:1.2.3.4/24", "--required_ip_list", "80:0.0.0.0/0"],
        ]
        .concat(),
    );
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!log.contains("revoked tcp 22 1.2.3.0/24"), "{log}");
    assert!(log.contains("host bits set; the rule kept is 1.2.3.0/24"), "{log}");
    let got = rules(&w);
    assert!(got.contains(&rule("tcp", 22, 22, "1.2.3.0/24")) && got.contains(&rule("tcp", 80, 80, "0.0.0.0/0")));
    assert!(got.contains(&rule("tcp", 443, 443, "0.0.0.0/0")), "443 is not a listed port: left alone");
    assert_eq!(w.csv("properties_error.csv")["security_group_failed"], 0);
}

#[test]
fn nothing_is_revoked_when_the_scm_lookup_fails() {
    let w = World::new(json!([]));
    add_rule(&w, "tcp", 443, 443, "140.82.112.0/24");
    let out = w.run(&sg_args("no-such-host.invalid", "1"));
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("nothing revoked this round: SCM host unknown"), "{log}");
    let got = rules(&w);
    assert!(got.contains(&rule("tcp", 443, 443, "140.82.112.0/24")), "the SCM rule survives: {got:?}");
    assert!(got.contains(&rule("tcp", 80, 80, "0.0.0.0/0")), "additions still happen: {got:?}");
}

#[test]
fn nothing_is_revoked_when_a_prod_describe_fails() {
    let w = World::new(json!([]));
    // A third env, named like prod, whose region moto cannot serve.
    let path = w.path().join("environment.json");
    let mut env: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut broken = env["environments"]["prod"].clone();
    broken["region"] = json!("xx-nowhere-1");
    env["environments"]["prod-broken"] = broken;
    std::fs::write(&path, env.to_string()).unwrap();
    add_rule(&w, "tcp", 30001, 30001, "3.3.3.3/32");

    let out = w.run(&sg_args("localhost", "1"));
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("prod agents unknown (describe failed in prod-broken)"), "{log}");
    assert!(rules(&w).contains(&rule("tcp", 30001, 30001, "3.3.3.3/32")), "a prod agent's rule survives");
    assert_eq!(w.csv("properties_error.csv")["describe_failed"], 1);
}

#[test]
fn the_gc_job_is_built_every_sixth_pass() {
    let w = World::new(json!([]));
    let gc = "util-slave-manager-garbage-collector";
    w.jenkins.set_state(&json!({"jobs": {gc: {"output": "Garbage collector executed: 12345 freed."}}}));
    let out = w.run(&["--cli", "ssh", "--skip_security_group", "--loop_counter", "7"]);
    assert!(out.status.success());
    let builds: Vec<Vec<String>> = w.jenkins.commands().into_iter().filter(|c| c[0] == "build").collect();
    let expected = vec!["build".to_string(), gc.to_string(), "-s".to_string(), "-v".to_string()];
    assert_eq!(builds, vec![expected.clone(), expected], "passes 1 and 7");
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.matches("gc: Garbage collector executed: 12345 freed.").count(), 2, "{log}");

    // A missing job is logged and counted, not fatal; an empty name turns GC off.
    let out = w.run(&["--cli", "ssh", "--skip_security_group", "--loop_counter", "1", "--gc_job", "no-such-gc"]);
    assert!(out.status.success());
    assert_eq!(w.csv("properties_error.csv")["gc_failed"], 1);
    let before = w.jenkins.commands().len();
    let out = w.run(&["--cli", "ssh", "--skip_security_group", "--loop_counter", "1", "--gc_job", ""]);
    assert!(out.status.success());
    assert_eq!(w.jenkins.commands()[before..].iter().filter(|c| c[0] == "build").count(), 0);
}

/// The injection set: only the first two messages may reach Jenkins (the
/// third reaches it and fails there), each with exactly its words.
fn sqs_messages() -> Vec<String> {
    let hostile = json!({"name": "job-a", "parameters": {
        "A": "x -p B=y", "C": "a && b; c", "Q": "it's \"quoted\"", "S": "$(reboot) `id`", "U": "ünï cödé 雪"}});
    let mut bodies = vec![
        hostile.to_string(),
        json!({"name": "team/job b", "action": "build"}).to_string(),
        json!({"name": "no-such-job"}).to_string(),
    ];
    for refused in [
        json!({"name": "job-a", "action": "shutdown"}),
        json!({"name": "job-a", "action": "safe-restart"}),
        json!({"name": "job-a", "action": "groovy"}),
        json!({"name": "job-a", "action": "Delete-Job"}),
        json!({"name": "job-a", "action": "  build"}),
        json!({"name": "job-a; shutdown"}),
        json!({"name": "job-a\nsafe-restart"}),
        json!({"name": "-p"}),
        json!({"name": "job-a", "parameters": {"A": "line\nbreak"}}),
        json!({"name": "job-a", "parameters": {"@/etc/passwd": "x"}}),
        json!({"action": "build"}),
    ] {
        bodies.push(refused.to_string());
    }
    bodies.push("build job-a && shutdown".to_string());
    bodies
}

#[test]
fn sqs_requests_run_exactly_the_allowed_commands() {
    let w = World::with_args(json!([]), &["--sqs-region", MASTER_REGION]);
    w.jenkins.set_state(&json!({"jobs": {"job-a": {"output": "ok"}, "team/job b": {"output": "ok"}}}));
    let sqs = aws_sdk_sqs::Client::new(&w.sdk(MASTER_REGION));
    let url = s(&w.world["sqs"]["queue_url"]);
    let bodies = sqs_messages();
    for body in &bodies {
        block_on(sqs.send_message().queue_url(&url).message_body(body).send()).unwrap();
    }

    // Passes 1 and 16 poll, 10 messages each.
    let account = s(&w.world["master_account"]);
    let out = w.run(&[
        "--cli",
        "ssh",
        "--skip_security_group",
        "--gc_job",
        "",
        "--loop_counter",
        "16",
        "--aws_sqs_account_id",
        &account,
        "--aws_sqs_region",
        MASTER_REGION,
    ]);
    assert!(out.status.success());

    let builds: Vec<Vec<String>> = w.jenkins.commands().into_iter().filter(|c| c[0] != "groovy").collect();
    let words = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let expected = vec![
        words(&[
            "build",
            "job-a",
            "-p",
            "A=x -p B=y",
            "-p",
            "C=a && b; c",
            "-p",
            "Q=it's \"quoted\"",
            "-p",
            "S=$(reboot) `id`",
            "-p",
            "U=ünï cödé 雪",
        ]),
        words(&["build", "team/job b"]),
        words(&["build", "no-such-job"]),
    ];
    let got: BTreeSet<Vec<String>> = builds.iter().cloned().collect();
    assert_eq!(builds.len(), 3, "{builds:#?}");
    assert_eq!(got, expected.into_iter().collect(), "exactly these commands, with exactly these words");

    let counts = w.csv("properties_sqs.csv");
    assert_eq!(counts["sqs_handled"], 2);
    assert_eq!(counts["sqs_dropped"] as usize, bodies.len() - 2);
    let left = block_on(sqs.receive_message().queue_url(&url).max_number_of_messages(10).send()).unwrap();
    assert!(left.messages().is_empty(), "every message was deleted");
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.matches("sqs message ").count(), bodies.len(), "each logged once with its id");
}

#[test]
fn sqs_log_lines_name_parameters_mask_values_and_are_bounded() {
    let w = World::with_args(json!([]), &["--sqs-region", MASTER_REGION]);
    w.jenkins.set_state(&json!({"jobs": {"job-a": {"output": "ok"}}}));
    let sqs = aws_sdk_sqs::Client::new(&w.sdk(MASTER_REGION));
    let url = s(&w.world["sqs"]["queue_url"]);
    let long = "x".repeat(100_000);
    let bodies = [
        json!({"name": "job-a", "parameters": {"PASSWORD": "hunter2-secret", "TOKEN": "t0k3n-secret"}}).to_string(),
        json!({"name": "no-such-job", "parameters": {"KEY": "s3cr3t-value"}}).to_string(),
        json!({"name": long}).to_string(),
        json!({"name": "job-a", "action": format!("delete-{long}")}).to_string(),
        json!({"name": "job-a", "action": {"x": long}}).to_string(),
        json!({"name": "job-a", "parameters": {long.clone(): "v"}}).to_string(),
        json!({"name": "job-a", "parameters": {"A": format!("{long}\n")}}).to_string(),
        format!("build job-a {long}"),
    ];
    for body in &bodies {
        block_on(sqs.send_message().queue_url(&url).message_body(body).send()).unwrap();
    }
    let account = s(&w.world["master_account"]);
    let out = w.run(&[
        "--cli",
        "ssh",
        "--skip_security_group",
        "--gc_job",
        "",
        "--loop_counter",
        "1",
        "--aws_sqs_account_id",
        &account,
        "--aws_sqs_region",
        MASTER_REGION,
    ]);
    assert!(out.status.success());
    let counts = w.csv("properties_sqs.csv");
    assert_eq!((counts["sqs_handled"], counts["sqs_dropped"]), (1, bodies.len() as u64 - 1));
    let log = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("sqs message ")).collect();
    assert_eq!(lines.len(), bodies.len(), "{log}");
    for line in &lines {
        assert!(line.chars().count() <= 600, "a line of {} chars: {:.300}…", line.chars().count(), line);
        for secret in ["hunter2", "t0k3n", "s3cr3t"] {
            assert!(!line.contains(secret), "a parameter value in the log: {line}");
        }
    }
    let ran = lines.iter().find(|l| l.contains(": ran ")).expect("the build is logged");
    assert!(ran.contains("PASSWORD") && ran.contains("TOKEN"), "parameter names are logged: {ran}");
    let failed = lines.iter().find(|l| l.contains("no-such-job")).expect("the failed build is logged");
    assert!(failed.contains("KEY"), "{failed}");
}

#[test]
fn sqs_requests_are_bounded_by_job_globs_and_senders() {
    let w = World::with_args(json!([]), &["--sqs-region", MASTER_REGION]);
    w.jenkins.set_state(&json!({"jobs": {"job-a": {"output": "ok"}, "team/job b": {"output": "ok"}}}));
    let sqs = aws_sdk_sqs::Client::new(&w.sdk(MASTER_REGION));
    let url = s(&w.world["sqs"]["queue_url"]);
    let send = |bodies: &[Value]| {
        for body in bodies {
            block_on(sqs.send_message().queue_url(&url).message_body(body.to_string()).send()).unwrap();
        }
    };
    let account = s(&w.world["master_account"]);
    let run = |extra: &[&str]| {
        let mut args = vec!["--cli", "ssh", "--skip_security_group", "--gc_job", "", "--loop_counter", "1"];
        args.extend(["--aws_sqs_account_id", &account, "--aws_sqs_region", MASTER_REGION]);
        args.extend(extra);
        let out = w.run(&args);
        assert!(out.status.success());
        let counts = w.csv("properties_sqs.csv");
        (String::from_utf8_lossy(&out.stdout).into_owned(), counts["sqs_handled"], counts["sqs_dropped"])
    };
    let builds =
        || w.jenkins.commands().into_iter().filter(|c| c[0] == "build").map(|c| c[1].clone()).collect::<Vec<_>>();

    // Job globs: matched against the full name, ignoring case as Jenkins
    // looks names up.
    send(&[json!({"name": "job-a"}), json!({"name": "team/job b"})]);
    let (log, handled, dropped) = run(&["--sqs_jobs", "JOB-*,other"]);
    assert_eq!((handled, dropped), (1, 1), "{log}");
    assert_eq!(builds(), ["job-a"]);
    assert!(log.contains(r#"job "team/job b" is not on --sqs_jobs"#), "{log}");

    // Senders: moto says every message comes from the IAM user AIDAIT2UOQQY3AUEKVGXU.
    send(&[json!({"name": "job-a"}), json!({"name": "team/job b"})]);
    let (log, handled, dropped) = run(&["--sqs_senders", "123456789012,AROAEXAMPLEROLEID0001"]);
    assert_eq!((handled, dropped), (0, 2), "{log}");
    assert_eq!(builds().len(), 1, "nothing more was built");
    assert!(log.contains(r#"sender "AIDAIT2UOQQY3AUEKVGXU" is not on --sqs_senders"#), "{log}");

    send(&[json!({"name": "team/job b"})]);
    let (log, handled, dropped) = run(&["--sqs_senders", "111111111111, AIDAIT2UOQQY3AUEKVGXU"]);
    assert_eq!((handled, dropped), (1, 0), "{log}");
    assert_eq!(builds(), ["job-a", "team/job b"]);
    assert!(log.contains("from AIDAIT2UOQQY3AUEKVGXU: ran"), "the sender is logged: {log}");
    let left = block_on(sqs.receive_message().queue_url(&url).max_number_of_messages(10).send()).unwrap();
    assert!(left.messages().is_empty(), "refused messages are deleted too");
}

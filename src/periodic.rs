//! The periodic jobs of a pass (SPEC A5 step 4): the master's security group
//! (every 3rd pass), the GC job (every 6th) and SQS build requests (every
//! 15th). Each logs and counts its failures; none can end the run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::time::Duration;

use crate::aws::security_group::SecurityGroupError;
use crate::config::{SecurityGroupConfig, SqsConfig};
use crate::counter::Counter;
use crate::jenkins::CliError;
use crate::model::EnvObservation;
use crate::plan::security_group::{plan_security_group, prod_agent_ips, SgPlan};
use crate::plan::PlanConfig;
use crate::requests::{clip, command_words, masked, ECHO_CHARS};
use crate::stats::Stats;
use crate::world::World;

/// Every how many passes each job runs; passes count from 0, so the first
/// pass runs them all.
pub const SECURITY_GROUP_EVERY: u32 = 3;
pub const GC_EVERY: u32 = 6;
pub const SQS_EVERY: u32 = 15;

/// Bound on one lookup of the SCM host by the system resolver.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Brings the master's security group to the wanted rules (SPEC A7), adding
/// before revoking, and revoking nothing on a partial view.
pub async fn security_group(
    world: &World,
    config: &SecurityGroupConfig,
    plan_config: &PlanConfig,
    envs: &BTreeMap<String, EnvObservation>,
    stats: &mut Stats,
) {
    let group = &config.group_id;
    let plan = match security_group_plan(world, config, plan_config, envs).await {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!("security group: {e}");
            stats.add(Counter::SecurityGroupFailed, 1);
            return;
        }
    };
    if let Some(why) = &plan.no_revoke_because {
        tracing::warn!("security group {group}: nothing revoked this round: {why}");
    }
    for rule in &plan.add {
        match world.master_ec2.authorize(group, rule).await {
            Ok(()) => tracing::info!("security group {group}: added {rule}"),
            Err(e) => {
                tracing::error!("security group {group}: {e}");
                stats.add(Counter::SecurityGroupFailed, 1);
            }
        }
    }
    for rule in &plan.revoke {
        match world.master_ec2.revoke(group, rule).await {
            Ok(()) => tracing::info!("security group {group}: revoked {rule}"),
            Err(e) => {
                tracing::error!("security group {group}: {e}");
                stats.add(Counter::SecurityGroupFailed, 1);
            }
        }
    }
    tracing::debug!("security group {group}: {} added, {} revoked", plan.add.len(), plan.revoke.len());
}

/// Reads the group and works out what to add and revoke (no change made).
pub async fn security_group_plan(
    world: &World,
    c: &SecurityGroupConfig,
    plan_config: &PlanConfig,
    envs: &BTreeMap<String, EnvObservation>,
) -> Result<SgPlan, SecurityGroupError> {
    let existing = world.master_ec2.ipv4_rules(&c.group_id).await?;
    let prod_ips = prod_agent_ips(envs, |env, i| plan_config.is_ours(env, i));
    let scm_ips = resolve_ipv4(&c.scm_host).await;
    let required = c.required_rules();
    Ok(plan_security_group(&required, &prod_ips, &scm_ips, &existing))
}

/// The IPv4 addresses of `host`, by the system resolver.
async fn resolve_ipv4(host: &str) -> Result<Vec<Ipv4Addr>, String> {
    let target = format!("{host}:443");
    let lookup = tokio::task::spawn_blocking(move || target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    let addrs = match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
        Err(_) => return Err(format!("lookup of {host} timed out")),
        Ok(Err(e)) => return Err(format!("lookup of {host} failed: {e}")),
        Ok(Ok(Err(e))) => return Err(format!("lookup of {host} failed: {e}")),
        Ok(Ok(Ok(addrs))) => addrs,
    };
    let v4: BTreeSet<Ipv4Addr> = addrs
        .into_iter()
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    if v4.is_empty() {
        return Err(format!("{host} has no IPv4 address"));
    }
    Ok(v4.into_iter().collect())
}

/// Builds the GC job and prints its `Garbage collector executed` line.
pub async fn garbage_collect(world: &World, job: &str, stats: &mut Stats) {
    let words = vec!["build".to_string(), job.to_string(), "-s".to_string(), "-v".to_string()];
    match run_cli(world, words).await {
        Ok(stdout) => {
            let line = stdout
                .lines()
                .find(|l| l.contains("Garbage collector executed"))
                .or_else(|| stdout.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("(no output)");
            tracing::info!("gc: {}", line.trim());
        }
        Err(e) => {
            tracing::error!("gc: {e}");
            stats.add(Counter::GcFailed, 1);
        }
    }
}

/// Receives up to 10 build requests and handles each: validated, deleted,
/// then run. Deleting before running means a message whose delete fails is
/// left for the next poll instead of being built twice.
pub async fn sqs_requests(world: &World, config: &SqsConfig, stats: &mut Stats) {
    let Some(client) = &world.sqs else { return };
    let (name, owner) = (&config.queue, &config.account_id);
    let url = match client.queue_url(name, owner).await {
        Ok(url) => url,
        Err(e) => {
            tracing::error!("sqs: {e}");
            stats.add(Counter::SqsFailed, 1);
            return;
        }
    };
    let messages = match client.receive(&url, 10).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("sqs: {e}");
            stats.add(Counter::SqsFailed, 1);
            return;
        }
    };
    for msg in messages {
        let policy = &config.policy;
        let words = policy.admits_sender(msg.sender.as_deref()).and_then(|()| command_words(&msg.body, policy));
        let from = msg.sender.as_deref().map_or_else(|| "an unknown sender".to_string(), |s| clip(s, ECHO_CHARS));
        if let Err(e) = client.delete(&url, &msg.receipt).await {
            tracing::error!("sqs message {}: not handled, it stays queued: {e}", msg.id);
            stats.add(Counter::SqsFailed, 1);
            continue;
        }
        let words = match words {
            Ok(words) => words,
            Err(refusal) => {
                // Bounded twice: each echoed piece, then the whole line.
                tracing::warn!(
                    "sqs message {} from {from}: dropped: {}",
                    msg.id,
                    clip(&refusal.to_string(), 2 * ECHO_CHARS)
                );
                stats.add(Counter::SqsDropped, 1);
                continue;
            }
        };
        // Parameter names only: a value can be a secret.
        let shown = masked(&words);
        match run_cli(world, words).await {
            Ok(_) => {
                tracing::info!("sqs message {} from {from}: ran {shown}", msg.id);
                stats.add(Counter::SqsHandled, 1);
            }
            Err(e) => {
                tracing::warn!(
                    "sqs message {} from {from}: dropped: {shown}: {}",
                    msg.id,
                    clip(&e.to_string(), ECHO_CHARS)
                );
                stats.add(Counter::SqsDropped, 1);
            }
        }
    }
}

async fn run_cli(world: &World, words: Vec<String>) -> Result<String, CliError> {
    crate::world::run_cli(&world.jenkins, words, Vec::new()).await.map(|o| o.stdout)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aws::ec2::Ec2ErrorKind;
    use crate::fake::{self, FakeCloud, FakeJenkins, Times};
    use crate::jenkins::cli::CliErrorKind;
    use crate::plan::security_group::{Held, Rule};

    struct Setup {
        cloud: FakeCloud,
        jenkins: Arc<FakeJenkins>,
        world: World,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let cloud = FakeCloud::new();
        let jenkins = Arc::new(FakeJenkins::default());
        let mut config = fake::config(&["dev"]);
        config.security_group = Some(fake::security_group(&[(22, "1.2.3.4/32")]));
        config.sqs = Some(fake::sqs());
        let world = fake::world(config, &cloud, &jenkins, dir.path());
        Setup { cloud, jenkins, world, _dir: dir }
    }

    async fn security_group_job(s: &Setup, stats: &mut Stats) {
        let config = s.world.config.security_group.as_ref().unwrap();
        let plan_config = crate::reconciler::plan_config(&s.world.config.fleet);
        let envs = BTreeMap::from([("dev".to_string(), Ok(vec![]))]);
        security_group(&s.world, config, &plan_config, &envs, stats).await;
    }

    #[tokio::test]
    async fn the_security_group_gets_the_wanted_rules_and_loses_ours_no_longer_wanted() {
        let s = setup();
        s.cloud.add_rule(Held { rule: Rule::tcp(30001, "9.9.9.9/32"), ours: true });
        s.cloud.add_rule(Held::theirs(Rule::tcp(5432, "10.0.0.0/8")));
        let mut stats = Stats::default();
        security_group_job(&s, &mut stats).await;
        let mut rules: Vec<String> = s.cloud.rules().iter().map(|h| h.rule.to_string()).collect();
        rules.sort();
        assert_eq!(rules, ["tcp 22 1.2.3.4/32", "tcp 443 127.0.0.0/24", "tcp 5432 10.0.0.0/8"]);
        let ops: Vec<&str> = s.cloud.mutations().into_iter().map(|(op, _)| op).collect();
        assert_eq!(
            ops,
            ["AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"],
            "added before revoking"
        );
        assert_eq!(stats.errors(), 0);
    }

    #[tokio::test]
    async fn security_group_failures_are_counted_and_the_other_rules_still_change() {
        let s = setup();
        s.cloud.fail(None, "AuthorizeSecurityGroupIngress", Times::Once, Ec2ErrorKind::Throttled);
        let mut stats = Stats::default();
        security_group_job(&s, &mut stats).await;
        assert_eq!(stats.get(Counter::SecurityGroupFailed), 1);
        assert_eq!(s.cloud.rules().len(), 1, "the second rule was added");

        s.cloud.fail(None, "DescribeSecurityGroups", Times::Once, Ec2ErrorKind::Other);
        security_group_job(&s, &mut stats).await;
        assert_eq!(stats.get(Counter::SecurityGroupFailed), 2);
        assert_eq!(s.cloud.count("AuthorizeSecurityGroupIngress"), 2, "nothing changed on an unread group");
    }

    #[tokio::test]
    async fn the_gc_job_is_built_and_its_failure_counted() {
        let s = setup();
        let mut stats = Stats::default();
        garbage_collect(&s.world, fake::GC_JOB, &mut stats).await;
        assert_eq!(s.jenkins.commands(), [vec!["build", fake::GC_JOB, "-s", "-v"]]);
        assert_eq!(stats.errors(), 0);
        s.jenkins.fail("build", Times::Once, CliErrorKind::Failed);
        garbage_collect(&s.world, fake::GC_JOB, &mut stats).await;
        assert_eq!(stats.get(Counter::GcFailed), 1);
    }

    #[tokio::test]
    async fn sqs_requests_are_validated_deleted_then_run() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy", "parameters": {"ENV": "qa"}}"#, Some("AIDAEXAMPLE"));
        s.cloud.send(r#"{"name": "deploy", "action": "safe-restart"}"#, None);
        s.cloud.send("not json", None);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        sqs_requests(&s.world, &sqs, &mut stats).await;
        assert_eq!(s.jenkins.commands(), [vec!["build", "deploy", "-p", "ENV=qa"]]);
        assert_eq!((stats.get(Counter::SqsHandled), stats.get(Counter::SqsDropped)), (1, 2));
        assert_eq!(s.cloud.in_flight(), 0, "every message is deleted, refused ones too");
        assert_eq!(s.cloud.count("DeleteMessage"), 3);
    }

    #[tokio::test]
    async fn an_sqs_request_whose_delete_fails_is_not_run() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy"}"#, None);
        s.cloud.fail(None, "DeleteMessage", Times::Once, Ec2ErrorKind::Other);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        sqs_requests(&s.world, &sqs, &mut stats).await;
        assert!(s.jenkins.commands().is_empty(), "left for the next poll, not built twice");
        assert_eq!(stats.get(Counter::SqsFailed), 1);
        assert_eq!(s.cloud.in_flight(), 1);

        s.cloud.fail(None, "ReceiveMessage", Times::Once, Ec2ErrorKind::Other);
        sqs_requests(&s.world, &sqs, &mut stats).await;
        assert_eq!(stats.get(Counter::SqsFailed), 2);
    }

    #[tokio::test]
    async fn a_build_request_jenkins_refuses_is_dropped() {
        let s = setup();
        s.cloud.send(r#"{"name": "deploy"}"#, None);
        s.jenkins.fail("build", Times::Once, CliErrorKind::Failed);
        let mut stats = Stats::default();
        let sqs = s.world.config.sqs.clone().unwrap();
        sqs_requests(&s.world, &sqs, &mut stats).await;
        assert_eq!((stats.get(Counter::SqsHandled), stats.get(Counter::SqsDropped)), (0, 1));
    }
}

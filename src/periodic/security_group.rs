//! The master's security group (SPEC A7): the rules `--required_ip_list`
//! asks for, port 30001 from every running prod agent, 443 from the SCM
//! host's /24s; what is missing is added, what we manage and is no longer
//! wanted is revoked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::time::Duration;

use crate::aws::security_group::SecurityGroupError;
use crate::config::SecurityGroupConfig;
use crate::counter::Counter;
use crate::model::EnvObservation;
use crate::plan::security_group::{plan_security_group, prod_agent_ips, SgPlan};
use crate::plan::PlanConfig;
use crate::record::stats::Stats;
use crate::world::World;

/// Bound on one lookup of the SCM host by the system resolver.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Brings the master's security group to the wanted rules (SPEC A7), adding
/// before revoking, and revoking nothing on a partial view.
pub async fn run(
    world: &World,
    config: &SecurityGroupConfig,
    plan_config: &PlanConfig,
    envs: &BTreeMap<String, EnvObservation>,
    stats: &mut Stats,
) {
    let group = &config.group_id;
    let plan = match plan(world, config, plan_config, envs).await {
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
pub async fn plan(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ec2::Ec2ErrorKind;
    use crate::fake::{self, Setup, Times};
    use crate::plan::security_group::{Held, Rule};

    fn setup() -> Setup {
        fake::setup_with_master_jobs()
    }

    async fn security_group_job(s: &Setup, stats: &mut Stats) {
        let config = s.world.config.security_group.as_ref().unwrap();
        let plan_config = crate::reconciler::plan_config(&s.world.config.fleet);
        let envs = BTreeMap::from([("dev".to_string(), Ok(vec![]))]);
        run(&s.world, config, &plan_config, &envs, stats).await;
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
}

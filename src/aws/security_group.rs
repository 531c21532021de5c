//! The master's security group: read its IPv4 ingress rules, add and revoke
//! one rule at a time (exactly the rule that exists, protocol and range
//! included). Group references and IPv6 rules are never touched.

use aws_sdk_ec2::types::{IpPermission, IpRange};
use aws_sdk_ec2::Client;

use super::describe_error;
use crate::plan::security_group::{Held, Rule};

/// The description on every rule we add: how we tell our rules from others'.
pub const OUR_DESCRIPTION: &str = "slave_manager";

pub async fn ipv4_rules(client: &Client, group_id: &str) -> Result<Vec<Held>, String> {
    let out = client
        .describe_security_groups()
        .group_ids(group_id)
        .send()
        .await
        .map_err(|e| format!("DescribeSecurityGroups {group_id}: {}", describe_error(&e)))?;
    let group = out.security_groups().first().ok_or_else(|| format!("security group {group_id} not found"))?;
    let mut rules = Vec::new();
    for perm in group.ip_permissions() {
        let protocol = perm.ip_protocol().unwrap_or("-1").to_string();
        // "All traffic" rules carry no ports; model them as the full range.
        let (from_port, to_port) = match (perm.from_port(), perm.to_port()) {
            (Some(f), Some(t)) => (f, t),
            _ => (-1, -1),
        };
        for range in perm.ip_ranges() {
            if let Some(cidr) = range.cidr_ip() {
                rules.push(Held {
                    rule: Rule { protocol: protocol.clone(), from_port, to_port, cidr: cidr.to_string() },
                    ours: range.description() == Some(OUR_DESCRIPTION),
                });
            }
        }
    }
    Ok(rules)
}

fn permission(rule: &Rule) -> IpPermission {
    let mut perm = IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .ip_ranges(IpRange::builder().cidr_ip(&rule.cidr).description(OUR_DESCRIPTION).build());
    if rule.from_port != -1 || rule.to_port != -1 {
        perm = perm.from_port(rule.from_port).to_port(rule.to_port);
    }
    perm.build()
}

pub async fn authorize(client: &Client, group_id: &str, rule: &Rule) -> Result<(), String> {
    match client.authorize_security_group_ingress().group_id(group_id).ip_permissions(permission(rule)).send().await {
        Ok(_) => Ok(()),
        // Someone added it since we looked: the goal is reached.
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidPermission.Duplicate") => Ok(()),
        Err(e) => Err(format!("AuthorizeSecurityGroupIngress {rule}: {}", describe_error(&e))),
    }
}

pub async fn revoke(client: &Client, group_id: &str, rule: &Rule) -> Result<(), String> {
    let mut perm =
        IpPermission::builder().ip_protocol(&rule.protocol).ip_ranges(IpRange::builder().cidr_ip(&rule.cidr).build());
    if rule.from_port != -1 || rule.to_port != -1 {
        perm = perm.from_port(rule.from_port).to_port(rule.to_port);
    }
    match client.revoke_security_group_ingress().group_id(group_id).ip_permissions(perm.build()).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidPermission.NotFound") => Ok(()),
        Err(e) => Err(format!("RevokeSecurityGroupIngress {rule}: {}", describe_error(&e))),
    }
}

//! The master's security group: read its IPv4 ingress rules, add and revoke
//! one rule at a time (exactly the rule that exists, protocol and range
//! included). Group references and IPv6 rules are never touched.

use aws_sdk_ec2::types::{IpPermission, IpRange};
use aws_sdk_ec2::Client;

use super::describe_error;
use super::ec2::Ec2ErrorKind;
use crate::plan::security_group::{Held, Rule};
use crate::world::BoxFuture;

/// Why the master's group could not be read or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityGroupError {
    /// EC2 refused or failed the call; `subject` is the group or the rule.
    #[error("{operation} {subject}: {message}")]
    Call { operation: &'static str, subject: String, kind: Ec2ErrorKind, message: String },
    #[error("security group {0} not found")]
    NotFound(String),
}

impl SecurityGroupError {
    fn call<E, R>(operation: &'static str, subject: String, e: aws_sdk_ec2::error::SdkError<E, R>) -> SecurityGroupError
    where
        E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
        R: std::fmt::Debug,
    {
        let kind = Ec2ErrorKind::of(e.as_service_error().and_then(|s| s.code()));
        SecurityGroupError::Call { operation, subject, kind, message: describe_error(&e) }
    }
}

/// The description on every rule we add: how we tell our rules from others'.
pub const OUR_DESCRIPTION: &str = "slave_manager";

pub async fn ipv4_rules(client: &Client, group_id: &str) -> Result<Vec<Held>, SecurityGroupError> {
    let out = client
        .describe_security_groups()
        .group_ids(group_id)
        .send()
        .await
        .map_err(|e| SecurityGroupError::call("DescribeSecurityGroups", group_id.to_string(), e))?;
    let group = out.security_groups().first().ok_or_else(|| SecurityGroupError::NotFound(group_id.to_string()))?;
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

pub async fn authorize(client: &Client, group_id: &str, rule: &Rule) -> Result<(), SecurityGroupError> {
    match client.authorize_security_group_ingress().group_id(group_id).ip_permissions(permission(rule)).send().await {
        Ok(_) => Ok(()),
        // Someone added it since we looked: the goal is reached.
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidPermission.Duplicate") => Ok(()),
        Err(e) => Err(SecurityGroupError::call("AuthorizeSecurityGroupIngress", rule.to_string(), e)),
    }
}

pub async fn revoke(client: &Client, group_id: &str, rule: &Rule) -> Result<(), SecurityGroupError> {
    let mut perm =
        IpPermission::builder().ip_protocol(&rule.protocol).ip_ranges(IpRange::builder().cidr_ip(&rule.cidr).build());
    if rule.from_port != -1 || rule.to_port != -1 {
        perm = perm.from_port(rule.from_port).to_port(rule.to_port);
    }
    match client.revoke_security_group_ingress().group_id(group_id).ip_permissions(perm.build()).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidPermission.NotFound") => Ok(()),
        Err(e) => Err(SecurityGroupError::call("RevokeSecurityGroupIngress", rule.to_string(), e)),
    }
}

impl crate::world::SecurityGroups for Client {
    fn ipv4_rules<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Held>, SecurityGroupError>> {
        Box::pin(ipv4_rules(self, group_id))
    }

    fn authorize<'a>(&'a self, group_id: &'a str, rule: &'a Rule) -> BoxFuture<'a, Result<(), SecurityGroupError>> {
        Box::pin(authorize(self, group_id, rule))
    }

    fn revoke<'a>(&'a self, group_id: &'a str, rule: &'a Rule) -> BoxFuture<'a, Result<(), SecurityGroupError>> {
        Box::pin(revoke(self, group_id, rule))
    }
}

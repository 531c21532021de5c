//! The master's security group (SPEC A7 and part B): which IPv4 rules it
//! must have, and what to add and revoke to get there. Pure: the caller
//! brings the current rules, the prod agents' addresses and the SCM host's
//! addresses — each of the last two possibly missing this round, in which
//! case nothing is revoked (a partial view must never close a needed port).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use crate::model::{EnvObservation, Instance, InstanceState};

/// Agents reach the master's Swarm/JNLP port here.
pub const AGENT_PORT: u16 = 30001;
/// The SCM host posts webhooks to the master over HTTPS.
pub const SCM_PORT: u16 = 443;

/// One IPv4 ingress rule, exactly as EC2 holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp`, `-1` (all), or a protocol number.
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub cidr: String,
}

impl Rule {
    pub fn tcp(port: u16, cidr: impl Into<String>) -> Rule {
        Rule { protocol: "tcp".into(), from_port: port.into(), to_port: port.into(), cidr: cidr.into() }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.protocol == "-1" { "all" } else { &self.protocol };
        if self.from_port == self.to_port {
            write!(f, "{proto} {} {}", self.from_port, self.cidr)
        } else {
            write!(f, "{proto} {}-{} {}", self.from_port, self.to_port, self.cidr)
        }
    }
}

/// A rule the group holds, and whether we added it (our description on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub rule: Rule,
    pub ours: bool,
}

impl Held {
    /// A rule somebody else added.
    pub fn theirs(rule: Rule) -> Held {
        Held { rule, ours: false }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SgPlan {
    pub add: Vec<Rule>,
    pub revoke: Vec<Rule>,
    /// Why nothing is revoked this round, when the view is partial.
    pub no_revoke_because: Option<String>,
    /// Rules on ports the manager does not manage: left alone, whoever added them.
    pub unmanaged: Vec<Rule>,
}

/// The public addresses of our running agents (`is_ours(env, instance)`) in
/// every env whose name contains `prod`; `Err` names the prod envs that could
/// not be described. Another master's agents get no way in.
pub fn prod_agent_ips(
    envs: &BTreeMap<String, EnvObservation>,
    is_ours: impl Fn(&str, &Instance) -> bool,
) -> Result<BTreeSet<String>, String> {
    let mut ips = BTreeSet::new();
    let mut failed = Vec::new();
    for (env, obs) in envs.iter().filter(|(env, _)| env.contains("prod")) {
        match obs {
            Ok(instances) => ips.extend(
                instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Running && is_ours(env, i))
                    .filter_map(|i| i.public_ip.clone()),
            ),
            Err(_) => failed.push(env.as_str()),
        }
    }
    if failed.is_empty() {
        Ok(ips)
    } else {
        Err(format!("describe failed in {}", failed.join(", ")))
    }
}

/// The rules wanted, and the difference with `existing`. Only rules on the
/// ports the manager manages are ever revoked: the agents' port, the ports of
/// `required`, and 443 where the rule is one we added for the SCM host. Every
/// other rule (SSH for the operators, another team's ports, UDP, ranges) is
/// theirs, and revoking it could lock people out.
pub fn plan_security_group(
    required: &[(u16, String)],
    prod_ips: &Result<BTreeSet<String>, String>,
    scm_ips: &Result<Vec<Ipv4Addr>, String>,
    existing: &[Held],
) -> SgPlan {
    let mut wanted: BTreeSet<Rule> = required.iter().map(|(port, cidr)| Rule::tcp(*port, cidr.clone())).collect();
    if let Ok(ips) = prod_ips {
        wanted.extend(ips.iter().map(|ip| Rule::tcp(AGENT_PORT, format!("{ip}/32"))));
    }
    if let Ok(ips) = scm_ips {
        wanted.extend(ips.iter().map(|ip| {
            let [a, b, c, _] = ip.octets();
            Rule::tcp(SCM_PORT, format!("{a}.{b}.{c}.0/24"))
        }));
    }
    let existing_set: BTreeSet<&Rule> = existing.iter().map(|h| &h.rule).collect();
    let add = wanted.iter().filter(|r| !existing_set.contains(r)).cloned().collect();

    let required_ports: BTreeSet<u16> = required.iter().map(|(port, _)| *port).collect();
    let managed = |h: &Held| {
        let r = &h.rule;
        let single_tcp_port =
            (r.protocol == "tcp" && r.from_port == r.to_port).then(|| u16::try_from(r.from_port).ok()).flatten();
        // A rule we added stays ours on any port: one whose port left
        // `--required_ip_list` must close, not linger open forever. But an
        // empty list is likelier a forgotten flag than a wish to close SSH
        // and HTTPS: then only the SCM /24s we added go on 22/80/443.
        match single_tcp_port {
            Some(AGENT_PORT) => true,
            Some(port) if required_ports.contains(&port) => true,
            Some(port @ (22 | 80 | 443)) if required_ports.is_empty() => {
                h.ours && port == SCM_PORT && r.cidr.ends_with("/24")
            }
            Some(_) => h.ours,
            None => false,
        }
    };
    let mut unmanaged: Vec<Rule> = existing.iter().filter(|h| !managed(h)).map(|h| h.rule.clone()).collect();
    unmanaged.sort();
    unmanaged.dedup();

    let mut partial = Vec::new();
    if let Err(e) = prod_ips {
        partial.push(format!("prod agents unknown ({e})"));
    }
    if let Err(e) = scm_ips {
        partial.push(format!("SCM host unknown ({e})"));
    }
    let (revoke, no_revoke_because) = if partial.is_empty() {
        let mut revoke: Vec<Rule> =
            existing.iter().filter(|h| managed(h) && !wanted.contains(&h.rule)).map(|h| h.rule.clone()).collect();
        revoke.sort();
        revoke.dedup();
        (revoke, None)
    } else {
        (Vec::new(), Some(partial.join("; ")))
    };
    SgPlan { add, revoke, no_revoke_because, unmanaged }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required() -> Vec<(u16, String)> {
        vec![(443, "0.0.0.0/0".into()), (22, "1.2.3.4/32".into())]
    }

    fn scm() -> Result<Vec<Ipv4Addr>, String> {
        Ok(vec![Ipv4Addr::new(140, 82, 112, 3), Ipv4Addr::new(140, 82, 112, 4)])
    }

    fn agent(id: &str, state: InstanceState, name: &str, ip: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            state,
            name: Some(name.into()),
            slave_labels: None,
            image_id: "ami-1".into(),
            instance_type: "t2.small".into(),
            private_ip: None,
            public_ip: ip.map(str::to_string),
            spot: false,
            launched: None,
            volumes: vec![],
            master_tag: None,
            slave_data_master: None,
            key_name: None,
            warm: None,
        }
    }

    fn held(rules: &[Rule]) -> Vec<Held> {
        rules.iter().cloned().map(Held::theirs).collect()
    }

    #[test]
    fn adds_what_is_missing_and_revokes_only_managed_ports() {
        let existing = vec![
            Rule::tcp(443, "0.0.0.0/0"),
            Rule::tcp(22, "9.9.9.9/32"),
            Rule { protocol: "udp".into(), from_port: 443, to_port: 443, cidr: "0.0.0.0/0".into() },
            Rule { protocol: "tcp".into(), from_port: 1000, to_port: 2000, cidr: "10.0.0.0/8".into() },
            Rule::tcp(5432, "10.0.0.0/8"),
            Rule::tcp(30001, "4.4.4.4/32"),
        ];
        let prod = Ok(BTreeSet::from(["3.3.3.3".to_string()]));
        let plan = plan_security_group(&required(), &prod, &scm(), &held(&existing));
        assert_eq!(
            plan.add,
            vec![Rule::tcp(22, "1.2.3.4/32"), Rule::tcp(443, "140.82.112.0/24"), Rule::tcp(30001, "3.3.3.3/32")]
        );
        // 22 is a required port: its other rule goes; 30001 is the agents'.
        assert_eq!(plan.revoke, vec![existing[1].clone(), existing[5].clone()]);
        assert_eq!(plan.unmanaged, vec![existing[3].clone(), existing[4].clone(), existing[2].clone()]);
        assert_eq!(plan.no_revoke_because, None);
    }

    #[test]
    fn with_no_required_list_nothing_on_22_443_80_is_revoked_but_our_old_scm_rules() {
        let existing = vec![
            Held::theirs(Rule::tcp(22, "1.2.3.4/32")),
            Held::theirs(Rule::tcp(443, "0.0.0.0/0")),
            Held::theirs(Rule::tcp(80, "0.0.0.0/0")),
            // Added by us for an SCM address that moved.
            Held { rule: Rule::tcp(443, "192.30.255.0/24"), ours: true },
            // Added by us from an earlier list: an empty list is no order to close SSH.
            Held { rule: Rule::tcp(22, "9.9.9.9/32"), ours: true },
        ];
        let plan = plan_security_group(&[], &Ok(BTreeSet::new()), &scm(), &existing);
        assert_eq!(plan.revoke, vec![Rule::tcp(443, "192.30.255.0/24")]);
        assert_eq!(plan.add, vec![Rule::tcp(443, "140.82.112.0/24")]);
    }

    #[test]
    fn with_no_required_list_their_slash24_rules_and_ours_off_443_stay() {
        let existing = vec![
            Held::theirs(Rule::tcp(22, "10.1.2.0/24")),
            Held::theirs(Rule::tcp(443, "10.9.9.0/24")),
            Held { rule: Rule::tcp(80, "10.3.3.0/24"), ours: true },
        ];
        let plan = plan_security_group(&[], &Ok(BTreeSet::new()), &Ok(vec![]), &existing);
        assert_eq!(plan.revoke, Vec::<Rule>::new());
        assert_eq!(plan.unmanaged.len(), 3);
    }

    #[test]
    fn a_rule_we_added_is_revoked_once_its_port_leaves_the_list() {
        let existing =
            vec![Held { rule: Rule::tcp(22, "1.2.3.4/32"), ours: true }, Held::theirs(Rule::tcp(22, "5.6.7.8/32"))];
        let plan = plan_security_group(&[(443, "0.0.0.0/0".into())], &Ok(BTreeSet::new()), &Ok(vec![]), &existing);
        assert_eq!(plan.revoke, vec![Rule::tcp(22, "1.2.3.4/32")]);
        assert_eq!(plan.unmanaged, vec![Rule::tcp(22, "5.6.7.8/32")]);
    }

    #[test]
    fn nothing_changes_when_the_group_is_as_wanted() {
        let existing =
            vec![Rule::tcp(443, "0.0.0.0/0"), Rule::tcp(22, "1.2.3.4/32"), Rule::tcp(443, "140.82.112.0/24")];
        let plan = plan_security_group(&required(), &Ok(BTreeSet::new()), &scm(), &held(&existing));
        assert_eq!(plan, SgPlan::default());
    }

    #[test]
    fn a_failed_scm_lookup_adds_but_never_revokes() {
        let existing = vec![Rule::tcp(443, "140.82.112.0/24"), Rule::tcp(22, "9.9.9.9/32")];
        let plan = plan_security_group(&required(), &Ok(BTreeSet::new()), &Err("no DNS".into()), &held(&existing));
        assert_eq!(plan.add, vec![Rule::tcp(22, "1.2.3.4/32"), Rule::tcp(443, "0.0.0.0/0")]);
        assert!(plan.revoke.is_empty());
        assert!(plan.no_revoke_because.unwrap().contains("SCM host unknown (no DNS)"));
    }

    #[test]
    fn a_failed_prod_describe_adds_but_never_revokes() {
        let existing = vec![Rule::tcp(30001, "3.3.3.3/32")];
        let prod = Err("describe failed in prod".to_string());
        let plan = plan_security_group(&required(), &prod, &scm(), &held(&existing));
        assert!(plan.revoke.is_empty(), "the prod agent's rule must survive a failed describe");
        assert_eq!(plan.add.len(), 3, "two SCM addresses in one /24 make one rule");
        assert!(plan.no_revoke_because.unwrap().contains("prod"));
    }

    #[test]
    fn prod_ips_are_our_running_agents_in_prod_envs_only() {
        let envs = BTreeMap::from([
            (
                "prod".to_string(),
                Ok(vec![
                    agent("i-1", InstanceState::Running, "jslave", Some("3.3.3.3")),
                    agent("i-2", InstanceState::Stopped, "jslave", Some("4.4.4.4")),
                    agent("i-3", InstanceState::Running, "other", Some("5.5.5.5")),
                    agent("i-4", InstanceState::Running, "jslave", None),
                ]),
            ),
            ("eu-prod-2".to_string(), Ok(vec![agent("i-5", InstanceState::Running, "jslave", Some("6.6.6.6"))])),
            ("dev".to_string(), Ok(vec![agent("i-6", InstanceState::Running, "jslave", Some("7.7.7.7"))])),
        ]);
        let jslave = |_: &str, i: &Instance| i.name.as_deref() == Some("jslave");
        let ips = prod_agent_ips(&envs, jslave).unwrap();
        assert_eq!(ips, BTreeSet::from(["3.3.3.3".to_string(), "6.6.6.6".to_string()]));
        let mut broken = envs.clone();
        broken.insert("prod-b".into(), Err("boom".into()));
        broken.insert("dev-b".into(), Err("boom".into()));
        assert_eq!(prod_agent_ips(&broken, jslave), Err("describe failed in prod-b".into()));
    }

    #[test]
    fn rules_render_for_the_log() {
        assert_eq!(Rule::tcp(443, "0.0.0.0/0").to_string(), "tcp 443 0.0.0.0/0");
        let range = Rule { protocol: "-1".into(), from_port: 0, to_port: 65535, cidr: "10.0.0.0/8".into() };
        assert_eq!(range.to_string(), "all 0-65535 10.0.0.0/8");
    }
}

//! Where the money goes: what each of our agents was doing at each
//! observation, accumulated into instance-seconds per env, label and use.
//! Pure like the planner: the caller passes each pass's observation and its
//! time; no clock is read here.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::model::{EnvObservation, InstanceState, JenkinsDump};
use crate::plan::inventory::count_key;
use crate::plan::nodes::{is_busy, node_of};
use crate::plan::PlanConfig;

/// What an agent's instance is doing, as one observation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Usage {
    /// Pending or running, its node not online (not yet, or no more): paid,
    /// runs nothing.
    Booting,
    /// Its node online with a busy executor: the minutes builds ran on.
    Busy,
    /// Its node online, nothing running: paid, waiting for work.
    Idle,
    /// Stopping or stopped: only its EBS volumes are paid.
    Stopped,
}

impl Usage {
    pub const ALL: [Usage; 4] = [Usage::Booting, Usage::Busy, Usage::Idle, Usage::Stopped];

    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Booting => "booting",
            Usage::Busy => "busy",
            Usage::Idle => "idle",
            Usage::Stopped => "stopped",
        }
    }

    /// The instance itself is billed (not only its volumes).
    pub fn is_paid(self) -> bool {
        self != Usage::Stopped
    }
}

/// One env at one observation: agents per label key and use.
pub type EnvUsage = BTreeMap<(String, Usage), u32>;

/// What each env's agents are doing; `None` for an env whose use cannot be
/// told this pass (its describe failed, or the dump did, which alone tells a
/// booting agent from a busy or an idle one). Labels are keyed as in
/// `properties_instance_count.csv` (`dev_spot`, `dev_None`).
pub fn observe_usage(
    cfg: &PlanConfig,
    dump: Option<&JenkinsDump>,
    envs: &BTreeMap<String, EnvObservation>,
) -> BTreeMap<String, Option<EnvUsage>> {
    envs.iter()
        .map(|(env, observation)| {
            let usage = match (dump, observation) {
                (Some(dump), Ok(instances)) => {
                    let mut usage = EnvUsage::new();
                    for inst in instances.iter().filter(|i| cfg.is_ours(env, i)) {
                        let node = node_of(&dump.nodes, inst).filter(|n| !n.offline);
                        let use_ = match inst.state {
                            InstanceState::Pending | InstanceState::Running => match node {
                                None => Usage::Booting,
                                Some(n) if is_busy(n) => Usage::Busy,
                                Some(_) => Usage::Idle,
                            },
                            InstanceState::Stopping | InstanceState::Stopped => Usage::Stopped,
                            InstanceState::ShuttingDown | InstanceState::Terminated => continue,
                        };
                        *usage.entry((count_key(env, inst), use_)).or_default() += 1;
                    }
                    Some(usage)
                }
                _ => None,
            };
            (env.clone(), usage)
        })
        .collect()
}

/// Instance-time per env, label and use over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostLedger {
    /// (env, label key, use) → instance-time.
    totals: BTreeMap<(String, String, Usage), Duration>,
    /// The last observation: its time, and each env's use as last seen.
    last: Option<(SystemTime, BTreeMap<String, EnvUsage>)>,
}

impl CostLedger {
    /// Charges the time since the previous observation to what that
    /// observation saw (what the agents did until now), then keeps this one.
    /// An env not seen this pass keeps its last known use. A clock that went
    /// back charges nothing for that interval, and counting resumes from the
    /// new time.
    pub fn observe(&mut self, now: SystemTime, seen: BTreeMap<String, Option<EnvUsage>>) {
        let mut current = BTreeMap::new();
        if let Some((then, previous)) = self.last.take() {
            let elapsed = now.duration_since(then).unwrap_or_default();
            for (env, usage) in &previous {
                for ((label, use_), &n) in usage {
                    *self.totals.entry((env.clone(), label.clone(), *use_)).or_default() += elapsed * n;
                }
            }
            current = previous;
        }
        for (env, usage) in seen {
            if let Some(usage) = usage {
                current.insert(env, usage);
            }
        }
        self.last = Some((now, current));
    }

    /// (env, label key) → instance-time per use, uses never seen left out.
    pub fn by_label(&self) -> BTreeMap<(&str, &str), BTreeMap<Usage, Duration>> {
        let mut out: BTreeMap<(&str, &str), BTreeMap<Usage, Duration>> = BTreeMap::new();
        for ((env, label, use_), &d) in &self.totals {
            *out.entry((env.as_str(), label.as_str())).or_default().entry(*use_).or_default() += d;
        }
        out
    }

    /// The share of `env`'s paid instance-time (booting, busy, idle) that
    /// ran builds; every env with `None`. `None` when nothing was paid.
    pub fn busy_share(&self, env: Option<&str>) -> Option<f64> {
        let (mut busy, mut paid) = (Duration::ZERO, Duration::ZERO);
        for ((e, _, use_), &d) in &self.totals {
            if env.is_some_and(|env| env != e) || !use_.is_paid() {
                continue;
            }
            paid += d;
            if *use_ == Usage::Busy {
                busy += d;
            }
        }
        (!paid.is_zero()).then(|| busy.as_secs_f64() / paid.as_secs_f64())
    }

    /// Envs with any instance-time, in order.
    pub fn envs(&self) -> Vec<&str> {
        let mut envs: Vec<&str> = self.totals.keys().map(|(e, _, _)| e.as_str()).collect();
        envs.dedup();
        envs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceState::*;
    use crate::model::Node;
    use crate::plan::test_kit::*;

    fn at(secs: u64) -> SystemTime {
        now() + Duration::from_secs(secs)
    }

    fn minutes(ledger: &CostLedger, env: &str, label: &str, use_: Usage) -> f64 {
        let by = ledger.by_label();
        by.get(&(env, label)).and_then(|u| u.get(&use_)).map_or(0.0, |d| d.as_secs_f64() / 60.0)
    }

    fn envs(list: Vec<(&str, EnvObservation)>) -> BTreeMap<String, EnvObservation> {
        list.into_iter().map(|(e, o)| (e.to_string(), o)).collect()
    }

    #[test]
    fn each_agent_is_booting_busy_idle_or_stopped_by_its_node() {
        let busy = Node { busy_executors: Some(1), ..online("dev-10.0.0.2", "i-2", "dev", 0) };
        let offline = Node { offline: true, ..online("dev-10.0.0.4", "i-4", "dev", 1) };
        let dump = JenkinsDump {
            nodes: vec![busy, online("dev-10.0.0.3", "i-3", "dev", 1), offline],
            ..JenkinsDump::default()
        };
        let observed = envs(vec![(
            "dev",
            Ok(vec![
                agent("i-1", Pending, "dev"),
                agent("i-2", Running, "dev"),
                agent("i-3", Running, "dev"),
                agent("i-4", Running, "dev"),
                agent("i-5", Stopped, "dev_spot"),
                agent("i-6", Stopping, "dev"),
                agent("i-7", Terminated, "dev"),
                agent("i-8", Running, "dev").named(Some("someone-else")),
            ]),
        )]);
        let usage = observe_usage(&cfg(), Some(&dump), &observed);
        let dev = usage["dev"].as_ref().unwrap();
        let count = |label: &str, u| dev.get(&(label.to_string(), u)).copied().unwrap_or(0);
        assert_eq!(count("dev", Usage::Booting), 2, "pending, and running with its node offline");
        assert_eq!(count("dev", Usage::Busy), 1);
        assert_eq!(count("dev", Usage::Idle), 1);
        assert_eq!(count("dev", Usage::Stopped), 1, "stopping bills only the volumes");
        assert_eq!(count("dev_spot", Usage::Stopped), 1);
        assert_eq!(dev.values().sum::<u32>(), 6, "terminated and other people's instances are not ours to count");
    }

    #[test]
    fn without_the_dump_or_the_describe_an_env_is_not_told() {
        let observed = envs(vec![("dev", Ok(vec![agent("i-1", Running, "dev")])), ("prod", Err("throttled".into()))]);
        let usage = observe_usage(&cfg(), None, &observed);
        assert_eq!(usage["dev"], None);
        let usage = observe_usage(&cfg(), Some(&JenkinsDump::default()), &observed);
        assert!(usage["dev"].is_some());
        assert_eq!(usage["prod"], None);
    }

    fn seen(env: &str, entries: &[(&str, Usage, u32)]) -> BTreeMap<String, Option<EnvUsage>> {
        let usage = entries.iter().map(|(l, u, n)| ((l.to_string(), *u), *n)).collect();
        BTreeMap::from([(env.to_string(), Some(usage))])
    }

    #[test]
    fn the_time_until_the_next_observation_is_charged_to_what_was_seen() {
        let mut ledger = CostLedger::default();
        ledger.observe(at(0), seen("dev", &[("dev", Usage::Booting, 2)]));
        assert!(ledger.by_label().is_empty(), "one observation spans no time yet");
        ledger.observe(at(60), seen("dev", &[("dev", Usage::Busy, 1), ("dev", Usage::Idle, 1)]));
        ledger.observe(at(180), seen("dev", &[("dev", Usage::Stopped, 2)]));
        ledger.observe(at(240), seen("dev", &[]));
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Booting), 2.0, "two agents for a minute");
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Busy), 2.0);
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Idle), 2.0);
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Stopped), 2.0);
        // Paid: 2 booting + 2 busy + 2 idle; stopped minutes are not.
        assert_eq!(ledger.busy_share(Some("dev")), Some(2.0 / 6.0));
        assert_eq!(ledger.busy_share(None), Some(2.0 / 6.0));
        assert_eq!(ledger.busy_share(Some("prod")), None, "nothing paid, no share");
    }

    #[test]
    fn an_env_not_seen_keeps_its_last_known_use() {
        let mut ledger = CostLedger::default();
        ledger.observe(at(0), seen("dev", &[("dev", Usage::Idle, 1)]));
        ledger.observe(at(60), BTreeMap::from([("dev".to_string(), None)]));
        ledger.observe(at(120), seen("dev", &[("dev", Usage::Busy, 1)]));
        ledger.observe(at(180), seen("dev", &[]));
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Idle), 2.0);
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Busy), 1.0);
    }

    #[test]
    fn a_clock_that_went_back_charges_nothing_for_that_interval() {
        let mut ledger = CostLedger::default();
        ledger.observe(at(600), seen("dev", &[("dev", Usage::Busy, 1)]));
        ledger.observe(at(0), seen("dev", &[("dev", Usage::Busy, 1)]));
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Busy), 0.0);
        ledger.observe(at(60), seen("dev", &[]));
        assert_eq!(minutes(&ledger, "dev", "dev", Usage::Busy), 1.0, "counting resumes from the new time");
    }

    #[test]
    fn envs_and_labels_are_kept_apart() {
        let mut ledger = CostLedger::default();
        let mut both = seen("dev", &[("dev", Usage::Busy, 1), ("dev_spot", Usage::Idle, 3)]);
        both.extend(seen("prod", &[("prod", Usage::Booting, 1)]));
        ledger.observe(at(0), both);
        ledger.observe(at(60), BTreeMap::new());
        assert_eq!(minutes(&ledger, "dev", "dev_spot", Usage::Idle), 3.0);
        assert_eq!(minutes(&ledger, "prod", "prod", Usage::Booting), 1.0);
        assert_eq!(ledger.envs(), ["dev", "prod"]);
        assert_eq!(ledger.busy_share(Some("dev")), Some(0.25));
        assert_eq!(ledger.busy_share(None), Some(0.2));
    }
}

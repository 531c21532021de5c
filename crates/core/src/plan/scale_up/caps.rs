//! The caps: creates within the env's on-demand and spot caps, a spot
//! launch's on-demand fallback reserved within the cap, and make-room (a
//! stopped agent terminated so the item's agent fits, or usage brought down
//! when over the cap).

use crate::job_key::client_token;
use crate::model::{Instance, InstanceState, Label, QueueItem};
use crate::plan::nodes::{is_busy, node_of};
use crate::plan::output::terminate;
use crate::plan::snapshot::unix_secs;
use crate::plan::{Action, TerminateReason};

use super::capacity::Provider;
use super::ScaleUp;

/// Active agents of one env counted against the caps.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    non_spot: u32,
    spot: u32,
}

impl ScaleUp<'_> {
    /// Creates an agent for the item within the env's caps; at the on-demand
    /// cap, a stopped agent makes room first (or only brings usage down).
    /// `replacement_for`: the warned agent whose at-risk build it is for.
    pub(super) fn create(
        &mut self,
        instances: &[Instance],
        label: Label,
        item: &QueueItem,
        key: &str,
        replacement_for: Option<String>,
    ) {
        let job = &item.job_name;
        let env = label.env.clone();
        if !matches!(self.cfg.amis.get(&env), Some(Some(_))) {
            self.plan.info(
                Some(key),
                format!("{job}: no AMI is configured for {env}, so no agent can be created for label {}", label.raw),
            );
            return;
        }
        let usage = self.usage(&env, instances);
        let mut replaces = None;
        let mut on_demand_fallback = false;
        if label.pricing.is_spot() {
            if usage.spot >= self.cfg.max_spot {
                self.plan.info(
                    Some(key),
                    format!("{job}: {env} is at its spot cap ({}); label {} waits", self.cfg.max_spot, label.raw),
                );
                return;
            }
            let usage = self.usage.entry(env.clone()).or_default();
            usage.spot += 1;
            // Room for an on-demand fallback is reserved now, so a fallback
            // can never take the on-demand cap over.
            if self.cfg.spot_fallback && usage.non_spot < self.cfg.max_on_demand {
                usage.non_spot += 1;
                on_demand_fallback = true;
            }
        } else {
            if usage.non_spot >= self.cfg.max_on_demand {
                // At or over the cap: a stopped agent goes (one per item). A
                // create follows only if that brings the env under its cap;
                // above it, the item waits and usage comes down instead of
                // stopped agents being swapped for running, billing ones.
                let Some(victim) = self.pick_room(instances, &env) else {
                    self.plan.info(
                        Some(key),
                        format!(
                            "{job}: {env} is at its on-demand cap ({}) with no stopped agent to replace; label {} waits",
                            self.cfg.max_on_demand, label.raw
                        ),
                    );
                    return;
                };
                self.claimed.insert(victim.id.clone());
                let usage = self.usage.entry(env.clone()).or_default();
                let agents = usage.non_spot;
                usage.non_spot -= 1;
                if usage.non_spot >= self.cfg.max_on_demand {
                    let why =
                        TerminateReason::OverCap { job_key: key.to_string(), agents, cap: self.cfg.max_on_demand };
                    terminate(self.plan, &env, victim, why);
                    self.plan.info(
                        Some(key),
                        format!(
                            "{job}: {env} is over its on-demand cap ({agents} agents, cap {}); a stopped agent goes and label {} waits",
                            self.cfg.max_on_demand, label.raw
                        ),
                    );
                    return;
                }
                let why = TerminateReason::MakeRoom { job_key: key.to_string(), label: label.raw.clone() };
                terminate(self.plan, &env, victim, why);
                replaces = Some(victim.id.clone());
            }
            self.usage.entry(env.clone()).or_default().non_spot += 1;
        }

        self.creates += 1;
        let provider = Provider::Created(self.creates, key.to_string());
        self.add_slots(provider.clone(), label.pricing.executors() - 1);
        self.pool(&label).push(provider);
        let client_token = client_token(&env, key, item.queue_id, unix_secs(self.snap.now));
        self.plan.act(Action::Create {
            env,
            label,
            job_key: key.to_string(),
            client_token,
            replaces,
            on_demand_fallback,
            replacement_for,
            warm: false,
            spare: false,
        });
    }

    /// How many of `wanted` on-demand agents fit under the env's cap now;
    /// they are counted as created. Never makes room: a stopped agent is
    /// not terminated for another stopped one.
    pub(super) fn take_on_demand_room(&mut self, env: &str, instances: &[Instance], wanted: u32) -> u32 {
        let cap = self.cfg.max_on_demand;
        self.usage(env, instances);
        let usage = self.usage.entry(env.to_string()).or_default();
        let granted = wanted.min(cap.saturating_sub(usage.non_spot));
        usage.non_spot += granted;
        granted
    }

    /// Our active instances of the env, spot and not.
    fn usage(&mut self, env: &str, instances: &[Instance]) -> Usage {
        let cfg = self.cfg;
        *self.usage.entry(env.to_string()).or_insert_with(|| {
            let mut usage = Usage::default();
            for inst in instances.iter().filter(|i| cfg.is_ours(env, i) && i.state.is_active()) {
                if inst.spot {
                    usage.spot += 1;
                } else {
                    usage.non_spot += 1;
                }
            }
            usage
        })
    }

    /// A stopped non-spot agent of the env to terminate at the on-demand cap:
    /// one on a replaced AMI if any (it would never be started), else a
    /// random one.
    fn pick_room<'i>(&mut self, instances: &'i [Instance], env: &str) -> Option<&'i Instance> {
        let nodes = &self.snap.dump.nodes;
        let candidates: Vec<&Instance> = instances
            .iter()
            .filter(|i| {
                self.cfg.is_ours(env, i)
                    && i.state == InstanceState::Stopped
                    && !i.spot
                    && !self.claimed.contains(&i.id)
                    && !node_of(nodes, i).is_some_and(is_busy)
            })
            .collect();
        let old: Vec<&Instance> = candidates.iter().copied().filter(|i| self.cfg.on_replaced_ami(env, i)).collect();
        let pick_from = if old.is_empty() { candidates } else { old };
        if pick_from.is_empty() {
            return None;
        }
        Some(pick_from[self.rng.usize(..pick_from.len())])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::model::InstanceState::*;
    use crate::model::{Instance, Label, Node, Pricing, QueueItem};
    use crate::plan::scale_up::{acts, run};
    use crate::plan::test_kit::*;
    use crate::plan::*;

    #[test]
    fn agents_created_for_one_job_key_keep_their_own_free_executors() {
        // One Pipeline run with node('dev_shared') and node('dev') blocks:
        // one job key, two labels. The on-demand agent made for the second
        // item must not take away the free executors of the shared one.
        let mut c = cfg();
        c.max_on_demand = 5;
        let labels = ["dev_shared", "dev", "dev_shared", "dev_shared", "dev_shared", "dev_shared"];
        let s = snap(vec![("dev", vec![])]).queue(labels.iter().map(|l| item("pipe", l)).collect());
        assert_eq!(brief(&plan_pass(&c, &s.view(), 1).actions), ["create dev dev_shared", "create dev dev"]);
    }

    #[test]
    fn spot_fallback_reserves_on_demand_room_within_the_cap() {
        let mut c = cfg();
        c.spot_fallback = true;
        // On-demand cap 2, one on-demand agent running: room for one fallback.
        let s = snap(vec![("dev", vec![agent("i-1", crate::model::InstanceState::Running, "dev_c5.large")])])
            .queue(vec![item("a", "dev_spot"), item("b", "dev_spot"), item("c", "dev")]);
        let plan = plan_pass(&c, &s.view(), 7);
        let fallbacks: Vec<bool> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { on_demand_fallback, .. } => Some(*on_demand_fallback),
                _ => None,
            })
            .collect();
        assert_eq!(fallbacks, [true, false], "one fallback reserved; the plain item then finds the cap full");
        assert!(info_notes(&plan.notes).iter().any(|n| n.contains("on-demand cap")), "{:?}", plan.notes);
        // Without the flag, no fallback and the plain item gets its agent.
        let plan = plan_pass(&cfg(), &s.view(), 7);
        assert_eq!(brief(&plan.actions), ["create dev dev_spot", "create dev dev_spot", "create dev dev"]);
    }

    #[test]
    fn creates_with_label_type_pricing_and_client_token() {
        let s = snap(vec![("dev", vec![])]).queue(vec![QueueItem {
            queue_id: Some(17),
            parameters: Some("A=1".into()),
            ..item("folder/job", "dev_spot_c6i.2xlarge")
        }]);
        let plan = run(&s);
        let job_key = crate::job_key::job_key("folder/job", Some("A=1"));
        assert_eq!(
            plan.actions,
            [Action::Create {
                env: "dev".into(),
                label: Label {
                    raw: "dev_spot_c6i.2xlarge".into(),
                    env: "dev".into(),
                    pricing: Pricing::Spot,
                    instance_type: "c6i.2xlarge".into(),
                },
                client_token: crate::job_key::client_token("dev", &job_key, Some(17), 1_700_000_000),
                job_key,
                replaces: None,
                on_demand_fallback: false,
                replacement_for: None,
                warm: false,
                spare: false,
            }]
        );
    }

    #[test]
    fn on_demand_cap_is_counted_per_env_with_planned_creates() {
        let s = snap(vec![
            ("dev", vec![agent("i-1", Running, "dev_shared").launched_ago(7200)]),
            ("prod", vec![agent("i-2", Running, "prod")]),
        ])
        .queue(vec![item("a", "dev"), item("b", "dev"), item("c", "prod"), item("d", "prod")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev", "create prod prod"]);
        assert_eq!(
            info_notes(&plan.notes),
            [
                "b: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits",
                "d: prod is at its on-demand cap (2) with no stopped agent to replace; label prod waits",
            ]
        );
    }

    #[test]
    fn spot_cap_is_counted_per_env() {
        let spot = |id: &str| agent(id, Running, "dev_spot").launched_ago(7200);
        let s = snap(vec![("dev", vec![spot("i-1")]), ("prod", vec![])]).queue(vec![
            item("a", "dev_spot"),
            item("b", "dev_spot"),
            item("c", "prod_spot"),
            item("d", "prod_spot"),
            item("e", "prod_spot"),
        ]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["create dev dev_spot", "create prod prod_spot", "create prod prod_spot"]);
        assert_eq!(
            info_notes(&plan.notes),
            [
                "b: dev is at its spot cap (2); label dev_spot waits",
                "e: prod is at its spot cap (2); label prod_spot waits"
            ]
        );
    }

    #[test]
    fn spot_and_on_demand_caps_are_separate() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopping, "dev"), agent("i-2", Pending, "dev_shared")])])
            .queue(vec![item("a", "dev_spot"), item("b", "dev_spot")]);
        assert_eq!(acts(&s), ["create dev dev_spot", "create dev dev_spot"]);
    }

    #[test]
    fn terminated_and_foreign_instances_do_not_count_against_the_cap() {
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Terminated, "dev"),
                agent("i-2", ShuttingDown, "dev"),
                agent("i-3", Running, "dev").named(Some("other")),
                agent("i-4", Running, "dev").launched_ago(7200),
            ],
        )])
        .queue(vec![item("a", "dev"), item("b", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn make_room_terminates_stopped_agent_in_items_own_env() {
        let s = snap(vec![
            ("dev", vec![agent("i-1", Running, "dev_shared").launched_ago(7200), agent("i-2", Stopped, "dev_shared")]),
            ("prod", vec![agent("i-9", Stopped, "prod")]),
        ])
        .queue(vec![item("job", "dev")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["terminate i-2 make-room", "create dev dev replacing i-2"]);
        assert_eq!(
            plan.actions[0],
            Action::Terminate {
                env: "dev".into(),
                instance_id: "i-2".into(),
                why: TerminateReason::MakeRoom { job_key: key("job"), label: "dev".into() },
            }
        );
    }

    #[test]
    fn make_room_keeps_the_cap_for_later_items() {
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_shared"), agent("i-2", Stopped, "dev_shared")])])
            .queue(vec![item("a", "dev"), item("b", "dev"), item("c", "dev")]);
        let plan = run(&s);
        let got = brief(&plan.actions);
        assert_eq!(got.len(), 4, "{got:?}");
        let victims: BTreeSet<&str> = [got[0].as_str(), got[2].as_str()].into_iter().collect();
        assert_eq!(victims, ["terminate i-1 make-room", "terminate i-2 make-room"].into_iter().collect());
        assert_eq!(got[1], format!("create dev dev replacing {}", &got[0][10..13]));
        assert_eq!(got[3], format!("create dev dev replacing {}", &got[2][10..13]));
        assert_eq!(
            info_notes(&plan.notes),
            ["c: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits"]
        );
    }

    #[test]
    fn over_the_cap_make_room_terminates_but_never_creates() {
        // The cap was lowered to 2 with six stopped agents left: each item
        // retires one stopped agent and waits; usage falls, nothing new bills.
        let stopped: Vec<Instance> = (1..=6).map(|n| agent(&format!("i-{n}"), Stopped, "dev_shared")).collect();
        let s = snap(vec![("dev", stopped)]).queue(vec![
            item("a", "dev"),
            item("b", "dev"),
            item("c", "dev"),
            item("d", "dev"),
        ]);
        let plan = run(&s);
        let got = brief(&plan.actions);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().all(|a| a.starts_with("terminate ") && a.ends_with(" over-cap")), "{got:?}");
        assert!(!got.iter().any(|a| a.starts_with("create")), "{got:?}");
        assert!(
            info_notes(&plan.notes).iter().any(|n| n.contains("over its on-demand cap (6 agents, cap 2)")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn cap_of_zero_never_creates() {
        let mut c = cfg();
        c.max_on_demand = 0;
        let s = snap(vec![("dev", vec![agent("i-1", Stopped, "dev_shared")])])
            .queue(vec![item("a", "dev"), item("b", "dev")]);
        let got = brief(&plan_pass(&c, &s.view(), 1).actions);
        assert_eq!(got, ["terminate i-1 over-cap"]);
    }

    #[test]
    fn make_room_sets_volumes_to_go_before_terminating() {
        // An agent the Python script made keeps its root volume on termination.
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Running, "dev_shared").launched_ago(7200),
                agent("i-2", Stopped, "dev_shared").volume("/dev/xvda", false),
            ],
        )])
        .queue(vec![item("job", "dev")]);
        assert_eq!(acts(&s), ["dot i-2 /dev/xvda", "terminate i-2 make-room", "create dev dev replacing i-2"]);
    }

    #[test]
    fn another_masters_agents_are_neither_started_nor_counted_nor_retired() {
        let theirs = |id: &str, state| {
            agent(id, state, "dev").with(|i| i.master_tag = Some("https://other-jenkins.example.com/".into()))
        };
        // Three of theirs, stopped and running, with our Name and label.
        let s = snap(vec![("dev", vec![theirs("i-1", Stopped), theirs("i-2", Running), theirs("i-3", Stopped)])])
            .queue(vec![item("a", "dev"), item("b", "dev")]);
        // Nothing of theirs is started, made room with, or counted against our cap.
        assert_eq!(acts(&s), ["create dev dev", "create dev dev"]);
        // Tags are anybody's to set: our Name and master tags on an instance
        // launched with another key pair do not make it ours.
        let retagged = |id: &str| agent(id, Stopped, "dev").with(|i| i.key_name = Some("team-x".into()));
        let s = snap(vec![("dev", vec![retagged("i-1"), retagged("i-2")])]).queue(vec![item("a", "dev")]);
        assert_eq!(acts(&s), ["create dev dev"]);
    }

    #[test]
    fn make_room_prefers_a_stopped_agent_on_a_replaced_ami() {
        let s = snap(vec![(
            "dev",
            vec![agent("i-1", Stopped, "dev_shared"), agent("i-2", Stopped, "dev_shared").ami("ami-old")],
        )])
        .queue(vec![item("job", "dev")]);
        for seed in 0..10 {
            assert_eq!(
                brief(&plan_pass(&cfg(), &s.view(), seed).actions),
                ["terminate i-2 make-room", "create dev dev replacing i-2"]
            );
        }
    }

    #[test]
    fn make_room_never_takes_spot_busy_foreign_or_running_agents() {
        let busy =
            Node { busy_executors: Some(1), offline: true, ..online("dev_shared-10.0.0.4", "i-4", "dev_shared", 0) };
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Running, "dev_shared").launched_ago(7200),
                agent("i-2", Stopped, "dev_shared").named(Some("other")),
                agent("i-3", Stopped, "dev_spot"),
                agent("i-4", Stopped, "dev_shared"),
                agent("i-5", Stopping, "dev_shared"),
            ],
        )])
        .nodes(vec![busy])
        .queue(vec![item("job", "dev")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), Vec::<String>::new());
        assert_eq!(
            info_notes(&plan.notes),
            ["job: dev is at its on-demand cap (2) with no stopped agent to replace; label dev waits"]
        );
    }

    #[test]
    fn spot_cap_never_makes_room() {
        let s = snap(vec![(
            "dev",
            vec![
                agent("i-1", Stopped, "dev_spot"),
                agent("i-2", Running, "dev_spot").launched_ago(7200),
                agent("i-3", Stopped, "dev"),
            ],
        )])
        .queue(vec![item("job", "dev_spot_c5.large")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), Vec::<String>::new());
        assert_eq!(info_notes(&plan.notes), ["job: dev is at its spot cap (2); label dev_spot_c5.large waits"]);
    }

    #[test]
    fn env_without_ami_gets_starts_but_no_creates() {
        let s = snap(vec![("qa", vec![agent("i-1", Stopped, "qa").ami("ami-whatever")])])
            .queue(vec![item("a", "qa"), item("b", "qa")]);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), ["start i-1 qa"]);
        assert_eq!(
            info_notes(&plan.notes),
            ["b: no AMI is configured for qa, so no agent can be created for label qa"]
        );
    }
}

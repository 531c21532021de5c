//! How a plan's env actions go out as EC2 calls (issue 11). EC2 answers a
//! mutating call in about a second and throttles per API, while its calls
//! take lists: the creates of one env that share a launch spec and a subnet
//! go out as one RunInstances (MinCount 1, MaxCount k), and the env's
//! starts, stops and terminations as one call each.
//!
//! The result is data, per env: sequences that run side by side, each a list
//! of stages run one after the other, each stage calls run side by side.
//! Dependent steps keep their order: an instance's volumes are set to go
//! before the terminations, and a create that replaces a make-room
//! termination follows it (alone, so the cap holds exactly as planned).

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use super::Action;
use crate::model::Pricing;

/// The instance actions EC2 takes as a list of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListKind {
    Start,
    Stop,
    Terminate,
}

/// One EC2 call, by the positions of the actions it carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// One action alone.
    One(usize),
    /// The same action on several instances, one call for all.
    List(ListKind, Vec<usize>),
    /// Creates with one launch spec in one subnet (its index in the env's
    /// list): one RunInstances for all, the first in plan order served first.
    Launch { subnet: usize, creates: Vec<usize> },
}

/// Stages run one after the other; the calls of a stage side by side.
pub type Sequence = Vec<Vec<Call>>;

/// The env actions of `actions` as calls, per env: sequences to run side by
/// side. `subnets` gives an env's subnet count (at least 1 is assumed).
/// Actions of no env (marker upkeep) are left out.
pub fn env_calls(actions: &[Action], subnets: impl Fn(&str) -> usize) -> BTreeMap<&str, Vec<Sequence>> {
    let mut per_env: BTreeMap<&str, EnvCalls> = BTreeMap::new();
    for (at, action) in actions.iter().enumerate() {
        // Jenkins calls, made before any EC2 call (see act).
        if matches!(action, Action::OfflineNode { .. }) {
            continue;
        }
        let Some(env) = action.env() else { continue };
        let calls = per_env.entry(env).or_default();
        match action {
            Action::Create { replaces: None, label, on_demand_fallback, client_token, warm, .. } => {
                let subnet = subnet_index(client_token, subnets(env));
                let spec = (label.raw.clone(), label.instance_type.clone(), label.pricing, *on_demand_fallback, *warm);
                calls.launches.entry((spec, subnet)).or_default().push(at);
            }
            Action::Create { replaces: Some(id), .. } => calls.chain(id).push(at),
            other => {
                let id = other.instance_id().expect("an env action other than a create names its instance");
                calls.chain(id).push(at);
            }
        }
    }
    per_env.into_iter().map(|(env, calls)| (env, calls.sequences(actions))).collect()
}

/// One env's actions, gathered.
#[derive(Default)]
struct EnvCalls {
    /// The actions on each instance in plan order, a create that replaces
    /// it after them; in order of first appearance.
    chains: Vec<(String, Vec<usize>)>,
    /// Creates without a make-room termination, per launch spec and subnet.
    launches: BTreeMap<(LaunchKey, usize), Vec<usize>>,
}

/// What makes launches the same: the label (tags, type, pricing), whether
/// a spot launch may fall back to on-demand, and whether it is for a warm
/// pool (tagged so).
type LaunchKey = (String, String, Pricing, bool, bool);

impl EnvCalls {
    fn chain(&mut self, id: &str) -> &mut Vec<usize> {
        let at = match self.chains.iter().position(|(i, _)| i == id) {
            Some(at) => at,
            None => {
                self.chains.push((id.to_string(), Vec::new()));
                self.chains.len() - 1
            }
        };
        &mut self.chains[at].1
    }

    fn sequences(self, actions: &[Action]) -> Vec<Sequence> {
        let mut prepare = Vec::new();
        let mut terminations = Vec::new();
        let mut after_termination = Vec::new();
        let mut lists: BTreeMap<ListKind, Vec<usize>> = BTreeMap::new();
        let mut sequences: Vec<Sequence> = Vec::new();
        for (_, chain) in self.chains {
            let kinds: Vec<&Action> = chain.iter().map(|&at| &actions[at]).collect();
            match kinds.as_slice() {
                [Action::Start { .. }] => lists.entry(ListKind::Start).or_default().push(chain[0]),
                [Action::Stop { .. }] => lists.entry(ListKind::Stop).or_default().push(chain[0]),
                // The usual termination: volumes set first (if need be),
                // then the terminate, then the creates it makes room for.
                _ if termination_shape(&kinds).is_some() => {
                    let t = termination_shape(&kinds).expect("checked");
                    prepare.extend_from_slice(&chain[..t]);
                    terminations.push(chain[t]);
                    after_termination.extend_from_slice(&chain[t + 1..]);
                }
                // Anything else keeps its one-by-one order.
                _ => sequences.push(chain.iter().map(|&at| vec![Call::One(at)]).collect()),
            }
        }
        if !terminations.is_empty() {
            let mut sequence = Vec::new();
            if !prepare.is_empty() {
                sequence.push(prepare.into_iter().map(Call::One).collect());
            }
            sequence.push(vec![Call::List(ListKind::Terminate, terminations)]);
            if !after_termination.is_empty() {
                sequence.push(after_termination.into_iter().map(Call::One).collect());
            }
            sequences.push(sequence);
        }
        for (kind, ats) in lists {
            sequences.push(vec![vec![Call::List(kind, ats)]]);
        }
        for ((_, subnet), creates) in self.launches {
            sequences.push(vec![vec![Call::Launch { subnet, creates }]]);
        }
        // In plan order of their first action, so logs and tests read alike.
        sequences.sort_by_key(first_action);
        sequences
    }
}

/// Where the terminate of a chain shaped [set volumes?] terminate [creates
/// that replace it]* is.
fn termination_shape(chain: &[&Action]) -> Option<usize> {
    let t = usize::from(matches!(chain.first(), Some(Action::SetDeleteOnTermination { .. })));
    matches!(chain.get(t), Some(Action::Terminate { .. })).then_some(())?;
    chain[t + 1..].iter().all(|a| matches!(a, Action::Create { replaces: Some(_), .. })).then_some(t)
}

fn first_action(sequence: &Sequence) -> usize {
    let positions = |call: &Call| match call {
        Call::One(at) => vec![*at],
        Call::List(_, ats) | Call::Launch { creates: ats, .. } => ats.clone(),
    };
    sequence.iter().flatten().flat_map(positions).min().unwrap_or(usize::MAX)
}

/// The subnet of a launch among `count`: spread at random over the env's
/// subnets (AZs) as the original did, but the same for the same token, so a
/// retried call goes where the first went and EC2 answers it from the token
/// (a launch's token is remembered per AZ: sent to another AZ it would
/// launch again).
pub fn subnet_index(client_token: &str, count: usize) -> usize {
    let spread = client_token.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    spread % count.max(1)
}

/// The idempotency token of one RunInstances for the items of `tokens` (in
/// any order): an item's own token when alone, else the md5 of the sorted
/// tokens. A retried call, or a rerun after a crash with the same items in
/// the same window, repeats the token and EC2 answers with the instances of
/// the first call instead of launching again.
pub fn launch_token(tokens: &[&str]) -> String {
    if let [one] = tokens {
        return one.to_string();
    }
    let mut sorted = tokens.to_vec();
    sorted.sort_unstable();
    Md5::digest(sorted.join(",").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The idempotency token of a launch moved from its first subnet to
/// `subnet` after a capacity shortage: the same on every retry of it, and
/// one per subnet. EC2 keeps a launch's token per AZ, so the first token
/// sent to another AZ would launch anew, not be refused (nor answered from
/// the first launch); a token per subnet keeps each subnet's retry answered
/// from its own launch, and in another subnet of the same AZ (a changed
/// parameter there) clear of IdempotentParameterMismatch.
pub fn subnet_token(token: &str, subnet: &str) -> String {
    Md5::digest(format!("{token}@{subnet}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Label;
    use crate::plan::test_kit;
    use crate::plan::TerminateReason;

    fn label(raw: &str, pricing: Pricing, instance_type: &str) -> Label {
        Label { raw: raw.into(), env: "dev".into(), pricing, instance_type: instance_type.into() }
    }

    fn create(env: &str, raw: &str, token: &str) -> Action {
        let pricing = if raw.contains("spot") { Pricing::Spot } else { Pricing::OnDemand };
        Action::Create {
            env: env.into(),
            label: Label { env: env.into(), ..label(raw, pricing, "t2.small") },
            job_key: format!("job-{token}"),
            client_token: token.into(),
            replaces: None,
            on_demand_fallback: false,
            replacement_for: None,
            warm: false,
            spare: false,
        }
    }

    fn replacing(id: &str, token: &str) -> Action {
        let mut c = create("dev", "dev", token);
        if let Action::Create { replaces, .. } = &mut c {
            *replaces = Some(id.into());
        }
        c
    }

    fn terminate(id: &str) -> Action {
        Action::Terminate {
            env: "dev".into(),
            instance_id: id.into(),
            why: TerminateReason::Spot { node: format!("dev_spot-{id}") },
        }
    }

    fn volumes(id: &str) -> Action {
        Action::SetDeleteOnTermination { env: "dev".into(), instance_id: id.into(), devices: vec!["/dev/xvda".into()] }
    }

    fn stop(id: &str) -> Action {
        test_kit::stop("dev", id, &format!("dev-{id}"))
    }

    fn start(id: &str) -> Action {
        Action::Start {
            env: "dev".into(),
            instance_id: id.into(),
            label: "dev".into(),
            job_key: format!("job-{id}"),
            why: "w".into(),
            spare: false,
            tag_warmed: false,
        }
    }

    fn one_subnet(_: &str) -> usize {
        1
    }

    #[test]
    fn creates_sharing_env_and_launch_spec_go_out_as_one_launch() {
        let actions = [
            create("dev", "dev_spot", "a"),
            create("prod", "prod_spot", "b"),
            create("dev", "dev_spot", "c"),
            create("dev", "dev", "d"),
            create("dev", "dev_spot", "e"),
        ];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(
            calls["dev"],
            [
                vec![vec![Call::Launch { subnet: 0, creates: vec![0, 2, 4] }]],
                vec![vec![Call::Launch { subnet: 0, creates: vec![3] }]]
            ]
        );
        assert_eq!(calls["prod"], [vec![vec![Call::Launch { subnet: 0, creates: vec![1] }]]]);
    }

    #[test]
    fn another_type_or_fallback_is_another_launch() {
        let mut bigger = create("dev", "dev_spot", "b");
        let mut fallback = create("dev", "dev_spot", "c");
        if let Action::Create { label, .. } = &mut bigger {
            label.instance_type = "c5.large".into();
        }
        if let Action::Create { on_demand_fallback, .. } = &mut fallback {
            *on_demand_fallback = true;
        }
        let actions = [create("dev", "dev_spot", "a"), bigger, fallback];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(calls["dev"].len(), 3, "{:?}", calls["dev"]);
    }

    #[test]
    fn a_batch_is_split_over_the_subnets_one_launch_per_subnet() {
        let tokens: Vec<String> = (0..40).map(|n| format!("token-{n}")).collect();
        let actions: Vec<Action> = tokens.iter().map(|t| create("dev", "dev_spot", t)).collect();
        let calls = env_calls(&actions, |_| 3);
        let mut seen = Vec::new();
        for sequence in &calls["dev"] {
            let [stage] = sequence.as_slice() else { panic!("{sequence:?}") };
            let [Call::Launch { subnet, creates }] = stage.as_slice() else { panic!("{stage:?}") };
            assert!(!seen.contains(subnet), "one launch per subnet");
            seen.push(*subnet);
            // Each item lands in the subnet its own token picks, as alone.
            assert!(creates.iter().all(|&at| subnet_index(&tokens[at], 3) == *subnet));
        }
        assert_eq!(seen.len(), 3, "40 items spread over all three subnets");
    }

    #[test]
    fn starts_stops_and_terminations_of_an_env_go_out_as_one_call_each() {
        let actions =
            [stop("i-1"), start("i-2"), terminate("i-3"), stop("i-4"), terminate("i-5"), start("i-6"), volumes("i-7")];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(
            calls["dev"],
            [
                vec![vec![Call::List(ListKind::Stop, vec![0, 3])]],
                vec![vec![Call::List(ListKind::Start, vec![1, 5])]],
                vec![vec![Call::List(ListKind::Terminate, vec![2, 4])]],
                vec![vec![Call::One(6)]],
            ]
        );
    }

    #[test]
    fn volumes_go_before_the_terminations_and_a_make_room_create_after_them() {
        let actions = [
            volumes("i-1"),
            terminate("i-1"),
            terminate("i-2"),
            replacing("i-2", "r"),
            create("dev", "dev", "x"),
            create("dev", "dev", "y"),
        ];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(
            calls["dev"],
            [
                vec![
                    vec![Call::One(0)],
                    vec![Call::List(ListKind::Terminate, vec![1, 2])],
                    // Alone: the cap was planned for this create only.
                    vec![Call::One(3)],
                ],
                vec![vec![Call::Launch { subnet: 0, creates: vec![4, 5] }]],
            ]
        );
    }

    #[test]
    fn other_chains_on_one_instance_keep_their_order_one_call_at_a_time() {
        let tag = Action::TagMaster { env: "dev".into(), instance_id: "i-1".into(), master: "m".into() };
        let actions = [tag, volumes("i-1"), terminate("i-1"), volumes("i-2")];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(
            calls["dev"],
            [vec![vec![Call::One(0)], vec![Call::One(1)], vec![Call::One(2)]], vec![vec![Call::One(3)]],]
        );
        // Another env's instance of the same id is another instance.
        let mut other = terminate("i-1");
        if let Action::Terminate { env, .. } = &mut other {
            *env = "prod".into();
        }
        let actions = [stop("i-1"), other];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(calls["dev"], [vec![vec![Call::List(ListKind::Stop, vec![0])]]]);
        assert_eq!(calls["prod"], [vec![vec![Call::List(ListKind::Terminate, vec![1])]]]);
    }

    #[test]
    fn marker_upkeep_makes_no_call() {
        let actions = [Action::RemoveStartMarker { file_name: "x.start_instance".into() }, stop("i-1")];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls["dev"], [vec![vec![Call::List(ListKind::Stop, vec![1])]]]);
    }

    #[test]
    fn offline_node_is_no_ec2_call() {
        let offline = Action::OfflineNode {
            env: "dev".into(),
            instance_id: "i-1".into(),
            node: "dev-i-1".into(),
            reason: "spot interruption".into(),
        };
        let actions = [offline, stop("i-2")];
        let calls = env_calls(&actions, one_subnet);
        assert_eq!(calls["dev"], [vec![vec![Call::List(ListKind::Stop, vec![1])]]]);
    }

    #[test]
    fn a_launch_token_depends_on_the_items_not_their_order() {
        assert_eq!(launch_token(&["a"]), "a", "alone, an item keeps its own token");
        assert_eq!(launch_token(&["a", "b"]), launch_token(&["b", "a"]));
        assert_ne!(launch_token(&["a", "b"]), launch_token(&["a", "c"]));
        assert_ne!(launch_token(&["a", "b"]), launch_token(&["a", "b", "c"]));
        assert_eq!(launch_token(&["a", "b"]).len(), 32, "EC2 takes tokens of up to 64 characters");
    }

    #[test]
    fn a_launch_moved_to_another_subnet_gets_its_own_lasting_token() {
        let moved = subnet_token("a", "subnet-b");
        assert_eq!(moved, subnet_token("a", "subnet-b"), "a retry repeats it");
        assert_ne!(moved, "a");
        assert_ne!(moved, subnet_token("a", "subnet-c"));
        assert_ne!(moved, subnet_token("b", "subnet-b"));
        assert_eq!(moved.len(), 32);
    }
}

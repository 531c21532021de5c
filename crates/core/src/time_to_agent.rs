//! Time to agent: for every queue item the manager serves, when it was first
//! seen on the queue, when an agent action was taken for it (a start or a
//! create; none when an agent with a free executor absorbed it), when that
//! agent's instance was seen `running`, when its node was seen online, and
//! when the item left the queue (its build started). Pure: each pass hands
//! in what it observed and its time. Items in flight outlive a run: the
//! caller keeps the [`Tracker`] in a state file between runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::job_key::job_key;
use crate::label::parse_label;
use crate::model::{EnvObservation, InstanceState, JenkinsDump, QueueItem};

/// Items in flight kept at most (the oldest go first): bounds the state
/// file whatever the queue does.
pub const MAX_ITEMS: usize = 2000;

/// How an item got its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// No start or create: an agent with a free executor took it.
    Absorbed,
    /// A stopped agent was started for it.
    Start,
    /// An agent was created for it.
    Create,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Absorbed, Kind::Start, Kind::Create];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Absorbed => "absorbed",
            Kind::Start => "start",
            Kind::Create => "create",
        }
    }
}

/// The agent action taken for an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentAction {
    pub kind: Kind,
    pub at: SystemTime,
    pub instance_id: Option<String>,
}

/// One queue item from first sight on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub job: String,
    /// The job key its markers and actions carry.
    pub job_key: String,
    pub label: String,
    pub env: String,
    pub first_seen: SystemTime,
    pub action: Option<AgentAction>,
    /// Its agent's instance first seen `running`.
    pub running: Option<SystemTime>,
    /// Its agent's node first seen online.
    pub online: Option<SystemTime>,
}

impl Item {
    pub fn kind(&self) -> Kind {
        self.action.as_ref().map_or(Kind::Absorbed, |a| a.kind)
    }

    /// The phase boundaries after `first_seen`, in order, each clamped to
    /// be no earlier than the one before (another host's clock, or a clock
    /// that went back, must not give negative phases): acted, running,
    /// online; `None` for a phase not reached.
    pub fn phases(&self) -> [Option<SystemTime>; 3] {
        let mut floor = self.first_seen;
        [self.action.as_ref().map(|a| a.at), self.running, self.online].map(|t| {
            t.map(|t| {
                floor = floor.max(t);
                floor
            })
        })
    }
}

/// An item that left the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub item: Item,
    pub left: SystemTime,
}

impl Finished {
    /// From first sight on the queue to leaving it; zero if the clock went
    /// back in between.
    pub fn time_to_agent(&self) -> Duration {
        self.left.duration_since(self.item.first_seen).unwrap_or_default()
    }
}

/// The items in flight, keyed by Jenkins' queue id (else by job key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    items: BTreeMap<String, Item>,
}

fn item_key(q: &QueueItem) -> String {
    match q.queue_id {
        Some(id) => format!("id:{id}"),
        None => format!("key:{}", job_key(&q.job_name, q.parameters.as_deref())),
    }
}

impl Tracker {
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// A pass's queue: items not seen before start waiting, items no more
    /// on it have left (their builds started, or they were cancelled).
    /// Items whose label names none of `envs` are not ours to serve.
    pub fn queue(&mut self, now: SystemTime, queue: &[QueueItem], envs: &BTreeSet<String>) -> Vec<Finished> {
        let mut present = BTreeSet::new();
        for q in queue {
            let Ok(label) = parse_label(&q.label, envs) else { continue };
            let key = item_key(q);
            present.insert(key.clone());
            self.items.entry(key).or_insert_with(|| Item {
                job: q.job_name.clone(),
                job_key: job_key(&q.job_name, q.parameters.as_deref()),
                label: q.label.clone(),
                env: label.env,
                first_seen: now,
                action: None,
                running: None,
                online: None,
            });
        }
        let gone: Vec<String> = self.items.keys().filter(|k| !present.contains(*k)).cloned().collect();
        let finished =
            gone.into_iter().filter_map(|k| self.items.remove(&k)).map(|item| Finished { item, left: now }).collect();
        self.bound();
        finished
    }

    /// A start or create for `job_key` was carried out: the longest-waiting
    /// item of that key without an action gets it.
    pub fn acted(&mut self, job_key: &str, kind: Kind, at: SystemTime, instance_id: Option<String>) {
        let item =
            self.items.values_mut().filter(|i| i.job_key == job_key && i.action.is_none()).min_by_key(|i| i.first_seen);
        if let Some(item) = item {
            item.action = Some(AgentAction { kind, at, instance_id });
        }
    }

    /// A pass's instances and nodes: an item's agent first seen `running`,
    /// its node first seen online. Without the dump, only `running` moves.
    pub fn agents(&mut self, now: SystemTime, envs: &BTreeMap<String, EnvObservation>, dump: Option<&JenkinsDump>) {
        for item in self.items.values_mut() {
            let Some(id) = item.action.as_ref().and_then(|a| a.instance_id.as_deref()) else { continue };
            let instance =
                envs.get(&item.env).and_then(|o| o.as_ref().ok()).and_then(|i| i.iter().find(|i| i.id == id));
            if item.running.is_none() && instance.is_some_and(|i| i.state == InstanceState::Running) {
                item.running = Some(now);
            }
            let online =
                dump.is_some_and(|d| d.nodes.iter().any(|n| !n.offline && n.instance_id.as_deref() == Some(id)));
            if item.online.is_none() && online {
                // Seen online before running was seen (one pass saw both):
                // running no later than online.
                item.running.get_or_insert(now);
                item.online = Some(now);
            }
        }
    }

    /// The item waiting longest, and for how long.
    pub fn slowest_waiting(&self, now: SystemTime) -> Option<(&Item, Duration)> {
        self.items
            .values()
            .min_by_key(|i| i.first_seen)
            .map(|i| (i, now.duration_since(i.first_seen).unwrap_or_default()))
    }

    /// At most [`MAX_ITEMS`]: the oldest go.
    fn bound(&mut self) {
        while self.items.len() > MAX_ITEMS {
            let Some(oldest) = self.items.iter().min_by_key(|(_, i)| i.first_seen).map(|(k, _)| k.clone()) else {
                break;
            };
            self.items.remove(&oldest);
        }
    }
}

/// The `p` quantile (0..=1) of `values` by the nearest-rank method; `None`
/// for none.
pub fn quantile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Instance, Node};
    use crate::plan::test_kit::agent;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn envs() -> BTreeSet<String> {
        ["dev", "prod"].iter().map(|e| e.to_string()).collect()
    }

    fn queued(job: &str, label: &str, id: u64) -> QueueItem {
        QueueItem { job_name: job.into(), label: label.into(), queue_id: Some(id), ..QueueItem::default() }
    }

    /// The tracker goes by an agent's id and state only.
    fn instance(id: &str, state: InstanceState) -> Instance {
        agent(id, state, "dev")
    }

    fn observed(instances: Vec<Instance>) -> BTreeMap<String, EnvObservation> {
        BTreeMap::from([("dev".to_string(), Ok(instances))])
    }

    fn nodes(online: &[&str]) -> JenkinsDump {
        let nodes = online
            .iter()
            .map(|id| Node { name: format!("dev-{id}"), instance_id: Some(id.to_string()), ..Node::default() })
            .collect();
        JenkinsDump { nodes, ..JenkinsDump::default() }
    }

    #[test]
    fn a_created_agent_goes_through_every_phase() {
        let mut t = Tracker::default();
        let app = queued("app", "dev", 7);
        assert!(t.queue(at(0), std::slice::from_ref(&app), &envs()).is_empty());
        t.acted(&job_key("app", None), Kind::Create, at(1), Some("i-1".into()));
        t.agents(at(5), &observed(vec![instance("i-1", InstanceState::Pending)]), Some(&nodes(&[])));
        t.agents(at(20), &observed(vec![instance("i-1", InstanceState::Running)]), Some(&nodes(&[])));
        t.queue(at(20), std::slice::from_ref(&app), &envs());
        t.agents(at(80), &observed(vec![instance("i-1", InstanceState::Running)]), Some(&nodes(&["i-1"])));
        let done = t.queue(at(85), &[], &envs());
        assert_eq!(done.len(), 1);
        let d = &done[0];
        assert_eq!(d.item.kind(), Kind::Create);
        assert_eq!(d.item.env, "dev");
        assert_eq!(d.item.phases(), [Some(at(1)), Some(at(20)), Some(at(80))]);
        assert_eq!(d.time_to_agent(), Duration::from_secs(85));
        assert_eq!(t.items().count(), 0);
    }

    #[test]
    fn an_item_that_leaves_before_any_action_was_absorbed() {
        let mut t = Tracker::default();
        t.queue(at(0), &[queued("app", "dev", 1), queued("lint", "prod_spot", 2)], &envs());
        let done = t.queue(at(5), &[queued("lint", "prod_spot", 2)], &envs());
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].item.kind(), Kind::Absorbed);
        assert_eq!(done[0].item.phases(), [None, None, None]);
        assert_eq!(done[0].time_to_agent(), Duration::from_secs(5));
        assert_eq!(t.slowest_waiting(at(9)).map(|(i, d)| (i.job.as_str(), d)), Some(("lint", Duration::from_secs(9))));
    }

    #[test]
    fn an_item_that_leaves_before_its_agent_is_up_keeps_the_phases_it_reached() {
        let mut t = Tracker::default();
        t.queue(at(0), &[queued("app", "dev", 1)], &envs());
        t.acted(&job_key("app", None), Kind::Start, at(2), Some("i-9".into()));
        let done = t.queue(at(10), &[], &envs());
        assert_eq!(done[0].item.kind(), Kind::Start);
        assert_eq!(done[0].item.phases(), [Some(at(2)), None, None]);
    }

    #[test]
    fn items_of_labels_we_do_not_serve_are_not_tracked() {
        let mut t = Tracker::default();
        t.queue(at(0), &[queued("app", "windows", 1), queued("x", "dev && linux", 2)], &envs());
        assert_eq!(t.items().count(), 0);
    }

    #[test]
    fn an_action_goes_to_the_longest_waiting_item_of_its_key_without_one() {
        let mut t = Tracker::default();
        t.queue(at(0), &[queued("app", "dev", 1)], &envs());
        t.queue(at(5), &[queued("app", "dev", 1), queued("app", "dev", 2)], &envs());
        let key = job_key("app", None);
        t.acted(&key, Kind::Create, at(6), Some("i-1".into()));
        t.acted(&key, Kind::Start, at(7), Some("i-2".into()));
        t.acted(&key, Kind::Create, at(8), Some("i-3".into()));
        let kinds: Vec<(u64, Option<String>)> = t
            .items
            .iter()
            .map(|(k, i)| (k[3..].parse().unwrap(), i.action.as_ref().and_then(|a| a.instance_id.clone())))
            .collect();
        assert_eq!(kinds, [(1, Some("i-1".into())), (2, Some("i-2".into()))], "the third found no item");
    }

    #[test]
    fn an_item_spans_two_runs_through_the_state_it_leaves() {
        let mut first = Tracker::default();
        first.queue(at(0), &[queued("app", "dev", 1)], &envs());
        first.acted(&job_key("app", None), Kind::Create, at(1), Some("i-1".into()));
        let saved = serde_json::to_string(&first).unwrap();

        let mut second: Tracker = serde_json::from_str(&saved).unwrap();
        second.agents(at(300), &observed(vec![instance("i-1", InstanceState::Running)]), Some(&nodes(&["i-1"])));
        second.queue(at(300), &[queued("app", "dev", 1)], &envs());
        let done = second.queue(at(305), &[], &envs());
        assert_eq!(done[0].item.first_seen, at(0), "first seen by the run before");
        assert_eq!(done[0].item.phases(), [Some(at(1)), Some(at(300)), Some(at(300))]);
        assert_eq!(done[0].time_to_agent(), Duration::from_secs(305));
    }

    #[test]
    fn clock_skew_gives_no_negative_phase_or_time() {
        let mut t = Tracker::default();
        t.queue(at(100), &[queued("app", "dev", 1)], &envs());
        // The next run's clock is a minute behind.
        t.acted(&job_key("app", None), Kind::Create, at(40), Some("i-1".into()));
        t.agents(at(50), &observed(vec![instance("i-1", InstanceState::Running)]), None);
        let done = t.queue(at(60), &[], &envs());
        assert_eq!(done[0].time_to_agent(), Duration::ZERO);
        assert_eq!(done[0].item.phases(), [Some(at(100)), Some(at(100)), None]);
    }

    #[test]
    fn the_items_in_flight_are_bounded_oldest_first() {
        let mut t = Tracker::default();
        let queue: Vec<QueueItem> = (0..MAX_ITEMS as u64).map(|n| queued("app", "dev", n)).collect();
        t.queue(at(0), &queue, &envs());
        let mut more = queue.clone();
        more.push(queued("late", "dev", 99_999));
        t.queue(at(5), &more, &envs());
        assert_eq!(t.items().count(), MAX_ITEMS);
        assert!(t.items().any(|i| i.job == "late"), "the newest is kept");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let secs: Vec<Duration> = [10, 20, 30, 40, 100].iter().map(|s| Duration::from_secs(*s)).collect();
        assert_eq!(quantile(&secs, 0.5), Some(Duration::from_secs(30)));
        assert_eq!(quantile(&secs, 0.95), Some(Duration::from_secs(100)));
        assert_eq!(quantile(&secs[..1], 0.95), Some(Duration::from_secs(10)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}

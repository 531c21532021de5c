//! The envs' interruption queues (`--interruption_queue`): EC2 events that
//! an EventBridge rule routes to an SQS queue in each env's account and
//! region, read with the env's assumed role. Observe reads each env's queue
//! without waiting (10 messages, and on while batches come back full, up
//! to 50), alongside the dump and the describes; the
//! events become part of the snapshot and the planner decides what they
//! mean. Between passes the [`Listener`] long-polls the queues, and a warning
//! or rebalance for one of our spot agents that arrives ends the nap: its
//! node, if the last pass saw it online, is taken offline at once (the
//! planner's own `offline-node`), and the next pass runs at once with it. A message is deleted once its pass handled it; one that is no EC2
//! event we know is deleted at once and counted `interruption_dropped`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;

use aws_sdk_sqs::primitives::{DateTime, DateTimeFormat};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::aws::sqs::SqsError;
use crate::model::{EventKind, InstanceEvent, InstanceState};
use crate::plan::{offline_at_once, Action};
use crate::world::{BoxFuture, Queue};

/// Messages asked for in one receive: SQS's most.
pub const BATCH: i32 = 10;
/// Receives in a row while each comes back full: at most 50 messages per env
/// and read.
pub const MAX_BATCHES: usize = 5;
/// SQS's longest long poll.
pub const LONGEST_POLL: Duration = Duration::from_secs(20);
/// How far a nap's poll may outlast the nap. The loop sets a nap's end a
/// moment before the nap begins, and SQS waits whole seconds: rounded down,
/// a 1 s nap would not poll at all and a 5 s one would poll 4 s and sleep
/// its last second unwatched. A poll still out when the pass begins stays
/// out, as any does (see [`Listener`]).
const POLL_SLACK: Duration = Duration::from_millis(100);

/// How long a message we received stays hidden from other reads, set on
/// every receive rather than left to the queue's own setting: a nap's poll
/// takes a message that the next pass handles and deletes, so it must stay
/// hidden over the rest of the nap and that pass, or a queue with a short
/// timeout (0 is allowed) hands it back to the next poll at once, again and
/// again. Two pass intervals and 10 s, at least 30 s (Karpenter uses 20 s
/// for a loop that handles what it receives at once).
pub fn visibility_timeout(pass_interval: Duration) -> Duration {
    (pass_interval * 2 + Duration::from_secs(10)).max(Duration::from_secs(30))
}

/// One env's queue of EC2 events; its URL is looked up once per run.
pub struct EventQueue {
    pub client: Arc<dyn Queue>,
    pub name: String,
    /// The env's account, which owns the queue.
    pub owner: String,
    /// Set on every receive, see [`visibility_timeout`].
    visibility: Duration,
    url: OnceCell<String>,
}

impl EventQueue {
    pub fn new(client: Arc<dyn Queue>, name: &str, owner: &str, visibility: Duration) -> EventQueue {
        EventQueue { client, name: name.to_string(), owner: owner.to_string(), visibility, url: OnceCell::new() }
    }

    async fn url(&self) -> Result<&str, SqsError> {
        self.url.get_or_try_init(|| self.client.queue_url(&self.name, &self.owner)).await.map(String::as_str)
    }
}

/// Our spot agents per env, with their online nodes, as the last pass saw
/// them; `None` for an env whose describe failed (any of its warnings may
/// be ours).
pub type Ours = crate::plan::SpotAgents;

/// What one pass read from the queues.
#[derive(Debug, Default)]
pub struct Received {
    pub events: Vec<InstanceEvent>,
    /// Every message an event came in: (env, event id, message id, receipt).
    receipts: Vec<(String, String, String, String)>,
    /// Messages that were no EC2 event we know (deleted already).
    pub dropped: u64,
    /// Failed receives and deletes, one line each.
    pub failures: Vec<String>,
    /// The envs whose receive failed.
    failed: BTreeSet<String>,
}

impl Received {
    fn extend(&mut self, other: Received) {
        // A message received again (its visibility timeout passed before a
        // pass deleted it) is one event: only its newest receipt is kept,
        // which is the one SQS deletes it by.
        let mut events = other.events.into_iter();
        for (receipt, event) in other.receipts.into_iter().zip(events.by_ref()) {
            let (env, _, message, _) = &receipt;
            match self.receipts.iter_mut().find(|(e, _, m, _)| e == env && m == message) {
                Some(held) => *held = receipt,
                None => {
                    self.receipts.push(receipt);
                    self.events.push(event);
                }
            }
        }
        self.events.extend(events);
        self.dropped += other.dropped;
        self.failures.extend(other.failures);
        self.failed.extend(other.failed);
    }

    /// Whether an event came that a pass should act on now: a warning or
    /// rebalance for one of `ours` (a warned agent has two minutes, and a
    /// build can land on it until its node is offline). A state change only
    /// takes capacity away, and an event for an instance not ours is only
    /// deleted: they wait for the next pass (other instances' churn would
    /// otherwise run pass after pass).
    pub fn urgent(&self, ours: &Ours) -> bool {
        self.events.iter().any(|e| {
            matches!(e.kind, EventKind::Warning | EventKind::Rebalance)
                && ours.get(&e.env).is_none_or(|ids| ids.as_ref().is_none_or(|ids| ids.contains_key(&e.instance_id)))
        })
    }

    /// How many messages are held, received and not yet deleted.
    pub fn held(&self) -> usize {
        self.receipts.len()
    }
}

/// Reads every env's queue at once, without waiting.
pub async fn receive(queues: &BTreeMap<String, Arc<EventQueue>>) -> Received {
    let reads: Vec<BoxFuture<'_, Received>> = queues
        .iter()
        .map(|(env, queue)| -> BoxFuture<'_, Received> { Box::pin(receive_env(env, queue, Duration::ZERO)) })
        .collect();
    let mut all = Received::default();
    for one in crate::act::join_all(reads).await {
        all.extend(one);
    }
    all
}

async fn receive_env(env: &str, queue: &EventQueue, wait: Duration) -> Received {
    let mut out = Received::default();
    let mut wait = wait;
    // A full batch may mean more waiting (state changes of other instances
    // can crowd the queue): read on, within a bound.
    for _ in 0..MAX_BATCHES {
        let messages = match queue.url().await {
            Ok(url) => queue.client.receive(url, BATCH, wait, Some(queue.visibility)).await,
            Err(e) => Err(e),
        };
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                out.failures.push(format!("{env}: interruption queue {}: {e}", queue.name));
                out.failed.insert(env.to_string());
                return out;
            }
        };
        let full = messages.len() >= usize::try_from(BATCH).unwrap_or(10);
        for message in messages {
            match parse_event(env, &message.body) {
                Ok(event) => {
                    out.receipts.push((env.to_string(), event.id.clone(), message.id, message.receipt));
                    out.events.push(event);
                }
                Err(why) => {
                    tracing::warn!("{env}: interruption queue message {} dropped: {why}", message.id);
                    out.dropped += 1;
                    if let Err(e) = delete_one(queue, &message.receipt).await {
                        out.failures.push(format!("{env}: interruption queue {}: {e}", queue.name));
                    }
                }
            }
        }
        if !full {
            break;
        }
        wait = Duration::ZERO;
    }
    out
}

/// Long polls of the envs' queues while the loop naps, at most one out per
/// env, and what they brought for the next pass. A poll still out when a
/// pass begins stays out (SQS hides what it received from every other
/// reader meanwhile, so dropping it would hide those events for the
/// visibility timeout); that env skips the pass's own read, and the next
/// nap, or the run's end, collects the poll.
#[derive(Default)]
pub struct Listener {
    polls: JoinSet<(String, Received, bool)>,
    /// The env of each poll out.
    out: HashMap<tokio::task::Id, String>,
    /// Envs whose last read failed (or answered an empty poll too soon): not
    /// polled again before the next pass reads them, so a failing queue
    /// costs a call a pass, never a spin.
    failing: BTreeSet<String>,
    /// What finished polls brought, for the next pass.
    brought: Received,
    /// Messages each env's polls brought in this nap: an env is not polled
    /// again once they reach the bound of a pass's own read, so a flood
    /// waits on its queue for the passes, which take it in bounded bites.
    this_nap: BTreeMap<String, usize>,
    /// Whose warnings end a nap, see [`Received::urgent`], and whose nodes
    /// go offline as they come, see [`Listener::offline_now`].
    ours: Ours,
    /// The nodes (env, name) taken offline in this nap, each once.
    offlined: BTreeSet<(String, String)>,
}

impl Listener {
    /// The spot agents whose warnings end a nap from now on.
    pub fn watch(&mut self, ours: Ours) {
        self.ours = ours;
    }

    /// An `offline-node` of a pass took this agent's node offline: the
    /// agents seen before the pass acted show it online still, and a
    /// duplicate warning in the nap would send a second one.
    pub fn offlined(&mut self, env: &str, instance_id: &str) {
        if let Some(node) = self.ours.get_mut(env).and_then(Option::as_mut).and_then(|ids| ids.get_mut(instance_id)) {
            *node = None;
        }
    }

    /// The `offline-node` each warning or rebalance that polls brought for
    /// one of our spot agents sends at once, ahead of the next pass (see
    /// [`offline_at_once`]): one per node and nap, a warning's before a
    /// rebalance's. Polls that finished meanwhile are collected first: a
    /// wave warns agents in several envs at once, and the first warning
    /// ends the nap. Called again, it gives only nodes not given yet.
    pub fn offline_now(&mut self) -> Vec<Action> {
        while let Some(done) = self.polls.try_join_next_with_id() {
            self.finished(done);
        }
        let events = &self.brought.events;
        let warnings = events.iter().filter(|e| e.kind == EventKind::Warning);
        let mut by_node: BTreeMap<(String, String), Action> = BTreeMap::new();
        for event in warnings.chain(events.iter().filter(|e| e.kind == EventKind::Rebalance)) {
            let Some(action) = offline_at_once(&self.ours, event) else { continue };
            let Action::OfflineNode { env, node, .. } = &action else { continue };
            let key = (env.clone(), node.clone());
            if !self.offlined.contains(&key) {
                by_node.entry(key).or_insert(action);
            }
        }
        self.offlined.extend(by_node.keys().cloned());
        by_node.into_values().collect()
    }

    /// Naps until `until`, long-polling every env's queue meanwhile (each
    /// poll at most SQS's 20 s, and never more than [`POLL_SLACK`] past
    /// `until`; the receive sets its own timeouts to cover the wait); ends
    /// early when a poll brings an [`urgent`](Received::urgent) event.
    pub async fn nap(&mut self, queues: &BTreeMap<String, Arc<EventQueue>>, until: Instant) {
        self.this_nap.clear();
        self.offlined.clear();
        let bound = usize::try_from(BATCH).unwrap_or(10) * MAX_BATCHES;
        loop {
            // SQS waits whole seconds: poll while one is left (within the
            // slack), then sleep.
            let left = until.saturating_duration_since(Instant::now()) + POLL_SLACK;
            let wait = Duration::from_secs(left.as_secs()).min(LONGEST_POLL);
            if !wait.is_zero() {
                for (env, queue) in queues {
                    if self.failing.contains(env)
                        || self.out.values().any(|e| e == env)
                        || self.this_nap.get(env).is_some_and(|&n| n >= bound)
                    {
                        continue;
                    }
                    let (env, queue) = (env.clone(), Arc::clone(queue));
                    let name = env.clone();
                    let poll = self.polls.spawn(async move {
                        let began = Instant::now();
                        let got = receive_env(&env, &queue, wait).await;
                        // SQS answers an empty long poll only when its wait is
                        // over; an endpoint that answers sooner is not polled
                        // again this nap, so the loop cannot spin on it.
                        let early = got.held() == 0 && got.dropped == 0 && began.elapsed() < wait;
                        (env, got, early)
                    });
                    self.out.insert(poll.id(), name);
                }
            }
            if self.out.is_empty() {
                tokio::time::sleep_until(until).await;
                return;
            }
            tokio::select! {
                Some(done) = self.polls.join_next_with_id() => {
                    self.finished(done);
                    if self.brought.urgent(&self.ours) {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    /// What the queues hold for this pass: what polls brought, and a read
    /// without waiting of every env with no poll out.
    pub async fn take(&mut self, queues: &BTreeMap<String, Arc<EventQueue>>) -> Received {
        while let Some(done) = self.polls.try_join_next_with_id() {
            self.finished(done);
        }
        let busy: BTreeSet<&String> = self.out.values().collect();
        let free: BTreeMap<String, Arc<EventQueue>> =
            queues.iter().filter(|(env, _)| !busy.contains(env)).map(|(e, q)| (e.clone(), Arc::clone(q))).collect();
        let read = receive(&free).await;
        self.failing = read.failed.clone();
        let mut got = std::mem::take(&mut self.brought);
        got.extend(read);
        got
    }

    /// As the run ends: waits for the polls still out (each ends within the
    /// nap it began in) and makes what they and earlier polls received, and
    /// no pass handled, visible again at once for the next run. Returns the
    /// messages handed back and the failures, one line each.
    pub async fn settle(&mut self, queues: &BTreeMap<String, Arc<EventQueue>>) -> (usize, Vec<String>) {
        while let Some(done) = self.polls.join_next_with_id().await {
            self.finished(done);
        }
        let left = std::mem::take(&mut self.brought);
        let mut failures = left.failures;
        for (env, _, _, receipt) in &left.receipts {
            let Some(queue) = queues.get(env) else { continue };
            let released = match queue.url().await {
                Ok(url) => queue.client.release(url, receipt).await,
                Err(e) => Err(e),
            };
            if let Err(e) = released {
                failures.push(format!("{env}: interruption queue {}: {e}", queue.name));
            }
        }
        (left.receipts.len(), failures)
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, (String, Received, bool)), tokio::task::JoinError>) {
        let (id, got) = match done {
            Ok((id, (env, got, early))) => {
                if early {
                    self.failing.insert(env);
                }
                (id, got)
            }
            Err(e) => {
                // A poll that panicked: its env is polled again next time.
                let env = self.out.remove(&e.id()).unwrap_or_default();
                self.brought.failures.push(format!("{env}: interruption queue poll failed: {e}"));
                return;
            }
        };
        if let Some(env) = self.out.remove(&id) {
            *self.this_nap.entry(env).or_default() += got.held() + usize::try_from(got.dropped).unwrap_or(usize::MAX);
        }
        self.failing.extend(got.failed.iter().cloned());
        self.brought.extend(got);
    }
}

/// Deletes the messages of every event, but those the plan `kept` for a
/// later pass; returns the failures, one line each.
pub async fn delete_handled(
    queues: &BTreeMap<String, Arc<EventQueue>>,
    received: &Received,
    kept: &[String],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (env, event, _, receipt) in &received.receipts {
        if kept.contains(event) {
            continue;
        }
        let Some(queue) = queues.get(env) else { continue };
        if let Err(e) = delete_one(queue, receipt).await {
            failures.push(format!("{env}: interruption queue {}: {e}", queue.name));
        }
    }
    failures
}

async fn delete_one(queue: &EventQueue, receipt: &str) -> Result<(), SqsError> {
    let url = queue.url().await?;
    queue.client.delete(url, receipt).await
}

/// An EventBridge envelope of one of the three EC2 events we act on, or why
/// the body is none.
pub fn parse_event(env: &str, body: &str) -> Result<InstanceEvent, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e})"))?;
    let text = |key: &str| v.get(key).and_then(Value::as_str);
    let detail_type = text("detail-type").ok_or("no detail-type")?;
    if text("source") != Some("aws.ec2") {
        return Err(format!("source {:?} is not aws.ec2", text("source").unwrap_or("")));
    }
    let detail = v.get("detail").ok_or("no detail")?;
    let instance_id = detail
        .get("instance-id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("no detail.instance-id")?
        .to_string();
    let kind = match detail_type {
        "EC2 Spot Instance Interruption Warning" => EventKind::Warning,
        "EC2 Instance Rebalance Recommendation" => EventKind::Rebalance,
        "EC2 Instance State-change Notification" => {
            let state = detail.get("state").and_then(Value::as_str).unwrap_or_default();
            EventKind::StateChange(parse_state(state).ok_or_else(|| format!("unknown state {state:?}"))?)
        }
        other => return Err(format!("unknown detail-type {other:?}")),
    };
    let id = text("id").filter(|id| !id.is_empty()).ok_or("no id")?.to_string();
    let time = text("time")
        .and_then(|t| DateTime::from_str(t, DateTimeFormat::DateTime).ok())
        .and_then(|t| SystemTime::try_from(t).ok());
    Ok(InstanceEvent { id, env: env.to_string(), instance_id, kind, time })
}

fn parse_state(state: &str) -> Option<InstanceState> {
    use InstanceState::*;
    [Pending, Running, Stopping, Stopped, ShuttingDown, Terminated].into_iter().find(|s| s.as_str() == state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn envelope(detail_type: &str, detail: Value) -> String {
        serde_json::json!({
            "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": detail_type,
            "source": "aws.ec2", "account": "123456789012", "time": "2026-11-29T21:00:00Z",
            "region": "us-east-2", "resources": ["arn:aws:ec2:us-east-2a:instance/i-1"], "detail": detail,
        })
        .to_string()
    }

    #[test]
    fn reads_the_three_documented_events() {
        let warning = envelope(
            "EC2 Spot Instance Interruption Warning",
            serde_json::json!({"instance-id": "i-1", "instance-action": "terminate"}),
        );
        let e = parse_event("dev", &warning).unwrap();
        assert_eq!((e.env.as_str(), e.instance_id.as_str(), e.kind), ("dev", "i-1", EventKind::Warning));
        assert_eq!(e.id, "7bf73129-1428-4cd3-a780-95db273d1602");
        assert_eq!(e.time, Some(UNIX_EPOCH + Duration::from_secs(1_795_986_000)));
        let rebalance = envelope("EC2 Instance Rebalance Recommendation", serde_json::json!({"instance-id": "i-1"}));
        assert_eq!(parse_event("dev", &rebalance).unwrap().kind, EventKind::Rebalance);
        let state = envelope(
            "EC2 Instance State-change Notification",
            serde_json::json!({"instance-id": "i-1", "state": "shutting-down"}),
        );
        assert_eq!(parse_event("dev", &state).unwrap().kind, EventKind::StateChange(InstanceState::ShuttingDown));
    }

    #[test]
    fn a_message_received_twice_is_one_event_deleted_by_its_newest_receipt() {
        let body = envelope("EC2 Instance Rebalance Recommendation", serde_json::json!({"instance-id": "i-1"}));
        let got = |receipt: &str| {
            let event = parse_event("dev", &body).unwrap();
            let receipts = vec![("dev".to_string(), event.id.clone(), "m-1".to_string(), receipt.to_string())];
            Received { events: vec![event], receipts, ..Received::default() }
        };
        let mut all = got("r-old");
        all.extend(got("r-new"));
        assert_eq!((all.events.len(), all.held()), (1, 1));
        assert_eq!(all.receipts[0].3, "r-new");
    }

    #[test]
    fn a_node_warned_and_told_to_rebalance_in_one_nap_goes_offline_once_for_the_warning() {
        let event = |id: &str, detail_type: &str| {
            let body = envelope(detail_type, serde_json::json!({"instance-id": "i-1"}))
                .replace("7bf73129-1428-4cd3-a780-95db273d1602", id);
            parse_event("dev", &body).unwrap()
        };
        let mut listener = Listener::default();
        let nodes = BTreeMap::from([("i-1".to_string(), Some("dev-10.0.0.1".to_string()))]);
        listener.watch(BTreeMap::from([("dev".to_string(), Some(nodes))]));
        listener.brought.events = vec![
            event("e-1", "EC2 Instance Rebalance Recommendation"),
            event("e-2", "EC2 Spot Instance Interruption Warning"),
            event("e-2", "EC2 Spot Instance Interruption Warning"),
        ];
        let actions = listener.offline_now();
        assert_eq!(actions.len(), 1, "{actions:?}");
        match &actions[0] {
            Action::OfflineNode { node, reason, .. } => {
                assert_eq!(node, "dev-10.0.0.1");
                assert!(reason.contains("spot interruption warning"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(listener.offline_now().is_empty(), "once per node and nap");
    }

    #[test]
    fn refuses_what_is_no_ec2_event_we_know() {
        for body in [
            "not json".to_string(),
            "[]".to_string(),
            envelope("AWS API Call via CloudTrail", serde_json::json!({"instance-id": "i-1"})),
            envelope("EC2 Spot Instance Interruption Warning", serde_json::json!({})),
            envelope("EC2 Instance State-change Notification", serde_json::json!({"instance-id": "i-1", "state": "x"})),
            envelope("EC2 Spot Instance Interruption Warning", serde_json::json!({"instance-id": "i-1"}))
                .replace("aws.ec2", "aws.s3"),
        ] {
            assert!(parse_event("dev", &body).is_err(), "{body}");
        }
    }
}

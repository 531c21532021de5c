//! The envs' interruption queues (`--interruption_queue`): EC2 events that
//! an EventBridge rule routes to an SQS queue in each env's account and
//! region, read with the env's assumed role. Observe reads up to 10 per env
//! and pass, without waiting, alongside the dump and the describes; the
//! events become part of the snapshot and the planner decides what they
//! mean. A message is deleted once its pass handled it; one that is no EC2
//! event we know is deleted at once and counted `interruption_dropped`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_sqs::primitives::{DateTime, DateTimeFormat};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::aws::sqs::SqsError;
use crate::model::{EventKind, InstanceEvent, InstanceState};
use crate::world::{BoxFuture, Queue};

/// Messages read per env and pass: SQS's most for one receive.
pub const BATCH: i32 = 10;

/// One env's queue of EC2 events; its URL is looked up once per run.
pub struct EventQueue {
    pub client: Arc<dyn Queue>,
    pub name: String,
    /// The env's account, which owns the queue.
    pub owner: String,
    url: OnceCell<String>,
}

impl EventQueue {
    pub fn new(client: Arc<dyn Queue>, name: &str, owner: &str) -> EventQueue {
        EventQueue { client, name: name.to_string(), owner: owner.to_string(), url: OnceCell::new() }
    }

    async fn url(&self) -> Result<&str, SqsError> {
        self.url.get_or_try_init(|| self.client.queue_url(&self.name, &self.owner)).await.map(String::as_str)
    }
}

/// What one pass read from the queues.
#[derive(Debug, Default)]
pub struct Received {
    pub events: Vec<InstanceEvent>,
    /// Every message an event came in: (env, event id, receipt).
    receipts: Vec<(String, String, String)>,
    /// Messages that were no EC2 event we know (deleted already).
    pub dropped: u64,
    /// Failed receives and deletes, one line each.
    pub failures: Vec<String>,
}

/// Reads every env's queue at once.
pub async fn receive(queues: &BTreeMap<String, EventQueue>) -> Received {
    let reads: Vec<BoxFuture<'_, Received>> =
        queues.iter().map(|(env, queue)| -> BoxFuture<'_, Received> { Box::pin(receive_env(env, queue)) }).collect();
    let mut all = Received::default();
    for one in crate::act::join_all(reads).await {
        all.events.extend(one.events);
        all.receipts.extend(one.receipts);
        all.dropped += one.dropped;
        all.failures.extend(one.failures);
    }
    all
}

async fn receive_env(env: &str, queue: &EventQueue) -> Received {
    let mut out = Received::default();
    let messages = match queue.url().await {
        Ok(url) => queue.client.receive(url, BATCH).await,
        Err(e) => Err(e),
    };
    let messages = match messages {
        Ok(messages) => messages,
        Err(e) => {
            out.failures.push(format!("{env}: interruption queue {}: {e}", queue.name));
            return out;
        }
    };
    for message in messages {
        match parse_event(env, &message.body) {
            Ok(event) => {
                out.receipts.push((env.to_string(), event.id.clone(), message.receipt));
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
    out
}

/// Deletes the messages of every event, but those the plan `kept` for a
/// later pass; returns the failures, one line each.
pub async fn delete_handled(
    queues: &BTreeMap<String, EventQueue>,
    received: &Received,
    kept: &[String],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (env, event, receipt) in &received.receipts {
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

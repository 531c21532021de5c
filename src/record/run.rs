//! What a run did, kept for the run report and the metrics: one record per
//! pass, one per action with its outcome, and where the instance-time went.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::plan::cost::CostLedger;
use crate::time_to_agent::Finished;

/// One pass as the report's timeline shows it.
#[derive(Debug, Clone)]
pub struct PassRecord {
    /// 1-based, as the log shows it.
    pub number: u32,
    pub started: SystemTime,
    pub duration: Duration,
    /// `None`: the dump failed.
    pub queue: Option<usize>,
    /// Our pending and running agents per env; `None`: not observed.
    pub agents: BTreeMap<String, Option<usize>>,
    pub ec2_requests: u64,
}

/// One action carried out (or tried).
#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub pass: u32,
    pub time: SystemTime,
    pub env: Option<String>,
    pub kind: &'static str,
    /// The queue item a start or create was for.
    pub job_key: Option<String>,
    /// The instance acted on; for a create, the one it made.
    pub instance_id: Option<String>,
    /// The action's log line: env, instance, reason.
    pub text: String,
    /// `Err`: why it failed or was skipped.
    pub outcome: Result<(), String>,
}

#[derive(Debug, Default)]
pub struct RunRecord {
    pub passes: Vec<PassRecord>,
    pub actions: Vec<ActionRecord>,
    /// Our agents' instance-time per env, label and use, up to the last pass.
    pub cost: CostLedger,
    /// The queue items that left the queue during the run, with their
    /// phases (some first seen by an earlier run).
    pub served: Vec<Finished>,
    /// The offerings EC2 was short of at the end, with when each may be
    /// tried again.
    pub shortages: Vec<(crate::shortage::Offering, SystemTime)>,
}

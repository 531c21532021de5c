//! What one pass observed, and the planner's reading of it: an env's
//! instances, the age of a thing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{EnvObservation, Instance, InstanceEvent, JenkinsDump, Markers};

/// Everything one pass observed; the planner decides from this alone. It
/// borrows the observation: a large fleet is neither copied nor moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot<'a> {
    pub dump: &'a JenkinsDump,
    pub envs: &'a BTreeMap<String, EnvObservation>,
    pub markers: &'a Markers,
    /// EC2 events read from the envs' interruption queues this pass.
    pub events: &'a [InstanceEvent],
    pub now: SystemTime,
}

/// The env's instances, or a reason it must be left alone this pass.
pub(super) fn observed<'a>(envs: &'a BTreeMap<String, EnvObservation>, env: &str) -> Result<&'a [Instance], String> {
    match envs.get(env) {
        Some(Ok(instances)) => Ok(instances),
        Some(Err(e)) => Err(format!("env {env} could not be observed ({e})")),
        None => Err(format!("env {env} was not observed")),
    }
}

/// Time since `then`; an instant in the future (clock skew) counts as now.
pub(super) fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

pub(super) fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

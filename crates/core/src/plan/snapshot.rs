//! What one pass observed, and the planner's reading of it: an env's
//! instances, the age of a thing.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Our spot agents, (env, instance id), whose nodes went offline on a
    /// warning or rebalance between passes and whose event no pass has
    /// handled yet: see [`OfflineEarly`].
    pub offline_early: &'a OfflineEarly,
    /// Stopped agents whose start EC2 refused in an earlier pass: see
    /// [`FailedStarts`].
    pub failed_starts: &'a FailedStarts,
    pub now: SystemTime,
}

/// Agents (env, instance id) whose nodes the nap took offline at once on an
/// EC2 event that no pass has handled yet (the pass had no dump, could not
/// describe the env, or could not write the marker). Their nodes are offline
/// by us, so once idle the dump script marks them `terminate_me`: scale-down
/// leaves them alone until the event comes back and is handled as one.
pub type OfflineEarly = BTreeSet<(String, String)>;

/// Stopped agents (env, instance id) whose start EC2 refused this run, and
/// when it last did. A stopped instance is tied to its AZ and its volumes:
/// one refused for capacity there, or for a broken volume, is likely refused
/// again, so the spare leaves it for [`FAILED_START_SKIPPED`] and brings up
/// another agent instead.
pub type FailedStarts = BTreeMap<(String, String), SystemTime>;

/// How long after a refused start the spare does not pick that agent again.
pub const FAILED_START_SKIPPED: Duration = Duration::from_secs(5 * 60);

/// The EC2 events a pass decides on: those read from the queues, and the
/// agents taken offline early on events not yet handled; with them what the
/// run remembers of earlier passes' refused starts.
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    pub received: &'a [InstanceEvent],
    pub offline_early: &'a OfflineEarly,
    pub failed_starts: &'a FailedStarts,
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

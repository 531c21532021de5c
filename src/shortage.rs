//! Capacity shortages (issue 13): which offerings EC2 refused for want of
//! room, and until when they are not tried again. As Karpenter's
//! insufficient-capacity cache: a shortage is local to one AZ (or one
//! subnet's addresses) and passes within minutes, so a launch goes to the
//! env's other subnets meanwhile instead of asking again where EC2 just
//! said no.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How long a refused offering is skipped.
pub const SHORTAGE_TTL: Duration = Duration::from_secs(180);

/// What EC2 can be short of: one instance type, at one price model, in one
/// subnet of one env.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offering {
    pub env: String,
    pub instance_type: String,
    pub subnet: String,
    /// The subnet's AZ, for the reader: a shortage is usually the AZ's.
    pub az: String,
    /// Spot or on-demand: separate pools, one can be short while the other is not.
    pub spot: bool,
}

impl std::fmt::Display for Offering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pricing = if self.spot { "spot" } else { "on-demand" };
        write!(f, "{}: {} {pricing} in {} ({})", self.env, self.instance_type, self.subnet, self.az)
    }
}

/// The offerings short now, each with when it may be tried again.
#[derive(Debug, Default)]
pub struct Shortages {
    until: Mutex<BTreeMap<Offering, SystemTime>>,
}

impl Shortages {
    /// EC2 refused `offering` at `now`: skip it for [`SHORTAGE_TTL`].
    pub fn remember(&self, offering: Offering, now: SystemTime) {
        self.lock().insert(offering, now + SHORTAGE_TTL);
    }

    /// Until when `offering` is skipped, if it is short at `now`.
    pub fn short_until(&self, offering: &Offering, now: SystemTime) -> Option<SystemTime> {
        self.lock().get(offering).copied().filter(|until| *until > now)
    }

    /// The offerings short at `now`, with when each may be tried again.
    pub fn current(&self, now: SystemTime) -> Vec<(Offering, SystemTime)> {
        let mut until = self.lock();
        until.retain(|_, until| *until > now);
        until.iter().map(|(o, u)| (o.clone(), *u)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Offering, SystemTime>> {
        // A panic elsewhere while holding it leaves a usable map.
        self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(subnet: &str, spot: bool) -> Offering {
        Offering {
            env: "dev".into(),
            instance_type: "t2.small".into(),
            subnet: subnet.into(),
            az: "us-east-2a".into(),
            spot,
        }
    }

    #[test]
    fn a_shortage_is_remembered_for_three_minutes_for_its_offering_only() {
        let shortages = Shortages::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        shortages.remember(offering("subnet-a", true), t0);
        let short = |subnet, spot, at| shortages.short_until(&offering(subnet, spot), at).is_some();
        assert!(short("subnet-a", true, t0 + Duration::from_secs(179)));
        assert!(!short("subnet-a", false, t0), "on-demand is another offering");
        assert!(!short("subnet-b", true, t0), "another subnet is another offering");
        assert!(!short("subnet-a", true, t0 + SHORTAGE_TTL), "expired");
        assert_eq!(shortages.current(t0).len(), 1);
        assert!(shortages.current(t0 + SHORTAGE_TTL).is_empty());
    }
}

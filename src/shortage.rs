//! Capacity shortages (issue 13): which offerings EC2 refused for want of
//! room, and until when they are not tried again. As Karpenter's
//! insufficient-capacity cache: a shortage is local to one AZ (or one
//! subnet's addresses) and passes within minutes, so a launch goes to the
//! env's other subnets meanwhile instead of asking again where EC2 just
//! said no.
//!
//! Kept in `capacity_shortages.json` too, rewritten atomically as soon as a
//! shortage is found, so the next run (cron) skips it as well and `check`
//! can list it. A missing, unreadable or corrupt file is an empty cache.
//!
//! The cache also keeps launches idempotent. A launch refused in its first
//! subnet moves to another with a token of that subnet's own,
//! md5(token@subnet): EC2 answers a token it already launched with other
//! parameters (another subnet) by IdempotentParameterMismatch, and a
//! request it refused leaves no record, so sending the first token
//! elsewhere would work, but so would sending it to the first subnet again
//! once that has room — a second launch for an item whose moved launch
//! succeeded (its answer lost, or the run killed before its marker). So a
//! shortage is held at least until the end of the token window it was
//! found in (EC2 keeps a token's answer far longer than that window), and
//! saved before the moved launch is sent: while a token lives, its retries
//! skip the subnet that refused it and repeat the moved token, which EC2
//! answers with the instances it launched.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How long a refused offering is skipped at least.
pub const SHORTAGE_TTL: Duration = Duration::from_secs(180);
/// The longest a shortage is held: [`SHORTAGE_TTL`], or to the end of the
/// client-token window it was found in (see the module doc).
pub const SHORTAGE_HELD_MAX: Duration = Duration::from_secs(crate::job_key::CLIENT_TOKEN_WINDOW_SECS);

pub const FILE: &str = "capacity_shortages.json";

/// Far more than the offerings of any fleet: a bigger file is not ours.
const MAX_BYTES: u64 = 1 << 20;

/// What EC2 can be short of: one instance type, at one price model, in one
/// subnet of one env.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
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
    /// A shortage was found since the file was last written.
    changed: AtomicBool,
}

/// One line of the file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    #[serde(flatten)]
    offering: Offering,
    /// Seconds since the Unix epoch.
    until: u64,
}

impl Shortages {
    /// The shortages an earlier run saved in `dir`, those still current at `now`.
    pub fn load(dir: &Path, now: SystemTime) -> Shortages {
        let shortages = Shortages::default();
        let bytes = match crate::files::read_regular(&dir.join(FILE), MAX_BYTES + 1) {
            Ok(bytes) if bytes.len() as u64 <= MAX_BYTES => bytes,
            Ok(_) => {
                tracing::warn!("{FILE} is larger than {MAX_BYTES} bytes; ignored");
                return shortages;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return shortages,
            Err(e) => {
                tracing::warn!("cannot read {FILE} ({e}); ignored");
                return shortages;
            }
        };
        match serde_json::from_slice::<Vec<Saved>>(&bytes) {
            Ok(saved) => {
                let mut until = shortages.lock();
                for s in saved {
                    // A time past what SystemTime holds is corrupt, not a panic.
                    let Some(at) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s.until)) else { continue };
                    // Never longer than a fresh shortage: a clock set back
                    // must not pin an offering.
                    if at > now {
                        until.insert(s.offering, at.min(now + SHORTAGE_HELD_MAX));
                    }
                }
            }
            Err(e) => tracing::warn!("{FILE} is corrupt ({e}); ignored"),
        }
        shortages
    }

    /// Writes the current shortages to `dir` if one was found since the
    /// last write (a write at the time failed).
    pub fn save_if_changed(&self, dir: &Path, now: SystemTime) {
        if self.changed.load(Ordering::Relaxed) {
            self.save(dir, now);
        }
    }

    /// EC2 refused `offering` at `now`: skip it for [`SHORTAGE_TTL`], and at
    /// least to the end of the current token window; saved in `dir` at once.
    pub fn remember(&self, offering: Offering, now: SystemTime, dir: &Path) {
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let window_end = SystemTime::UNIX_EPOCH + Duration::from_secs(crate::job_key::client_token_window_end(secs));
        self.lock().insert(offering, (now + SHORTAGE_TTL).max(window_end));
        self.changed.store(true, Ordering::Relaxed);
        self.save(dir, now);
    }

    /// Writes the current shortages to `dir`. The map stays locked while
    /// the file is replaced, so two envs' shortages found at once cannot
    /// overwrite each other with older lists.
    fn save(&self, dir: &Path, now: SystemTime) {
        let mut until = self.lock();
        until.retain(|_, until| *until > now);
        let saved: Vec<Saved> = until
            .iter()
            .map(|(offering, until)| Saved {
                offering: offering.clone(),
                until: until.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            })
            .collect();
        let result = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::files::replace(&dir.join(FILE), &json));
        match result {
            Ok(()) => self.changed.store(false, Ordering::Relaxed),
            Err(e) => tracing::warn!("cannot write {FILE}: {e}"),
        }
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
        let dir = tempfile::tempdir().unwrap();
        let shortages = Shortages::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        shortages.remember(offering("subnet-a", true), t0, dir.path());
        let short = |subnet, spot, at| shortages.short_until(&offering(subnet, spot), at).is_some();
        assert!(short("subnet-a", true, t0 + Duration::from_secs(179)));
        assert!(!short("subnet-a", false, t0), "on-demand is another offering");
        assert!(!short("subnet-b", true, t0), "another subnet is another offering");
        assert!(!short("subnet-a", true, t0 + SHORTAGE_TTL), "expired");
        assert_eq!(shortages.current(t0).len(), 1);
        assert!(shortages.current(t0 + SHORTAGE_TTL).is_empty());
    }

    #[test]
    fn a_shortage_is_held_to_the_end_of_its_token_window_when_that_is_later() {
        // 1_700_000_100 starts a token window (a multiple of 300 s).
        let dir = tempfile::tempdir().unwrap();
        let window = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let early = window + Duration::from_secs(10);
        let shortages = Shortages::default();
        shortages.remember(offering("subnet-a", true), early, dir.path());
        let until = shortages.short_until(&offering("subnet-a", true), early).unwrap();
        assert_eq!(until, window + Duration::from_secs(300), "a token made then is sent until then");
        let late = window + Duration::from_secs(250);
        shortages.remember(offering("subnet-b", true), late, dir.path());
        assert_eq!(shortages.short_until(&offering("subnet-b", true), late), Some(late + SHORTAGE_TTL));
        // A run that loads it keeps the whole hold.
        let next = Shortages::load(dir.path(), early + Duration::from_secs(200));
        assert_eq!(next.short_until(&offering("subnet-a", true), early + Duration::from_secs(200)), Some(until));
    }

    #[test]
    fn a_shortage_is_saved_as_soon_as_it_is_found() {
        // A run killed right after (kill -9: no end of pass) must not forget it.
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Shortages::default().remember(offering("subnet-a", true), t0, dir.path());
        let next = Shortages::load(dir.path(), t0 + Duration::from_secs(1));
        assert!(next.short_until(&offering("subnet-a", true), t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn shortages_saved_by_one_run_are_skipped_by_the_next_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let first = Shortages::default();
        first.save_if_changed(dir.path(), t0);
        assert!(!dir.path().join(FILE).exists(), "no shortage, no file");
        first.remember(offering("subnet-a", true), t0, dir.path());

        let next = Shortages::load(dir.path(), t0 + Duration::from_secs(60));
        assert!(next.short_until(&offering("subnet-a", true), t0 + Duration::from_secs(60)).is_some());
        assert!(Shortages::load(dir.path(), t0 + SHORTAGE_TTL).current(t0 + SHORTAGE_TTL).is_empty(), "expired");

        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(Shortages::load(dir.path(), t0).current(t0).is_empty(), "corrupt: ignored");

        // A time no clock can hold: ignored, never a panic in every run.
        first.remember(offering("subnet-b", true), t0, dir.path());
        let mut saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        for entry in saved.as_array_mut().unwrap() {
            entry["until"] = u64::MAX.into();
        }
        std::fs::write(dir.path().join(FILE), saved.to_string()).unwrap();
        assert!(Shortages::load(dir.path(), t0).current(t0).is_empty(), "an impossible time: ignored");
    }
}

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
//! md5(token@subnet). EC2 keeps a RunInstances token per Availability
//! Zone: the same token in a subnet of another AZ launches anew (it is not
//! refused; IdempotentParameterMismatch is for the same token with other
//! parameters in the same AZ), so each subnet's launch needs a token of its
//! own to be answered from on a retry. A request EC2 refused leaves no
//! record, so sending the first token again to the first subnet once that
//! has room would launch a second time for an item whose moved launch
//! succeeded (its answer lost, or the run killed before its marker). So a shortage is held at least
//! until the end of the token window it was found in (EC2 keeps a token's
//! answer far longer than that window), and saved before the moved launch
//! is sent: while a token lives, its retries skip the subnet that refused
//! it and repeat the moved token, which EC2 answers with the instances it
//! launched.
//!
//! In memory an entry expires on the monotonic clock (Tokio's, paused in
//! tests): a wall clock set back mid-run must not pin an offering. Only the
//! file holds wall time, the one clock two runs share.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// How long a refused offering is skipped at least.
pub const SHORTAGE_TTL: Duration = Duration::from_secs(180);
/// The longest a shortage is held: [`SHORTAGE_TTL`], or to the end of the
/// client-token window it was found in (see the module doc).
pub const SHORTAGE_HELD_MAX: Duration = Duration::from_secs(crate::job_key::CLIENT_TOKEN_WINDOW_SECS);

pub const FILE: &str = "capacity_shortages.json";

/// Far more than the offerings of any fleet: a bigger file is not ours.
const MAX_BYTES: u64 = 1 << 20;

/// What EC2 can be short of: one instance type, at one price model, in one
/// subnet of one env — or, under an account-wide limit, every type in every
/// subnet of the env at that price model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Offering {
    pub env: String,
    /// `None`: the account's limit for this price model (its spot instance
    /// count, its on-demand vCPU quota), which no other type or subnet escapes.
    #[serde(flatten)]
    pub place: Option<Place>,
    /// Spot or on-demand: separate pools, one can be short while the other is not.
    pub spot: bool,
}

/// One instance type in one subnet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Place {
    pub instance_type: String,
    pub subnet: String,
    /// The subnet's AZ, for the reader: a shortage is usually the AZ's.
    pub az: String,
}

impl Offering {
    /// `instance_type` in `subnet` (of `az`).
    pub fn in_subnet(env: &str, instance_type: &str, subnet: &str, az: &str, spot: bool) -> Offering {
        let place = Place { instance_type: instance_type.into(), subnet: subnet.into(), az: az.into() };
        Offering { env: env.into(), place: Some(place), spot }
    }

    /// Every launch of `env` at this price model (an account-wide limit).
    pub fn account(env: &str, spot: bool) -> Offering {
        Offering { env: env.into(), place: None, spot }
    }
}

impl std::fmt::Display for Offering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pricing = if self.spot { "spot" } else { "on-demand" };
        match &self.place {
            Some(p) => write!(f, "{}: {} {pricing} in {} ({})", self.env, p.instance_type, p.subnet, p.az),
            None => write!(f, "{}: every {pricing} launch (the account's limit)", self.env),
        }
    }
}

/// Why EC2 refused an offering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No room for it there now.
    #[default]
    NoRoom,
    /// The spot price there is above `--max_spot_price` (`SpotMaxPriceTooLow`):
    /// the bid is a ceiling, so no on-demand launch stands in for it.
    OverBid,
}

/// An offering skipped now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// How long until it may be tried again.
    pub left: Duration,
    pub why: Refusal,
}

/// When (monotonic) an offering may be tried again, and why it is skipped.
#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    why: Refusal,
}

/// The offerings short now, each with when it may be tried again.
#[derive(Debug, Default)]
pub struct Shortages {
    until: Mutex<BTreeMap<Offering, Entry>>,
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
    /// Absent from a file of a version that knew no other reason.
    #[serde(default)]
    why: Refusal,
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
                let monotonic = Instant::now();
                for s in saved {
                    // A time past what SystemTime holds is corrupt, not a panic.
                    let Some(at) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s.until)) else { continue };
                    // Never longer than a fresh shortage: a clock set back
                    // must not pin an offering.
                    if let Ok(left) = at.duration_since(now) {
                        if !left.is_zero() {
                            let entry = Entry { until: monotonic + left.min(SHORTAGE_HELD_MAX), why: s.why };
                            until.insert(s.offering, entry);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("{FILE} is corrupt ({e}); ignored"),
        }
        shortages
    }

    /// Writes the current shortages to `dir` if one was found since the
    /// last write (a write at the time failed), each with when it may be
    /// tried again on the wall clock at `now`.
    pub fn save_if_changed(&self, dir: &Path, now: SystemTime) {
        if self.changed.load(Ordering::Relaxed) {
            self.save(dir, now);
        }
    }

    /// EC2 refused `offering` just now, when the wall clock read `now`:
    /// skip it for [`SHORTAGE_TTL`], and at least to the end of the current
    /// token window; saved in `dir` at once. Returns how long it is held.
    pub fn remember(&self, offering: Offering, why: Refusal, now: SystemTime, dir: &Path) -> Duration {
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let to_window_end = Duration::from_secs(crate::job_key::client_token_window_end(secs).saturating_sub(secs));
        let held = SHORTAGE_TTL.max(to_window_end).min(SHORTAGE_HELD_MAX);
        self.lock().insert(offering, Entry { until: Instant::now() + held, why });
        self.changed.store(true, Ordering::Relaxed);
        self.save(dir, now);
        held
    }

    /// Writes the current shortages to `dir`. The map stays locked while
    /// the file is replaced, so two envs' shortages found at once cannot
    /// overwrite each other with older lists.
    fn save(&self, dir: &Path, now: SystemTime) {
        let monotonic = Instant::now();
        let mut until = self.lock();
        until.retain(|_, e| e.until > monotonic);
        let saved: Vec<Saved> = until
            .iter()
            .map(|(offering, e)| Saved {
                offering: offering.clone(),
                until: (now + (e.until - monotonic)).duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                why: e.why,
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

    /// How long `offering` is still skipped and why, if it is short.
    pub fn short(&self, offering: &Offering) -> Option<Short> {
        let now = Instant::now();
        let entry = self.lock().get(offering).copied().filter(|e| e.until > now)?;
        Some(Short { left: entry.until - now, why: entry.why })
    }

    /// The offerings short now, with when each may be tried again on the
    /// wall clock that reads `now`.
    pub fn current(&self, now: SystemTime) -> Vec<(Offering, SystemTime)> {
        self.entries(now).into_iter().map(|(offering, until, _)| (offering, until)).collect()
    }

    fn entries(&self, now: SystemTime) -> Vec<(Offering, SystemTime, Refusal)> {
        let monotonic = Instant::now();
        let mut until = self.lock();
        until.retain(|_, e| e.until > monotonic);
        until.iter().map(|(o, e)| (o.clone(), now + (e.until - monotonic), e.why)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Offering, Entry>> {
        // A panic elsewhere while holding it leaves a usable map.
        self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(subnet: &str, spot: bool) -> Offering {
        Offering::in_subnet("dev", "t2.small", subnet, "us-east-2a", spot)
    }

    #[tokio::test(start_paused = true)]
    async fn a_shortage_is_remembered_for_three_minutes_for_its_offering_only() {
        let dir = tempfile::tempdir().unwrap();
        let shortages = Shortages::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        shortages.remember(offering("subnet-a", true), Refusal::NoRoom, t0, dir.path());
        let short = |subnet, spot| shortages.short(&offering(subnet, spot)).is_some();
        tokio::time::advance(Duration::from_secs(179)).await;
        assert!(short("subnet-a", true));
        assert!(!short("subnet-a", false), "on-demand is another offering");
        assert!(!short("subnet-b", true), "another subnet is another offering");
        assert_eq!(shortages.current(t0), [(offering("subnet-a", true), t0 + Duration::from_secs(1))]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!short("subnet-a", true), "expired");
        assert!(shortages.current(t0).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shortage_expires_on_the_monotonic_clock_whatever_the_wall_clock_reads() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let shortages = Shortages::default();
        shortages.remember(offering("subnet-a", true), Refusal::NoRoom, t0, dir.path());
        // The wall clock set back an hour: shown and saved from that clock,
        // still three minutes long.
        let back = t0 - Duration::from_secs(3600);
        assert_eq!(shortages.current(back), [(offering("subnet-a", true), back + SHORTAGE_TTL)]);
        shortages.save(dir.path(), back);
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        let back_secs = back.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(saved[0]["until"], back_secs + SHORTAGE_TTL.as_secs(), "the file holds wall time");
        tokio::time::advance(SHORTAGE_TTL).await;
        assert!(shortages.short(&offering("subnet-a", true)).is_none());
        assert!(shortages.current(back).is_empty(), "expired, whatever the wall clock says");
    }

    #[tokio::test(start_paused = true)]
    async fn shortages_saved_by_one_run_are_skipped_by_the_next_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let first = Shortages::default();
        first.save_if_changed(dir.path(), t0);
        assert!(!dir.path().join(FILE).exists(), "no shortage, no file");
        first.remember(offering("subnet-a", true), Refusal::NoRoom, t0, dir.path());

        let next = Shortages::load(dir.path(), t0 + Duration::from_secs(60));
        assert_eq!(next.short(&offering("subnet-a", true)).map(|s| s.left), Some(Duration::from_secs(120)));
        assert!(Shortages::load(dir.path(), t0 + SHORTAGE_TTL).current(t0 + SHORTAGE_TTL).is_empty(), "expired");
        // Saved by a clock far ahead of this one: never longer than the longest hold.
        let behind = Shortages::load(dir.path(), t0 - Duration::from_secs(3600));
        assert_eq!(behind.short(&offering("subnet-a", true)).map(|s| s.left), Some(SHORTAGE_HELD_MAX));
        // A spot price over the bid stays one for the next run: still no fallback.
        first.remember(offering("subnet-c", true), Refusal::OverBid, t0, dir.path());
        let next = Shortages::load(dir.path(), t0);
        assert_eq!(next.short(&offering("subnet-c", true)).map(|s| s.why), Some(Refusal::OverBid));
        assert_eq!(next.short(&offering("subnet-a", true)).map(|s| s.why), Some(Refusal::NoRoom));
        // So does an account's limit, apart from any one offering.
        first.remember(Offering::account("dev", false), Refusal::NoRoom, t0, dir.path());
        let next = Shortages::load(dir.path(), t0);
        assert!(next.short(&Offering::account("dev", false)).is_some());
        assert!(next.short(&Offering::account("dev", true)).is_none());
        assert!(next.short(&offering("subnet-a", false)).is_none());
        assert_eq!(next.current(t0).len(), 3);

        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(Shortages::load(dir.path(), t0).current(t0).is_empty(), "corrupt: ignored");

        // A time no clock can hold: ignored, never a panic in every run.
        first.remember(offering("subnet-b", true), Refusal::NoRoom, t0, dir.path());
        let mut saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        for entry in saved.as_array_mut().unwrap() {
            entry["until"] = u64::MAX.into();
        }
        std::fs::write(dir.path().join(FILE), saved.to_string()).unwrap();
        assert!(Shortages::load(dir.path(), t0).current(t0).is_empty(), "an impossible time: ignored");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shortage_is_held_to_the_end_of_its_token_window_when_that_is_later() {
        // 1_700_000_100 starts a token window (a multiple of 300 s).
        let dir = tempfile::tempdir().unwrap();
        let window = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let early = window + Duration::from_secs(10);
        let shortages = Shortages::default();
        let held = shortages.remember(offering("subnet-a", true), Refusal::NoRoom, early, dir.path());
        assert_eq!(held, Duration::from_secs(290), "a token made then is sent until the window ends");
        // Both clocks move on together.
        tokio::time::advance(Duration::from_secs(240)).await;
        let late = window + Duration::from_secs(250);
        let held = shortages.remember(offering("subnet-b", true), Refusal::NoRoom, late, dir.path());
        assert_eq!(held, SHORTAGE_TTL);
        // A run that loads it keeps the whole hold.
        let next = Shortages::load(dir.path(), early + Duration::from_secs(200));
        assert_eq!(next.short(&offering("subnet-a", true)).map(|s| s.left), Some(Duration::from_secs(90)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shortage_is_saved_as_soon_as_it_is_found() {
        // A run killed right after (kill -9: no end of pass) must not forget it.
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Shortages::default().remember(offering("subnet-a", true), Refusal::NoRoom, t0, dir.path());
        let next = Shortages::load(dir.path(), t0 + Duration::from_secs(1));
        assert!(next.short(&offering("subnet-a", true)).is_some());
    }
}

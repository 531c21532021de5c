//! The warm pool's flag (`--warm LABEL=N[@HH-HH]`, issue 14): keep at least
//! N stopped, set-up agents of a label so its next job gets a start (tens of
//! seconds) instead of a create (boot plus agent set-up). The planner's side
//! is in `plan::warm` (the stops) and `plan::scale_up::warm` (the creates).
//!
//! The spare executors' flag (`--spare LABEL=N[@HH-HH]`, same syntax): keep
//! at least N idle executors of a label online, so its next job waits for
//! no agent at all; refilled by starts (from the warm pool) before creates.
//! The planner's side is `plan::spare` and `plan::scale_up::spare`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::Label;

/// One `--warm` pool, its label checked against the envs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPool {
    pub label: Label,
    /// Stopped agents to keep.
    pub size: u32,
    /// When the pool is kept; `None`: always.
    pub hours: Option<Hours>,
}

/// One `--spare` label, checked against the envs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    pub label: Label,
    /// Idle executors to keep ready (at least 1).
    pub executors: u32,
    /// When they are kept; `None`: always.
    pub hours: Option<Hours>,
}

/// Hours of the day in UTC, `from` inclusive, `to` exclusive; `from > to`
/// wraps midnight (`22-06` is 22:00 to 06:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub from: u8,
    pub to: u8,
}

impl Hours {
    /// `now`'s UTC hour is inside.
    pub fn contains(self, now: SystemTime) -> bool {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let hour = u8::try_from(secs / 3600 % 24).unwrap_or(0);
        if self.from < self.to {
            (self.from..self.to).contains(&hour)
        } else {
            hour >= self.from || hour < self.to
        }
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}-{:02} UTC", self.from, self.to)
    }
}

/// A `--warm` or `--spare` word before its label is checked: `LABEL=N[@HH-HH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmWord {
    pub label: String,
    pub size: u32,
    pub hours: Option<Hours>,
}

/// Reads a `--warm` word, `LABEL=N[@HH-HH]`; the error is one line naming
/// what is wrong.
pub fn parse_warm(word: &str) -> Result<WarmWord, String> {
    parse_word("--warm", word)
}

/// Reads a `--spare` word, `LABEL=N[@HH-HH]` with N at least 1 (zero spare
/// executors is no spare); the error is one line naming what is wrong.
pub fn parse_spare(word: &str) -> Result<WarmWord, String> {
    let w = parse_word("--spare", word)?;
    if w.size == 0 {
        return Err(format!("--spare {word:?}: keep at least 1 idle executor (LABEL=N, N ≥ 1)"));
    }
    Ok(w)
}

fn parse_word(flag: &str, word: &str) -> Result<WarmWord, String> {
    let bad = |why: String| format!("{flag} {word:?}: {why} (LABEL=N or LABEL=N@HH-HH, hours in UTC)");
    let (label, rest) = word.split_once('=').ok_or_else(|| bad("no `=`".into()))?;
    let label = label.trim();
    if label.is_empty() {
        return Err(bad("no label".into()));
    }
    let (size, hours) = match rest.split_once('@') {
        Some((size, hours)) => (size, Some(hours)),
        None => (rest, None),
    };
    // `--warm` keeps agents, `--spare` idle executors.
    let unit = if flag == "--spare" { "idle executors" } else { "agents" };
    let size: u32 = size.trim().parse().map_err(|_| bad(format!("{:?} is not a number of {unit}", size.trim())))?;
    let hours = hours.map(|h| parse_hours(h.trim()).map_err(bad)).transpose()?;
    Ok(WarmWord { label: label.to_string(), size, hours })
}

fn parse_hours(text: &str) -> Result<Hours, String> {
    let (from, to) = text.split_once('-').ok_or_else(|| format!("hours {text:?} are not HH-HH"))?;
    let hour = |h: &str, max: u8| -> Result<u8, String> {
        match h.parse::<u8>() {
            Ok(n) if h.len() == 2 && n <= max => Ok(n),
            _ => Err(format!("hours {text:?}: {h:?} is not an hour 00-{max}")),
        }
    };
    // 24 only ends a window (`00-24`: the whole day).
    let (from, to) = (hour(from, 23)?, hour(to, 24)?);
    if from == to {
        return Err(format!("hours {text:?} are an empty window"));
    }
    Ok(Hours { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at_hour(hour: u64) -> SystemTime {
        // 1_699_920_000 is 2023-11-14 00:00 UTC.
        UNIX_EPOCH + Duration::from_secs(1_699_920_000 + hour * 3600 + 59 * 60)
    }

    #[test]
    fn a_warm_word_is_label_count_and_optional_hours() {
        assert_eq!(parse_warm("dev=2"), Ok(WarmWord { label: "dev".into(), size: 2, hours: None }));
        assert_eq!(
            parse_warm("prod_shared=1@07-19"),
            Ok(WarmWord { label: "prod_shared".into(), size: 1, hours: Some(Hours { from: 7, to: 19 }) })
        );
        assert_eq!(parse_warm("dev=0@22-06").unwrap().hours, Some(Hours { from: 22, to: 6 }));
        assert_eq!(parse_warm(" dev = 1 @ 00-24").unwrap().hours, Some(Hours { from: 0, to: 24 }));
    }

    #[test]
    fn bad_warm_words_say_what_is_wrong_in_one_line() {
        for (word, says) in [
            ("dev", "no `=`"),
            ("=2", "no label"),
            ("dev=two", "\"two\" is not a number of agents"),
            ("dev=-1", "\"-1\" is not a number of agents"),
            ("dev=2@7-19", "\"7\" is not an hour 00-23"),
            ("dev=2@07-25", "\"25\" is not an hour 00-24"),
            ("dev=2@0719", "are not HH-HH"),
            ("dev=2@07-07", "empty window"),
            ("dev=2@24-06", "\"24\" is not an hour 00-23"),
        ] {
            let e = parse_warm(word).unwrap_err();
            assert!(e.contains(says), "{word}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_spare_word_is_a_warm_word_of_at_least_one_executor() {
        assert_eq!(parse_spare("dev=1"), Ok(WarmWord { label: "dev".into(), size: 1, hours: None }));
        assert_eq!(parse_spare("dev_shared=3@07-19").unwrap().hours, Some(Hours { from: 7, to: 19 }));
        for (word, says) in [
            ("dev=0", "at least 1 idle executor"),
            ("dev=0@07-19", "at least 1 idle executor"),
            ("dev", "no `=`"),
            ("dev=x", "\"x\" is not a number of idle executors"),
            ("dev=1@7-19", "is not an hour"),
        ] {
            let e = parse_spare(word).unwrap_err();
            assert!(e.starts_with("--spare ") && e.contains(says) && !e.contains('\n'), "{word}: {e}");
        }
    }

    #[test]
    fn hours_hold_from_inclusive_to_exclusive_in_utc() {
        let day = Hours { from: 7, to: 19 };
        assert!(!day.contains(at_hour(6)));
        assert!(day.contains(at_hour(7)));
        assert!(day.contains(at_hour(18)));
        assert!(!day.contains(at_hour(19)));
    }

    #[test]
    fn hours_may_wrap_midnight() {
        let night = Hours { from: 22, to: 6 };
        for h in [22, 23, 0, 5] {
            assert!(night.contains(at_hour(h)), "{h}");
        }
        for h in [6, 12, 21] {
            assert!(!night.contains(at_hour(h)), "{h}");
        }
        // 00-24 is the whole day.
        let all = parse_warm("dev=1@00-24").unwrap().hours.unwrap();
        assert!((0..24).all(|h| all.contains(at_hour(h))));
    }
}

//! `time_to_agent.json`: the queue items in flight (see
//! [`crate::time_to_agent`]), so an item first seen by one run and served in
//! the next is measured from its first sighting. Rewritten atomically after
//! every pass; bounded by [`MAX_ITEMS`](crate::time_to_agent::MAX_ITEMS). A
//! missing file starts fresh; an unreadable or corrupt one starts fresh with
//! a warning: it only measures, it never decides.

use std::path::Path;

use crate::time_to_agent::Tracker;

pub const FILE: &str = "time_to_agent.json";

/// More than MAX_ITEMS items could ever need: a bigger file is not ours.
const MAX_BYTES: u64 = 4 << 20;

pub fn load(dir: &Path) -> Tracker {
    let path = dir.join(FILE);
    let bytes = match crate::files::read_regular(&path, MAX_BYTES + 1) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("no {FILE}: no item in flight from an earlier run");
            return Tracker::default();
        }
        Err(e) => {
            tracing::warn!("cannot read {FILE} ({e}); the time to agent is measured afresh");
            return Tracker::default();
        }
    };
    if bytes.len() as u64 > MAX_BYTES {
        tracing::warn!("{FILE} is larger than {MAX_BYTES} bytes; the time to agent is measured afresh");
        return Tracker::default();
    }
    match serde_json::from_slice(&bytes) {
        Ok(tracker) => tracker,
        Err(e) => {
            tracing::warn!("{FILE} is corrupt ({e}); the time to agent is measured afresh");
            Tracker::default()
        }
    }
}

pub fn save(dir: &Path, tracker: &Tracker) {
    let result = serde_json::to_vec(tracker)
        .map_err(std::io::Error::other)
        .and_then(|json| crate::files::replace(&dir.join(FILE), &json));
    if let Err(e) = result {
        tracing::warn!("cannot write {FILE}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QueueItem;
    use std::collections::BTreeSet;
    use std::time::SystemTime;

    #[test]
    fn what_is_saved_is_loaded_and_a_missing_or_corrupt_file_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Tracker::default(), "missing");

        let mut tracker = Tracker::default();
        let item = QueueItem { job_name: "app".into(), label: "dev".into(), queue_id: Some(3), ..Default::default() };
        tracker.queue(SystemTime::now(), &[item], &BTreeSet::from(["dev".to_string()]));
        save(dir.path(), &tracker);
        assert_eq!(load(dir.path()), tracker);

        std::fs::write(dir.path().join(FILE), b"{\"items\": {\"id:3\": 1").unwrap();
        assert_eq!(load(dir.path()), Tracker::default(), "corrupt");
        std::fs::write(dir.path().join(FILE), vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        assert_eq!(load(dir.path()), Tracker::default(), "too large");
    }
}

//! Marker files in the working directory, named exactly as the original's so
//! a run that takes over from the Python script honours its markers:
//! - `working_on_<key>.working`: the queue item `<key>` has been given an
//!   instance; expires by file age;
//! - `<ENV>__<instance-id>.start_instance`: we started or created that
//!   instance for the labels inside (`labels=…`, `instance_id=…` lines;
//!   ours add `warm=LABEL` for a warm pool's create, which older readers
//!   skip);
//! - `<ENV>__<instance-id>.interrupted`: ours, not the original's: the agent
//!   was taken out of service on an EC2 event (`kind=warned|draining`,
//!   `event=…` lines; one without a known kind is ignored); it goes when
//!   the instance does.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::model::{InterruptedMarker, Interruption, Markers, StartMarker};

const WORKING_PREFIX: &str = "working_on_";
const WORKING_SUFFIX: &str = ".working";
const START_SUFFIX: &str = ".start_instance";
const INTERRUPTED_SUFFIX: &str = ".interrupted";
/// A `.start_instance` marker holds two short lines; more is not read.
const MAX_MARKER_BYTES: u64 = 64 * 1024;

pub fn working_file(key: &str) -> String {
    format!("{WORKING_PREFIX}{key}{WORKING_SUFFIX}")
}

pub fn start_file(env: &str, instance_id: &str) -> String {
    format!("{env}__{instance_id}{START_SUFFIX}")
}

pub fn interrupted_file(env: &str, instance_id: &str) -> String {
    format!("{env}__{instance_id}{INTERRUPTED_SUFFIX}")
}

/// Reads every marker in `dir`; ages are measured against `now`. Unreadable
/// entries are skipped: a marker we cannot read is one we cannot honour.
pub fn read_markers(dir: &Path, now: SystemTime) -> io::Result<Markers> {
    let mut markers = Markers::default();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let age = || {
            let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
            Some(now.duration_since(modified).unwrap_or_default())
        };
        if let Some(key) = name.strip_prefix(WORKING_PREFIX).and_then(|n| n.strip_suffix(WORKING_SUFFIX)) {
            if let Some(age) = age() {
                markers.working.insert(key.to_string(), age);
            }
        } else if let Some((env, id)) = name.strip_suffix(INTERRUPTED_SUFFIX).and_then(|n| n.split_once("__")) {
            let Ok(bytes) = crate::files::read_regular(&entry.path(), MAX_MARKER_BYTES) else { continue };
            let text = String::from_utf8_lossy(&bytes);
            let value = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()));
            // Only a marker we wrote holds an agent out of service.
            let Some(kind) = value("kind=").and_then(|k| Interruption::parse(&k)) else {
                tracing::warn!("marker {name}: no kind=warned|draining line; ignored");
                continue;
            };
            markers.interrupted.push(InterruptedMarker {
                file_name: name.clone(),
                env: env.to_string(),
                instance_id: id.to_string(),
                kind,
                event: value("event=").unwrap_or_default(),
                age: age().unwrap_or_default(),
            });
        } else if let Some((env, id)) = name.strip_suffix(START_SUFFIX).and_then(|n| n.split_once("__")) {
            // Not through a link, not from a FIFO, not more than a marker holds.
            let text = crate::files::read_regular(&entry.path(), MAX_MARKER_BYTES)
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let (Some(age), Ok(text)) = (age(), text) else { continue };
            let value = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()));
            markers.started.push(StartMarker {
                file_name: name.clone(),
                env: env.to_string(),
                instance_id: value("instance_id=").unwrap_or_else(|| id.to_string()),
                labels: value("labels=").unwrap_or_default().split_whitespace().map(str::to_string).collect(),
                age,
                warm: value("warm=").filter(|w| !w.is_empty()),
            });
        }
    }
    markers.started.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    markers.interrupted.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(markers)
}

/// Markers are written new and renamed into place: a link planted at a
/// marker's name is replaced, never written through (see [`crate::files`]).
pub fn write_working(dir: &Path, key: &str) -> io::Result<()> {
    crate::files::replace(&dir.join(working_file(key)), b"")
}

/// `warm`: the pool a create is for; the planner tells an agent booting into
/// the pool from one started to serve builds by it.
pub fn write_start(dir: &Path, env: &str, instance_id: &str, labels: &str, warm: Option<&str>) -> io::Result<()> {
    let mut text = format!("labels={labels}\ninstance_id={instance_id}\n");
    if let Some(pool) = warm {
        text.push_str(&format!("warm={pool}\n"));
    }
    crate::files::replace(&dir.join(start_file(env, instance_id)), text.as_bytes())
}

pub fn write_interrupted(dir: &Path, env: &str, instance_id: &str, kind: Interruption, event: &str) -> io::Result<()> {
    let text = format!("kind={}\nevent={event}\n", kind.as_str());
    crate::files::replace(&dir.join(interrupted_file(env, instance_id)), text.as_bytes())
}

/// Removes a marker; one already gone is fine.
pub fn remove(dir: &Path, file_name: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(file_name)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_what_it_writes_and_the_originals_files() {
        let dir = tempfile::tempdir().unwrap();
        write_working(dir.path(), "job-000___0229e1082c8dd9a2f7f2d7f51901a614").unwrap();
        write_start(dir.path(), "my-test-env", "i-0abc", "my-test-env_spot", None).unwrap();
        write_start(dir.path(), "my-test-env", "i-0def", "my-test-env", Some("my-test-env")).unwrap();
        // As the Python script wrote it (no trailing newline, CRLF-free).
        std::fs::write(dir.path().join("dev__i-9.start_instance"), "labels=dev\ninstance_id=i-9").unwrap();
        std::fs::write(dir.path().join("properties_run.csv"), "x").unwrap();
        let m = read_markers(dir.path(), SystemTime::now() + Duration::from_secs(10)).unwrap();
        let age = m.working["job-000___0229e1082c8dd9a2f7f2d7f51901a614"];
        assert!(age >= Duration::from_secs(9) && age < Duration::from_secs(60), "{age:?}");
        assert_eq!(m.started.len(), 3);
        assert_eq!(m.started[0].env, "dev");
        assert_eq!((m.started[0].instance_id.as_str(), m.started[0].warm.as_deref()), ("i-9", None));
        assert_eq!(m.started[1].env, "my-test-env");
        assert_eq!(
            (m.started[1].labels.as_slice(), m.started[1].warm.as_deref()),
            (&["my-test-env_spot".to_string()][..], None)
        );
        assert_eq!((m.started[2].instance_id.as_str(), m.started[2].warm.as_deref()), ("i-0def", Some("my-test-env")));
        remove(dir.path(), &working_file("job-000___0229e1082c8dd9a2f7f2d7f51901a614")).unwrap();
        remove(dir.path(), "absent.working").unwrap();
        assert!(read_markers(dir.path(), SystemTime::now()).unwrap().working.is_empty());
    }

    #[test]
    fn reads_the_interruption_markers_it_writes_and_ignores_garbage() {
        let dir = tempfile::tempdir().unwrap();
        write_interrupted(dir.path(), "dev", "i-1", Interruption::Draining, "e-1").unwrap();
        write_interrupted(dir.path(), "dev", "i-2", Interruption::Warned, "e-2").unwrap();
        std::fs::write(dir.path().join("dev__i-3.interrupted"), "garbage").unwrap();
        let m = read_markers(dir.path(), SystemTime::now()).unwrap();
        let read: Vec<(&str, Interruption, &str)> =
            m.interrupted.iter().map(|m| (m.instance_id.as_str(), m.kind, m.event.as_str())).collect();
        assert_eq!(read, [("i-1", Interruption::Draining, "e-1"), ("i-2", Interruption::Warned, "e-2"),]);
        assert!(m.interrupted[0].age < Duration::from_secs(60));
        assert!(m.started.is_empty() && m.working.is_empty());
        remove(dir.path(), &interrupted_file("dev", "i-1")).unwrap();
        assert_eq!(read_markers(dir.path(), SystemTime::now()).unwrap().interrupted.len(), 1);
    }

    #[test]
    fn links_at_marker_names_are_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "labels=prod\ninstance_id=i-victim\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(start_file("dev", "i-1"))).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(working_file("job___x"))).unwrap();
        // A linked start marker is not read.
        assert!(read_markers(dir.path(), SystemTime::now()).unwrap().started.is_empty());
        write_start(dir.path(), "dev", "i-1", "dev", None).unwrap();
        write_working(dir.path(), "job___x").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "labels=prod\ninstance_id=i-victim\n");
        let m = read_markers(dir.path(), SystemTime::now()).unwrap();
        assert_eq!((m.started.len(), m.started[0].instance_id.as_str()), (1, "i-1"));
        assert!(m.working.contains_key("job___x"));
    }
}

//! Counters of a run and the four `properties_*.csv` files the Jenkins Plot
//! plugin graphs: a header row of sorted keys, one row of values, CRLF line
//! ends as the original's Python csv module wrote them.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::counter::{Counter, CsvFile};

#[derive(Debug, Default, Clone)]
pub struct Stats {
    counters: BTreeMap<Counter, u64>,
    /// Agents per label set from the last inventory (labels joined by `_`, `ENV_None`).
    pub instance_count: BTreeMap<String, u64>,
}

impl Stats {
    pub fn add(&mut self, counter: Counter, n: u64) {
        if n > 0 {
            *self.counters.entry(counter).or_default() += n;
        }
    }

    /// Removes a counter, returning its value.
    pub fn take(&mut self, counter: Counter) -> u64 {
        self.counters.remove(&counter).unwrap_or(0)
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counters.get(&counter).copied().unwrap_or(0)
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Stats) {
        for (&counter, &n) in &other.counters {
            self.add(counter, n);
        }
    }

    /// Sum of the failure counters (the pass line's `errors N`).
    pub fn errors(&self) -> u64 {
        Counter::ALL.iter().filter(|c| c.is_failure()).map(|&c| self.get(c)).sum()
    }

    pub fn write_csvs(&self, dir: &Path) -> io::Result<()> {
        for file in CsvFile::ALL {
            let row = Counter::of(file).map(|c| (c.name().to_string(), self.get(c))).collect();
            write_csv(&dir.join(file.file_name()), &row)?;
        }
        // The Python csv module wrote two empty rows for no agents, which
        // the Plot plugin cannot read; one `none` column of 0 keeps the graph.
        let none = BTreeMap::from([("none".to_string(), 0)]);
        let count = if self.instance_count.is_empty() { &none } else { &self.instance_count };
        write_csv(&dir.join("properties_instance_count.csv"), count)
    }
}

/// Written new and renamed into place (see [`crate::files`]).
fn write_csv(path: &Path, row: &BTreeMap<String, u64>) -> io::Result<()> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(row.keys())?;
    w.write_record(row.values().map(u64::to_string))?;
    let bytes = w.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
    crate::files::replace(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csvs_have_sorted_keys_and_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Stats::default();
        s.add(Counter::InstancesStarted, 2);
        s.add(Counter::JarFileError, 1);
        s.add(Counter::JobOnQueue, 4);
        s.instance_count.insert("dev_spot".into(), 3);
        s.instance_count.insert("dev_None".into(), 1);
        s.write_csvs(dir.path()).unwrap();
        let run = std::fs::read_to_string(dir.path().join("properties_run.csv")).unwrap();
        assert_eq!(run, "instances_created,instances_started,instances_stopped,instances_terminated\r\n0,2,0,0\r\n");
        let err = std::fs::read_to_string(dir.path().join("properties_error.csv")).unwrap();
        let mut lines = err.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let mut sorted = header.clone();
        sorted.sort();
        assert_eq!(header, sorted);
        assert_eq!(s.errors(), 1);
        let count = std::fs::read_to_string(dir.path().join("properties_instance_count.csv")).unwrap();
        assert_eq!(count, "dev_None,dev_spot\r\n1,3\r\n");
    }

    #[test]
    fn a_link_planted_at_a_csv_is_replaced_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("authorized_keys");
        std::fs::write(&target, "precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("properties_run.csv")).unwrap();
        let mut s = Stats::default();
        s.add(Counter::InstancesCreated, 1);
        s.write_csvs(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        let run = dir.path().join("properties_run.csv");
        assert!(std::fs::symlink_metadata(&run).unwrap().file_type().is_file());
        assert!(std::fs::read_to_string(&run).unwrap().ends_with("\r\n1,0,0,0\r\n"));
    }

    #[test]
    fn no_agents_make_a_none_column_not_empty_rows() {
        let dir = tempfile::tempdir().unwrap();
        Stats::default().write_csvs(dir.path()).unwrap();
        let count = std::fs::read_to_string(dir.path().join("properties_instance_count.csv")).unwrap();
        assert_eq!(count, "none\r\n0\r\n");
    }
}

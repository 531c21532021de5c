//! Record: what a run did, for the people who look after it. One
//! [`Recorder`] per run keeps the counters ([`stats`]) and the passes and
//! actions ([`RunRecord`]); after every pass it rewrites the metrics
//! ([`metrics`]), at the end it writes the run report ([`report`]) and the
//! `properties_*.csv` files the Jenkins Plot plugin graphs.

pub mod in_flight;
pub mod metrics;
pub mod report;
mod run;
pub mod stats;

use std::path::PathBuf;

pub use run::{ActionRecord, PassRecord, RunRecord};

use crate::act::Acted;
use crate::counter::Counter;
use crate::logging::Problem;
use metrics::AgentStates;
use stats::Stats;

pub struct Recorder {
    /// Where the metrics, the report and the CSVs are written.
    workdir: PathBuf,
    pub stats: Stats,
    /// Passes and actions, for the run report and the metrics.
    pub run: RunRecord,
    /// Our agents per env and state at the last observation (metrics).
    agent_states: AgentStates,
}

impl Recorder {
    pub fn new(workdir: PathBuf) -> Recorder {
        Recorder { workdir, stats: Stats::default(), run: RunRecord::default(), agent_states: AgentStates::new() }
    }

    /// What carrying out a plan did: its counters and its actions.
    pub fn acted(&mut self, acted: Acted) {
        self.stats.merge(&acted.stats);
        self.run.actions.extend(acted.records);
    }

    /// The inventory's actions: their failures count as inventory failures,
    /// not as failed scaling actions.
    pub fn inventory_acted(&mut self, mut acted: Acted) {
        let failures = acted.stats.take(Counter::ActionFailed);
        self.acted(acted);
        self.stats.add(Counter::InventoryFailed, failures);
    }

    /// After each pass: its record, and the metrics rewritten.
    pub fn after_pass(&mut self, pass: PassRecord, agent_states: AgentStates) {
        self.run.passes.push(pass);
        self.agent_states = agent_states;
        let text = metrics::render(&self.stats, &self.run, &self.agent_states);
        if let Err(e) = metrics::write(&self.workdir, &text) {
            tracing::warn!("cannot write {}: {e}", metrics::FILE);
        }
    }

    /// At the end of the run: the report, then the CSVs. A report that
    /// cannot be written is logged; CSVs that cannot be written are the
    /// run's failure (the Jenkins job's graphs depend on them).
    pub fn finish(&self, title: &str, problems: &[Problem]) -> std::io::Result<()> {
        let html = report::render(&self.run, &self.stats, problems, title);
        if let Err(e) = crate::files::replace(&self.workdir.join(report::FILE), html.as_bytes()) {
            tracing::error!("cannot write {}: {e}", report::FILE);
        }
        self.stats.write_csvs(&self.workdir)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn after_each_pass_the_metrics_and_at_the_end_the_report_and_csvs() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::new(dir.path().to_path_buf());
        let mut acted = Acted::default();
        acted.stats.add(Counter::InstancesCreated, 1);
        acted.stats.add(Counter::ActionFailed, 1);
        recorder.acted(acted);
        let mut inventory = Acted::default();
        inventory.stats.add(Counter::ActionFailed, 2);
        recorder.inventory_acted(inventory);
        assert_eq!(recorder.stats.get(Counter::ActionFailed), 1);
        assert_eq!(recorder.stats.get(Counter::InventoryFailed), 2);

        let pass = PassRecord {
            number: 1,
            started: SystemTime::now(),
            duration: Duration::from_millis(5),
            queue: Some(2),
            agents: Default::default(),
            ec2_requests: 3,
        };
        recorder.after_pass(pass, AgentStates::new());
        let metrics = std::fs::read_to_string(dir.path().join(metrics::FILE)).unwrap();
        assert!(metrics.lines().any(|l| l == "slave_manager_passes_total 1"), "{metrics}");
        assert!(!dir.path().join(report::FILE).exists(), "the report comes at the end");

        recorder.finish("a run", &[]).unwrap();
        assert!(std::fs::read_to_string(dir.path().join(report::FILE)).unwrap().contains("<title>a run</title>"));
        let run = std::fs::read_to_string(dir.path().join("properties_run.csv")).unwrap();
        assert!(run.ends_with("\r\n1,0,0,0\r\n"), "{run}");
    }
}

//! The counters of a run: the one place their names are spelled. The
//! planner, the act step, the reconciler and the periodic jobs count by
//! [`Counter`]; the main crate's `stats` writes them to the `properties_*.csv`
//! files the Jenkins Plot plugin graphs, its `metrics` and `report` show
//! them. A name is the column the original wrote, so a Jenkins job's graphs
//! keep working; a misspelt variant does not compile, where a misspelt
//! string made a column of zeros.

use std::fmt;

/// The `properties_*.csv` file a counter is a column of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CsvFile {
    /// `properties_run.csv`: what the run did to agents.
    Run,
    /// `properties_sqs.csv`: the SQS build requests.
    Sqs,
    /// `properties_error.csv`: failures, and conditions an operator may want
    /// to graph.
    Error,
}

impl CsvFile {
    pub const ALL: [CsvFile; 3] = [CsvFile::Run, CsvFile::Sqs, CsvFile::Error];

    pub fn file_name(self) -> &'static str {
        match self {
            CsvFile::Run => "properties_run.csv",
            CsvFile::Sqs => "properties_sqs.csv",
            CsvFile::Error => "properties_error.csv",
        }
    }
}

/// Defines [`Counter`] from one table, so a variant cannot lack a name, a
/// file or a place in [`Counter::ALL`].
macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident: $name:literal, $file:ident, $failure:literal;)*) => {
        /// One counter. Declared in the order the metrics and the report list
        /// them (each CSV sorts its columns by name instead).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Counter {
            $($(#[$doc])* $variant,)*
        }

        impl Counter {
            /// Every counter, in declaration order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// Its column in the CSV, as the original spelled it, and its
            /// name in the metrics and the report.
            pub fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }

            /// The CSV file it is a column of.
            pub fn file(self) -> CsvFile {
                match self {
                    $(Counter::$variant => CsvFile::$file,)*
                }
            }

            /// Something failed: summed into the pass line's `errors N` and
            /// the report's errors. The other error columns count events an
            /// operator may want to graph, such as items waiting on a marker.
            pub fn is_failure(self) -> bool {
                match self {
                    $(Counter::$variant => $failure,)*
                }
            }
        }
    };
}

counters! {
    // variant: name (the CSV column), CSV file, failure.
    InstancesCreated: "instances_created", Run, false;
    InstancesStarted: "instances_started", Run, false;
    InstancesStopped: "instances_stopped", Run, false;
    InstancesTerminated: "instances_terminated", Run, false;
    SqsDropped: "sqs_dropped", Sqs, false;
    SqsHandled: "sqs_handled", Sqs, false;
    // properties_error.csv: the original's columns, then ours.
    /// A `terminate_me` node whose instance cannot be stopped (no id, no
    /// known env, gone from EC2, not named by the node's name): counted once
    /// per run for each node, not every pass it is seen again.
    ErrorStoppingInstance: "error_stopping_instance", Error, true;
    /// A running agent older than an hour that is no Jenkins node (inventory).
    InstanceNotSlave: "instance_not_slave", Error, false;
    /// A `terminate_me` node whose instance is already stopped or stopping.
    InstanceStoppedState: "instance_stopped_state", Error, false;
    /// The Jenkins dump failed; nothing was scaled that pass.
    JarFileError: "jar_file_error", Error, true;
    /// A queue item skipped because its fresh working marker says it is handled.
    JobOnQueue: "job_on_queue", Error, false;
    /// A working marker outlived its TTL while its job is still queued.
    JobsWaitedTooLong: "jobs_waited_too_long", Error, false;
    /// A running agent that never became a node within `--zombie_minutes`.
    ZombieInstance: "zombie_instance", Error, false;
    ActionFailed: "action_failed", Error, true;
    DescribeFailed: "describe_failed", Error, true;
    /// An inventory action failed (counted apart from failed scaling actions).
    InventoryFailed: "inventory_failed", Error, true;
    UnknownLabel: "unknown_label", Error, false;
    /// A label asks for an instance type `--instance_types` does not admit.
    InstanceTypeRefused: "instance_type_refused", Error, false;
    GcFailed: "gc_failed", Error, true;
    SecurityGroupFailed: "security_group_failed", Error, true;
    SqsFailed: "sqs_failed", Error, true;
    /// EC2 answers `RequestLimitExceeded` (the SDK retried them, more slowly).
    Ec2Throttled: "ec2_throttled", Error, false;
    /// A spot interruption warning for one of our agents (`--interruption_queue`).
    SpotInterruptions: "spot_interruptions", Error, false;
    /// A rebalance recommendation for one of our agents: it is drained.
    RebalanceRecommendations: "rebalance_recommendations", Error, false;
    /// An agent launched for the label of a warned agent whose build is at risk.
    ReplacementsLaunched: "replacements_launched", Error, false;
    /// A message on the interruption queue that is no EC2 event we know.
    InterruptionDropped: "interruption_dropped", Error, false;
    /// Receiving from or deleting on an interruption queue failed.
    InterruptionFailed: "interruption_failed", Error, true;
    /// An agent created for a warm pool (`--warm`); also in instances_created.
    WarmPoolCreated: "warm_pool_created", Error, false;
    /// A warm-pool agent stopped once set up; also in instances_stopped.
    WarmPoolStopped: "warm_pool_stopped", Error, false;
    /// A stopped agent started for its label's spare executors (`--spare`);
    /// also in instances_started.
    SpareStarted: "spare_started", Error, false;
    /// An agent created for its label's spare executors; also in
    /// instances_created.
    SpareCreated: "spare_created", Error, false;
}

impl Counter {
    /// The counters of one CSV file, in declaration order.
    pub fn of(file: CsvFile) -> impl Iterator<Item = Counter> {
        Counter::ALL.iter().copied().filter(move |c| c.file() == file)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_counter_once_with_a_name_of_its_own() {
        let mut sorted = Counter::ALL.to_vec();
        sorted.sort();
        assert_eq!(sorted, Counter::ALL, "declaration order");
        let names: std::collections::BTreeSet<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Counter::ALL.len());
        assert_eq!(Counter::JarFileError.to_string(), "jar_file_error");
    }

    #[test]
    fn only_error_columns_are_failures() {
        for &c in Counter::ALL {
            if c.is_failure() {
                assert_eq!(c.file(), CsvFile::Error, "{c}");
            }
        }
    }

    #[test]
    fn csv_files_are_named_as_the_original_named_them() {
        let names: Vec<&str> = CsvFile::ALL.iter().map(|f| f.file_name()).collect();
        assert_eq!(names, ["properties_run.csv", "properties_sqs.csv", "properties_error.csv"]);
    }

    #[test]
    fn each_csv_file_lists_exactly_its_counters_in_declaration_order() {
        assert_eq!(Counter::of(CsvFile::Sqs).collect::<Vec<_>>(), [Counter::SqsDropped, Counter::SqsHandled]);
        for file in CsvFile::ALL {
            assert!(Counter::of(file).all(|c| c.file() == file), "{file:?}");
        }
        let listed: usize = CsvFile::ALL.iter().map(|&file| Counter::of(file).count()).sum();
        assert_eq!(listed, Counter::ALL.len());
    }
}

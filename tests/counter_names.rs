//! Pins what the Plot plugin graphs and what Prometheus scrapes: the
//! columns of the `properties_*.csv` files, the counter names of
//! `metrics.prom` and the report's counters, byte for byte. Jenkins jobs
//! and dashboards key on these names; a renamed, dropped or reordered
//! counter, or one counted under another's name, silently breaks a graph.

use slave_manager::counter::Counter;
use slave_manager::record::metrics::{self, AgentStates};
use slave_manager::record::stats::Stats;
use slave_manager::record::{report, RunRecord};

/// Every counter with a value of its own, so a counter written under
/// another's name shows.
fn counted() -> Stats {
    let mut s = Stats::default();
    for (counter, n) in [
        (Counter::InstancesCreated, 1),
        (Counter::InstancesStarted, 2),
        (Counter::InstancesStopped, 3),
        (Counter::InstancesTerminated, 4),
        (Counter::SqsDropped, 5),
        (Counter::SqsHandled, 6),
        (Counter::ErrorStoppingInstance, 7),
        (Counter::InstanceNotSlave, 8),
        (Counter::InstanceStoppedState, 9),
        (Counter::JarFileError, 10),
        (Counter::JobOnQueue, 11),
        (Counter::JobsWaitedTooLong, 12),
        (Counter::ZombieInstance, 13),
        (Counter::ActionFailed, 14),
        (Counter::DescribeFailed, 15),
        (Counter::InventoryFailed, 16),
        (Counter::UnknownLabel, 17),
        (Counter::InstanceTypeRefused, 18),
        (Counter::GcFailed, 19),
        (Counter::SecurityGroupFailed, 20),
        (Counter::SqsFailed, 21),
        (Counter::Ec2Throttled, 22),
        (Counter::SpotInterruptions, 23),
        (Counter::RebalanceRecommendations, 24),
        (Counter::ReplacementsLaunched, 25),
        (Counter::InterruptionDropped, 26),
        (Counter::InterruptionFailed, 27),
        (Counter::WarmPoolCreated, 28),
        (Counter::WarmPoolStopped, 29),
        (Counter::SpareStarted, 30),
        (Counter::SpareCreated, 31),
    ] {
        s.add(counter, n);
    }
    // A new counter is a new column: pin it here too.
    assert_eq!(Counter::ALL.len(), 31);
    s
}

fn csv(stats: &Stats, file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    stats.write_csvs(dir.path()).unwrap();
    std::fs::read_to_string(dir.path().join(file)).unwrap()
}

#[test]
fn the_csv_columns_are_the_originals() {
    for (stats, values) in [
        (Stats::default(), ["0,0,0,0", "0,0", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"]),
        (counted(), ["1,2,3,4", "5,6", "14,15,22,7,19,8,9,18,26,27,16,10,11,12,24,25,20,31,30,23,21,17,28,29,13"]),
    ] {
        assert_eq!(
            csv(&stats, "properties_run.csv"),
            format!("instances_created,instances_started,instances_stopped,instances_terminated\r\n{}\r\n", values[0])
        );
        assert_eq!(csv(&stats, "properties_sqs.csv"), format!("sqs_dropped,sqs_handled\r\n{}\r\n", values[1]));
        assert_eq!(
            csv(&stats, "properties_error.csv"),
            format!(
                "action_failed,describe_failed,ec2_throttled,error_stopping_instance,gc_failed,instance_not_slave,\
                 instance_stopped_state,instance_type_refused,interruption_dropped,interruption_failed,\
                 inventory_failed,jar_file_error,job_on_queue,jobs_waited_too_long,rebalance_recommendations,\
                 replacements_launched,security_group_failed,spare_created,spare_started,spot_interruptions,sqs_failed,unknown_label,\
                 warm_pool_created,warm_pool_stopped,zombie_instance\r\n{}\r\n",
                values[2]
            )
        );
        assert_eq!(csv(&stats, "properties_instance_count.csv"), "none\r\n0\r\n");
    }
}

#[test]
fn the_failures_are_the_originals_and_ours() {
    // error_stopping_instance, jar_file_error, action_failed,
    // describe_failed, inventory_failed, gc_failed, security_group_failed,
    // sqs_failed, interruption_failed.
    assert_eq!(counted().errors(), 7 + 10 + 14 + 15 + 16 + 19 + 20 + 21 + 27);
    assert_eq!(Stats::default().errors(), 0);
}

#[test]
fn the_metrics_names_are_pinned() {
    let text = metrics::render(&counted(), &RunRecord::default(), &AgentStates::new());
    assert_eq!(
        text,
        r#"# HELP slave_manager_passes_total Passes completed in this run.
# TYPE slave_manager_passes_total counter
slave_manager_passes_total 0
# HELP slave_manager_actions_total Actions carried out in this run, by kind and outcome.
# TYPE slave_manager_actions_total counter
# HELP slave_manager_events_total The counters of properties_run.csv and properties_sqs.csv.
# TYPE slave_manager_events_total counter
slave_manager_events_total{event="instances_created"} 1
slave_manager_events_total{event="instances_started"} 2
slave_manager_events_total{event="instances_stopped"} 3
slave_manager_events_total{event="instances_terminated"} 4
slave_manager_events_total{event="sqs_dropped"} 5
slave_manager_events_total{event="sqs_handled"} 6
# HELP slave_manager_errors_total The counters of properties_error.csv, by kind.
# TYPE slave_manager_errors_total counter
slave_manager_errors_total{kind="error_stopping_instance"} 7
slave_manager_errors_total{kind="instance_not_slave"} 8
slave_manager_errors_total{kind="instance_stopped_state"} 9
slave_manager_errors_total{kind="jar_file_error"} 10
slave_manager_errors_total{kind="job_on_queue"} 11
slave_manager_errors_total{kind="jobs_waited_too_long"} 12
slave_manager_errors_total{kind="zombie_instance"} 13
slave_manager_errors_total{kind="action_failed"} 14
slave_manager_errors_total{kind="describe_failed"} 15
slave_manager_errors_total{kind="inventory_failed"} 16
slave_manager_errors_total{kind="unknown_label"} 17
slave_manager_errors_total{kind="instance_type_refused"} 18
slave_manager_errors_total{kind="gc_failed"} 19
slave_manager_errors_total{kind="security_group_failed"} 20
slave_manager_errors_total{kind="sqs_failed"} 21
slave_manager_errors_total{kind="ec2_throttled"} 22
slave_manager_errors_total{kind="spot_interruptions"} 23
slave_manager_errors_total{kind="rebalance_recommendations"} 24
slave_manager_errors_total{kind="replacements_launched"} 25
slave_manager_errors_total{kind="interruption_dropped"} 26
slave_manager_errors_total{kind="interruption_failed"} 27
slave_manager_errors_total{kind="warm_pool_created"} 28
slave_manager_errors_total{kind="warm_pool_stopped"} 29
slave_manager_errors_total{kind="spare_started"} 30
slave_manager_errors_total{kind="spare_created"} 31
# HELP slave_manager_agents Our agents per env and EC2 state at the last observation.
# TYPE slave_manager_agents gauge
# HELP slave_manager_instance_minutes_total Instance-minutes of our agents in this run, by env, label and use (booting, busy and idle are paid; stopped pays its volumes only).
# TYPE slave_manager_instance_minutes_total counter
# HELP slave_manager_busy_share The share of this run's paid instance-minutes (booting, busy, idle) that ran builds, by env.
# TYPE slave_manager_busy_share gauge
# HELP slave_manager_pass_duration_seconds Wall time of each pass.
# TYPE slave_manager_pass_duration_seconds histogram
slave_manager_pass_duration_seconds_bucket{le="0.1"} 0
slave_manager_pass_duration_seconds_bucket{le="0.25"} 0
slave_manager_pass_duration_seconds_bucket{le="0.5"} 0
slave_manager_pass_duration_seconds_bucket{le="1"} 0
slave_manager_pass_duration_seconds_bucket{le="2.5"} 0
slave_manager_pass_duration_seconds_bucket{le="5"} 0
slave_manager_pass_duration_seconds_bucket{le="10"} 0
slave_manager_pass_duration_seconds_bucket{le="30"} 0
slave_manager_pass_duration_seconds_bucket{le="60"} 0
slave_manager_pass_duration_seconds_bucket{le="+Inf"} 0
slave_manager_pass_duration_seconds_sum 0.0
slave_manager_pass_duration_seconds_count 0
# HELP slave_manager_time_to_agent_seconds From first sight of a queue item to its build starting, for the items that left the queue in this run, by env and how the agent came (absorbed, start, create).
# TYPE slave_manager_time_to_agent_seconds histogram
"#
    );
}

#[test]
fn the_report_counters_are_pinned() {
    let html = report::render(&RunRecord::default(), &counted(), &[], "t");
    for part in [
        r#"<div class="cards" id="summary">
<div class="card"><b>0</b>passes</div>
<div class="card"><b>1</b>instances created</div>
<div class="card"><b>2</b>instances started</div>
<div class="card"><b>3</b>instances stopped</div>
<div class="card"><b>4</b>instances terminated</div>
<div class="card"><b>5</b>sqs dropped</div>
<div class="card"><b>6</b>sqs handled</div>
<div class="card"><b>149</b>errors</div>
</div>
"#,
        r#"<table id="counters"><tr><th>counter</th><th>value</th></tr>
<tr><td>instances_created</td><td>1</td></tr>
<tr><td>instances_started</td><td>2</td></tr>
<tr><td>instances_stopped</td><td>3</td></tr>
<tr><td>instances_terminated</td><td>4</td></tr>
<tr><td>sqs_dropped</td><td>5</td></tr>
<tr><td>sqs_handled</td><td>6</td></tr>
<tr><td>error_stopping_instance</td><td>7</td></tr>
<tr><td>instance_not_slave</td><td>8</td></tr>
<tr><td>instance_stopped_state</td><td>9</td></tr>
<tr><td>jar_file_error</td><td>10</td></tr>
<tr><td>job_on_queue</td><td>11</td></tr>
<tr><td>jobs_waited_too_long</td><td>12</td></tr>
<tr><td>zombie_instance</td><td>13</td></tr>
<tr><td>action_failed</td><td>14</td></tr>
<tr><td>describe_failed</td><td>15</td></tr>
<tr><td>inventory_failed</td><td>16</td></tr>
<tr><td>unknown_label</td><td>17</td></tr>
<tr><td>instance_type_refused</td><td>18</td></tr>
<tr><td>gc_failed</td><td>19</td></tr>
<tr><td>security_group_failed</td><td>20</td></tr>
<tr><td>sqs_failed</td><td>21</td></tr>
<tr><td>ec2_throttled</td><td>22</td></tr>
<tr><td>spot_interruptions</td><td>23</td></tr>
<tr><td>rebalance_recommendations</td><td>24</td></tr>
<tr><td>replacements_launched</td><td>25</td></tr>
<tr><td>interruption_dropped</td><td>26</td></tr>
<tr><td>interruption_failed</td><td>27</td></tr>
<tr><td>warm_pool_created</td><td>28</td></tr>
<tr><td>warm_pool_stopped</td><td>29</td></tr>
<tr><td>spare_started</td><td>30</td></tr>
<tr><td>spare_created</td><td>31</td></tr>
</table>
"#,
    ] {
        assert!(html.contains(part), "missing\n{part}\nin\n{html}");
    }
}

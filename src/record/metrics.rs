//! `metrics.prom` for the node exporter's textfile collector, rewritten
//! atomically after every pass, in the Prometheus text format 0.0.4 that the
//! collector parses. The text is encoded by `prometheus-client` (the
//! Prometheus project's Rust client: names, label escaping, number and `le`
//! formats); the values are read from the run's record at each write, so a
//! [`Collector`] hands them over family by family, in a fixed order.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::counter::{Counter, CsvFile};
use crate::record::stats::Stats;
use crate::record::RunRecord;

pub const FILE: &str = "metrics.prom";

/// Upper bounds (seconds) of the pass-latency histogram.
const BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Upper bounds (seconds) of the time-to-agent histogram: an absorbed item
/// waits a pass or two, a start tens of seconds, a create minutes.
const TIME_TO_AGENT_BUCKETS: &[f64] = &[5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0];

/// Agents per env and EC2 state, from the latest observation.
pub type AgentStates = BTreeMap<String, BTreeMap<&'static str, usize>>;

type Labels = Vec<(String, String)>;

/// One value as the format writes it.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// Observations of one histogram series.
#[derive(Debug, Clone)]
struct Observed {
    bounds: &'static [f64],
    values: Vec<f64>,
}

#[derive(Debug, Clone)]
enum Samples {
    Counter(Vec<(Labels, Value)>),
    Gauge(Vec<(Labels, Value)>),
    Histogram(Vec<(Labels, Observed)>),
}

/// One metric family: its name (without the `slave_manager_` prefix and,
/// for a counter, the `_total` the encoder adds), help and samples.
#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Samples,
}

/// A pass's metrics, as the registry's one collector.
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let kind = match family.samples {
                Samples::Counter(_) => MetricType::Counter,
                Samples::Gauge(_) => MetricType::Gauge,
                Samples::Histogram(_) => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            match &family.samples {
                Samples::Counter(samples) | Samples::Gauge(samples) => {
                    let counter = matches!(family.samples, Samples::Counter(_));
                    for (labels, value) in samples {
                        if labels.is_empty() {
                            // An unlabelled family has its one sample.
                            encode_value(metric, counter, *value)?;
                            break;
                        }
                        encode_value(metric.encode_family(labels)?, counter, *value)?;
                    }
                }
                Samples::Histogram(series) => {
                    for (labels, observed) in series {
                        if labels.is_empty() {
                            encode_histogram(metric, observed)?;
                            break;
                        }
                        encode_histogram(metric.encode_family(labels)?, observed)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn encode_value(sample: MetricEncoder, counter: bool, value: Value) -> Result<(), std::fmt::Error> {
    match (counter, value) {
        (true, Value::Int(n)) => ConstCounter::new(n).encode(sample),
        (true, Value::Float(x)) => ConstCounter::new(x).encode(sample),
        (false, Value::Int(n)) => ConstGauge::new(n as i64).encode(sample),
        (false, Value::Float(x)) => ConstGauge::new(x).encode(sample),
    }
}

fn encode_histogram(mut sample: MetricEncoder, observed: &Observed) -> Result<(), std::fmt::Error> {
    // Per bucket, not cumulative: the encoder sums them.
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(observed.bounds.len() + 1);
    let mut below = 0;
    for &bound in observed.bounds.iter().chain(&[f64::INFINITY]) {
        let n = observed.values.iter().filter(|v| **v <= bound).count() as u64;
        buckets.push((bound, n - below));
        below = n;
    }
    // Not `sum()`, whose empty sum is -0.
    let sum = observed.values.iter().fold(0.0, |a, b| a + b);
    sample.encode_histogram::<NoLabelSet>(sum, observed.values.len() as u64, &buckets, None)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn minutes(time: Duration) -> Value {
    Value::Float(time.as_secs_f64() / 60.0)
}

pub fn render(stats: &Stats, run: &RunRecord, agents: &AgentStates) -> String {
    let mut families = Vec::new();
    let mut family = |name, help, samples| families.push(Family { name, help, samples });

    family(
        "passes",
        "Passes completed in this run.",
        Samples::Counter(vec![(Vec::new(), Value::Int(run.passes.len() as u64))]),
    );

    let mut by_kind: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &run.actions {
        *by_kind.entry((a.kind, if a.outcome.is_ok() { "ok" } else { "failed" })).or_default() += 1;
    }
    family(
        "actions",
        "Actions carried out in this run, by kind and outcome.",
        Samples::Counter(
            by_kind.iter().map(|((k, o), n)| (labels(&[("kind", k), ("outcome", o)]), Value::Int(*n))).collect(),
        ),
    );
    family(
        "events",
        "The counters of properties_run.csv and properties_sqs.csv.",
        Samples::Counter(
            Counter::of(CsvFile::Run)
                .chain(Counter::of(CsvFile::Sqs))
                .map(|c| (labels(&[("event", c.name())]), Value::Int(stats.get(c))))
                .collect(),
        ),
    );
    family(
        "errors",
        "The counters of properties_error.csv, by kind.",
        Samples::Counter(
            Counter::of(CsvFile::Error).map(|c| (labels(&[("kind", c.name())]), Value::Int(stats.get(c)))).collect(),
        ),
    );
    family(
        "agents",
        "Our agents per env and EC2 state at the last observation.",
        Samples::Gauge(
            agents
                .iter()
                .flat_map(|(env, states)| {
                    states
                        .iter()
                        .map(move |(state, n)| (labels(&[("env", env), ("state", state)]), Value::Int(*n as u64)))
                })
                .collect(),
        ),
    );
    if let Some(last) = run.passes.last() {
        let queue = last.queue.map_or(Value::Float(f64::NAN), |q| Value::Int(q as u64));
        family("queue_length", "Buildable queue items at the last pass.", Samples::Gauge(vec![(Vec::new(), queue)]));
        let at = last.started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        family(
            "last_pass_timestamp_seconds",
            "When the last pass started.",
            Samples::Gauge(vec![(Vec::new(), Value::Float(at))]),
        );
    }
    family(
        "instance_minutes",
        "Instance-minutes of our agents in this run, by env, label and use (booting, busy and idle are paid; stopped pays its volumes only).",
        Samples::Counter(
            run.cost
                .by_label()
                .into_iter()
                .flat_map(|((env, label), uses)| {
                    uses.into_iter().map(move |(use_, time)| {
                        (labels(&[("env", env), ("label", label), ("use", use_.as_str())]), minutes(time))
                    })
                })
                .collect(),
        ),
    );
    family(
        "busy_share",
        "The share of this run's paid instance-minutes (booting, busy, idle) that ran builds, by env.",
        Samples::Gauge(
            run.cost
                .envs()
                .into_iter()
                .filter_map(|env| run.cost.busy_share(Some(env)).map(|s| (labels(&[("env", env)]), Value::Float(s))))
                .collect(),
        ),
    );
    let durations = run.passes.iter().map(|p| p.duration.as_secs_f64()).collect();
    family(
        "pass_duration_seconds",
        "Wall time of each pass.",
        Samples::Histogram(vec![(Vec::new(), Observed { bounds: BUCKETS, values: durations })]),
    );
    let mut waits: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for f in &run.served {
        waits.entry((&f.item.env, f.item.kind().as_str())).or_default().push(f.time_to_agent().as_secs_f64());
    }
    family(
        "time_to_agent_seconds",
        "From first sight of a queue item to its build starting, for the items that left the queue in this run, by env and how the agent came (absorbed, start, create).",
        Samples::Histogram(
            waits
                .into_iter()
                .map(|((env, kind), values)| {
                    (labels(&[("env", env), ("kind", kind)]), Observed { bounds: TIME_TO_AGENT_BUCKETS, values })
                })
                .collect(),
        ),
    );

    let mut registry = Registry::with_prefix("slave_manager");
    registry.register_collector(Box::new(Families(families)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// Writes beside and renames, so the collector never reads half a file and
/// a planted link is replaced, not written through (see [`crate::files`]).
pub fn write(dir: &Path, text: &str) -> std::io::Result<()> {
    crate::files::replace(&dir.join(FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::cost::{CostLedger, Usage};
    use crate::record::{ActionRecord, PassRecord};
    use crate::time_to_agent::{AgentAction, Finished, Item, Kind};
    use std::time::{Duration, SystemTime};

    #[test]
    fn renders_the_text_format() {
        let mut stats = Stats::default();
        stats.add(Counter::InstancesCreated, 2);
        stats.add(Counter::JarFileError, 1);
        let pass = |d: u64| PassRecord {
            number: 1,
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            duration: Duration::from_millis(d),
            queue: Some(3),
            agents: BTreeMap::new(),
            ec2_requests: 2,
        };
        let action = |kind, outcome| ActionRecord {
            pass: 1,
            time: SystemTime::UNIX_EPOCH,
            env: Some("dev".into()),
            kind,
            job_key: None,
            instance_id: None,
            text: String::new(),
            outcome,
        };
        let mut run = RunRecord {
            passes: vec![pass(200), pass(3000)],
            actions: vec![action("create", Ok(())), action("create", Ok(())), action("stop", Err("x".into()))],
            cost: CostLedger::default(),
            served: Vec::new(),
            shortages: Vec::new(),
        };
        let usage = |entries: &[(Usage, u32)]| {
            let usage = entries.iter().map(|(u, n)| (("dev_spot".to_string(), *u), *n)).collect();
            BTreeMap::from([("dev".to_string(), Some(usage))])
        };
        run.cost.observe(SystemTime::UNIX_EPOCH, usage(&[(Usage::Busy, 1), (Usage::Idle, 3)]));
        run.cost.observe(SystemTime::UNIX_EPOCH + Duration::from_secs(90), usage(&[]));
        let served = |secs: u64, kind: Kind| Finished {
            item: Item {
                job: "app".into(),
                job_key: "app___x".into(),
                label: "dev".into(),
                env: "dev".into(),
                first_seen: SystemTime::UNIX_EPOCH,
                action: (kind != Kind::Absorbed).then_some(AgentAction {
                    kind,
                    at: SystemTime::UNIX_EPOCH,
                    instance_id: None,
                }),
                running: None,
                online: None,
            },
            left: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        };
        run.served = vec![
            served(4, Kind::Absorbed),
            served(25, Kind::Start),
            served(95, Kind::Create),
            served(70, Kind::Create),
        ];
        let agents = AgentStates::from([("dev".to_string(), BTreeMap::from([("running", 2), ("stopped", 1)]))]);
        let text = render(&stats, &run, &agents);
        // The names themselves are pinned by tests/counter_names.rs.
        let events = format!(r#"slave_manager_events_total{{event="{}"}} 2"#, Counter::InstancesCreated);
        let errors = format!(r#"slave_manager_errors_total{{kind="{}"}} 1"#, Counter::JarFileError);
        for line in [
            "slave_manager_passes_total 2",
            r#"slave_manager_actions_total{kind="create",outcome="ok"} 2"#,
            r#"slave_manager_actions_total{kind="stop",outcome="failed"} 1"#,
            &events,
            &errors,
            r#"slave_manager_agents{env="dev",state="stopped"} 1"#,
            r#"slave_manager_instance_minutes_total{env="dev",label="dev_spot",use="busy"} 1.5"#,
            r#"slave_manager_instance_minutes_total{env="dev",label="dev_spot",use="idle"} 4.5"#,
            r#"slave_manager_busy_share{env="dev"} 0.25"#,
            r#"slave_manager_time_to_agent_seconds_bucket{env="dev",kind="absorbed",le="5"} 1"#,
            r#"slave_manager_time_to_agent_seconds_bucket{env="dev",kind="start",le="20"} 0"#,
            r#"slave_manager_time_to_agent_seconds_bucket{env="dev",kind="start",le="30"} 1"#,
            r#"slave_manager_time_to_agent_seconds_bucket{env="dev",kind="create",le="90"} 1"#,
            r#"slave_manager_time_to_agent_seconds_bucket{env="dev",kind="create",le="+Inf"} 2"#,
            r#"slave_manager_time_to_agent_seconds_sum{env="dev",kind="create"} 165.0"#,
            r#"slave_manager_time_to_agent_seconds_count{env="dev",kind="create"} 2"#,
            "slave_manager_queue_length 3",
            r#"slave_manager_pass_duration_seconds_bucket{le="0.25"} 1"#,
            r#"slave_manager_pass_duration_seconds_bucket{le="5"} 2"#,
            r#"slave_manager_pass_duration_seconds_bucket{le="+Inf"} 2"#,
            "slave_manager_pass_duration_seconds_sum 3.2",
            "slave_manager_pass_duration_seconds_count 2",
            "# TYPE slave_manager_pass_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Label values escaped by the encoder.
        let odd = AgentStates::from([("a\"b\\c\nd".to_string(), BTreeMap::from([("running", 1)]))]);
        let text = render(&stats, &run, &odd);
        assert!(text.lines().any(|l| l == r#"slave_manager_agents{env="a\"b\\c\nd",state="running"} 1"#), "{text}");
    }
}

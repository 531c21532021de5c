//! `metrics.prom` for the node exporter's textfile collector, rewritten
//! atomically after every pass. Written in the Prometheus text format 0.0.4
//! that the collector parses (the maintained Rust encoders emit OpenMetrics,
//! whose `_total`/`# EOF` conventions that parser does not expect).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

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

pub fn render(stats: &Stats, run: &RunRecord, agents: &AgentStates) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP slave_manager_{name} {help}");
        let _ = writeln!(out, "# TYPE slave_manager_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "slave_manager_{name}{labels} {value}");
        }
    };

    metric(
        "passes_total",
        "counter",
        "Passes completed in this run.",
        vec![(String::new(), run.passes.len().to_string())],
    );

    let mut by_kind: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &run.actions {
        *by_kind.entry((a.kind, if a.outcome.is_ok() { "ok" } else { "failed" })).or_default() += 1;
    }
    metric(
        "actions_total",
        "counter",
        "Actions carried out in this run, by kind and outcome.",
        by_kind.iter().map(|((k, o), n)| (labels(&[("kind", k), ("outcome", o)]), n.to_string())).collect(),
    );
    metric(
        "events_total",
        "counter",
        "The counters of properties_run.csv and properties_sqs.csv.",
        Counter::of(CsvFile::Run)
            .chain(Counter::of(CsvFile::Sqs))
            .map(|c| (labels(&[("event", c.name())]), stats.get(c).to_string()))
            .collect(),
    );
    metric(
        "errors_total",
        "counter",
        "The counters of properties_error.csv, by kind.",
        Counter::of(CsvFile::Error).map(|c| (labels(&[("kind", c.name())]), stats.get(c).to_string())).collect(),
    );
    metric(
        "agents",
        "gauge",
        "Our agents per env and EC2 state at the last observation.",
        agents
            .iter()
            .flat_map(|(env, states)| {
                states.iter().map(move |(state, n)| (labels(&[("env", env), ("state", state)]), n.to_string()))
            })
            .collect(),
    );
    if let Some(last) = run.passes.last() {
        let queue = last.queue.map_or("NaN".to_string(), |q| q.to_string());
        metric("queue_length", "gauge", "Buildable queue items at the last pass.", vec![(String::new(), queue)]);
        let at = last.started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        metric(
            "last_pass_timestamp_seconds",
            "gauge",
            "When the last pass started.",
            vec![(String::new(), at.to_string())],
        );
    }
    metric(
        "instance_minutes_total",
        "counter",
        "Instance-minutes of our agents in this run, by env, label and use (booting, busy and idle are paid; stopped pays its volumes only).",
        run.cost
            .by_label()
            .into_iter()
            .flat_map(|((env, label), uses)| {
                uses.into_iter().map(move |(use_, time)| {
                    (labels(&[("env", env), ("label", label), ("use", use_.as_str())]), minutes(time))
                })
            })
            .collect(),
    );
    metric(
        "busy_share",
        "gauge",
        "The share of this run's paid instance-minutes (booting, busy, idle) that ran builds, by env.",
        run.cost
            .envs()
            .into_iter()
            .filter_map(|env| run.cost.busy_share(Some(env)).map(|s| (labels(&[("env", env)]), s.to_string())))
            .collect(),
    );
    let durations: Vec<f64> = run.passes.iter().map(|p| p.duration.as_secs_f64()).collect();
    let mut samples: Vec<(String, String)> = BUCKETS
        .iter()
        .map(|b| {
            let n = durations.iter().filter(|d| **d <= *b).count();
            (labels(&[("le", &b.to_string())]), n.to_string())
        })
        .collect();
    samples.push((labels(&[("le", "+Inf")]), durations.len().to_string()));
    metric("pass_duration_seconds", "histogram", "Wall time of each pass.", Vec::new());
    for (l, v) in samples {
        let _ = writeln!(out, "slave_manager_pass_duration_seconds_bucket{l} {v}");
    }
    let _ = writeln!(out, "slave_manager_pass_duration_seconds_sum {}", durations.iter().sum::<f64>());
    let _ = writeln!(out, "slave_manager_pass_duration_seconds_count {}", durations.len());
    let _ = writeln!(
        out,
        "# HELP slave_manager_time_to_agent_seconds From first sight of a queue item to its build starting, for the items that left the queue in this run, by env and how the agent came (absorbed, start, create)."
    );
    let _ = writeln!(out, "# TYPE slave_manager_time_to_agent_seconds histogram");
    let mut waits: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for f in &run.served {
        waits.entry((&f.item.env, f.item.kind().as_str())).or_default().push(f.time_to_agent().as_secs_f64());
    }
    for ((env, kind), secs) in &waits {
        for b in TIME_TO_AGENT_BUCKETS {
            let n = secs.iter().filter(|s| **s <= *b).count();
            let l = labels(&[("env", env), ("kind", kind), ("le", &b.to_string())]);
            let _ = writeln!(out, "slave_manager_time_to_agent_seconds_bucket{l} {n}");
        }
        let l = labels(&[("env", env), ("kind", kind), ("le", "+Inf")]);
        let _ = writeln!(out, "slave_manager_time_to_agent_seconds_bucket{l} {}", secs.len());
        let l = labels(&[("env", env), ("kind", kind)]);
        let _ = writeln!(out, "slave_manager_time_to_agent_seconds_sum{l} {}", secs.iter().sum::<f64>());
        let _ = writeln!(out, "slave_manager_time_to_agent_seconds_count{l} {}", secs.len());
    }
    out
}

fn minutes(time: std::time::Duration) -> String {
    (time.as_secs_f64() / 60.0).to_string()
}

/// `{k="v",…}` with the format's escapes.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
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
            r#"slave_manager_time_to_agent_seconds_sum{env="dev",kind="create"} 165"#,
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
        assert_eq!(labels(&[("k", "a\"b\\c\nd")]), r#"{k="a\"b\\c\nd"}"#);
    }
}

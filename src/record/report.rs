//! `report.html`: one self-contained page (no network, no script) written at
//! the end of each run beside the CSVs, for the Jenkins job to archive: the
//! queue and the agents per env over the run, where the instance-time went,
//! each action with its reason, and every warning or error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::counter::{Counter, CsvFile};
use crate::logging::Problem;
use crate::plan::cost::Usage;
use crate::record::stats::Stats;
use crate::record::RunRecord;
use crate::time_to_agent::{quantile, Finished, Kind};

pub const FILE: &str = "report.html";

const COLORS: &[&str] = &["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

pub fn render(run: &RunRecord, stats: &Stats, problems: &[Problem], title: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }} .failed {{ color: #b00; }} .ok {{ color: #070; }}
.cards {{ display: flex; gap: 1em; flex-wrap: wrap; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; min-width: 8em; }}
.card b {{ display: block; font-size: 1.6em; }}
svg text {{ font-size: 11px; fill: #444; }}
</style></head><body>
<h1>{title}</h1>
"#,
        title = esc(title)
    );

    let _ = writeln!(h, r#"<div class="cards" id="summary">"#);
    let card = |h: &mut String, label: &str, value: u64| {
        let _ = writeln!(h, r#"<div class="card"><b>{value}</b>{}</div>"#, esc(label));
    };
    card(&mut h, "passes", run.passes.len() as u64);
    for c in Counter::of(CsvFile::Run).chain(Counter::of(CsvFile::Sqs)) {
        card(&mut h, &c.name().replace('_', " "), stats.get(c));
    }
    card(&mut h, "errors", stats.errors());
    let _ = writeln!(h, "</div>");

    let _ = writeln!(h, "<h2>Queue and agents per env</h2>");
    h.push_str(&timeline(run));
    h.push_str(&time_to_agent(run));
    h.push_str(&cost(run));

    let _ = writeln!(h, r#"<h2>Actions ({})</h2>"#, run.actions.len());
    if run.actions.is_empty() {
        let _ = writeln!(h, "<p id=\"actions\">No action was needed.</p>");
    } else {
        let _ = writeln!(
            h,
            r#"<table id="actions"><tr><th>pass</th><th>time</th><th>env</th><th>action</th><th>what and why</th><th>outcome</th></tr>"#
        );
        for a in &run.actions {
            let (class, outcome) = match &a.outcome {
                Ok(()) => ("ok", "done".to_string()),
                Err(e) => ("failed", e.clone()),
            };
            let _ = writeln!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{class}">{}</td></tr>"#,
                a.pass,
                clock(a.time),
                esc(a.env.as_deref().unwrap_or("")),
                a.kind,
                esc(&a.text),
                esc(&outcome)
            );
        }
        let _ = writeln!(h, "</table>");
    }

    h.push_str(&shortages(run));

    let _ = writeln!(h, r#"<h2>Errors and warnings ({})</h2>"#, problems.len());
    if problems.is_empty() {
        let _ = writeln!(h, r#"<p id="problems">None.</p>"#);
    } else {
        let _ = writeln!(h, r#"<table id="problems"><tr><th>time</th><th>level</th><th>message</th></tr>"#);
        for p in problems {
            let _ = writeln!(
                h,
                r#"<tr><td>{}</td><td class="failed">{}</td><td>{}</td></tr>"#,
                clock(p.time),
                p.level,
                esc(&p.message)
            );
        }
        let _ = writeln!(h, "</table>");
    }

    let _ = writeln!(h, "<h2>Counters</h2><table id=\"counters\"><tr><th>counter</th><th>value</th></tr>");
    for &c in Counter::ALL {
        let _ = writeln!(h, "<tr><td>{c}</td><td>{}</td></tr>", stats.get(c));
    }
    let _ = writeln!(h, "</table>\n</body></html>");
    h
}

/// The offerings short at the end of the run: where launches do not go.
fn shortages(run: &RunRecord) -> String {
    let mut h = String::new();
    let _ = writeln!(h, r#"<h2>Capacity shortages ({})</h2>"#, run.shortages.len());
    if run.shortages.is_empty() {
        let _ = writeln!(h, r#"<p id="shortages">None at the end of the run.</p>"#);
        return h;
    }
    let _ = writeln!(h, r#"<table id="shortages"><tr><th>offering</th><th>skipped until</th></tr>"#);
    for (offering, until) in &run.shortages {
        let _ = writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(&offering.to_string()), clock(*until));
    }
    let _ = writeln!(h, "</table>");
    h
}

/// An SVG line chart: the queue length and each env's agents, per pass.
fn timeline(run: &RunRecord) -> String {
    let (w, h, left, bottom, top) = (900.0_f64, 260.0_f64, 40.0, 30.0, 10.0);
    let n = run.passes.len();
    if n == 0 {
        return "<p>No pass ran.</p>\n".to_string();
    }
    let envs: BTreeSet<&String> = run.passes.iter().flat_map(|p| p.agents.keys()).collect();
    let max = run
        .passes
        .iter()
        .flat_map(|p| p.queue.into_iter().chain(p.agents.values().flatten().copied()))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x = |i: usize| left + (w - left - 10.0) * if n == 1 { 0.5 } else { i as f64 / (n - 1) as f64 };
    let y = |v: usize| top + (h - top - bottom) * (1.0 - v as f64 / max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" role="img">"#,
        h + 20.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##,
        w - left - 10.0,
        h - top - bottom
    );
    for tick in [0, max as usize / 2, max as usize] {
        let _ = writeln!(s, r#"<text x="4" y="{}">{tick}</text>"#, y(tick) + 4.0);
    }
    let _ = writeln!(s, r#"<text x="{left}" y="{}">pass 1</text>"#, h - 10.0);
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">pass {n}</text>"#, w - 10.0, h - 10.0);

    let mut series: Vec<(String, &str, Vec<Option<usize>>)> =
        vec![("queue".to_string(), "#ff7f0e", run.passes.iter().map(|p| p.queue).collect())];
    for (i, env) in envs.iter().enumerate() {
        let values = run.passes.iter().map(|p| p.agents.get(*env).copied().flatten()).collect();
        series.push((format!("agents {env}"), COLORS[i % COLORS.len()], values));
    }
    for (k, (name, color, values)) in series.iter().enumerate() {
        let points: Vec<String> =
            values.iter().enumerate().filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v)))).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(name)
        );
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{px}" cy="{py}" r="2.5" fill="{color}"/>"#);
        }
        let lx = left + 10.0 + 150.0 * k as f64;
        let _ = writeln!(s, r#"<rect x="{lx}" y="{}" width="12" height="4" fill="{color}"/>"#, h + 6.0);
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 16.0, h + 12.0, esc(name));
    }
    s.push_str("</svg>\n");
    s
}

/// Items shown at most in the item timeline (the last to leave the queue).
const MAX_BARS: usize = 150;

/// The phases of an item's bar: name and colour.
const PHASES: [(&str, &str); 4] = [
    ("queued, no agent action yet", "#ff7f0e"),
    ("instance booting", "#1f77b4"),
    ("agent setting up", "#9467bd"),
    ("agent online, build not yet started", "#2ca02c"),
];

/// p50/p95 of the time to agent per env and kind, and one bar per item split
/// by phase.
fn time_to_agent(run: &RunRecord) -> String {
    let mut s = "<h2>Time to agent</h2>\n".to_string();
    if run.served.is_empty() {
        s.push_str(r#"<p id="time-to-agent">No queue item of ours left the queue in this run.</p>"#);
        s.push('\n');
        return s;
    }
    let mut by: BTreeMap<(&str, Kind), Vec<Duration>> = BTreeMap::new();
    for f in &run.served {
        by.entry((f.item.env.as_str(), f.item.kind())).or_default().push(f.time_to_agent());
    }
    let _ = writeln!(
        s,
        r#"<table id="time-to-agent"><tr><th>env</th><th>how the agent came</th><th>items</th><th>p50 (s)</th><th>p95 (s)</th></tr>"#
    );
    let secs = |d: Option<Duration>| d.map_or("–".to_string(), |d| d.as_secs().to_string());
    for ((env, kind), waits) in &by {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(env),
            kind.as_str(),
            waits.len(),
            secs(quantile(waits, 0.5)),
            secs(quantile(waits, 0.95))
        );
    }
    let _ = writeln!(s, "</table>");
    s.push_str(&item_bars(&run.served));
    s
}

/// One bar per item (the last [`MAX_BARS`] to leave), from first sight to
/// leaving the queue, split at each phase reached.
fn item_bars(served: &[Finished]) -> String {
    let shown = &served[served.len().saturating_sub(MAX_BARS)..];
    let (w, left, row, top) = (900.0_f64, 200.0_f64, 12.0_f64, 10.0_f64);
    let start = shown.iter().map(|f| f.item.first_seen).min().unwrap_or(SystemTime::UNIX_EPOCH);
    let end = shown.iter().map(|f| f.left).max().unwrap_or(start);
    let span = end.duration_since(start).unwrap_or_default().as_secs_f64().max(1.0);
    let x = |t: SystemTime| left + (w - left - 10.0) * t.duration_since(start).unwrap_or_default().as_secs_f64() / span;
    let height = top + row * shown.len() as f64 + 40.0;
    let mut s = String::new();
    let _ =
        writeln!(s, r#"<svg id="items" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" role="img">"#);
    for (i, f) in shown.iter().enumerate() {
        let y = top + row * i as f64;
        let name = format!("{} ({})", f.item.job, f.item.label);
        let _ = writeln!(s, r#"<text x="4" y="{:.1}">{}</text>"#, y + 9.0, esc(&truncate(&name, 30)));
        let mut bounds = vec![f.item.first_seen];
        bounds.extend(f.item.phases().into_iter().flatten());
        bounds.push(f.left.max(*bounds.last().unwrap_or(&f.left)));
        for (phase, pair) in bounds.windows(2).enumerate() {
            // An absorbed item has no action: its one span is all queued;
            // otherwise span k is phase k.
            let (label, color) = PHASES[phase.min(PHASES.len() - 1)];
            let (x0, x1) = (x(pair[0]), x(pair[1]));
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {label}, {} s</title></rect>"#,
                (x1 - x0).max(1.0),
                row - 3.0,
                esc(&name),
                pair[1].duration_since(pair[0]).unwrap_or_default().as_secs()
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} s, {}</text>"#,
            (x(f.left) + 4.0).min(w - 90.0),
            y + 9.0,
            f.time_to_agent().as_secs(),
            f.item.kind().as_str()
        );
    }
    let legend_y = top + row * shown.len() as f64 + 16.0;
    for (k, (label, color)) in PHASES.iter().enumerate() {
        let lx = 4.0 + 220.0 * k as f64;
        let _ = writeln!(s, r#"<rect x="{lx}" y="{legend_y}" width="12" height="8" fill="{color}"/>"#);
        let _ = writeln!(s, r#"<text x="{}" y="{}">{label}</text>"#, lx + 16.0, legend_y + 8.0);
    }
    s.push_str("</svg>\n");
    s
}

fn truncate(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(chars - 1).collect::<String>())
    }
}

/// Instance-minutes per env, label and use, and the share of the paid ones
/// (booting, busy, idle) that ran builds.
fn cost(run: &RunRecord) -> String {
    let mut s = "<h2>Where the money goes</h2>\n".to_string();
    let by_label = run.cost.by_label();
    if by_label.is_empty() {
        s.push_str(r#"<p id="cost">No agent was seen over two passes.</p>"#);
        s.push('\n');
        return s;
    }
    let _ = write!(s, r#"<table id="cost"><tr><th>env</th><th>label</th>"#);
    for use_ in Usage::ALL {
        let _ = write!(s, "<th>{} (instance-min)</th>", use_.as_str());
    }
    let _ = writeln!(s, "<th>paid minutes that ran builds</th></tr>");
    let min = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() / 60.0);
    for ((env, label), uses) in &by_label {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td>", esc(env), esc(label));
        for use_ in Usage::ALL {
            let _ = write!(s, "<td>{:.1}</td>", min(uses.get(&use_)));
        }
        let paid: f64 = Usage::ALL.iter().filter(|u| u.is_paid()).map(|u| min(uses.get(u))).sum();
        let _ = writeln!(s, "<td>{}</td></tr>", share((paid > 0.0).then(|| min(uses.get(&Usage::Busy)) / paid)));
    }
    let _ = writeln!(s, "</table>");
    let _ = writeln!(
        s,
        r#"<p id="busy-share">Paid instance-minutes that ran builds: {} (stopped agents pay their volumes only).</p>"#,
        share(run.cost.busy_share(None))
    );
    s
}

fn share(share: Option<f64>) -> String {
    share.map_or("–".to_string(), |s| format!("{:.0}%", s * 100.0))
}

/// `HH:MM:SS` UTC.
fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::cost::CostLedger;
    use crate::record::{ActionRecord, PassRecord};
    use crate::time_to_agent::{AgentAction, Item};
    use std::collections::BTreeMap;

    #[test]
    fn renders_actions_problems_and_a_timeline_escaped() {
        let pass = |number, queue| PassRecord {
            number,
            started: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(100),
            queue,
            agents: BTreeMap::from([("dev".to_string(), Some(2)), ("prod".to_string(), None)]),
            ec2_requests: 2,
        };
        let mut run = RunRecord {
            passes: vec![pass(1, Some(3)), pass(2, None), pass(3, Some(1))],
            actions: vec![ActionRecord {
                pass: 1,
                time: SystemTime::UNIX_EPOCH + Duration::from_secs(3661),
                env: Some("dev".into()),
                kind: "create",
                job_key: None,
                instance_id: None,
                text: "dev: create <spot> agent".into(),
                outcome: Err("RunInstances: InsufficientInstanceCapacity".into()),
            }],
            cost: CostLedger::default(),
            served: Vec::new(),
            shortages: Vec::new(),
        };
        let html = render(&run, &Stats::default(), &[], "no agents");
        assert!(html.contains(r#"<p id="cost">No agent was seen"#));
        assert!(html.contains(r#"<p id="shortages">None"#));
        let offering = crate::shortage::Offering::in_subnet("dev", "c5.large", "subnet-a", "us-east-2a", true);
        run.shortages = vec![(offering, SystemTime::UNIX_EPOCH + Duration::from_secs(3841))];
        let html = render(&run, &Stats::default(), &[], "a shortage");
        assert!(
            html.contains("<tr><td>dev: c5.large spot in subnet-a (us-east-2a)</td><td>01:04:01</td></tr>"),
            "the short offering, and when it is tried again: {html}"
        );
        run.shortages.clear();
        assert!(html.contains(r#"<p id="time-to-agent">No queue item"#));
        let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let served = |job: &str, kind: Kind, phases: [Option<u64>; 3], left| Finished {
            item: Item {
                job: job.into(),
                job_key: format!("{job}___x"),
                label: "dev".into(),
                env: "dev".into(),
                first_seen: t(0),
                action: phases[0].map(|at| AgentAction { kind, at: t(at), instance_id: None }),
                running: phases[1].map(t),
                online: phases[2].map(t),
            },
            left: t(left),
        };
        run.served = vec![
            served("<a>", Kind::Absorbed, [None, None, None], 5),
            served("b", Kind::Create, [Some(1), Some(16), Some(76)], 80),
            served("c", Kind::Create, [Some(1), Some(20), Some(100)], 110),
            served("d", Kind::Start, [Some(1), Some(10), Some(25)], 30),
        ];
        let usage = |entries: &[(Usage, u32)]| {
            let usage = entries.iter().map(|(u, n)| (("dev<x>".to_string(), *u), *n)).collect();
            BTreeMap::from([("dev".to_string(), Some(usage))])
        };
        run.cost.observe(SystemTime::UNIX_EPOCH, usage(&[(Usage::Busy, 1), (Usage::Idle, 2), (Usage::Stopped, 1)]));
        run.cost.observe(SystemTime::UNIX_EPOCH + Duration::from_secs(120), usage(&[]));
        let problems = vec![Problem {
            time: SystemTime::UNIX_EPOCH,
            level: tracing::Level::ERROR,
            message: "failed: a & b".into(),
        }];
        let html = render(&run, &Stats::default(), &problems, "slave_manager run");
        assert!(html.contains(r#"<svg id="timeline""#));
        assert!(
            html.contains("<tr><td>dev</td><td>dev&lt;x&gt;</td><td>0.0</td><td>2.0</td><td>4.0</td><td>2.0</td><td>33%</td></tr>"),
            "booting, busy, idle, stopped minutes, and the busy share of the paid ones: {html}"
        );
        assert!(html.contains("Paid instance-minutes that ran builds: 33%"));
        for row in
            ["<td>absorbed</td><td>1</td><td>5</td><td>5</td>", "<td>create</td><td>2</td><td>80</td><td>110</td>"]
        {
            assert!(html.contains(row), "{row}: p50 and p95 per env and kind");
        }
        assert!(html.contains(r#"<svg id="items""#));
        // One span for the absorbed item, four for each of the others.
        let bars = html.split(r#"<svg id="items""#).nth(1).unwrap().split("</svg>").next().unwrap();
        assert_eq!(bars.matches("<rect").count(), 1 + 3 * 4 + PHASES.len(), "spans and the legend");
        assert!(bars.contains("&lt;a&gt; (dev): queued, no agent action yet, 5 s"));
        assert!(bars.contains("c (dev): agent setting up, 80 s"));
        assert_eq!(html.matches("<polyline").count(), 3, "queue, dev, prod");
        assert!(html.contains("dev: create &lt;spot&gt; agent"));
        assert!(html.contains("01:01:01"));
        assert!(html.contains(r#"class="failed">RunInstances: InsufficientInstanceCapacity"#));
        assert!(html.contains("failed: a &amp; b"));
        let namespaces = html.matches(r#"xmlns="http://www.w3.org/2000/svg""#).count();
        assert_eq!(html.matches("http://").count(), namespaces, "only the SVG namespace");
        assert!(!html.contains("<script"));
    }
}

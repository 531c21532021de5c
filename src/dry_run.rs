//! `--dry_run`: observe and decide once, print the plan as a table, and touch
//! nothing — no AWS mutation, no Jenkins build, no marker, no CSV, no queue
//! read (the build requests' and the interruption events'). The dump
//! script is told `dry_run=true`, so it reports its idle policy without
//! marking any node offline.

use std::fmt::Write as _;

use crate::observe::observe;
use crate::periodic::security_group;
use crate::plan::{
    decide, plan_inventory, Action, Decision, Events, FailedStarts, NoteLevel, OfflineEarly, PlanConfig,
};
use crate::world::World;

/// One row of the plan table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub env: String,
    pub action: String,
    /// The instance, label or rule acted on.
    pub target: String,
    pub reason: String,
}

impl Row {
    fn of(action: &Action, source: &str) -> Row {
        let target = match action {
            Action::Start { instance_id, .. }
            | Action::Terminate { instance_id, .. }
            | Action::Stop { instance_id, .. }
            | Action::SetDeleteOnTermination { instance_id, .. }
            | Action::TagMaster { instance_id, .. }
            | Action::MarkInterrupted { instance_id, .. } => instance_id.clone(),
            Action::OfflineNode { node, .. } => format!("node {node}"),
            Action::Create { label, .. } => format!("label {}", label.raw),
            Action::RemoveWorkingMarker { job_key, .. } => job_key.clone(),
            Action::RemoveStartMarker { file_name } | Action::ForgetInterruption { file_name } => file_name.clone(),
        };
        Row {
            env: action.env().unwrap_or("-").to_string(),
            action: format!("{source}{}", action.kind()),
            target,
            reason: action.to_string(),
        }
    }
}

/// Observes once and returns what a pass would do, plus notes.
pub async fn plan(world: &World, plan_config: &PlanConfig) -> (Vec<Row>, Vec<String>) {
    // Receiving would hide the events from the real runs for the queue's
    // visibility timeout (and delete those that are no event).
    let obs = observe(world, std::future::ready(Default::default())).await;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (env, result) in &obs.envs {
        if let Err(e) = result {
            notes.push(format!("{env}: cannot describe instances: {e}"));
        }
    }
    let mut terminated = std::collections::BTreeSet::new();
    // A dry run takes nothing offline early and starts nothing.
    let (offline_early, failed_starts) = (OfflineEarly::new(), FailedStarts::new());
    let events = Events { received: &obs.events.events, offline_early: &offline_early, failed_starts: &failed_starts };
    match decide(plan_config, &obs.dump, &obs.envs, &obs.markers, events, obs.now, fastrand::u64(..)) {
        Decision::NoDump(e) => notes.push(format!("Jenkins dump failed: {e}; a real pass would scale nothing")),
        Decision::NoMarkers(e) => notes.push(format!("{e}; a real pass would scale nothing")),
        Decision::Scale { plan, .. } => {
            terminated = plan.terminated();
            rows.extend(plan.actions.iter().map(|a| Row::of(a, "")));
            notes.extend(plan.notes.iter().filter(|n| n.level == NoteLevel::Info).map(|n| n.text.clone()));
        }
    }
    let inv = plan_inventory(plan_config, &obs.envs, obs.dump.as_ref().ok(), obs.now, &terminated);
    rows.extend(inv.actions.iter().map(|a| Row::of(a, "inventory: ")));
    if let Some(sg_config) = &world.config.security_group {
        match security_group::plan(world, sg_config, plan_config, &obs.envs).await {
            Ok(sg) => {
                let group = &sg_config.group_id;
                for (action, rules) in [("authorize", &sg.add), ("revoke", &sg.revoke)] {
                    for rule in rules {
                        rows.push(Row {
                            env: "(master)".into(),
                            action: format!("security group: {action}"),
                            target: rule.to_string(),
                            reason: format!("{group} keeps exactly the wanted rules"),
                        });
                    }
                }
                notes.extend(sg.no_revoke_because.map(|why| format!("security group: nothing revoked: {why}")));
            }
            Err(e) => notes.push(format!("security group: {e}")),
        }
    }
    if world.sqs.is_some() {
        notes.push("SQS requests are not polled in a dry run (receiving hides the messages)".into());
    }
    if !world.interruptions.is_empty() {
        notes.push("interruption queues are not read in a dry run (receiving hides the events)".into());
    }

    (rows, notes)
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let header =
        Row { env: "ENV".into(), action: "ACTION".into(), target: "INSTANCE / LABEL".into(), reason: "REASON".into() };
    let all: Vec<&Row> = std::iter::once(&header).chain(rows).collect();
    let w = |f: fn(&Row) -> &str| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (we, wa, wt) = (w(|r| &r.env), w(|r| &r.action), w(|r| &r.target));
    let mut out = String::new();
    for r in all {
        let _ = writeln!(out, "{:we$}  {:wa$}  {:wt$}  {}", r.env, r.action, r.target, r.reason);
    }
    if rows.is_empty() {
        out.push_str("(nothing to do)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_leaves_the_interruption_events_on_their_queues_and_says_so() {
        let mut config = crate::fake::config(&["dev"]);
        config.interruption_queue = Some("ec2-events".into());
        let s = crate::fake::setup(config);
        s.cloud.send_event("dev", "{}");
        let plan_config = crate::reconciler::plan_config(&s.world.config.fleet);
        let (_, notes) = plan(&s.world, &plan_config).await;
        assert_eq!(s.cloud.events_left("dev"), (1, 0), "not received: the real run sees it at once");
        assert_eq!(s.cloud.count("ReceiveMessage"), 0);
        assert!(notes.iter().any(|n| n.contains("interruption queues are not read")), "{notes:?}");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            Row { env: "dev".into(), action: "start".into(), target: "i-1".into(), reason: "why".into() },
            Row {
                env: "prod".into(),
                action: "create".into(),
                target: "label prod_spot".into(),
                reason: "because".into(),
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ENV   ACTION  INSTANCE / LABEL  REASON");
        assert_eq!(lines[1], "dev   start   i-1               why");
        assert_eq!(lines[2], "prod  create  label prod_spot   because");
        assert!(table(&[]).contains("nothing to do"));
    }
}

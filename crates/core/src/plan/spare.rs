//! The spare executors (`--spare`, issue 14): idle executors of a label kept
//! ready so its next job waits for no agent. This module counts them from a
//! snapshot; `scale_up::spare` brings agents up when a label is short, and
//! `warm` keeps a freshly set-up pool agent online when the spare needs it.

use std::collections::BTreeSet;

use crate::model::{Instance, InstanceState, Label, Node};
use crate::warm::Spare;

use super::nodes::node_of;
use super::snapshot::age;
use super::{PlanConfig, Snapshot};

/// The spare's hours hold now (no hours: always).
pub(super) fn in_hours(spare: &Spare, snap: &Snapshot<'_>) -> bool {
    spare.hours.is_none_or(|h| h.contains(snap.now))
}

/// Ours, in an active state, and serving the label: by its tag, or by a
/// fresh start marker (tags may lag behind a launch).
pub(super) fn serves(cfg: &PlanConfig, snap: &Snapshot<'_>, inst: &Instance, label: &Label) -> bool {
    cfg.is_ours(&label.env, inst)
        && inst.state.is_active()
        && (inst.has_label(&label.raw)
            || snap.markers.started.iter().any(|m| {
                m.env == label.env
                    && m.instance_id == inst.id
                    && m.age < cfg.working_ttl
                    && m.labels.contains(&label.raw)
            }))
}

/// The label's executors ready or on their way, as the snapshot shows
/// them: the idle executors of its agents' online nodes (not offline, not
/// `terminate_me`), and all the executors of its agents started or created
/// and not yet online (pending; running with no node, or with one that is
/// offline not by us and runs nothing, however long that takes — see
/// [`overdue`]; launched moments ago and not yet listed, by their start
/// marker). `counts` leaves agents out: those claimed by this pass's other
/// actions, and pool agents on their way into the pool (they are stopped
/// once set up).
pub(super) fn executors(
    cfg: &PlanConfig,
    snap: &Snapshot<'_>,
    label: &Label,
    instances: &[Instance],
    counts: impl Fn(&Instance) -> bool,
) -> u32 {
    let per_agent = label.pricing.executors();
    let listed: u32 = counted(cfg, snap, label, instances, counts)
        .map(|i| match i.state {
            InstanceState::Pending => per_agent,
            InstanceState::Running => match node_of(&snap.dump.nodes, i) {
                Some(node) if !not_connected(node) => idle_executors(node),
                _ => per_agent,
            },
            _ => 0,
        })
        .sum();
    let unlisted: BTreeSet<&str> = snap
        .markers
        .started
        .iter()
        .filter(|m| {
            m.env == label.env
                && m.age < cfg.working_ttl
                && m.labels.contains(&label.raw)
                && !instances.iter().any(|i| i.id == m.instance_id)
        })
        .map(|m| m.instance_id.as_str())
        .collect();
    listed.saturating_add(per_agent.saturating_mul(u32::try_from(unlisted.len()).unwrap_or(u32::MAX)))
}

/// The listed agents [`executors`] looks at.
fn counted<'i>(
    cfg: &'i PlanConfig,
    snap: &'i Snapshot<'_>,
    label: &'i Label,
    instances: &'i [Instance],
    counts: impl Fn(&Instance) -> bool + 'i,
) -> impl Iterator<Item = &'i Instance> + 'i {
    instances
        .iter()
        .filter(move |i| !i.spot && serves(cfg, snap, i, label) && !cfg.on_replaced_ami(&label.env, i) && counts(i))
}

/// The label's running agents counted as on their way past the boot grace:
/// one line each. They stay counted: what keeps one agent from coming online
/// (a broken agent port, a failing set-up) keeps the next from it too, so a
/// replacement would only multiply agents that bill; `--zombie_minutes` ends
/// those that never became a node.
pub(super) fn overdue(
    cfg: &PlanConfig,
    snap: &Snapshot<'_>,
    label: &Label,
    instances: &[Instance],
    counts: impl Fn(&Instance) -> bool,
) -> Vec<String> {
    counted(cfg, snap, label, instances, counts)
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| {
            let minutes = age(snap.now, i.launched?);
            if minutes < cfg.boot_grace {
                return None;
            }
            let head =
                format!("spare {}: {} has had no online node for {} min", label.raw, i.id, minutes.as_secs() / 60);
            match node_of(&snap.dump.nodes, i) {
                None => Some(format!("{head}; not replaced — see --zombie_minutes")),
                Some(node) if not_connected(node) => {
                    Some(format!("{head} (its node {} is offline, not by us); not replaced", node.name))
                }
                Some(_) => None,
            }
        })
        .collect()
}

/// Swarm adds the node before its agent connects: until then it is offline,
/// not by us (no `terminate_me`), and runs nothing. A node offline by us, or
/// running a build while offline (drained), is not on its way.
fn not_connected(node: &Node) -> bool {
    node.offline && !node.terminate_me && !matches!(node.busy_executors, Some(busy) if busy > 0)
}

/// Executors of an online node that no build uses: total less busy (the
/// dump's idle count when it does not say both). None when it is offline or
/// the idle policy wants it gone.
fn idle_executors(node: &Node) -> u32 {
    if node.offline || node.terminate_me {
        return 0;
    }
    match (node.num_executors, node.busy_executors) {
        (Some(num), Some(busy)) => num.saturating_sub(busy),
        _ => node.idle_executors.unwrap_or(0),
    }
}

/// Started or created by us moments ago, not for a warm pool: its fresh
/// start marker says so whatever its tags. A warm-pool agent stopped before
/// its `warmed` tag was set (the tag call failed, or someone else stopped
/// it) and then started would otherwise look like a pool agent booting into
/// the pool, and each pass would start another.
pub(super) fn started_not_for_pool(cfg: &PlanConfig, snap: &Snapshot<'_>, inst: &Instance) -> bool {
    snap.markers.started.iter().any(|m| m.instance_id == inst.id && m.age < cfg.working_ttl && m.warm.is_none())
}

/// The label's queue items: each will take one of its ready executors.
pub(super) fn queued(snap: &Snapshot<'_>, label: &Label) -> u32 {
    let n = snap.dump.queue.iter().filter(|q| q.label.trim() == label.raw).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

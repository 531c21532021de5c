//! Marker bookkeeping: a fresh working marker covers one queue item of its
//! key, an expired one is removed and its item retried in the same pass, and
//! markers whose job left the queue (or start markers past their TTL) go.

use std::collections::BTreeSet;

use crate::counter::Counter;
use crate::model::QueueItem;
use crate::plan::Action;

use super::ScaleUp;

/// Queue items with their job keys, sorted by their working markers.
pub(super) struct Sorted<'i> {
    /// A fresh marker covers them: they hold a slot but get nothing new.
    pub(super) handled: Vec<(&'i QueueItem, &'i str)>,
    /// No marker, an expired one, or one already covering another item.
    pub(super) unhandled: Vec<(&'i QueueItem, &'i str)>,
}

impl ScaleUp<'_> {
    /// Sorts the items by their markers; an expired marker is removed (once
    /// per key) and its items retried in this very pass.
    pub(super) fn sort_by_marker<'i>(&mut self, items: &'i [(&'i QueueItem, String)]) -> Sorted<'i> {
        let snap = self.snap;
        let mut handled = Vec::new();
        let mut unhandled = Vec::new();
        let mut expired = BTreeSet::new();
        // A marker covers one item: two Pipeline `node()` blocks of one run
        // share a key, and the second needs an agent of its own (the capacity
        // model sees the one already booting for it, if any).
        let mut covered = BTreeSet::new();
        for (item, key) in items {
            match snap.markers.working.get(key) {
                Some(_) if covered.contains(key.as_str()) => {
                    self.plan
                        .debug(Some(key), format!("{}: another item of the same job and parameters", item.job_name));
                    unhandled.push((*item, key.as_str()));
                }
                Some(marker_age) if *marker_age < self.cfg.working_ttl => {
                    covered.insert(key.as_str());
                    let secs = marker_age.as_secs();
                    self.plan.debug(Some(key), format!("{}: already handled ({secs}s ago)", item.job_name));
                    handled.push((*item, key.as_str()));
                }
                Some(marker_age) => {
                    // Retry in this very pass rather than waiting for the next.
                    if expired.insert(key.as_str()) {
                        self.plan.count(Counter::JobsWaitedTooLong);
                        self.plan.act(Action::RemoveWorkingMarker { job_key: key.clone(), expired: true });
                    }
                    self.plan.debug(
                        Some(key),
                        format!(
                            "{}: waited {}s since it was handled; trying again",
                            item.job_name,
                            marker_age.as_secs()
                        ),
                    );
                    unhandled.push((*item, key.as_str()));
                }
                None => unhandled.push((*item, key.as_str())),
            }
        }
        Sorted { handled, unhandled }
    }

    /// Removes the working markers of jobs no longer queued and the start
    /// markers past their TTL.
    pub(super) fn remove_stale_markers(&mut self, items: &[(&QueueItem, String)]) {
        let snap = self.snap;
        let queued: BTreeSet<&str> = items.iter().map(|(_, key)| key.as_str()).collect();
        for key in snap.markers.working.keys() {
            if !queued.contains(key.as_str()) {
                self.plan.act(Action::RemoveWorkingMarker { job_key: key.clone(), expired: false });
            }
        }
        for marker in &snap.markers.started {
            if marker.age >= self.cfg.working_ttl {
                self.plan.act(Action::RemoveStartMarker { file_name: marker.file_name.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::counter::Counter;
    use crate::model::InstanceState::*;
    use crate::plan::scale_up::run;
    use crate::plan::test_kit::*;
    use crate::plan::*;

    #[test]
    fn fresh_working_marker_skips_the_item() {
        let s =
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]).queue(vec![item("job", "dev")]).working("job", 299);
        let plan = run(&s);
        assert_eq!(plan.actions, []);
        // Waiting behind its own marker is not the original's job_on_queue.
        assert_eq!(once(&plan, Counter::JobOnQueue), Vec::<&str>::new());
    }

    #[test]
    fn expired_marker_is_removed_and_item_retried_same_pass() {
        let s =
            snap(vec![("dev", vec![agent("i-1", Stopped, "dev")])]).queue(vec![item("job", "dev")]).working("job", 300);
        let plan = run(&s);
        assert_eq!(brief(&plan.actions), [format!("rm-working {} expired", key("job")), "start i-1 dev".into()]);
        assert_eq!(count(&plan.counts, Counter::JobsWaitedTooLong), 1);
        assert_eq!(once(&plan, Counter::JobOnQueue), Vec::<&str>::new());
    }

    #[test]
    fn expired_marker_of_duplicate_items_is_removed_once() {
        let s = snap(vec![("dev", vec![])]).queue(vec![item("job", "dev"), item("job", "dev")]).working("job", 900);
        let plan = run(&s);
        assert_eq!(
            brief(&plan.actions),
            [format!("rm-working {} expired", key("job")), "create dev dev".into(), "create dev dev".into()]
        );
        assert_eq!(count(&plan.counts, Counter::JobsWaitedTooLong), 1);
    }

    #[test]
    fn marker_of_a_job_that_left_the_queue_is_removed() {
        let s = snap(vec![("dev", vec![])]).working("gone", 10).working("also-gone", 1000);
        let plan = run(&s);
        let mut got = brief(&plan.actions);
        got.sort();
        let mut want =
            vec![format!("rm-working {} gone", key("also-gone")), format!("rm-working {} gone", key("gone"))];
        want.sort();
        assert_eq!(got, want);
        assert!(plan.counts.is_empty());
    }

    #[test]
    fn fresh_start_marker_is_kept() {
        let s = snap(vec![("dev", vec![])]).start_marker("dev", "i-1", "dev", 299);
        assert_eq!(run(&s), Plan::default());
    }

    #[test]
    fn a_marker_covers_one_item_of_its_key() {
        // Two node() blocks of one Pipeline run: same job, same parameters.
        let items = vec![item("pipe", "dev_spot"), item("pipe", "dev_spot")];
        // The first was handled and its agent boots; the second needs its own.
        let one = snap(vec![("dev", vec![agent("i-1", crate::model::InstanceState::Pending, "dev_spot")])])
            .queue(items.clone())
            .working("pipe", 10);
        assert_eq!(brief(&run(&one).actions), ["create dev dev_spot"]);
        // Both agents boot: nothing more to do.
        let two = snap(vec![(
            "dev",
            vec![
                agent("i-1", crate::model::InstanceState::Pending, "dev_spot"),
                agent("i-2", crate::model::InstanceState::Pending, "dev_spot"),
            ],
        )])
        .queue(items)
        .working("pipe", 10);
        assert!(run(&two).actions.is_empty(), "{:?}", run(&two).actions);
    }
}

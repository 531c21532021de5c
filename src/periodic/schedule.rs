//! When each periodic job runs (SPEC A5 step 4): every how many passes,
//! passes counting from 0 so the first pass runs them all.

/// One periodic job, in the order a pass runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Delete-on-termination everywhere, agents per label set, old stopped
    /// agents retired, agents that never became nodes counted (SPEC A9).
    Inventory,
    SecurityGroup,
    GarbageCollect,
    SqsRequests,
}

impl Job {
    pub const ALL: [Job; 4] = [Job::Inventory, Job::SecurityGroup, Job::GarbageCollect, Job::SqsRequests];

    /// Every how many passes it runs (the original's schedule).
    pub fn every(self) -> u32 {
        match self {
            Job::Inventory | Job::SqsRequests => 15,
            Job::SecurityGroup => 3,
            Job::GarbageCollect => 6,
        }
    }
}

/// The jobs due in pass `pass` (0-based), in the order they run.
pub fn due(pass: u32) -> impl Iterator<Item = Job> {
    Job::ALL.into_iter().filter(move |job| pass.is_multiple_of(job.every()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pass_runs_every_job_and_then_each_on_its_own_beat() {
        let jobs = |pass| due(pass).collect::<Vec<_>>();
        assert_eq!(jobs(0), Job::ALL);
        assert_eq!(jobs(1), []);
        assert_eq!(jobs(3), [Job::SecurityGroup]);
        assert_eq!(jobs(6), [Job::SecurityGroup, Job::GarbageCollect]);
        assert_eq!(jobs(15), [Job::Inventory, Job::SecurityGroup, Job::SqsRequests]);
        assert_eq!(jobs(30), Job::ALL);
        let runs = |job| (0..300).filter(|&p| due(p).any(|j| j == job)).count();
        assert_eq!((runs(Job::SecurityGroup), runs(Job::GarbageCollect), runs(Job::SqsRequests)), (100, 50, 20));
    }
}

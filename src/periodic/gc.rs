//! The GC job (SPEC A8): builds `--gc_job` through the CLI and logs its
//! `Garbage collector executed` line.

use super::run_cli;
use crate::counter::Counter;
use crate::record::stats::Stats;
use crate::world::World;

/// Builds the GC job and prints its `Garbage collector executed` line.
pub async fn run(world: &World, job: &str, stats: &mut Stats) {
    let words = vec!["build".to_string(), job.to_string(), "-s".to_string(), "-v".to_string()];
    match run_cli(world, words).await {
        Ok(stdout) => {
            let line = stdout
                .lines()
                .find(|l| l.contains("Garbage collector executed"))
                .or_else(|| stdout.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("(no output)");
            tracing::info!("gc: {}", line.trim());
        }
        Err(e) => {
            tracing::error!("gc: {e}");
            stats.add(Counter::GcFailed, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, Setup, Times};
    use crate::jenkins::cli::CliErrorKind;

    fn setup() -> Setup {
        fake::setup_with_master_jobs()
    }

    #[tokio::test]
    async fn the_gc_job_is_built_and_its_failure_counted() {
        let s = setup();
        let mut stats = Stats::default();
        run(&s.world, fake::GC_JOB, &mut stats).await;
        assert_eq!(s.jenkins.commands(), [vec!["build", fake::GC_JOB, "-s", "-v"]]);
        assert_eq!(stats.errors(), 0);
        s.jenkins.fail("build", Times::Once, CliErrorKind::Failed);
        run(&s.world, fake::GC_JOB, &mut stats).await;
        assert_eq!(stats.get(Counter::GcFailed), 1);
    }
}

//! The periodic jobs (SPEC A5 step 4), run by the reconciler after a pass's
//! own actions on the one [`schedule`]: the inventory (in the reconciler:
//! it acts through the planner), the master's [`security_group`], the
//! [`gc`] job and [`sqs_requests`]. Each logs and counts its failures; none
//! can end the run.

pub mod gc;
pub mod schedule;
pub mod security_group;
pub mod sqs_requests;

use crate::jenkins::CliError;
use crate::world::World;

/// Runs one CLI command; its standard output.
async fn run_cli(world: &World, words: Vec<String>) -> Result<String, CliError> {
    crate::world::run_cli(&world.jenkins, words, Vec::new()).await.map(|o| o.stdout)
}

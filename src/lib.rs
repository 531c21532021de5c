//! slave_manager keeps a Jenkins master supplied with EC2 build agents.
//!
//! # Layout
//! Each pass is observe → decide → act → record:
//! - [`cli`], [`config`]: the original's flags → a validated [`config::Config`],
//!   grouped by concern (Jenkins, fleet, AWS, security group, SQS, run bounds);
//! - [`world`]: the outside world behind small traits — EC2 per env, the
//!   master's security group, the SQS queue, the Jenkins CLI — implemented by
//!   the SDK clients ([`aws`]) and [`jenkins`]' transports (and, in unit
//!   tests, by an in-memory fake);
//! - [`observe`]: one Jenkins dump and one EC2 describe per env, in parallel,
//!   plus the [`markers`] and the EC2 events of the envs' [`interruption`]
//!   queues → a snapshot of [`model`] types;
//! - [`plan`]: a pure function from the snapshot to a list of actions
//!   (scale up, scale down, inventory), with the [`label`] and [`job_key`] rules;
//!   [`plan::decide`] is the gate a pass and [`dry_run`] share;
//! - [`act`]: carries the actions out through the [`world`], writing the
//!   [`markers`] the next passes read, and remembering the offerings EC2 was
//!   [`shortage`]-short of, so launches go to the env's other subnets;
//! - [`record`]: one recorder per run — the [`counter`]s every stage counts,
//!   the passes and actions, the [`time_to_agent`] of each queue item (its
//!   items in flight kept between runs) and the instance-time per use
//!   ([`plan::cost`]); after each pass the metrics, at the end the report and
//!   the `properties_*.csv` files;
//! - [`reconciler`]: the bounded loop; [`periodic`]: the jobs it runs on one
//!   schedule — the inventory, the master's security group, the GC build,
//!   SQS build requests (with their validation);
//! - [`logging`]: the log lines, and the warnings and errors kept for the report;
//! - [`check`]: the preflight; [`tls`]: whom the binary and `java` trust for an
//!   https Jenkins URL; [`files`]: writes in the workspace that never follow a
//!   planted link.
//!
//! The pure core — [`model`], [`label`], [`job_key`], [`counter`], [`plan`]
//! and [`time_to_agent`] — is a crate of its own, `crates/core` (`slave_manager_core`), re-exported
//! here at the same paths. It has no AWS SDK, Tokio or SSH, so it builds and
//! tests in seconds: `cargo test -p slave_manager_core`.

pub mod act;
pub mod aws;
pub mod check;
pub mod cli;
pub mod config;
pub mod dry_run;
#[cfg(test)]
pub mod fake;
pub mod files;
pub mod interruption;
pub mod jenkins;
pub mod logging;
pub mod markers;
pub mod observe;
pub mod periodic;
pub mod reconciler;
pub mod record;
pub mod shortage;
pub mod tls;
pub mod world;

// The pure core (crates/core), at the paths the rest of the code uses.
pub use slave_manager_core::{counter, job_key, label, model, plan, time_to_agent, warm};

//! slave_manager keeps a Jenkins master supplied with EC2 build agents.
//!
//! # Layout
//! Each pass is observe → decide → act → record:
//! - [`cli`], [`config`]: the original's flags → a validated [`config::Config`];
//! - [`observe`]: one Jenkins dump ([`jenkins`]) and one EC2 describe per env
//!   ([`aws`]), in parallel, plus the [`markers`] → a snapshot of [`model`] types;
//! - [`plan`]: a pure function from the snapshot to a list of actions
//!   (scale up, scale down, inventory), with the [`label`] and [`job_key`] rules;
//!   [`plan::decide`] is the gate a pass and `--dry_run` share;
//! - [`act`]: carries the actions out through the thin clients of [`world`];
//! - record: [`markers`], [`stats`] (the CSVs) of the [`counter`]s every
//!   stage counts, the log lines of [`logging`], and what the run did
//!   ([`record`]) for [`metrics`] (each pass) and the [`report`] (at the end);
//! - [`reconciler`]: the bounded loop; [`periodic`]: the jobs it runs every
//!   few passes — the master's security group, the GC build, SQS build
//!   requests ([`requests`] validates them);
//! - [`tls`]: whom the binary and `java` trust for an https Jenkins URL;
//! - [`files`]: writes in the workspace that never follow a planted link.
//!
//! The pure core — [`model`], [`label`], [`job_key`], [`counter`] and [`plan`]
//! — is a crate of its own, `crates/core` (`slave_manager_core`), re-exported
//! here at the same paths. It has no AWS SDK, Tokio or SSH, so it builds and
//! tests in seconds: `cargo test -p slave_manager_core`.

pub mod act;
pub mod aws;
pub mod check;
pub mod cli;
pub mod config;
pub mod dry_run;
pub mod files;
pub mod jenkins;
pub mod logging;
pub mod markers;
pub mod metrics;
pub mod observe;
pub mod periodic;
pub mod reconciler;
pub mod record;
pub mod report;
pub mod requests;
pub mod stats;
pub mod tls;
pub mod world;

// The pure core (crates/core), at the paths the rest of the code uses.
pub use slave_manager_core::{counter, job_key, label, model, plan};

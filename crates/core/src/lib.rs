//! The pure core of slave_manager: the domain types one pass observes and the
//! planner that decides from them. No I/O, no clock reads, no AWS SDK, Tokio
//! or SSH: snapshot, config and `now` in; actions, notes and counters out.
//!
//! - [`model`]: instances, Jenkins nodes, queue items, markers;
//! - [`label`]: which queue labels get agents, and of which instance types;
//! - [`job_key`]: the key naming a queue item across passes;
//! - [`counter`]: the counters of a run and their CSV columns;
//! - [`plan`]: scale down, scale up, the inventory, the security group;
//! - [`time_to_agent`]: each queue item's way to its agent, phase by phase;
//! - [`warm`]: the warm pool's flag (`--warm LABEL=N[@HH-HH]`) and the spare
//!   executors' (`--spare LABEL=N[@HH-HH]`).

pub mod counter;
pub mod job_key;
pub mod label;
pub mod model;
pub mod plan;
pub mod time_to_agent;
pub mod warm;

//! Observe: one Jenkins dump, one EC2 describe per env and one read of each
//! env's interruption queue, all at once, plus the marker files. Nothing
//! here decides anything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::task::JoinSet;

use crate::interruption::Received;
use crate::jenkins::dump::{parse_dump, DumpError};
use crate::jenkins::CliError;
use crate::markers;
use crate::model::{EnvObservation, JenkinsDump, Markers};
use crate::world::World;

/// Why there is no dump this pass.
#[derive(Debug, thiserror::Error)]
pub enum DumpFailed {
    /// The CLI command did not run, or failed.
    #[error(transparent)]
    Cli(#[from] CliError),
    /// It ran, but printed no dump we can read.
    #[error(transparent)]
    Parse(#[from] DumpError),
    #[error("dump task failed: {0}")]
    Task(String),
}

/// The working directory's markers cannot be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read markers in {}: {source}", dir.display())]
pub struct MarkersUnreadable {
    pub dir: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub struct Observation {
    /// The parsed dump, or why there is none this pass.
    pub dump: Result<JenkinsDump, DumpFailed>,
    pub envs: BTreeMap<String, EnvObservation>,
    /// Unreadable markers mean no scale-up this pass: without them we could
    /// launch twice for one item.
    pub markers: Result<Markers, MarkersUnreadable>,
    pub now: SystemTime,
    /// The EC2 events of the envs' interruption queues.
    pub events: Received,
    /// How long the slowest observation took (the pass cannot be faster).
    pub elapsed: std::time::Duration,
}

/// Observes the world; `events` reads the interruption queues (or not, in
/// a dry run).
pub async fn observe(world: &World, events: impl std::future::Future<Output = Received>) -> Observation {
    let started = Instant::now();
    let cli = Arc::clone(&world.jenkins);
    let mut words = vec!["groovy".to_string(), "=".to_string()];
    words.extend(world.dump_args());
    let script = world.config.jenkins.groovy.clone();
    let dump = tokio::task::spawn_blocking(move || {
        let out = cli.run(&words, script.as_bytes())?;
        Ok(parse_dump(&out.stdout)?)
    });

    let mut describes = JoinSet::new();
    for (name, client) in &world.ec2 {
        let (name, client, slave_name) = (name.clone(), Arc::clone(client), world.config.fleet.slave_name.clone());
        describes.spawn(async move {
            let result = client.describe_agents(&slave_name).await.map_err(|e| e.to_string());
            (name, result)
        });
    }
    let describe_all = async {
        let mut envs = BTreeMap::new();
        while let Some(joined) = describes.join_next().await {
            if let Ok((name, result)) = joined {
                envs.insert(name, result);
            }
        }
        envs
    };
    // The events are read alongside: a warning gives two minutes.
    let (mut envs, events) = tokio::join!(describe_all, events);
    // A describe task that panicked leaves its env out; say so instead.
    for name in world.ec2.keys() {
        envs.entry(name.clone()).or_insert_with(|| Err("describe task failed".to_string()));
    }
    let dump = dump.await.unwrap_or_else(|e| Err(DumpFailed::Task(e.to_string())));
    let now = world.clock.now();
    let markers = markers::read_markers(&world.workdir, now)
        .map_err(|source| MarkersUnreadable { dir: world.workdir.clone(), source });
    Observation { dump, envs, markers, now, events, elapsed: started.elapsed() }
}

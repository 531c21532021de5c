//! What a run did, kept for the run report and the metrics: one record per
//! pass, one per action with its outcome, and every warning or error logged
//! (caught by a tracing layer, so nothing needs to report twice).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// One pass as the report's timeline shows it.
#[derive(Debug, Clone)]
pub struct PassRecord {
    /// 1-based, as the log shows it.
    pub number: u32,
    pub started: SystemTime,
    pub duration: Duration,
    /// `None`: the dump failed.
    pub queue: Option<usize>,
    /// Our pending and running agents per env; `None`: not observed.
    pub agents: BTreeMap<String, Option<usize>>,
    pub ec2_requests: u64,
}

/// One action carried out (or tried).
#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub pass: u32,
    pub time: SystemTime,
    pub env: Option<String>,
    pub kind: &'static str,
    /// The action's log line: env, instance, reason.
    pub text: String,
    /// `Err`: why it failed or was skipped.
    pub outcome: Result<(), String>,
}

/// A warning or error that was logged.
#[derive(Debug, Clone)]
pub struct Problem {
    pub time: SystemTime,
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct RunRecord {
    pub passes: Vec<PassRecord>,
    pub actions: Vec<ActionRecord>,
}

/// Warnings and errors, shared between the tracing layer and the report.
#[derive(Debug, Clone, Default)]
pub struct ProblemLog(Arc<Mutex<Vec<Problem>>>);

impl ProblemLog {
    pub fn snapshot(&self) -> Vec<Problem> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Caps memory on a long run full of errors: the first ones explain.
    const MAX: usize = 5000;
}

impl<S: Subscriber> Layer<S> for ProblemLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut message = MessageText(String::new());
        event.record(&mut message);
        let mut problems = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if problems.len() < Self::MAX {
            problems.push(Problem { time: SystemTime::now(), level, message: message.0 });
        }
    }
}

/// The formatted `message` field of an event (plus any other fields).
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

//! Logs for the Jenkins console: timestamps, one line per event, colour only
//! on a terminal or when asked, `NO_COLOR` honoured, `RUST_LOG` overrides.
//! Every warning and error logged is also kept ([`ProblemLog`], a tracing
//! layer) for the run report, so nothing needs to report twice.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::ColorChoice;

/// Installs the console log, and `problems`, which keeps every warning and
/// error for the run report.
pub fn init(debug: bool, color: ColorChoice, problems: ProblemLog) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => !no_color && std::io::stdout().is_terminal(),
    };
    let default = if debug { "slave_manager=debug,info" } else { "info" };
    // The SDK's own debug chatter is only wanted when RUST_LOG asks for it.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let console = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi).with_writer(std::io::stdout);
    tracing_subscriber::registry().with(filter).with(console).with(problems).init();
}

/// A warning or error that was logged.
#[derive(Debug, Clone)]
pub struct Problem {
    pub time: SystemTime,
    pub level: Level,
    pub message: String,
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

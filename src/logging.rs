//! Logs for the Jenkins console: timestamps, one line per event, colour only
//! on a terminal or when asked, `NO_COLOR` honoured, `RUST_LOG` overrides.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::cli::ColorChoice;
use crate::record::ProblemLog;

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

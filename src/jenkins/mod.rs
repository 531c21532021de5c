//! The Jenkins side: the CLI transports and the dump the Groovy script prints.

pub mod cli;
pub mod dump;
pub mod host_key;
pub mod quote;

pub use cli::{CliError, CliOutput, JenkinsCli};

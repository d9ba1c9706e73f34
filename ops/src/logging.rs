//! Structured logs with `tracing`: human output on a terminal, JSON lines
//! for machines. The level comes from `--log-level` unless `RUST_LOG` says
//! otherwise.

use std::str::FromStr;

use thiserror::Error;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = LogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(LogError::Format(other.to_string())),
        }
    }
}

/// Logging could not be set up.
#[derive(Debug, Error)]
pub enum LogError {
    /// The level or filter did not parse.
    #[error("--log-level \"{0}\": not a level or filter (expected error, warn, info, debug, trace or a RUST_LOG-style filter)")]
    Filter(String),
    /// Unknown format name.
    #[error("--log-format \"{0}\": unknown format (expected human or json)")]
    Format(String),
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Installs the global subscriber, writing to stderr.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).map_err(|_| LogError::Filter(v))?,
        _ => EnvFilter::try_new(level).map_err(|_| LogError::Filter(level.to_string()))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|_| LogError::AlreadySet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
        let err = "xml".parse::<LogFormat>().unwrap_err().to_string();
        assert!(err.contains("xml") && err.contains("human or json"), "{err}");
    }
}

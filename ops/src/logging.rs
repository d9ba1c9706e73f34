//! Structured logs with `tracing`: human output on a terminal, JSON lines
//! for machines. The level comes from `--log-level` unless `RUST_LOG` says
//! otherwise.

use std::cell::Cell;
use std::str::FromStr;
use std::time::{Duration, Instant};

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
    #[error(
        "\"{0}\": not a log level (expected error, warn, info, debug, trace or off, or a filter of \
         them such as info,appliance=debug)"
    )]
    Filter(String),
    /// Unknown format name.
    #[error("\"{0}\": unknown log format (expected human or json)")]
    Format(String),
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Checks a log level as an operator gives it (`--log-level`, `[log]
/// level`): one of the levels, or a filter directive (`info,appliance=debug`)
/// whose every part names a level. A typo (`verbose`) is an error: the
/// filter would otherwise take it for a module name and log nothing.
pub fn check_level(level: &str) -> Result<(), LogError> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let ok = !level.trim().is_empty()
        && level.split(',').all(|part| {
            let lvl = part.rsplit_once('=').map_or(part, |(_, l)| l).trim();
            LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
        });
    if ok && EnvFilter::try_new(level).is_ok() {
        Ok(())
    } else {
        Err(LogError::Filter(level.to_string()))
    }
}

/// Installs the global subscriber, writing to stderr; colours only when
/// stderr is a terminal (a file or journald gets plain text).
pub fn init(level: &str, format: LogFormat) -> Result<(), LogError> {
    use std::io::IsTerminal;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v).map_err(|_| LogError::Filter(v))?,
        _ => {
            check_level(level)?;
            EnvFilter::try_new(level).map_err(|_| LogError::Filter(level.to_string()))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|_| LogError::AlreadySet)
}

/// Lets one event through per interval and counts the ones it held back,
/// for errors on hot paths (a flood of failing accepts must not become a
/// flood of log lines). Not thread-safe on purpose: keep one per shard and
/// call site, as [`warn_limited!`](crate::warn_limited) does.
#[derive(Debug, Default)]
pub struct RateLimit {
    next: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl RateLimit {
    /// A limiter that has let nothing through yet.
    pub const fn new() -> RateLimit {
        RateLimit { next: Cell::new(None), suppressed: Cell::new(0) }
    }

    /// `Some(held back since the last one)` if an event may be logged now.
    pub fn check(&self, now: Instant, every: Duration) -> Option<u64> {
        if self.next.get().is_some_and(|next| now < next) {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.next.set(Some(now + every));
        Some(self.suppressed.replace(0))
    }
}

/// `tracing::warn!` at most once a second per call site and thread, with
/// the number of events held back in between as `suppressed`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        ::std::thread_local! {
            static LIMIT: $crate::logging::RateLimit = const { $crate::logging::RateLimit::new() };
        }
        let now = ::std::time::Instant::now();
        if let Some(suppressed) = LIMIT.with(|l| l.check(now, ::std::time::Duration::from_secs(1))) {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_through_per_interval_and_counts_the_rest() {
        let l = RateLimit::new();
        let t0 = Instant::now();
        let every = Duration::from_secs(1);
        assert_eq!(l.check(t0, every), Some(0));
        assert_eq!(l.check(t0 + Duration::from_millis(10), every), None);
        assert_eq!(l.check(t0 + Duration::from_millis(500), every), None);
        assert_eq!(l.check(t0 + Duration::from_secs(1), every), Some(2));
        assert_eq!(l.check(t0 + Duration::from_millis(1500), every), None);
    }

    #[test]
    fn parses_formats() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
        let err = "xml".parse::<LogFormat>().unwrap_err().to_string();
        assert!(err.contains("xml") && err.contains("human or json"), "{err}");
    }
}

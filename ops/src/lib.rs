//! `ops`: what an operator needs to run the appliance: logging, signal
//! handling, Prometheus exposition, a small HTTP server for the admin
//! endpoint and systemd's readiness notifications.
//!
//! ```no_run
//! ops::logging::init("info", ops::logging::LogFormat::Human).expect("logging");
//! let signals = ops::signals::Signals::block().expect("signal mask");
//! // ... start the runtime, then on another thread:
//! let sig = signals.wait();
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cpu;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod systemd;

//! The appliance: services on the `shard` runtime, over `netstack` and
//! `ops`, around the protocol cores of `cores`. The `appliance` binary
//! (main.rs) is a thin command line over these modules, which import one
//! way, top down:
//!
//! - [`cli`]: the command line, over [`config`];
//! - [`app`]: the runner (binding one listener group per service, starting
//!   every service on every shard, draining on signals), its shared state,
//!   the admin endpoint (`/metrics`, `/status`, `/healthz`, `/readyz`),
//!   SIGHUP reloads, the startup report and the descriptor budget;
//! - [`config`]: flags and the TOML file, one validation path for both,
//!   into the services' settings;
//! - [`services`]: echo, forward and aggregate, the I/O shells around
//!   `cores`;
//!
//! `appliance loadgen` is the `loadgen` crate's (a tool, not the product).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod dns;
pub mod services;

//! `cores`: the appliance's protocol logic, sans I/O.
//!
//! Everything here is plain data and functions fed with bytes and `now`:
//! no sockets, no runtime, no clock of its own, no unsafe. The services in
//! the `appliance` crate are shells around these cores that do the I/O
//! (quinn's `quinn-proto` under `quinn` is the model), and Cargo enforces
//! the boundary: this crate depends on neither `shard` nor `netstack`.
//!
//! - [`statsd`]: the aggregator's core. Lines parsed in place with drops by
//!   reason ([`statsd::parse`]), lines out of a byte stream
//!   ([`statsd::stream`]), mergeable timer sketches and unique sets
//!   ([`statsd::sketch`], [`statsd::set`]), a shard's key table with its
//!   per-interval aggregates ([`statsd::table`]), and the flush outputs:
//!   Graphite plaintext with etsy statsd's names ([`statsd::graphite`]) and
//!   statsd lines for a next tier ([`statsd::relay`]).
//! - [`pool`]: the forwarder's upstream pool. Upstream specs and durations
//!   ([`pool::upstream`]), balancing policies ([`pool::balance`]) including
//!   Maglev ([`pool::maglev`]), the health state machine with active checks
//!   and passive ejection ([`pool::health`]), and connection limits
//!   ([`pool::limits`]).
//! - [`sni`]: the server name of a TLS ClientHello, and routes by name.
//! - [`counters`]: counter sets declared once ([`counter_set!`]): the
//!   struct, its cross-shard merge and the list expositions walk.
//! - [`hash`]: the one stable hash everything that must agree across shards
//!   and processes uses.
//!
//! ```
//! use cores::statsd::parse::{parse_line, Line};
//! let Ok(Line::Metric(m)) = parse_line(b"api.hits:3|c|#env:prod", 4096) else { panic!() };
//! assert_eq!(m.name, b"api.hits");
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
pub mod hash;
pub mod pool;
pub mod sni;
pub mod statsd;

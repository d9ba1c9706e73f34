//! `aggregate`: a statsd / DogStatsD aggregator.
pub mod config;
pub mod graphite;
pub mod hash;
pub mod parse;
pub mod relay;
pub mod set;
pub mod sink;
pub mod sketch;
pub mod stats;
pub mod stream;
pub mod table;

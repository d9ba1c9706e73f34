//! `aggregate`: a statsd / DogStatsD aggregator.
pub mod config;
pub mod graphite;
pub mod hash;
pub mod parse;
pub mod relay;
pub mod set;
pub mod sketch;
pub mod stats;
pub mod table;

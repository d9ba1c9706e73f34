//! The statsd / DogStatsD aggregator's core, bottom up: [`parse`] (lines in
//! place, drops by reason), [`stream`] (lines out of a byte stream),
//! [`sketch`] and [`set`] (mergeable timer sketch with 1 % relative error,
//! etsy's exact figures from the samples while a key has few, [`exact`],
//! exact-then-HyperLogLog unique counts), [`table`] (a shard's keys and
//! their per-interval aggregates), then the outputs [`graphite`] and
//! [`relay`], and [`exporter`] (the keys as Prometheus series, named by
//! [`mapping`], statsd_exporter's mapping file); [`aggregator`] puts them
//! together as one shard's share of an aggregator, and [`stats`] counts
//! what happened.

pub mod aggregator;
pub mod exact;
pub mod exporter;
pub mod frames;
pub mod graphite;
pub mod mapping;
pub mod origins;
pub mod parse;
pub mod relay;
pub mod rules;
pub mod set;
pub mod sketch;
pub mod stats;
pub mod stream;
pub mod table;
pub mod tagging;

//! `aggregate`: a statsd / DogStatsD aggregator.
pub mod parse;

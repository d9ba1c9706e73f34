//! `aggregate`: a statsd / DogStatsD aggregator (the job of etsy statsd or
//! brubeck), shared-nothing across shards.
//!
//! The protocol logic is sans-IO, in the `cores` crate
//! ([`cores::statsd`]: parsing, the key table, sketches and sets, Graphite
//! and relay output). Here:
//!
//! - [`config`], [`stats`]: settings and counters;
//! - [`sink`], [`service`]: the Graphite connection, receivers, the flush
//!   cycle and shutdown (see [`service`] for the cross-shard design).
//!
//! It runs like every service (`crate::app`): [`service::serve_shard`] on
//! every shard with an [`AggregateConfig`] validated from the flags of
//! `appliance aggregate` or an `[[aggregate]]` table
//! (`crate::config::AggregateOptions`).

pub mod config;
mod metrics;
pub mod service;
pub mod sink;
pub mod unix;
pub mod xdp;
pub use cores::statsd::stats;

pub use config::{AggregateConfig, Backend, ConfigError};
pub use service::gather_stats;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use cores::statsd::exporter::Snapshot;
use ops::metrics::Exposition;

use super::{on_every_shard, Descriptors, Listen, Local, Service, ServiceId, SettingError};

impl Service for AggregateConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn group(&self) -> Option<&shard::Group> {
        self.group.as_ref()
    }

    fn kind(&self) -> &'static str {
        "aggregate"
    }

    fn listens(&self) -> Vec<Listen> {
        // Per-origin limits by source: each source's datagrams and
        // connections always reach one shard, so its limit is exact.
        let by_source =
            self.origins.as_ref().is_some_and(|o| o.by == cores::statsd::origins::OriginBy::Source);
        let by_client = by_source.then_some((32, 128));
        let udp = self.listen_udp.map(|addr| Listen {
            addr,
            udp: true,
            recv_buffer: Some(self.udp_socket_buffer),
            by_client,
        });
        let tcp = self.listen_tcp.map(|addr| Listen { addr, udp: false, recv_buffer: None, by_client });
        udp.into_iter().chain(tcp).collect()
    }

    fn check_for_shards(&self, shards: usize) -> Result<(), SettingError> {
        // Keys are split over the service's own shards.
        let shards = self.group.as_ref().map_or(shards, |g| g.len());
        self.validate(shards).map_err(|e| SettingError { field: e.field(), message: e.to_string() })
    }

    fn descriptors(&self) -> Descriptors {
        // A stream client (TCP or Unix) is one descriptor; each shard keeps
        // a Graphite connection, opens a socket per relay at flush time,
        // and holds its own descriptor of each Unix socket (plus the one
        // the service keeps).
        let streams = self.listen_tcp.is_some() || self.listen_unix_stream.is_some();
        let unix = u64::from(self.listen_unix.is_some()) + u64::from(self.listen_unix_stream.is_some());
        Descriptors {
            per_conn: u64::from(streams),
            limit: None,
            reserve_per_shard: 1 + self.relays.len() as u64 + unix,
            reserve: unix,
        }
    }

    fn prepare(
        &self,
        bound: &[std::net::SocketAddr],
        inherit: &mut dyn FnMut(&std::path::Path) -> Option<OwnedFd>,
    ) -> Result<Option<Arc<dyn Service>>, String> {
        let mut prepared: Option<AggregateConfig> = None;
        // The UDP listener is the first, when there is one.
        if let Some(udp) = self.listen_udp.and(bound.first().copied()) {
            if let Some(attachment) = xdp::attach(&self.name, &self.backend, udp)? {
                prepared = Some(AggregateConfig { xdp: Some(attachment), ..self.clone() });
            }
        }
        if let Some(path) = &self.listen_unix {
            let socket = match inherit(path) {
                Some(fd) => unix::UnixSocket::inherited(fd, path, self.origin_detection),
                None => unix::UnixSocket::bind(path, self.origin_detection),
            };
            let socket = socket.map_err(|e| format!("listen_unix {}: {e}", path.display()))?;
            if let Some(warning) = unix::queue_warning(&self.name, netstack::unix::max_dgram_qlen()) {
                tracing::warn!("{warning}");
            }
            let base = prepared.unwrap_or_else(|| self.clone());
            prepared = Some(AggregateConfig { unix: Some(Arc::new(socket)), ..base });
        }
        if let Some(path) = &self.listen_unix_stream {
            let socket = match inherit(path) {
                Some(fd) => Ok(unix::UnixSocket::inherited_listener(fd, path)),
                None => unix::UnixSocket::listen(path),
            };
            let socket = socket.map_err(|e| format!("listen_unix_stream {}: {e}", path.display()))?;
            let base = prepared.unwrap_or_else(|| self.clone());
            prepared = Some(AggregateConfig { unix_stream: Some(Arc::new(socket)), ..base });
        }
        Ok(prepared.map(|c| Arc::new(c) as Arc<dyn Service>))
    }

    fn prepared_sockets(&self) -> Vec<OwnedFd> {
        self.unix.iter().chain(&self.unix_stream).filter_map(|u| u.for_shard().ok()).collect()
    }

    fn serve(
        self: Arc<Self>,
        id: ServiceId,
        sockets: Vec<OwnedFd>,
        conn_limit: usize,
    ) -> Local<'static, std::io::Result<()>> {
        let mut sockets = sockets.into_iter();
        let udp = self.listen_udp.and_then(|_| sockets.next());
        let tcp = self.listen_tcp.and_then(|_| sockets.next());
        Box::pin(service::serve_shard(id, udp, tcp, self, conn_limit))
    }

    fn restart_needed(&self, new: &dyn Service) -> Option<String> {
        let new = new.as_any().downcast_ref::<AggregateConfig>()?;
        let fixed = |c: &AggregateConfig| {
            (
                c.udp_buffers,
                c.max_datagram,
                c.udp_socket_buffer,
                c.exchange,
                c.max_line_length,
                c.backend.clone(),
                (c.listen_unix.clone(), c.listen_unix_stream.clone(), c.origin_detection),
            )
        };
        (fixed(self) != fixed(new)).then(|| {
            "udp_buffers, max_datagram, udp_socket_buffer, exchange, max_line_length, backend, interface, \
             xdp_mode, listen_unix, listen_unix_stream or origin_detection"
                .to_string()
        })
    }

    fn reload(&self, id: ServiceId, new: Arc<dyn Service>) -> Local<'static, Result<(), String>> {
        Box::pin(async move {
            let cfg = (*new).as_any().downcast_ref::<AggregateConfig>().ok_or("not an aggregate service")?;
            service::reload(id, Arc::new(cfg.clone())).await
        })
    }

    fn metrics<'a>(
        &'a self,
        id: ServiceId,
        e: &'a mut Exposition,
    ) -> Local<'a, Result<(), shard::SubmitError>> {
        Box::pin(async move {
            let stats = on_every_shard(move || service::shard_stats(id)).await?;
            metrics::service(e, &self.name, &stats);
            if self.backend == Backend::Kernel {
                return Ok(());
            }
            let per_shard = on_every_shard(move || service::xdp_stats(id)).await?;
            let program = per_shard.iter().find_map(|(_, p)| *p);
            let queues: Vec<_> = per_shard.into_iter().flat_map(|(q, _)| q).collect();
            if !queues.is_empty() || program.is_some() {
                xdp::metrics(e, &self.name, &queues, program);
            }
            Ok(())
        })
    }

    fn exposition(&self, id: ServiceId) -> Option<Local<'static, Result<String, shard::SubmitError>>> {
        self.prometheus.as_ref()?;
        Some(Box::pin(async move {
            let parts = on_every_shard(move || service::prometheus(id)).await?;
            let merged = Snapshot::merge(parts.into_iter().flatten().collect());
            Ok(metrics::exposition(&merged))
        }))
    }

    fn status(&self, id: ServiceId) -> Local<'static, Result<serde_json::Value, shard::SubmitError>> {
        let configured = self.backend.as_str();
        let kernel = self.backend == Backend::Kernel;
        let by = self.origins.as_ref().map(|o| o.by.clone());
        let mappings = self.prometheus.as_ref().map(|m| m.len());
        Box::pin(async move {
            let s = gather_stats(id).await?;
            // What receives now: `auto` may have fallen back to the kernel.
            let xdp_queues = if kernel {
                0
            } else {
                let per_shard = on_every_shard(move || service::xdp_stats(id)).await?;
                per_shard.iter().map(|(q, _)| q.len()).sum::<usize>()
            };
            let receiving = if xdp_queues > 0 { "xdp" } else { "kernel" };
            let worst = match &by {
                Some(by) => {
                    let lists = on_every_shard(move || service::origin_offenders(id, 10)).await?;
                    cores::statsd::origins::merge_offenders(lists, 10)
                        .into_iter()
                        .map(|(o, n)| serde_json::json!({"origin": cores::statsd::origins::label(by, &o), "refused": n}))
                        .collect()
                }
                None => Vec::new(),
            };
            Ok(serde_json::json!({
                "counters": s.pairs().into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                "chart": "lines",
                "prometheus": mappings.map(|n| serde_json::json!({"mappings": n})),
                "last_flush_age_seconds": (s.last_flush_timestamp_seconds > 0)
                    .then(|| service::unix_now().saturating_sub(s.last_flush_timestamp_seconds)),
                "keys": s.keys, "metrics": s.metrics, "dropped": s.dropped_total(),
                "flushes": s.flushes, "flush_errors": s.flush_errors,
                "kernel_drops": s.kernel_drops, "rule_drops": s.rule_drops,
                "origin_refused": s.origin_refused, "worst_origins": worst,
                "backend": configured, "receiving": receiving, "xdp_queues": xdp_queues,
            }))
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

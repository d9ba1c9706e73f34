//! The admin endpoint: `GET /metrics` (Prometheus), `/status` (JSON),
//! `/healthz` (the process is alive), `/readyz` (every shard is serving
//! and the appliance is not draining) and the upstream API ([`api`]), on
//! one listener served by shard 0 with `ops::http` (bounded requests,
//! connections and time).
//!
//! A scrape gathers every shard's counters with `map_reduce`: each shard
//! only copies its snapshot, so a scrape never stalls a shard for longer.

pub mod api;
mod metrics;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use netstack::tcp::TcpListener;
use ops::http::{Request, Response, Router, Server};
use serde_json::json;

use crate::app::state::App;
use crate::config::Service;
use crate::services::ServiceId;

/// Serves the admin endpoint on shard 0 until `done` resolves (every
/// service has drained), so `/readyz` answers "draining" meanwhile.
pub async fn serve(fd: OwnedFd, app: Arc<App>, done: impl std::future::Future) {
    let listener = match TcpListener::from_fd(fd) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin listener: {e}");
            return;
        }
    };
    let server = Server::new(ops::http::Limits::default());
    let router: Router = {
        let (app, server) = (app.clone(), std::rc::Rc::downgrade(&server));
        std::rc::Rc::new(move |req: Request| {
            let (app, server) = (app.clone(), server.clone());
            Box::pin(async move {
                let http = server.upgrade().map(|s| s.stats()).unwrap_or_default();
                route(&app, req, http).await
            })
        })
    };
    server
        .serve(listener, router, async move {
            let _ = done.await;
        })
        .await;
}

async fn route(app: &App, req: Request, http: ops::http::HttpStats) -> Response {
    if req.path.starts_with("/api/") {
        return api::route(app, &req).await;
    }
    if req.method == "POST" {
        return Response::text(405, "POST is for /api/upstreams/{add,set,remove}\n");
    }
    if let Some(name) = req.path.strip_prefix("/metrics/") {
        return service_exposition(app, name).await;
    }
    match req.path.as_str() {
        "/metrics" => match metrics::render(app, http).await {
            Ok(text) => Response::new(200, ops::metrics::CONTENT_TYPE, text),
            Err(e) => Response::text(503, format!("gathering metrics: {e}\n")),
        },
        "/status" => match status(app).await {
            Ok(v) => Response::json(200, format!("{v:#}\n")),
            Err(e) => Response::text(503, format!("gathering status: {e}\n")),
        },
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" if app.ready() => Response::text(200, "ready\n"),
        "/readyz" if shard::is_stopping() => Response::text(503, "draining\n"),
        "/readyz" => Response::text(503, "starting\n"),
        "/" => Response::text(200, "appliance admin: /metrics /status /healthz /readyz /api/upstreams\n"),
        _ => Response::text(404, "not found (try /metrics, /status, /healthz, /readyz)\n"),
    }
}

/// `/status`: version, uptime, configuration, placement, per-shard load
/// and upstream health.
/// `/metrics/<name>`: the service's own exposition (an aggregate's series).
async fn service_exposition(app: &App, name: &str) -> Response {
    let services = app.config().services.clone();
    let Some((i, service)) = services.iter().enumerate().find(|(_, s)| s.name() == name) else {
        return Response::text(404, format!("no service named {name:?}\n"));
    };
    match service.exposition(ServiceId(i as u64)) {
        None => Response::text(
            404,
            format!("{name} keeps no Prometheus series (give it prometheus or mapping_config)\n"),
        ),
        Some(scrape) => match scrape.await {
            Ok(text) => Response::new(200, ops::metrics::CONTENT_TYPE, text),
            Err(e) => Response::text(503, format!("{e}\n")),
        },
    }
}

async fn status(app: &App) -> Result<serde_json::Value, shard::SubmitError> {
    let per_shard = metrics::runtime_stats().await?;
    let shards: Vec<_> = per_shard
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard, "tasks": s.tasks_alive, "loop_turns": s.turns, "parks": s.parks,
                "ops_in_flight": s.ops_in_flight, "stalls": s.stalls,
                "mesh_sent": s.mesh.sent, "mesh_received": s.mesh.received,
            })
        })
        .collect();
    let placement: Vec<_> = app
        .placement
        .iter()
        .map(|p| json!({"shard": p.shard, "cpu": p.cpu, "core": p.core, "numa_node": p.numa_node}))
        .collect();
    let services = app.config().services.clone();
    let mut list = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let listen: Vec<String> = app
            .listening
            .iter()
            .filter(|l| l.service == service.name())
            .map(|l| format!("{} {}", l.proto, l.addr))
            .collect();
        list.push(service_status(ServiceId(i as u64), service, listen).await?);
    }
    let reloads = app.reloads().clone();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "upgraded_from": app.upgraded_from,
        "uptime_seconds": app.started.elapsed().as_secs_f64(),
        "ready": app.ready(),
        "draining": shard::is_stopping(),
        "config": app.path.as_ref().map_or("embedded default or flags".into(), |p| p.display().to_string()),
        "reloads": {"ok": reloads.ok, "failed": reloads.failed, "last_error": reloads.last_error},
        "dns": dns_status(app),
        "placement": placement,
        "shards": shards,
        "services": list,
    }))
}

/// Each re-resolved upstream name: its service, addresses and lookups.
fn dns_status(app: &App) -> Vec<serde_json::Value> {
    app.dns
        .lock()
        .iter()
        .map(|((service, name), s)| {
            let mut v = json!(s);
            v["service"] = json!(service);
            v["name"] = json!(name);
            v
        })
        .collect()
}

async fn service_status(
    id: ServiceId,
    service: &Service,
    listen: Vec<String>,
) -> Result<serde_json::Value, shard::SubmitError> {
    let mut v = json!({"name": service.name(), "kind": service.kind(), "listen": listen});
    if let (Some(all), serde_json::Value::Object(more)) = (v.as_object_mut(), service.status(id).await?) {
        all.extend(more);
    }
    Ok(v)
}

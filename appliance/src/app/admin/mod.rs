//! The admin endpoint: `GET /` (the status page, [`page`]), `/metrics`
//! (Prometheus), `/metrics/<service>` (an aggregate's series), `/status`
//! (JSON, with rates from [`history`]; `?format=html`: the page's
//! tables), `/healthz` (the process is alive), `/readyz` (every shard is serving
//! and the appliance is not draining) and the upstream API ([`api`]), on
//! one listener served by shard 0 with `ops::http` (bounded requests,
//! connections and time).
//!
//! A scrape gathers every shard's counters with `map_reduce`: each shard
//! only copies its snapshot, so a scrape never stalls a shard for longer.

pub mod api;
mod history;
mod metrics;
mod page;

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use netstack::tcp::TcpListener;
use ops::http::{Request, Response, Router, Server};
use serde_json::json;

use crate::app::state::App;
use crate::config::Service;
use crate::services::ServiceId;
use history::History;

/// The status page's content type.
const HTML: &str = "text/html; charset=utf-8";

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
    let history: Rc<RefCell<History>> = Rc::default();
    let sampler = shard::spawn_local_named("status history", sample(app.clone(), history.clone()));
    let router: Router = {
        let (app, server) = (app.clone(), Rc::downgrade(&server));
        Rc::new(move |req: Request| {
            let (app, server, history) = (app.clone(), server.clone(), history.clone());
            Box::pin(async move {
                let http = server.upgrade().map(|s| s.stats()).unwrap_or_default();
                route(&app, req, http, &history).await
            })
        })
    };
    server
        .serve(listener, router, async move {
            let _ = done.await;
        })
        .await;
    sampler.abort();
}

/// Samples the status model into `history` every [`history::INTERVAL`].
async fn sample(app: Arc<App>, history: Rc<RefCell<History>>) {
    loop {
        match status(&app).await {
            Ok(model) => history.borrow_mut().record(app.started.elapsed().as_secs_f64(), &model),
            Err(e) => tracing::debug!("status history: {e}"),
        }
        shard::time::sleep(history::INTERVAL).await;
    }
}

async fn route(app: &App, req: Request, http: ops::http::HttpStats, history: &RefCell<History>) -> Response {
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
        "/status" | "/" => match status(app).await {
            Ok(mut model) => {
                history.borrow().annotate(&mut model);
                let html = req.query.as_deref() == Some("format=html");
                match req.path.as_str() {
                    "/" => Response::new(200, HTML, page::page(&model)),
                    _ if html => Response::new(200, HTML, page::tables(&model)),
                    _ => Response::json(200, format!("{model:#}\n")),
                }
            }
            Err(e) => Response::text(503, format!("gathering status: {e}\n")),
        },
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" if app.ready() => Response::text(200, "ready\n"),
        "/readyz" if shard::is_stopping() => Response::text(503, "draining\n"),
        "/readyz" => Response::text(503, "starting\n"),
        _ => Response::text(404, "not found (try /, /metrics, /status, /healthz, /readyz, /api/upstreams)\n"),
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
    let per_shard = metrics::runtime_and_cpu().await?;
    let shards: Vec<_> = per_shard
        .iter()
        .map(|(s, cpu)| {
            json!({
                "shard": s.shard, "tasks": s.tasks_alive, "loop_turns": s.turns, "parks": s.parks,
                "ops_in_flight": s.ops_in_flight, "stalls": s.stalls,
                "mesh_sent": s.mesh.sent, "mesh_received": s.mesh.received,
                "counters": {
                    "cpu_seconds": cpu, "loop_turns": s.turns, "parks": s.parks, "polls": s.polls,
                    "mesh_sent": s.mesh.sent, "mesh_received": s.mesh.received,
                },
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
        "config": app.source.describe(),
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

//! Re-resolving upstream names on their TTL (`[dns]`).
//!
//! A thread of its own (lookups never run on a shard) looks up every name
//! of the running configuration when its last answer expires: the records'
//! TTL, within `min_ttl..=max_ttl`. An answer whose addresses differ from
//! the pool's is handed to shard 0, which applies it on every shard as the
//! upstream API does (`UpstreamChange::Resolved`: addresses that stay keep
//! their health, connections, counters, weight and state). A lookup that
//! fails, or answers no address, keeps the last answer, is counted and is
//! retried after `min_ttl`. The names are read from the running
//! configuration each turn, so a SIGHUP that adds or drops names is
//! followed.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::app::state::App;
use crate::dns::{DnsConfig, Resolver};
use crate::services::UpstreamChange;

/// A new answer for shard 0 to apply.
#[derive(Debug)]
struct Update {
    service: String,
    name: String,
    addrs: Vec<IpAddr>,
}

/// Answers waiting for shard 0.
static PENDING: Mutex<Vec<Update>> = Mutex::new(Vec::new());

/// Starts the thread; returns the end shard 0 reads wake-ups from.
pub fn spawn(app: Arc<App>, handle: shard::RuntimeHandle) -> anyhow::Result<OwnedFd> {
    let (rx, tx) = UnixStream::pair().context("dns socket pair")?;
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || refresh(&app, &handle, tx))
        .context("starting the dns thread")?;
    Ok(OwnedFd::from(rx))
}

/// The names of the running configuration: (service, name).
fn targets(app: &App) -> (DnsConfig, Vec<(String, cores::pool::upstream::DnsName)>) {
    let cfg = app.config();
    let names = cfg
        .services
        .iter()
        .flat_map(|s| s.dns_names().iter().map(move |n| (s.name().to_string(), n.clone())))
        .collect();
    (cfg.dns.clone(), names)
}

/// The addresses the pool has for `name` now.
fn current(app: &App, service: &str, name: &cores::pool::upstream::DnsName) -> Vec<IpAddr> {
    let cfg = app.config();
    let Some(s) = cfg.services.iter().find(|s| s.name() == service) else { return Vec::new() };
    let Some(f) = s.as_any().downcast_ref::<crate::services::forward::ForwardConfig>() else {
        return Vec::new();
    };
    f.upstreams.iter().filter(|u| name.owns(u)).map(|u| u.addr.ip()).collect()
}

fn refresh(app: &App, handle: &shard::RuntimeHandle, mut wake: UnixStream) {
    let mut due: HashMap<(String, String), Instant> = HashMap::new();
    let mut resolver: Option<(DnsConfig, Resolver)> = None;
    while !handle.is_stopping() {
        let (dns, names) = targets(app);
        let now = Instant::now();
        let listed = |k: &(String, String)| names.iter().any(|(s, n)| (s, &n.label) == (&k.0, &k.1));
        due.retain(|k, _| listed(k));
        app.dns.lock().retain(|k, _| listed(k));
        if resolver.as_ref().is_none_or(|(c, _)| *c != dns) && !names.is_empty() {
            match Resolver::new(&dns) {
                Ok(r) => resolver = Some((dns.clone(), r)),
                Err(e) => {
                    ops::warn_limited!("dns: {e}");
                    std::thread::sleep(dns.min_ttl);
                    continue;
                }
            }
        }
        let mut sent = false;
        for (service, name) in &names {
            let key = (service.clone(), name.label.clone());
            if !due.contains_key(&key) {
                // The first answer came at validation: look again soon, to
                // learn its TTL.
                due.insert(key.clone(), now + dns.min_ttl);
                let have: Vec<String> = current(app, service, name).iter().map(IpAddr::to_string).collect();
                app.dns.lock().entry(key.clone()).or_default().addresses = have;
            }
            let when = due.get(&key).copied().unwrap_or(now);
            if when > now {
                continue;
            }
            let Some((_, r)) = &resolver else { break };
            let next = match r.lookup(&name.host) {
                Ok(answer) if !answer.addrs.is_empty() => {
                    let have = current(app, service, name);
                    let mut status = app.dns.lock();
                    let entry = status.entry(key.clone()).or_default();
                    entry.lookups_ok += 1;
                    if !same_set(&have, &answer.addrs) {
                        entry.changes += 1;
                        let update = Update {
                            service: service.clone(),
                            name: name.label.clone(),
                            addrs: answer.addrs,
                        };
                        PENDING.lock().unwrap_or_else(|p| p.into_inner()).push(update);
                        sent = true;
                    } else {
                        entry.addresses = have.iter().map(IpAddr::to_string).collect();
                    }
                    answer.ttl
                }
                other => {
                    let why = match other {
                        Ok(_) => "no address in the answer".to_string(),
                        Err(e) => e,
                    };
                    ops::warn_limited!("dns: {} ({service}): {why}; keeping the last answer", name.host);
                    let mut status = app.dns.lock();
                    let entry = status.entry(key.clone()).or_default();
                    entry.lookups_failed += 1;
                    entry.last_error = Some(why);
                    dns.min_ttl
                }
            };
            due.insert(key, Instant::now() + next);
        }
        if sent && wake.write_all(&[1]).is_err() {
            return;
        }
        let next = due.values().min().copied().unwrap_or(now + Duration::from_secs(1));
        // At least every second: the configuration may have changed.
        let nap = next.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        std::thread::sleep(nap.max(Duration::from_millis(10)));
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// Shard 0's task: applies each new answer on every shard.
pub async fn serve(wake: OwnedFd, app: Arc<App>) {
    while crate::app::change::woken(&wake).await {
        let updates = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
        for u in updates {
            let change = UpstreamChange::Resolved { name: u.name.clone(), addrs: u.addrs.clone() };
            let addrs: Vec<String> = u.addrs.iter().map(IpAddr::to_string).collect();
            match crate::app::change::apply(&app, &u.service, &change).await {
                Ok(_) => {
                    tracing::info!(service = %u.service, name = %u.name, "dns: now {addrs:?}");
                    if let Some(s) = app.dns.lock().get_mut(&(u.service, u.name)) {
                        s.addresses = addrs;
                    }
                }
                Err((_, e)) => {
                    tracing::warn!(service = %u.service, name = %u.name, "dns: answer {addrs:?} not applied: {e}")
                }
            }
        }
    }
}

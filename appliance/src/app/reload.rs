//! Signals, and reloading the config file on SIGHUP.
//!
//! The signal thread owns the blocked signals. SIGTERM/SIGINT drain, a
//! second one (or SIGQUIT) exits at once; SIGUSR2 starts a successor
//! (a binary upgrade, see `upgrade`). On SIGHUP it reads and validates
//! the file off the shards (or, for a start with flags, validates the
//! flags again, which reads the files they name again); a file that fails
//! validation, or that changes
//! what only a restart can change (services added or removed, a listening
//! address, the transport, buffer sizes), is refused and reported (log,
//! `/status`, `appliance_config_reloads_total{result="error"}`) and the old
//! configuration stays. A good one is handed to shard 0 through a socket
//! pair, and shard 0 applies it on every shard: forward upstream lists,
//! weights, policies, timeouts and limits change without dropping a
//! connection; aggregate outputs (Graphite, relays, stdout), prefix,
//! percentiles, flush interval and key limits change without losing a
//! line (queued Graphite intervals follow a new Graphite address).

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::app::state::{App, ConfigSource};
use crate::config::{AppConfig, FileConfig};
use crate::services::ServiceId;

/// A validated configuration waiting for shard 0 to apply it.
static PENDING: Mutex<Option<AppConfig>> = Mutex::new(None);

/// Starts the signal thread; returns the end shard 0 reads reloads from.
pub fn watch_signals(
    signals: ops::signals::Signals,
    handle: shard::RuntimeHandle,
    app: Arc<App>,
) -> anyhow::Result<OwnedFd> {
    let (rx, mut tx) = UnixStream::pair().context("reload socket pair")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                match signals.wait() {
                    ops::signals::Signal::Hangup => match prepare(&app) {
                        Ok(cfg) => {
                            *PENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
                            let _ = tx.write_all(&[1]);
                        }
                        Err(e) => refused(&app, e),
                    },
                    ops::signals::Signal::Quit => std::process::exit(130),
                    ops::signals::Signal::User2 => crate::app::upgrade::start_successor(&app),
                    _ if stopping => std::process::exit(130),
                    _ => {
                        tracing::info!("stopping: draining connections (signal again to exit at once)");
                        stopping = true;
                        // The listeners must really close: no copy is kept
                        // for a successor any more.
                        app.offer.withdraw();
                        if !app.offer.handed_over() {
                            let _ = ops::systemd::notify("STOPPING=1");
                        }
                        handle.stop();
                    }
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(OwnedFd::from(rx))
}

fn refused(app: &App, error: String) {
    tracing::error!("SIGHUP: reload refused, the running configuration stays: {error}");
    let mut r = app.reloads();
    r.failed += 1;
    r.last_error = Some(error);
}

/// Reads and validates the file (or the flags, and the files they name),
/// and checks it only changes what a reload can.
fn prepare(app: &App) -> Result<AppConfig, String> {
    let mut new = match &app.source {
        ConfigSource::File(path) => {
            FileConfig::load(path).and_then(|f| f.validate()).map_err(|e| e.to_string())?
        }
        ConfigSource::Flags(again) => again()?,
        ConfigSource::Embedded => {
            return Err("started on the embedded default: there is no file to reload".into())
        }
    };
    let old = app.config().clone();
    new.set_overrides(old.overrides.clone()).map_err(|e| e.to_string())?;
    new.check_for_shards(app.placement.len()).map_err(|e| e.to_string())?;
    reloadable(&old, &new)?;
    Ok(new)
}

/// What a reload cannot change.
pub fn reloadable(old: &AppConfig, new: &AppConfig) -> Result<(), String> {
    // The runtime is built once, its drain deadline (grace) included.
    if old.runtime != new.runtime {
        return Err(format!(
            "[runtime] changed ({:?} to {:?}): its settings need a restart",
            old.runtime, new.runtime
        ));
    }
    if old.admin != new.admin {
        return Err(format!(
            "[admin] listen changed ({:?} to {:?}): it needs a restart",
            old.admin, new.admin
        ));
    }
    let names = |c: &AppConfig| c.services.iter().map(|s| s.name().to_string()).collect::<Vec<_>>();
    if names(old) != names(new) {
        return Err(format!(
            "services {:?} became {:?}: adding, removing or reordering services needs a restart",
            names(old),
            names(new)
        ));
    }
    for (a, b) in old.services.iter().zip(&new.services) {
        let restart =
            |what: &str| Err(format!("{} {:?}: changing {what} needs a restart", b.kind(), b.name()));
        if a.kind() != b.kind() {
            return restart("the kind of service");
        }
        if a.listens() != b.listens() {
            return restart("listen, udp, or the steering per-client limits set up");
        }
        if a.group() != b.group() {
            return restart("shards");
        }
        if let Some(what) = a.restart_needed(b.as_ref()) {
            return restart(&what);
        }
    }
    Ok(())
}

/// Shard 0's task: applies each prepared configuration on every shard.
pub async fn serve(hup: OwnedFd, app: Arc<App>) {
    while crate::app::change::woken(&hup).await {
        let Some(new) = PENDING.lock().unwrap_or_else(|p| p.into_inner()).take() else { continue };
        let _turn = crate::app::change::one_at_a_time().await;
        if !crate::app::change::until_serving(&app).await {
            refused(&app, "not every shard serves its services yet (starting or stopping)".into());
            continue;
        }
        match apply(&new).await {
            Ok(()) => {
                tracing::info!("SIGHUP: configuration reloaded");
                *app.config() = new;
                let mut r = app.reloads();
                r.ok += 1;
                // The running configuration is the file now: an older
                // refusal no longer describes it.
                r.last_error = None;
            }
            Err(e) => refused(&app, e),
        }
    }
}

async fn apply(new: &AppConfig) -> Result<(), String> {
    // Ids are positions, which a reload keeps (`reloadable`).
    for (i, service) in new.services.iter().enumerate() {
        service.reload(ServiceId(i as u64), service.clone()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reloadable;
    use crate::config::{FileConfig, Overrides, RuntimeArgs};

    /// An echo service with `extra` keys, after the tables in `top`.
    fn file(top: &str, extra: &str) -> crate::config::AppConfig {
        let text = format!("{top}\n[[echo]]\nname = \"e\"\nlisten = \"127.0.0.1:7000\"\n{extra}");
        FileConfig::parse(&text).and_then(|f| f.validate()).expect("config")
    }

    fn config(extra: &str) -> crate::config::AppConfig {
        file("", extra)
    }

    fn file_top(top: &str) -> crate::config::AppConfig {
        file(top, "")
    }

    fn parsed(text: &str) -> crate::config::AppConfig {
        FileConfig::parse(text).and_then(|f| f.validate()).expect("config")
    }

    /// Per-client caps and rates reload; turning the limits on or off, or
    /// changing the prefixes, changes how the listening group is steered:
    /// a restart (docs/operations.md).
    #[test]
    fn client_limits_reload_but_their_steering_needs_a_restart() {
        let forward = |keys: &str| {
            parsed(&format!(
                "[[forward]]\nlisten = \"127.0.0.1:8080\"\nupstreams = [\"127.0.0.1:9\"]\n{keys}"
            ))
        };
        let old = forward("max_conns_per_client = 5\n");
        assert_eq!(reloadable(&old, &forward("max_conns_per_client = 10\nclient_rate = 3\n")), Ok(()));
        for new in ["", "max_conns_per_client = 5\nclient_prefix_v4 = 24\n"] {
            let err = reloadable(&old, &forward(new)).unwrap_err();
            assert!(err.contains("needs a restart"), "{new:?}: {err}");
        }
    }

    /// The aggregator's receive backend is restart-only.
    #[test]
    fn the_aggregate_backend_needs_a_restart() {
        let aggregate = |keys: &str| {
            parsed(&format!("[[aggregate]]\nlisten_udp = \"127.0.0.1:8125\"\nflush_stdout = true\n{keys}"))
        };
        let kernel = aggregate("");
        let err = reloadable(&kernel, &aggregate("backend = \"xdp\"\ninterface = \"eth0\"\n")).unwrap_err();
        assert!(err.contains("backend") && err.contains("needs a restart"), "{err}");
        let xdp = aggregate("backend = \"auto\"\ninterface = \"eth0\"\n");
        let err = reloadable(&xdp, &aggregate("backend = \"auto\"\ninterface = \"eth1\"\n")).unwrap_err();
        assert!(err.contains("interface"), "{err}");
    }

    /// The runtime and the admin listener are built once: a reload that
    /// changes them is refused (the old binary accepted it and went on
    /// with the old values, saying it had reloaded).
    #[test]
    fn runtime_and_admin_changes_need_a_restart() {
        let old = file_top("[runtime]\nshards = 2\ngrace = \"3s\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n");
        for (change, what) in [
            ("[runtime]\nshards = 3\ngrace = \"3s\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n", "[runtime]"),
            ("[runtime]\nshards = 2\ngrace = \"9s\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n", "[runtime]"),
            ("[runtime]\nshards = 2\ngrace = \"3s\"\nsteering = \"cpu\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n", "[runtime]"),
            ("[runtime]\nshards = 2\ngrace = \"3s\"\n[admin]\nlisten = \"127.0.0.1:9091\"\n", "[admin]"),
        ] {
            let err = reloadable(&old, &file_top(change)).unwrap_err();
            assert!(err.contains(what) && err.contains("restart"), "{change}: {err}");
        }
    }

    /// What the command line set over the file stays set over the re-read
    /// file: a reload of an unchanged file is a reload, not a refusal.
    #[test]
    fn command_line_overrides_outlive_a_reload() {
        let flags = Overrides {
            runtime: RuntimeArgs { shards: Some(4), grace: Some("1s".into()), ..Default::default() },
            admin: Some("127.0.0.1:9999".parse().expect("addr")),
            admin_token: None,
        };
        let file = "[runtime]\nshards = 2\n[admin]\nlisten = \"127.0.0.1:9090\"\n";
        let mut running = file_top(file);
        running.set_overrides(flags.clone()).expect("overrides");
        assert_eq!((running.runtime.shards, running.grace.as_secs()), (Some(4), 1));
        let mut reread = file_top(file);
        reread.set_overrides(running.overrides.clone()).expect("overrides");
        assert_eq!(reloadable(&running, &reread), Ok(()));
        assert_eq!(reread.admin, flags.admin);
    }

    #[test]
    fn a_new_shard_group_needs_a_restart() {
        let (old, same) = (config("shards = \"0\"\n"), config("shards = \"0\"\n"));
        assert_eq!(reloadable(&old, &same), Ok(()));
        let err = reloadable(&old, &config("shards = \"0-1\"\n")).unwrap_err();
        assert!(err.contains("changing shards needs a restart"), "{err}");
        let err = reloadable(&old, &config("buffers = 512\nshards = \"0\"\n")).unwrap_err();
        assert!(err.contains("buffers"), "{err}");
    }
}

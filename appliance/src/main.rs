//! `appliance`: the binary. A thin layer over the `shard`, `netstack` and
//! `ops` crates: parse the command line, set up logging and signals, start
//! the runtime and the requested service on every shard.
#![deny(unsafe_code)]

mod cli;
mod echo;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use cli::{Cli, Command, EchoArgs, RuntimeArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("appliance: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = ops::logging::init(&cli.log_level, format) {
        eprintln!("appliance: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Topology(args) => topology(&args),
        Command::Echo(args) => run_echo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appliance: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn topology(args: &RuntimeArgs) -> anyhow::Result<()> {
    let rt = args.builder()?.build()?;
    print!("{}", rt.plan());
    println!();
    print!("{}", shard::probe());
    Ok(())
}

/// Starts a thread that turns signals into runtime actions: the first
/// SIGINT/SIGTERM drains, a second one (or SIGQUIT) exits at once.
fn watch_signals(signals: ops::signals::Signals, handle: shard::RuntimeHandle) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                match signals.wait() {
                    ops::signals::Signal::Hangup => tracing::info!("SIGHUP: nothing to reload"),
                    ops::signals::Signal::Quit => std::process::exit(130),
                    _ if stopping => std::process::exit(130),
                    _ => {
                        tracing::info!("stopping (signal again to exit at once)");
                        stopping = true;
                        handle.stop();
                    }
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

fn run_echo(args: EchoArgs) -> anyhow::Result<()> {
    let signals = ops::signals::Signals::block().context("blocking signals")?;
    let rt = args.runtime.builder()?.grace(std::time::Duration::from_secs(1)).build()?;
    for w in &rt.plan().warnings {
        tracing::warn!("{w}");
    }
    let shards = rt.shards();
    let handle = rt.handle();
    watch_signals(signals, handle.clone())?;
    let EchoArgs { listen, buffers, buffer_size, .. } = args;
    let result = rt.run_with_handle(handle, move || async move {
        // Shard 0 binds first so a port-0 request resolves to one port that
        // every shard then joins.
        let (fd0, addr) = echo::bind(listen).with_context(|| format!("--listen {listen}: cannot bind"))?;
        let mut listeners = vec![fd0];
        for _ in 1..shards {
            listeners.push(echo::bind(addr).with_context(|| format!("--listen {addr}: cannot bind"))?.0);
        }
        println!("echo listening on {addr} across {shards} shards");
        let mut waits = Vec::new();
        for (shard, fd) in listeners.into_iter().enumerate() {
            waits.push(shard::submit_to(shard, move || async move {
                echo::serve(fd, buffers, buffer_size).await.map_err(|e| e.to_string())
            }));
        }
        for (shard, r) in shard::future::join_all(waits).await.into_iter().enumerate() {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("shard {shard}: echo: {e}"),
                Err(e) => anyhow::bail!("shard {shard}: {e}"),
            }
        }
        Ok(())
    });
    result.context("runtime")?
}

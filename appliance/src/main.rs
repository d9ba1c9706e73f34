//! `appliance`: the binary. A thin layer over the `shard`, `netstack` and
//! `ops` crates: parse the command line, set up logging and signals, start
//! the runtime and the requested service on every shard.
#![deny(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use appliance::cli::{Cli, Command, EchoArgs, ForwardArgs, RuntimeArgs};
use appliance::{echo, forward, serve};

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
        Command::Aggregate(args) => match appliance::aggregate::config_from_args(&args) {
            Ok(cfg) => args.runtime.builder().and_then(|b| appliance::aggregate::run(b, cfg)),
            Err(e) => {
                eprintln!("appliance: {e:#}");
                return ExitCode::from(2);
            }
        },
        Command::Forward(args) => match forward_config(&args) {
            Ok(cfg) => run_forward(args, cfg),
            Err(e) => {
                eprintln!("appliance: {e:#}");
                return ExitCode::from(2);
            }
        },
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

fn run_echo(args: EchoArgs) -> anyhow::Result<()> {
    let EchoArgs { listen, buffers, buffer_size, runtime } = args;
    let builder = runtime.builder()?.grace(std::time::Duration::from_secs(1));
    serve::on_every_shard(builder, listen, serve::Transport::Tcp, "echo", move |fd| async move {
        echo::serve(fd, buffers, buffer_size).await
    })
}

/// Validates `appliance forward` flags; every error names the flag.
fn forward_config(args: &ForwardArgs) -> anyhow::Result<forward::ForwardConfig> {
    use forward::upstream::{parse_duration, UpstreamSpec};
    let duration = |flag: &str, v: &str| parse_duration(v).with_context(|| format!("--{flag} {v:?}"));
    let upstreams = UpstreamSpec::parse_all(args.upstreams.iter().map(String::as_str))?;
    let policy = args.balance.parse()?;
    let proxy_protocol = match &args.proxy_protocol {
        Some(v) => Some(v.parse().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let interval = duration("health-interval", &args.health_interval)?;
    let passive = forward::health::HealthConfig::default();
    let health = if interval.is_zero() || args.udp {
        None
    } else {
        let cfg =
            forward::health::HealthConfig { interval, timeout: interval.min(passive.timeout), ..passive };
        cfg.validate().with_context(|| format!("--health-interval {:?}", args.health_interval))?;
        Some(cfg)
    };
    if args.max_conns == 0 {
        anyhow::bail!("--max-conns 0: must be at least 1");
    }
    Ok(forward::ForwardConfig {
        listen: args.listen,
        upstreams,
        policy,
        connect_timeout: duration("connect-timeout", &args.connect_timeout)?,
        idle_timeout: duration("idle-timeout", &args.idle_timeout)?,
        max_conns: args.max_conns,
        retries: args.retries,
        proxy_protocol,
        accept_proxy: args.accept_proxy,
        health,
        passive,
        buffers: args.buffers,
        buffer_size: args.buffer_size,
        udp: args.udp,
    })
}

fn run_forward(args: ForwardArgs, cfg: forward::ForwardConfig) -> anyhow::Result<()> {
    let grace = forward::upstream::parse_duration(&args.grace)
        .with_context(|| format!("--grace {:?}", args.grace))?;
    for u in &cfg.upstreams {
        tracing::info!(upstream = %u, "pool member");
    }
    let cfg = std::sync::Arc::new(cfg);
    let builder = args.runtime.builder()?.grace(grace);
    let transport = if cfg.udp { serve::Transport::Udp } else { serve::Transport::Tcp };
    serve::on_every_shard(builder, cfg.listen, transport, "forward", move |fd| {
        let cfg = cfg.clone();
        async move { forward::serve(fd, cfg).await }
    })
}

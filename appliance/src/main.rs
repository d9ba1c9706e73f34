//! `appliance`: the binary. A thin layer over the `shard`, `netstack` and
//! `ops` crates: parse the command line into a validated configuration, set
//! up logging, and run it (see `appliance::serve`).
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use appliance::cli::{Cli, Command, RuntimeArgs};
use appliance::config::{self, AdminOptions, AppConfig, ConfigError, FileConfig, Key, Service, Source};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (cfg, path) = match configure(&cli) {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appliance: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match (&cli.command, cfg) {
        (Command::Topology(args), _) => topology(args),
        (Command::Loadgen(args), _) => appliance::loadgen::run(args.mode.clone()),
        (_, Some(cfg)) => appliance::serve::run(cfg, path),
        (_, None) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appliance: {e:#}");
            ExitCode::from(1)
        }
    }
}

type Configured = (Option<AppConfig>, Option<std::path::PathBuf>);

/// Validates the command line (and file) and sets up logging; `Ok(None)`
/// when there is nothing left to do (`check`).
fn configure(cli: &Cli) -> Result<Option<Configured>, String> {
    let (file, path) = match &cli.command {
        Command::Run(args) => match &args.config {
            Some(p) => (FileConfig::load(p).map_err(|e| e.to_string())?, Some(p.clone())),
            None => (FileConfig::parse(config::DEFAULT).map_err(|e| format!("embedded default: {e}"))?, None),
        },
        Command::Check(args) => {
            let cfg = FileConfig::load(&args.config).and_then(|f| f.validate()).map_err(|e| e.to_string())?;
            println!("{}: ok ({} services)", args.config.display(), cfg.services.len());
            return Ok(None);
        }
        _ => (FileConfig::default(), None),
    };
    let level = cli.log_level.clone().or(file.log.level.clone()).unwrap_or_else(|| "info".into());
    let format = cli.log_format.clone().or(file.log.format.clone()).unwrap_or_else(|| "human".into());
    let format = format.parse().map_err(|e: ops::logging::LogError| e.to_string())?;
    ops::logging::init(&level, format).map_err(|e| e.to_string())?;
    let cfg = match &cli.command {
        Command::Run(args) => {
            let mut cfg = file.validate().map_err(|e| e.to_string())?;
            cfg.runtime = cfg.runtime.merged(&args.runtime);
            cfg.grace = cfg.runtime.grace(Key("--grace".into())).map_err(|e| e.to_string())?;
            Some(cfg)
        }
        Command::Echo(args) => {
            args.options.validate(&Source::Flags).map_err(|e| e.to_string())?;
            Some(from_flags(&args.runtime, Service::Echo(args.options.clone()))?)
        }
        Command::Forward(args) => {
            let cfg = args.options.validate(&Source::Flags).map_err(|e| e.to_string())?;
            Some(from_flags(&args.runtime, Service::Forward(cfg))?)
        }
        Command::Aggregate(args) => {
            let cfg = args.options.validate(&Source::Flags).map_err(|e| e.to_string())?;
            Some(from_flags(&args.runtime, Service::Aggregate(cfg))?)
        }
        Command::Topology(_) | Command::Check(_) | Command::Loadgen(_) => None,
    };
    let mut cfg = cfg;
    if let (Some(cfg), Some(listen)) = (cfg.as_mut(), cli.admin) {
        let admin = AdminOptions { listen, allow_remote: cli.admin_allow_remote };
        cfg.admin = Some(admin.validate(Key("--admin".into())).map_err(|e| e.to_string())?);
    }
    Ok(Some((cfg, path)))
}

/// A configuration of one service given by flags.
fn from_flags(runtime: &RuntimeArgs, service: Service) -> Result<AppConfig, String> {
    let grace = runtime.grace(Key("--grace".into())).map_err(|e: ConfigError| e.to_string())?;
    Ok(AppConfig { runtime: runtime.clone(), grace, admin: None, services: vec![service] })
}

fn topology(args: &RuntimeArgs) -> anyhow::Result<()> {
    let rt = args.builder()?.build()?;
    print!("{}", rt.plan());
    println!();
    print!("{}", shard::probe());
    Ok(())
}

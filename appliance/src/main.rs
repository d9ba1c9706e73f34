//! `appliance`: the binary. A thin layer over the `shard`, `netstack` and
//! `ops` crates: parse the command line into a validated configuration, set
//! up logging, and run it (see `appliance::serve`).
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use appliance::app::state::ConfigSource;
use appliance::cli::{Cli, Command};
use appliance::config::{
    self, AdminOptions, AppConfig, ConfigError, FileConfig, Key, RuntimeArgs, Service, Source,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (cfg, source) = match configure(&cli) {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appliance: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match (&cli.command, cfg) {
        (Command::Topology(args), _) => topology(args),
        (Command::Loadgen(args), _) => loadgen::run(args.mode.clone()),
        (_, Some((cfg, rt))) => appliance::app::run(cfg, rt, source),
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

type Configured = (Option<(AppConfig, shard::Runtime)>, ConfigSource);

/// How a runtime setting is named in errors (`--cpus` or `runtime.cpus`).
type KeyOf = Box<dyn Fn(&str) -> Key>;

/// Validates the command line (and file) and sets up logging; `Ok(None)`
/// when there is nothing left to do (`check`). `check` and `run` go through
/// the same validation, the runtime plan included, before anything binds.
fn configure(cli: &Cli) -> Result<Option<Configured>, String> {
    let err = |e: ConfigError| e.to_string();
    let (file, path) = match &cli.command {
        Command::Run(args) => match &args.config {
            Some(p) => (FileConfig::load(p).map_err(err)?, Some(p.clone())),
            None => (FileConfig::parse(config::DEFAULT).map_err(|e| format!("embedded default: {e}"))?, None),
        },
        Command::Check(args) => {
            let file = FileConfig::load(&args.config).map_err(err)?;
            file.log.resolve(None, None).map_err(err)?;
            let cfg = file.validate().map_err(err)?;
            cfg.preflight(&|f: &str| Key(format!("runtime.{f}"))).map_err(err)?;
            println!("{}: ok ({} services)", args.config.display(), cfg.services.len());
            return Ok(None);
        }
        _ => (FileConfig::default(), None),
    };
    let (level, format) =
        file.log.resolve(cli.log_level.as_deref(), cli.log_format.as_deref()).map_err(err)?;
    ops::logging::init(&level, format).map_err(|e| e.to_string())?;
    let (mut cfg, key, source): (AppConfig, KeyOf, ConfigSource) = match &cli.command {
        Command::Run(args) => {
            let mut cfg = file.validate().map_err(err)?;
            let over = args.runtime.clone();
            cfg.set_overrides(config::Overrides { runtime: over.clone(), ..Default::default() })
                .map_err(err)?;
            let source = path.map_or(ConfigSource::Embedded, ConfigSource::File);
            (cfg, Box::new(move |f: &str| over.key_over_file(f)), source)
        }
        Command::Echo(args) => {
            let o = args.options.clone();
            flags(args.runtime.clone(), move || Ok(o.validate(&Source::Flags)? as Service))?
        }
        Command::Forward(args) => {
            let o = args.options.clone();
            flags(args.runtime.clone(), move || Ok(o.validate(&Source::Flags)? as Service))?
        }
        Command::Aggregate(args) => {
            let o = args.options.clone();
            flags(args.runtime.clone(), move || Ok(o.validate(&Source::Flags)? as Service))?
        }
        Command::Topology(_) | Command::Check(_) | Command::Loadgen(_) => {
            return Ok(Some((None, ConfigSource::Embedded)))
        }
    };
    if let Some(token) = &cli.admin_token {
        config::check_token(token, Key("--admin-token".into())).map_err(err)?;
        cfg.admin_token = Some(token.clone());
        cfg.overrides.admin_token = Some(token.clone());
    }
    if let Some(listen) = cli.admin {
        let admin = AdminOptions { listen, allow_remote: cli.admin_allow_remote, token: None };
        cfg.admin = Some(admin.validate(Key("--admin".into())).map_err(err)?);
        cfg.overrides.admin = cfg.admin;
        config::check_admin_port(listen, &cfg.services, Key("--admin".into())).map_err(err)?;
    }
    let rt = cfg.preflight(&*key).map_err(err)?;
    Ok(Some((Some((cfg, rt)), source)))
}

/// A one-service configuration from flags, and the same validation again
/// for SIGHUP (which so reads the files the flags name once more).
fn flags<F>(runtime: RuntimeArgs, service: F) -> Result<(AppConfig, KeyOf, ConfigSource), String>
where
    F: Fn() -> Result<Service, ConfigError> + Send + Sync + 'static,
{
    let build = move || from_flags(&runtime, service().map_err(|e| e.to_string())?);
    let cfg = build()?;
    Ok((cfg, Box::new(RuntimeArgs::flag), ConfigSource::Flags(Box::new(build))))
}

/// A configuration of one service given by flags.
fn from_flags(runtime: &RuntimeArgs, service: Service) -> Result<AppConfig, String> {
    let grace = runtime.grace(Key("--grace".into())).map_err(|e: ConfigError| e.to_string())?;
    let overrides = config::Overrides { runtime: runtime.clone(), ..Default::default() };
    Ok(AppConfig {
        runtime: runtime.clone(),
        grace,
        admin: None,
        admin_token: None,
        dns: appliance::dns::DnsConfig::default(),
        services: vec![service],
        from_file: false,
        overrides,
    })
}

fn topology(args: &RuntimeArgs) -> anyhow::Result<()> {
    let rt = args.plan(&RuntimeArgs::flag)?;
    print!("{}", rt.plan());
    println!();
    print!("{}", shard::probe());
    Ok(())
}

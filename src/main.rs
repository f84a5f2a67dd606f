//! The `walhook` command line: migrate, run, demo, status, catalog.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use walhook::config::{self, Config, Overrides};

/// Committed Postgres row changes as signed webhook deliveries.
#[derive(Debug, Parser)]
#[command(name = "walhook", version, about)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by every command; each overrides its key in the file.
#[derive(Debug, Args)]
struct Settings {
    /// Configuration file [default: config/walhook.toml when it exists]
    #[arg(long, global = true, env = "WALHOOK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Postgres connection URL (file key database_url)
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Capture mode: replication or trigger (capture.mode)
    #[arg(long, global = true, env = "WALHOOK_MODE", value_name = "MODE")]
    mode: Option<String>,
    /// Allow targets in private and loopback networks (delivery.allow_private_targets)
    #[arg(long, global = true, env = "WALHOOK_ALLOW_PRIVATE_TARGETS", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    allow_private_targets: Option<bool>,
    /// Delays before each attempt, e.g. 0s,5s,5m,30m (delivery.retry_schedule)
    #[arg(
        long,
        global = true,
        env = "WALHOOK_RETRY_SCHEDULE",
        value_name = "DELAYS"
    )]
    retry_schedule: Option<String>,
    /// Time limit of one delivery request, e.g. 10s (delivery.timeout)
    #[arg(
        long,
        global = true,
        env = "WALHOOK_DELIVERY_TIMEOUT",
        value_name = "DURATION"
    )]
    delivery_timeout: Option<String>,
    /// Address of /healthz and /metrics (admin.listen)
    #[arg(long, global = true, env = "WALHOOK_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the embedded SQL migrations (safe to repeat)
    Migrate,
    /// Capture, route and deliver until SIGINT/SIGTERM, then drain and exit
    Run,
    /// Zero-setup demo: a throwaway Postgres, a sample table and a receiver
    Demo(DemoArgs),
    /// Outbox depth by state, capture lag, failing subscriptions
    Status,
    /// Print the event catalog: every event type with its payload schema
    Catalog(CatalogArgs),
}

#[derive(Debug, Args)]
struct CatalogArgs {
    /// json-schema (one object: event type -> payload schema), asyncapi (an
    /// AsyncAPI 3.0 document) or markdown
    #[arg(long, value_enum, default_value_t = CatalogFormat::Markdown)]
    format: CatalogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CatalogFormat {
    JsonSchema,
    Asyncapi,
    Markdown,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Stop after this many verified deliveries (for scripted runs)
    #[arg(long, value_name = "N")]
    exit_after: Option<usize>,
}

impl Settings {
    fn overrides(&self) -> Overrides {
        Overrides {
            config_path: self.config.clone(),
            database_url: self.database_url.clone(),
            mode: self.mode.clone(),
            allow_private_targets: self.allow_private_targets,
            retry_schedule: self.retry_schedule.clone(),
            delivery_timeout: self.delivery_timeout.clone(),
            admin_listen: self.admin_listen.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; only problems are logged beside it.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "walhook=warn"
    } else {
        "walhook=info"
    };
    init_logging(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("walhook: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("walhook: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = std::env::var("WALHOOK_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_level.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    config::check_env(std::env::vars().map(|(name, _)| name))?;
    let config = Config::load(&cli.settings.overrides())?;
    match cli.command {
        Command::Migrate => migrate(&config).await,
        Command::Run => {
            let shutdown = shutdown_on_signals();
            walhook::relay::run(config, shutdown).await
        }
        Command::Demo(args) => {
            let shutdown = shutdown_on_signals();
            walhook::demo::run(config, shutdown, args.exit_after).await
        }
        Command::Status => status(&config).await,
        Command::Catalog(args) => catalog(&config, args.format).await,
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.require_database_url()?;
    let mut client = walhook::db::connect(url, "migrate").await?;
    let report = walhook::migrate::migrate(&mut client).await?;
    if report.applied.is_empty() {
        println!(
            "schema up to date ({} migrations already applied)",
            report.already.len()
        );
    } else {
        println!("applied migrations {:?}; schema up to date", report.applied);
    }
    Ok(())
}

async fn status(config: &Config) -> anyhow::Result<()> {
    let url = config.require_database_url()?;
    let client = walhook::db::connect(url, "status").await?;
    walhook::migrate::require_current(&client).await?;
    let report = walhook::status::report(&client)
        .await
        .context("reading status")?;
    print!("{report}");
    Ok(())
}

async fn catalog(config: &Config, format: CatalogFormat) -> anyhow::Result<()> {
    use walhook::event_catalog;
    let url = config.require_database_url()?;
    let client = walhook::db::connect(url, "catalog").await?;
    walhook::migrate::require_current(&client).await?;
    let catalog = event_catalog::load(&client)
        .await
        .context("reading walhook.event_types")?;
    let text = match format {
        CatalogFormat::JsonSchema => {
            serde_json::to_string_pretty(&event_catalog::json_schemas(&catalog))? + "\n"
        }
        CatalogFormat::Asyncapi => {
            serde_json::to_string_pretty(&event_catalog::asyncapi::document(&catalog))? + "\n"
        }
        CatalogFormat::Markdown => event_catalog::markdown::document(&catalog),
    };
    print!("{text}");
    Ok(())
}

/// A token that fires on the first SIGINT or SIGTERM; a second one exits
/// at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fired = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received; shutting down (send it again to exit at once)");
        fired.cancel();
        wait_for_signal().await;
        error!("second signal; exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers only a kill stops the process.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

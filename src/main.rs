//! The `walhook` command line: one subcommand per job, each with only the
//! flags it reads; the settings' flags are declared in [`walhook::config`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use walhook::config::{self, Config, ConnectionOverrides, FileAdmin, FileCapture, Overrides};

/// Committed Postgres row changes as signed webhook deliveries.
#[derive(Debug, Parser)]
#[command(name = "walhook", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the embedded SQL migrations and set up capture (safe to repeat)
    #[command(
        long_about = "Apply the embedded SQL migrations (versioned, checksummed, safe to \
                      repeat) and set up capture in the configured mode: the replication \
                      slot and publication, or the capture triggers. Every change committed \
                      after migrate and walhook.watch() have returned is captured."
    )]
    Migrate(MigrateArgs),
    /// Capture, route and deliver until SIGINT/SIGTERM, then drain and exit
    #[command(
        long_about = "Capture committed changes of the watched tables, turn them into events \
                      and deliveries for the matching subscriptions, and POST them with \
                      retries. Serves /healthz and /metrics on the admin address. Runs until \
                      SIGINT or SIGTERM, then finishes what is in flight and exits; a second \
                      signal exits at once. Several relays may run against one database."
    )]
    Run(RunArgs),
    /// Zero-setup demo: a throwaway Postgres, a sample table and a receiver
    #[command(
        long_about = "Zero-setup demo. Uses the configured database, or starts a throwaway \
                      PostgreSQL from the installed server programs; creates and watches a \
                      sample table, subscribes a built-in receiver that verifies every \
                      signature, runs the relay and prints each delivery as it arrives. \
                      Everything it created is removed when it stops."
    )]
    Demo(DemoArgs),
    /// Outbox depth by state, capture lag, failing subscriptions
    Status(ConnectionArgs),
    /// Print the event catalog: every event type with its payload schema
    Catalog(CatalogArgs),
    /// Subscriptions with their health (never their secrets)
    Subscriptions(ConnectionArgs),
    /// Recent deliveries with their last attempt, optionally following new ones
    Deliveries(DeliveriesArgs),
    /// Print a shell completion script, e.g. walhook completions bash > /etc/bash_completion.d/walhook
    Completions(CompletionsArgs),
    /// Print the manual page (roff), e.g. walhook man > walhook.1
    Man,
    /// An HTTP receiver that verifies each request's signatures and prints it (for trying walhook)
    Receive(ReceiveArgs),
    /// Exit 0 when the admin server at admin.listen answers /healthz with 200 (container health checks)
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
struct ConnectionArgs {
    #[command(flatten)]
    connection: ConnectionOverrides,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    connection: ConnectionOverrides,
    #[command(flatten)]
    capture: FileCapture,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    settings: Overrides,
}

#[derive(Debug, Args)]
struct CatalogArgs {
    #[command(flatten)]
    connection: ConnectionOverrides,
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
    #[command(flatten)]
    settings: Overrides,
    /// Stop after this many whole transactions' deliveries were verified (for scripted runs)
    #[arg(long, value_name = "N")]
    exit_after: Option<usize>,
}

#[derive(Debug, Args)]
struct DeliveriesArgs {
    #[command(flatten)]
    connection: ConnectionOverrides,
    #[command(flatten)]
    filter: walhook::inspect::DeliveryFilter,
    /// Keep printing deliveries as they are created or attempted, until Ctrl-C
    #[arg(long, short)]
    follow: bool,
}

#[derive(Debug, Args)]
struct ReceiveArgs {
    /// Address to listen on; requests go to /hooks
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The subscription's secret, as given to walhook.subscribe
    #[arg(
        long,
        env = "RECEIVER_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    secret: String,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to write the script for
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct HealthcheckArgs {
    #[command(flatten)]
    connection: ConfigFileArg,
    #[command(flatten)]
    admin: FileAdmin,
}

/// Only the configuration file, for commands that need no database.
#[derive(Debug, Args)]
struct ConfigFileArg {
    /// Configuration file [default: config/walhook.toml when it exists]
    #[arg(long, env = "WALHOOK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Command {
    /// The settings this command was given; sections it has no flags for
    /// come from the file alone.
    fn overrides(&self) -> Overrides {
        let connection = |c: &ConnectionOverrides| Overrides {
            connection: c.clone(),
            ..Overrides::default()
        };
        match self {
            Command::Migrate(args) => Overrides {
                capture: args.capture.clone(),
                ..connection(&args.connection)
            },
            Command::Run(RunArgs { settings }) | Command::Demo(DemoArgs { settings, .. }) => {
                settings.clone()
            }
            Command::Status(args) | Command::Subscriptions(args) => connection(&args.connection),
            Command::Catalog(args) => connection(&args.connection),
            Command::Deliveries(args) => connection(&args.connection),
            Command::Healthcheck(args) => Overrides {
                connection: ConnectionOverrides {
                    config: args.connection.config.clone(),
                    database_url: None,
                },
                admin: args.admin.clone(),
                ..Overrides::default()
            },
            Command::Completions(_) | Command::Man | Command::Receive(_) => Overrides::default(),
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
        // Colour codes only for a person at a terminal, never in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    // Commands that read no settings run whatever the configuration holds.
    match cli.command {
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "walhook",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Man => {
            return clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page");
        }
        Command::Receive(args) => {
            return walhook::demo::receive(args.listen, args.secret, shutdown_on_signals()).await;
        }
        _ => {}
    }
    config::check_env(std::env::vars().map(|(name, _)| name))?;
    let config = Config::load(&cli.command.overrides())?;
    match cli.command {
        Command::Migrate(_) => migrate(&config).await,
        Command::Run(_) => {
            let shutdown = shutdown_on_signals();
            walhook::relay::run(config, shutdown).await
        }
        Command::Demo(args) => {
            let shutdown = shutdown_on_signals();
            walhook::demo::run(config, shutdown, args.exit_after).await
        }
        Command::Status(_) => status(&config).await,
        Command::Catalog(args) => catalog(&config, args.format).await,
        Command::Subscriptions(_) => {
            let client = connect_current(&config, "subscriptions").await?;
            walhook::inspect::print_subscriptions(&client, &mut std::io::stdout()).await
        }
        Command::Deliveries(args) => {
            let client = connect_current(&config, "deliveries").await?;
            let shutdown = shutdown_on_signals();
            let follow = args.follow.then_some(shutdown);
            walhook::inspect::print_deliveries(
                &client,
                &args.filter,
                follow,
                &mut std::io::stdout(),
            )
            .await
        }
        Command::Completions(_) | Command::Man | Command::Receive(_) => Ok(()),
        Command::Healthcheck(_) => walhook::healthcheck::probe(config.admin.listen).await,
    }
}

/// A connection for a read-only command, refused when the schema is not
/// migrated yet.
async fn connect_current(
    config: &Config,
    role: &'static str,
) -> anyhow::Result<tokio_postgres::Client> {
    let url = config.require_database_url()?;
    let client = walhook::db::connect(url, role).await?;
    walhook::migrate::require_current(&client).await?;
    Ok(client)
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
    let capture = walhook::setup::set_up_capture(&client, url, &config.capture).await?;
    println!("{}", capture_summary(config, &capture));
    Ok(())
}

/// When capture starts is what an operator needs from `migrate`.
fn capture_summary(config: &Config, setup: &walhook::setup::CaptureSetup) -> String {
    let switched = match &setup.switched_from {
        Some(previous) => format!(" (switched from {previous})"),
        None => String::new(),
    };
    match config.capture.mode {
        config::CaptureMode::Replication => format!(
            "capture mode replication{switched}: replication slot {} {}; changes to watched tables are retained from now on",
            config.capture.slot,
            if setup.slot_created { "created" } else { "exists" }
        ),
        config::CaptureMode::Trigger => format!(
            "capture mode trigger{switched}: watched tables' changes are captured by triggers from now on"
        ),
    }
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

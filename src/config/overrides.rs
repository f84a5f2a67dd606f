//! The settings given on the command line or in the environment. Their
//! flags and variables are declared on the file's section structs, so
//! everything else here (the known variables, the names in messages) is
//! derived from those declarations.

use std::path::PathBuf;

use super::{FileAdmin, FileBackfill, FileCapture, FileDelivery, OTHER_ENV};

/// Values from the environment and the command line; `None` leaves the
/// file's value (or the default) in place. The sections are the file's own
/// section structs, so a setting's flag and environment variable are
/// declared on its file key (the argument's `id` is that key) and applied
/// by the same code that applies the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// The file to read and the database.
    #[command(flatten)]
    pub connection: ConnectionOverrides,
    /// `[capture]` settings.
    #[command(flatten)]
    pub capture: FileCapture,
    /// `[delivery]` settings.
    #[command(flatten)]
    pub delivery: FileDelivery,
    /// `[admin]` settings.
    #[command(flatten)]
    pub admin: FileAdmin,
    /// `[backfill]` settings.
    #[command(flatten)]
    pub backfill: FileBackfill,
}

/// Which file to read and which database to use: the settings every
/// command that talks to the database takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionOverrides {
    /// Configuration file [default: config/walhook.toml when it exists]
    #[arg(long, env = "WALHOOK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Postgres connection URL (file key database_url)
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// The environment variables walhook reads: every setting's (derived from
/// [`Overrides`]) and [`OTHER_ENV`].
pub fn known_env() -> Vec<String> {
    let mut names: Vec<String> = override_args()
        .filter_map(|arg| Some(arg.get_env()?.to_string_lossy().into_owned()))
        .chain(OTHER_ENV.iter().map(|name| (*name).to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every setting that has a flag and an environment variable, as
/// `(file key, environment variable, flag)`.
pub fn overridable_settings() -> Vec<(String, String, String)> {
    override_args()
        .filter(|arg| arg.get_id() != "config")
        .filter_map(|arg| {
            Some((
                arg.get_id().to_string(),
                arg.get_env()?.to_string_lossy().into_owned(),
                format!("--{}", arg.get_long()?),
            ))
        })
        .collect()
}

fn override_args() -> impl Iterator<Item = clap::Arg> {
    use clap::Args;
    let command = Overrides::augment_args(clap::Command::new("walhook"));
    command
        .get_arguments()
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
}

/// How a setting given as an override is named in messages: its flag and
/// its environment variable, e.g. `--mode / WALHOOK_MODE`.
pub(super) fn label(file_key: &str) -> String {
    override_args()
        .find(|arg| arg.get_id() == file_key)
        .and_then(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            Some(format!("--{} / {env}", arg.get_long()?))
        })
        .unwrap_or_else(|| file_key.to_owned())
}

//! The `[admin]` section: where the admin server (`/healthz`, `/metrics`,
//! the console) listens, and the token it asks for off loopback.

use std::net::SocketAddr;

use serde::Deserialize;

use super::values::{admin_token, parse_listen, Secret};
use super::ConfigError;

/// The `[admin]` section as written.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Address of the admin server: /healthz, /metrics, the console (file key admin.listen)
    #[arg(
        id = "admin.listen",
        long = "admin-listen",
        env = "WALHOOK_ADMIN_LISTEN",
        value_name = "ADDR"
    )]
    pub listen: Option<String>,
    /// Token the admin server asks for off loopback (file key admin.token)
    #[arg(
        id = "admin.token",
        long = "admin-token",
        env = "WALHOOK_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// The admin server's settings in effect.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where the admin server listens.
    pub listen: SocketAddr,
    /// What the admin server asks for when it listens beyond loopback
    /// (at least 16 characters when given).
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9750)),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Takes the values `file` gives, checked; the others stay.
    pub(super) fn apply(&mut self, file: FileAdmin) -> Result<(), ConfigError> {
        if let Some(listen) = file.listen {
            self.listen = parse_listen(&listen, "admin.listen")?;
        }
        if let Some(token) = file.token {
            self.token = Some(Secret(admin_token(token, "admin.token")?));
        }
        Ok(())
    }
}

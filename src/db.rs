//! Connections to Postgres: the ordinary ones every stage uses, opened with
//! the settings walhook relies on and a driver task that ends with them,
//! and the TLS settings (`sslmode`, `sslrootcert`) they share with the
//! replication connection.
//!
//! tokio-postgres understands only `sslmode=disable|prefer|require` and
//! rejects `sslrootcert`, so those two parameters are taken out of the URL
//! here and enforced by our own rustls configuration: `require` encrypts
//! without checking the certificate (as libpq does), `verify-ca` checks the
//! chain, `verify-full` the chain and the host name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, GenericClient, NoTls, Socket, Statement};
use tracing::{debug, warn};

#[derive(Debug, Error)]
pub enum DbError {
    #[error("the database URL is not valid: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("the database URL is not valid: {0}")]
    BadTlsParameter(String),
    #[error("cannot set up TLS for the database connection: {0}")]
    Tls(String),
    #[error("cannot connect to the database: {}", with_causes(.0))]
    Connect(tokio_postgres::Error),
    #[error("cannot connect to the database at {target}: {}{hint}", with_causes(.error))]
    ConnectTo {
        target: String,
        hint: &'static str,
        error: tokio_postgres::Error,
    },
    #[error("the database URL starts with {scheme}://, but walhook needs a Postgres URL: postgres://user:password@host:5432/database (or key=value settings such as host=localhost dbname=app)")]
    NotPostgres { scheme: String },
}

/// A driver error as one line: the server's message with its detail and
/// hint, or the client-side failure with its causes.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        return with_causes(error);
    };
    let mut text = db.message().to_owned();
    if let Some(detail) = db.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; {hint}"));
    }
    text
}

/// Where a connection goes, as an operator would look for it: host:port
/// pairs or socket directories.
fn connect_target(config: &Config) -> String {
    let ports = config.get_ports();
    let targets: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => {
                    format!("{} (port {port})", path.display())
                }
            }
        })
        .collect();
    if targets.is_empty() {
        "the default host".to_owned()
    } else {
        targets.join(", ")
    }
}

/// What to check when nothing answered.
fn connect_hint(error: &tokio_postgres::Error) -> &'static str {
    if with_causes(error).contains("Connection refused") {
        "; is Postgres running there and listening on that address (listen_addresses, port)?"
    } else {
        ""
    }
}

/// The driver's message names only the kind of failure ("error performing
/// TLS handshake"); the cause says what to fix.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How much TLS a connection insists on (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it (libpq's default; `allow` maps here too).
    Prefer,
    /// TLS, without checking the certificate unless a root certificate was
    /// named (then as `verify-ca`).
    Require,
    /// TLS with a certificate chain that leads to a trusted root.
    VerifyCa,
    /// `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, DbError> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(DbError::BadTlsParameter(format!(
                "sslmode '{other}' is unknown; use disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }

    /// The mode tokio-postgres is told: it only needs to know whether TLS
    /// is optional; verification is ours.
    fn for_driver(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// Which certificates a verifying connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert` not given: `~/.postgresql/root.crt` when it exists,
    /// otherwise the Mozilla roots (what managed databases' certificates
    /// chain to).
    Default,
    /// `sslrootcert=system`: the Mozilla roots.
    System,
    /// `sslrootcert=<file>`: the PEM certificates in that file.
    File(PathBuf),
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_certs: RootCerts,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_certs: RootCerts::Default,
        }
    }
}

impl TlsSettings {
    /// Whether the certificate chain is checked.
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            // libpq: `require` with an explicit root certificate checks the chain.
            SslMode::Require => matches!(self.root_certs, RootCerts::File(_)),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// The rustls configuration enforcing these settings.
    pub fn client_config(&self) -> Result<ClientConfig, DbError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| DbError::Tls(e.to_string()))?;
        if !self.verifies_chain() {
            let verifier = Arc::new(NoVerification { provider });
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth());
        }
        let roots = Arc::new(self.root_store()?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| DbError::Tls(e.to_string()))?;
        if self.mode == SslMode::VerifyFull {
            return Ok(builder.with_webpki_verifier(webpki).with_no_client_auth());
        }
        let verifier = Arc::new(ChainOnly { inner: webpki });
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    fn root_store(&self) -> Result<RootCertStore, DbError> {
        let file = match &self.root_certs {
            RootCerts::File(path) => Some(path.clone()),
            RootCerts::System => None,
            RootCerts::Default => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
                .filter(|path| path.exists()),
        };
        let mut store = RootCertStore::empty();
        let Some(path) = file else {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(store);
        };
        let certs = CertificateDer::pem_file_iter(&path).map_err(|e| {
            DbError::Tls(format!("cannot read sslrootcert {}: {e}", path.display()))
        })?;
        for cert in certs {
            let cert =
                cert.map_err(|e| DbError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
            store
                .add(cert)
                .map_err(|e| DbError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
        }
        if store.is_empty() {
            return Err(DbError::Tls(format!(
                "sslrootcert {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(store)
    }
}

/// `sslmode=require` (and `prefer`): encrypted, certificate not checked,
/// exactly as libpq behaves. Handshake signatures are still verified, so
/// the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct NoVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root, the name in
/// the certificate does not matter.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Parses a `postgres://` URL or key=value connection string.
pub fn parse_url(url: &str) -> Result<Config, DbError> {
    parse_url_tls(url).map(|(config, _)| config)
}

/// Parses a connection string into the driver's configuration and the TLS
/// settings walhook enforces itself.
pub fn parse_url_tls(url: &str) -> Result<(Config, TlsSettings), DbError> {
    // A URL of another database (mysql://...) would otherwise be read as
    // key=value settings, with a puzzling complaint about a missing value.
    if let Some((scheme, _)) = url.split_once("://") {
        let is_scheme = scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme && !matches!(scheme, "postgres" | "postgresql") {
            return Err(DbError::NotPostgres {
                scheme: scheme.to_owned(),
            });
        }
    }
    let (rest, tls) = take_tls_parameters(url)?;
    let config = rest.parse::<Config>().map_err(DbError::BadUrl)?;
    Ok((config, tls))
}

/// Removes `sslmode` and `sslrootcert` from a connection string, giving
/// back the string with `sslmode` in the form tokio-postgres accepts.
fn take_tls_parameters(url: &str) -> Result<(String, TlsSettings), DbError> {
    let mut tls = TlsSettings::default();
    let mut apply = |key: &str, value: &str| -> Result<bool, DbError> {
        match key {
            "sslmode" => {
                tls.mode = SslMode::parse(value)?;
                Ok(true)
            }
            "sslrootcert" => {
                tls.root_certs = if value == "system" {
                    RootCerts::System
                } else {
                    RootCerts::File(value.into())
                };
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (head, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            if !apply(&percent_decode(key), &value)? {
                kept.push(pair.to_owned());
            }
        }
        let mut rest = head.to_owned();
        rest.push('?');
        kept.push(format!("sslmode={}", tls.mode.for_driver()));
        rest.push_str(&kept.join("&"));
        rest
    } else {
        let mut kept = Vec::new();
        for (key, value) in split_key_values(url)? {
            if !apply(&key, &value)? {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.push(format!("sslmode={}", tls.mode.for_driver()));
        kept.join(" ")
    };
    Ok((rest, tls))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `host=a port=5432 password='it''s'` the way libpq does.
fn split_key_values(text: &str) -> Result<Vec<(String, String)>, DbError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(DbError::BadTlsParameter(format!(
                "'{key}' in the connection string has no value"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(DbError::BadTlsParameter(format!(
                            "the quoted value of '{key}' in the connection string is not closed"
                        )))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Statements prepared once per connection: one sent as text is parsed,
/// analysed and planned every time, which on the hot path cost Postgres
/// more than running it. Belongs to one connection; drop it with it.
#[derive(Debug, Default)]
pub struct Statements {
    prepared: HashMap<&'static str, Statement>,
}

impl Statements {
    pub async fn get<C: GenericClient>(
        &mut self,
        client: &C,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// Opens a connection named `walhook <role>` in `pg_stat_activity`.
pub async fn connect(url: &str, role: &str) -> Result<Client, DbError> {
    let (config, tls) = config_for(url, role)?;
    if tls.mode == SslMode::Disable {
        spawn_connection(&config, NoTls, role).await
    } else {
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config()?);
        spawn_connection(&config, connector, role).await
    }
}

/// The settings of every walhook connection: named `walhook <role>` in
/// `pg_stat_activity`, a connect timeout, no JIT.
fn config_for(url: &str, role: &str) -> Result<(Config, TlsSettings), DbError> {
    let (mut config, tls) = parse_url_tls(url)?;
    config.application_name(format!("walhook {role}"));
    without_jit(&mut config);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok((config, tls))
}

/// walhook's statements are short and frequent: JIT compilation, which
/// Postgres starts for any statement it estimates as costly, would take
/// many times longer than running them (a claim went from 1 ms to 27 ms).
fn without_jit(config: &mut Config) {
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} -c jit=off"),
        _ => "-c jit=off".to_owned(),
    };
    config.options(options);
}

async fn spawn_connection<T>(config: &Config, tls: T, role: &str) -> Result<Client, DbError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|error| DbError::ConnectTo {
            target: connect_target(config),
            hint: connect_hint(&error),
            error,
        })?;
    let role = role.to_owned();
    tokio::spawn(async move {
        match connection.await {
            Ok(()) => debug!(role, "database connection closed"),
            Err(error) => warn!(role, error = %with_causes(&error), "database connection ended"),
        }
    });
    Ok(client)
}

/// Notifications a listening connection receives.
pub type Notifications = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>;

/// Opens a connection whose `NOTIFY` messages arrive on the returned
/// channel; the caller issues `LISTEN` on the client.
pub async fn connect_listening(url: &str, role: &str) -> Result<(Client, Notifications), DbError> {
    let (config, tls) = config_for(url, role)?;
    if tls.mode == SslMode::Disable {
        spawn_listening(&config, NoTls, role).await
    } else {
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config()?);
        spawn_listening(&config, connector, role).await
    }
}

async fn spawn_listening<T>(
    config: &Config,
    tls: T,
    role: &str,
) -> Result<(Client, Notifications), DbError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    use futures_util::StreamExt;

    let (client, mut connection) =
        config
            .connect(tls)
            .await
            .map_err(|error| DbError::ConnectTo {
                target: connect_target(config),
                hint: connect_hint(&error),
                error,
            })?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let role = role.to_owned();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                    // The receiver may be gone during shutdown; nothing to do then.
                    let _ = sender.send(notification);
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(role, error = %with_causes(&error), "database connection ended");
                    return;
                }
            }
        }
        debug!(role, "database connection closed");
    });
    Ok((client, receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_of_another_database_is_named_as_such() {
        let err = parse_url("mysql://app:hunter2@db/app")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("starts with mysql://") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(parse_url("host=localhost password=a://b dbname=app").is_ok());
        assert!(parse_url("postgresql://u@localhost/app").is_ok());
    }

    #[test]
    fn url_sslmode_and_rootcert_are_taken_out() {
        let (rest, tls) = take_tls_parameters(
            "postgres://u@db.example.com/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&x=1",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "postgres://u@db.example.com/app?x=1&sslmode=require");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_certs, RootCerts::File("/tmp/ca.pem".into()));
        assert!(tls.verifies_chain());
    }

    #[test]
    fn url_without_sslmode_prefers_tls() {
        let (rest, tls) =
            take_tls_parameters("postgresql://u@h/db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "postgresql://u@h/db?sslmode=prefer");
        assert_eq!(tls.mode, SslMode::Prefer);
        assert!(!tls.verifies_chain());
    }

    #[test]
    fn key_value_strings_keep_quoted_values() {
        let (rest, tls) =
            take_tls_parameters("host=h  password='a b\\'c' sslmode=verify-ca sslrootcert=system")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "host='h' password='a b\\'c' sslmode=require");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_certs, RootCerts::System);
        let config = parse_url("host=h password='a b\\'c' sslmode=disable")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_chain() {
        let tls = TlsSettings {
            mode: SslMode::Require,
            root_certs: RootCerts::File("/x".into()),
        };
        assert!(tls.verifies_chain());
        let tls = TlsSettings {
            mode: SslMode::Require,
            root_certs: RootCerts::Default,
        };
        assert!(!tls.verifies_chain());
    }

    #[test]
    fn unknown_sslmode_is_named() {
        let err = take_tls_parameters("postgres://h/db?sslmode=always")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode 'always'"), "{err}");
    }

    #[test]
    fn missing_root_certificate_file_is_named() {
        let tls = TlsSettings {
            mode: SslMode::VerifyFull,
            root_certs: RootCerts::File("/nonexistent/ca.pem".into()),
        };
        let err = tls.client_config().map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn every_mode_builds_a_configuration() {
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            let tls = TlsSettings {
                mode,
                root_certs: RootCerts::System,
            };
            assert!(tls.client_config().is_ok(), "{mode:?}");
        }
    }
}

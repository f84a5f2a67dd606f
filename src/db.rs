//! Connections to Postgres: the one place that owns connection settings.
//! [`Settings`] parses the URL once (TLS, keepalives, timeouts); every
//! ordinary connection is opened here with them, over a socket that cannot
//! hang forever ([`crate::socket`]), with a driver task that ends with it.
//! The replication connection uses the same settings and sockets.
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, GenericClient, NoTls, Statement};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::socket::{Io, Keepalive, Watched};

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
    #[error("the database URL starts with {scheme}://, but walhook needs a Postgres URL: postgres://user:password@host:5432/database (or key=value settings such as host=localhost dbname=app)")]
    NotPostgres { scheme: String },
    #[error("cannot reach the database at {host}: {source}{}", unreachable_hint(.source))]
    Unreachable {
        host: String,
        source: std::io::Error,
    },
}

impl DbError {
    /// Whether waiting may help: the server is unreachable, starting up,
    /// shutting down or restarting. A wrong password, a missing database
    /// or a bad URL stay wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Unreachable { .. } => true,
            DbError::Connect(error) => is_transient_error(error),
            DbError::BadUrl(_)
            | DbError::BadTlsParameter(_)
            | DbError::Tls(_)
            | DbError::NotPostgres { .. } => false,
        }
    }
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

/// What to check when nothing answered.
fn unreachable_hint(source: &std::io::Error) -> &'static str {
    if source.kind() == std::io::ErrorKind::ConnectionRefused {
        "; is Postgres running there and listening on that address (listen_addresses, port)?"
    } else {
        ""
    }
}

/// A driver error that reconnecting may cure.
pub fn is_transient_error(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match error.code() {
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::QUERY_CANCELED,
        ]
        .contains(code),
        // No SQLSTATE: waiting helps only if the connection itself broke
        // (not a missing password, nor a certificate that does not verify).
        None => error.is_closed() || is_transient_io(error),
    }
}

fn is_transient_io(error: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind;
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::TimedOut
                    | ErrorKind::BrokenPipe
                    | ErrorKind::NotConnected
            )
        })
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

/// Opens a connection named `walhook <role>` in `pg_stat_activity`, with
/// the settings of [`Settings`].
pub async fn connect(url: &str, role: &str) -> Result<Client, DbError> {
    let settings = Settings::for_role(url, role)?;
    open(&settings, role, None).await
}

/// [`connect`] with settings parsed before.
pub async fn connect_with(settings: &Settings, role: &str) -> Result<Client, DbError> {
    open(settings, role, None).await
}

/// [`connect`], but while the server cannot be reached or is still
/// starting up, waits and tries again (saying so every few seconds)
/// until `stop` fires. Errors that waiting cannot fix (a wrong password,
/// a missing database) are returned at once.
pub async fn connect_waiting(
    url: &str,
    role: &str,
    stop: &CancellationToken,
) -> Result<Option<Client>, DbError> {
    let mut backoff = Backoff::between(Duration::from_millis(250), Duration::from_secs(3));
    let started = std::time::Instant::now();
    loop {
        match connect(url, role).await {
            Ok(client) => return Ok(Some(client)),
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                warn!(
                    role,
                    error = %error,
                    waited_s = started.elapsed().as_secs(),
                    retry_in_ms = delay.as_millis() as u64,
                    "the database is not accepting connections yet; waiting for it"
                );
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// How long a statement may run on walhook's connections unless the URL's
/// `options` set `statement_timeout`: enough for the largest outbox write
/// or claim, short enough that a stuck one is noticed.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections whose statements may legitimately run long.
const UNLIMITED_ROLES: &[&str] = &["migrate", "capture setup"];

/// Beyond the statement timeout, how long an answer may take to arrive
/// before the connection is taken for dead.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// The settings of one connection, parsed once from the URL: the driver's
/// configuration, TLS, keepalives and the timeouts walhook adds where the
/// URL sets none (`connect_timeout` 10 s, `keepalives_idle` 10 s,
/// `keepalives_interval` 5 s, `keepalives_retries` 3, `tcp_user_timeout`
/// 30 s, `-c statement_timeout=30s`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub tls: TlsSettings,
    pub connect_timeout: Duration,
    pub keepalive: Keepalive,
    /// A request unanswered for this long ends the connection (`None`:
    /// statements may run without limit, as migrations do).
    pub stall: Option<Duration>,
}

impl Settings {
    /// The settings of a connection named `walhook <role>`.
    pub fn for_role(url: &str, role: &str) -> Result<Settings, DbError> {
        Settings::with_statement_timeout(url, role, DEFAULT_STATEMENT_TIMEOUT)
    }

    /// The settings of a connection named `walhook <role>` whose statements
    /// are cut off after `timeout` unless the URL sets its own.
    pub fn with_statement_timeout(
        url: &str,
        role: &str,
        timeout: Duration,
    ) -> Result<Settings, DbError> {
        let (mut config, tls) = parse_url_tls(url)?;
        config.application_name(format!("walhook {role}"));
        let connect_timeout = *config
            .get_connect_timeout()
            .unwrap_or(&Duration::from_secs(10));
        config.connect_timeout(connect_timeout);
        let keepalive = keepalive_of(&config);
        // Migrations may rewrite large tables, and creating a slot waits
        // for the transactions running then: no limit unless asked.
        let limited = !UNLIMITED_ROLES.contains(&role);
        let statement_timeout = statement_timeout_of(&mut config, limited.then_some(timeout))?;
        without_jit(&mut config);
        Ok(Settings {
            config,
            tls,
            connect_timeout,
            keepalive,
            stall: statement_timeout
                .filter(|t| !t.is_zero())
                .map(|t| t + ANSWER_MARGIN),
        })
    }
}

/// The URL's keepalive parameters where given, walhook's otherwise.
fn keepalive_of(config: &Config) -> Keepalive {
    let mut keepalive = Keepalive::default();
    // tokio-postgres's own default idle time (2 h) means "not given".
    if config.get_keepalives_idle() != Duration::from_secs(2 * 3600) {
        keepalive.idle = config.get_keepalives_idle();
    }
    if let Some(interval) = config.get_keepalives_interval() {
        keepalive.interval = interval;
    }
    if let Some(retries) = config.get_keepalives_retries() {
        keepalive.retries = retries;
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        keepalive.user_timeout = *timeout;
    }
    keepalive
}

/// The statement timeout the URL's `options` set, or `default` (when
/// given), added to the options.
fn statement_timeout_of(
    config: &mut Config,
    default: Option<Duration>,
) -> Result<Option<Duration>, DbError> {
    let options = config.get_options().unwrap_or("").to_owned();
    if let Some(value) = option_value(&options, "statement_timeout") {
        return parse_pg_duration(&value).map(Some).ok_or_else(|| {
            DbError::BadTlsParameter(format!(
                "statement_timeout '{value}' in the URL's options is not a duration; write e.g. -c statement_timeout=30s"
            ))
        });
    }
    let Some(default) = default else {
        return Ok(None);
    };
    let setting = format!("-c statement_timeout={}ms", default.as_millis());
    config.options(if options.trim().is_empty() {
        setting
    } else {
        format!("{options} {setting}")
    });
    Ok(Some(default))
}

/// The value of `-c name=value` (or `--name=value`) in an options string.
pub fn option_value(options: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    let mut words = options.split_whitespace();
    let mut found = None;
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next().unwrap_or("")
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest
        } else if let Some(rest) = word.strip_prefix("--") {
            rest
        } else {
            continue;
        };
        if let Some(value) = setting.strip_prefix(&prefix) {
            // The last one wins, as in Postgres.
            found = Some(value.to_owned());
        }
    }
    found
}

/// A Postgres time setting as `SHOW` prints it or a user writes it:
/// `30s`, `1min`, `500ms`, `2h`, `1d`, or a bare number of milliseconds.
pub fn parse_pg_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "ms" => number / 1000.0,
        "us" => number / 1_000_000.0,
        "s" => number,
        "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
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

/// The stream a connection runs over.
pub type Stream = Watched<Box<dyn Io>>;

/// Opens a socket to the first host of the URL that answers.
pub async fn open_socket(settings: &Settings) -> Result<(Box<dyn Io>, String), DbError> {
    let config = &settings.config;
    let hosts = if config.get_hosts().is_empty() {
        vec![Host::Tcp("localhost".into())]
    } else {
        config.get_hosts().to_vec()
    };
    let mut last_error = None;
    for (i, host) in hosts.iter().enumerate() {
        let port = config
            .get_ports()
            .get(i)
            .or(config.get_ports().first())
            .copied()
            .unwrap_or(5432);
        let opened: Result<(Box<dyn Io>, String), std::io::Error> = match host {
            Host::Tcp(name) => {
                let address = config
                    .get_hostaddrs()
                    .get(i)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| name.clone());
                crate::socket::connect_tcp(
                    address,
                    port,
                    settings.connect_timeout,
                    settings.keepalive,
                )
                .await
                .map(|s| (Box::new(s) as Box<dyn Io>, name.clone()))
            }
            #[cfg(unix)]
            Host::Unix(dir) => {
                crate::socket::connect_unix(dir.clone(), port, settings.connect_timeout)
                    .await
                    .map(|s| (Box::new(s) as Box<dyn Io>, String::new()))
            }
        };
        match opened {
            Ok(opened) => return Ok(opened),
            Err(source) => {
                last_error = Some(DbError::Unreachable {
                    host: describe_host(host, port),
                    source,
                })
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| DbError::BadTlsParameter("the database URL names no host".into())))
}

fn describe_host(host: &Host, port: u16) -> String {
    match host {
        Host::Tcp(name) => format!("{name}:{port}"),
        #[cfg(unix)]
        Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
    }
}

/// Opens the connection; with `notifications`, its `NOTIFY` messages go
/// there.
async fn open(
    settings: &Settings,
    role: &str,
    notifications: Option<NotificationSender>,
) -> Result<Client, DbError> {
    let (socket, host) = open_socket(settings).await?;
    // Without a statement timeout there is no bound on an answer either;
    // a day is as good as none.
    let stall = settings.stall.unwrap_or(Duration::from_secs(86400));
    let stream = Watched::new(socket, stall);
    let handshake = handshake(
        settings,
        stream,
        host.clone(),
        role.to_owned(),
        notifications,
    );
    match tokio::time::timeout(settings.connect_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(DbError::Unreachable {
            host,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the server did not complete the connection within {:?}",
                    settings.connect_timeout
                ),
            ),
        }),
    }
}

/// Startup, TLS and authentication over an open socket.
async fn handshake(
    settings: &Settings,
    stream: Stream,
    host: String,
    role: String,
    notifications: Option<NotificationSender>,
) -> Result<Client, DbError> {
    // Boxed as Send here: the driver's future, left inside the callers'
    // futures, trips the compiler's proof that those are Send.
    if settings.tls.mode == SslMode::Disable {
        let connecting: Connecting<'_, _> = Box::pin(settings.config.connect_raw(stream, NoTls));
        let (client, connection) = connecting.await.map_err(DbError::Connect)?;
        drive(connection, role, notifications);
        return Ok(client);
    }
    let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(settings.tls.client_config()?);
    let tls = MakeTlsConnect::<Stream>::make_tls_connect(&mut make, &host)
        .map_err(|e| DbError::Tls(e.to_string()))?;
    let connecting: Connecting<'_, _> = Box::pin(settings.config.connect_raw(stream, tls));
    let (client, connection) = connecting.await.map_err(DbError::Connect)?;
    drive(connection, role, notifications);
    Ok(client)
}

type Connecting<'a, T> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    (Client, tokio_postgres::Connection<Stream, T>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

type NotificationSender = tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>;

/// Polls the connection in a task of its own until it ends, passing
/// notifications on when someone listens.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    role: String,
    notifications: Option<NotificationSender>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;

    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                    if let Some(sender) = &notifications {
                        // The receiver may be gone during shutdown; nothing to do then.
                        let _ = sender.send(notification);
                    }
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
}

/// Notifications a listening connection receives.
pub type Notifications = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>;

/// Opens a connection whose `NOTIFY` messages arrive on the returned
/// channel; the caller issues `LISTEN` on the client.
pub async fn connect_listening(url: &str, role: &str) -> Result<(Client, Notifications), DbError> {
    let settings = Settings::for_role(url, role)?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let client = open(&settings, role, Some(sender)).await?;
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
    fn postgres_durations_are_read_in_their_units() {
        let read = |t: &str| parse_pg_duration(t).map(|d| d.as_millis());
        assert_eq!(read("1min"), Some(60_000));
        assert_eq!(read("30s"), Some(30_000));
        assert_eq!(read("500ms"), Some(500));
        assert_eq!(read("2500"), Some(2500), "a bare number is milliseconds");
        assert_eq!(read("2h"), Some(7_200_000));
        assert_eq!(read("0"), Some(0));
        assert_eq!(read("soon"), None);
        assert_eq!(read("5 fortnights"), None);
    }

    #[test]
    fn options_are_searched_for_a_setting() {
        let options = "-c jit=off -c statement_timeout=5s --wal_sender_timeout=8s -cwork_mem=4MB";
        assert_eq!(
            option_value(options, "statement_timeout").as_deref(),
            Some("5s")
        );
        assert_eq!(
            option_value(options, "wal_sender_timeout").as_deref(),
            Some("8s")
        );
        assert_eq!(option_value(options, "work_mem").as_deref(), Some("4MB"));
        assert_eq!(option_value(options, "timeout"), None);
    }

    #[test]
    fn every_relay_connection_gets_a_statement_timeout_and_keepalives() {
        let settings =
            Settings::for_role("postgres://u@h/db", "outbox").unwrap_or_else(|e| panic!("{e}"));
        let options = settings.config.get_options().unwrap_or("");
        assert!(options.contains("statement_timeout=30000ms"), "{options}");
        assert!(options.contains("jit=off"), "{options}");
        assert_eq!(
            settings.stall,
            Some(DEFAULT_STATEMENT_TIMEOUT + ANSWER_MARGIN)
        );
        assert_eq!(settings.keepalive, Keepalive::default());
        assert_eq!(settings.connect_timeout, Duration::from_secs(10));
        // Migrations may run long: no limit unless the URL asks for one.
        let migrate =
            Settings::for_role("postgres://u@h/db", "migrate").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(migrate.stall, None);
    }

    #[test]
    fn the_url_overrides_the_timeouts() {
        let url = "postgres://u@h/db?connect_timeout=2&keepalives_idle=4&keepalives_interval=1&keepalives_retries=2&tcp_user_timeout=6&options=-c%20statement_timeout%3D3s";
        let settings = Settings::for_role(url, "outbox").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.stall, Some(Duration::from_secs(3) + ANSWER_MARGIN));
        assert_eq!(settings.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            settings.keepalive,
            Keepalive {
                idle: Duration::from_secs(4),
                interval: Duration::from_secs(1),
                retries: 2,
                user_timeout: Duration::from_secs(6),
            }
        );
        let options = settings.config.get_options().unwrap_or("");
        assert_eq!(options.matches("statement_timeout").count(), 1, "{options}");
        let bad = Settings::for_role(
            "postgres://u@h/db?options=-c%20statement_timeout%3Dsoon",
            "x",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(bad.contains("statement_timeout 'soon'"), "{bad}");
    }

    #[test]
    fn waiting_helps_only_where_the_server_is_away() {
        let unreachable = DbError::Unreachable {
            host: "h:5432".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(unreachable.is_transient());
        assert!(!DbError::BadTlsParameter("x".into()).is_transient());
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

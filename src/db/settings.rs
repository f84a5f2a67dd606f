//! The settings of one connection, parsed once from its URL: the timeouts
//! and keepalives walhook adds where the URL sets none, the statement
//! timeout that bounds every answer, and JIT turned off.

use std::time::Duration;

use tokio_postgres::Config;

use super::{parse_url_tls, DbError, TlsSettings};
use crate::socket::Keepalive;

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
    /// The driver's configuration: the URL without `sslmode`/`sslrootcert`,
    /// with `application_name`, the statement timeout and `jit=off` added.
    pub config: Config,
    /// How much TLS the connection insists on, and which roots it trusts.
    pub tls: TlsSettings,
    /// How long opening the socket and the handshake may take, each.
    pub connect_timeout: Duration,
    /// The socket's TCP keepalives and user timeout.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

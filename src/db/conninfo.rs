//! Reading a connection string (`postgres://` URL or libpq's key=value
//! form) into the driver's configuration and the TLS settings walhook
//! enforces itself: tokio-postgres understands only
//! `sslmode=disable|prefer|require` and rejects `sslrootcert`, so those two
//! parameters are taken out here.

use tokio_postgres::Config;

use super::{DbError, RootCerts, SslMode, TlsSettings};

/// Parses a `postgres://` URL or key=value connection string into the
/// driver's configuration (without the TLS parameters, see
/// [`parse_url_tls`]). A URL of another database is refused by name.
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
    fn unknown_sslmode_is_named() {
        let err = take_tls_parameters("postgres://h/db?sslmode=always")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode 'always'"), "{err}");
    }
}

//! TLS for database connections, as libpq's `sslmode` and `sslrootcert`
//! define it: `require` encrypts without checking the certificate, as libpq
//! does; `verify-ca` checks the chain; `verify-full` the chain and the host
//! name. tokio-postgres knows only whether TLS is optional, so the checking
//! is done here, in the rustls configuration.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::DbError;

/// How much TLS a connection insists on (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
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
    pub(super) fn parse(text: &str) -> Result<SslMode, DbError> {
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
    pub(super) fn for_driver(self) -> &'static str {
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
    /// `sslmode`; `prefer` when the URL names none.
    pub mode: SslMode,
    /// `sslrootcert`; only read when the chain is checked.
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

#[cfg(test)]
mod tests {
    use super::*;

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

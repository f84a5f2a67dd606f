//! `walhook healthcheck`: asks the admin server of a relay in this host (or
//! container) for `/healthz`, so a container health check needs no curl or
//! wget in the image.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};

/// How long the probe waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Succeeds when `GET /healthz` on `listen` answers 200. An unspecified
/// address (`0.0.0.0`, `::`) is asked on loopback.
pub async fn probe(listen: SocketAddr) -> anyhow::Result<()> {
    let url = healthz_url(listen);
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("no answer from {url}; is walhook run up?"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    println!("{url}: {status} {body}");
    Ok(())
}

fn healthz_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let url = |text: &str| healthz_url(text.parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(url("0.0.0.0:9750"), "http://127.0.0.1:9750/healthz");
        assert_eq!(url("[::]:9750"), "http://[::1]:9750/healthz");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80/healthz");
    }
}

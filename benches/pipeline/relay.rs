//! The relay under test: the `walhook run` binary, its memory sampled
//! while it runs.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// A running `walhook run`.
pub struct RelayProcess {
    child: Child,
    config: std::path::PathBuf,
    peak_rss_kb: Arc<AtomicU64>,
    stop_sampling: CancellationToken,
}

impl RelayProcess {
    /// `walhook run` against `db_url` with the slot `slot`, in `mode`;
    /// `BENCH_RELAY_CONFIG` adds TOML, `BENCH_RELAY_LOG` sets its log.
    pub fn start(db_url: &str, slot: &str, mode: &str) -> anyhow::Result<RelayProcess> {
        RelayProcess::start_with(db_url, slot, mode, "")
    }

    /// As [`RelayProcess::start`], with the phase's own settings `toml`
    /// on top of `BENCH_RELAY_CONFIG` (a key both set is the phase's).
    pub fn start_with(
        db_url: &str,
        slot: &str,
        mode: &str,
        toml: &str,
    ) -> anyhow::Result<RelayProcess> {
        // The slot is named after the database: slots are per server.
        let config = std::env::temp_dir().join(format!("{slot}.toml"));
        let mut settings = toml::Table::new();
        let mut capture = toml::Table::new();
        capture.insert("slot".into(), slot.into());
        settings.insert("capture".into(), capture.into());
        // BENCH_RELAY_CONFIG: more TOML for the relay, to compare settings.
        let extra = std::env::var("BENCH_RELAY_CONFIG").unwrap_or_default();
        for layer in [extra.replace("\\n", "\n").as_str(), toml] {
            let layer: toml::Table = layer
                .parse()
                .with_context(|| format!("relay settings are no TOML: {layer}"))?;
            merge(&mut settings, layer);
        }
        std::fs::write(&config, settings.to_string())?;
        let log = std::env::var("BENCH_RELAY_LOG").unwrap_or_else(|_| "walhook=warn".into());
        let child = Command::new(env!("CARGO_BIN_EXE_walhook"))
            .args([
                "run",
                "--mode",
                mode,
                "--admin-listen",
                "127.0.0.1:0",
                "--allow-private-targets",
            ])
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", db_url)
            .env("WALHOOK_LOG", log)
            .env_remove("WALHOOK_CONFIG")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start walhook run")?;
        let peak = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (pid, sample_peak, sample_stop) = (child.id(), peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !sample_stop.is_cancelled() {
                if let Some(kb) = rss_kb(pid) {
                    sample_peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(RelayProcess {
            child,
            config,
            peak_rss_kb: peak,
            stop_sampling: stop,
        })
    }

    /// Peak resident memory so far, in MB.
    fn peak_rss_mb(&self) -> f64 {
        let hwm = hwm_kb(self.child.id())
            .unwrap_or(0)
            .max(self.peak_rss_kb.load(Ordering::Relaxed));
        hwm as f64 / 1024.0
    }

    /// SIGTERM, waits for the exit; the peak resident memory in MB.
    pub fn stop(mut self) -> f64 {
        let peak = self.peak_rss_mb();
        self.stop_sampling.cancel();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        peak
    }
}

/// `layer`'s keys into `base`, table by table.
fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(more)) => merge(inner, more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:")
}

fn hwm_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM:")
}

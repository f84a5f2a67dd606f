//! The relay under test: in this process (`Relay`, through
//! `walhook::relay::run`) or as the `walhook run` binary (`RelayProcess`),
//! with settings fit for tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use walhook::config::{CaptureMode, Config};

/// A relay running in this process.
pub struct Relay {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Relay {
    /// Starts `walhook run` in-process against `url`, with private targets
    /// allowed, a short retry schedule and an ephemeral admin port.
    pub fn start(url: &str, mode: CaptureMode) -> Relay {
        Relay::start_with(test_config(url, mode))
    }

    pub fn start_with(config: Config) -> Relay {
        // RUST_LOG=walhook=debug shows the relay's logs in a test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(walhook::relay::run(config, shutdown.clone()));
        Relay { shutdown, task }
    }

    /// Shuts down and waits for the drain; panics if the relay failed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("relay drains within 30 s")
            .expect("relay task did not panic");
        result.expect("relay stopped cleanly");
    }
}

pub fn test_config(url: &str, mode: CaptureMode) -> Config {
    let mut config = Config {
        database_url: Some(url.to_owned()),
        ..Default::default()
    };
    config.capture.mode = mode;
    config.capture.poll_interval = Duration::from_millis(200);
    config.delivery.allow_private_targets = true;
    config.delivery.retry_schedule = "0s,200ms,200ms".parse().expect("schedule");
    config.delivery.timeout = Duration::from_secs(5);
    config.admin.listen = "127.0.0.1:0".parse().expect("address");
    config.capture.slot = slot_for(url);
    config
}

/// Replication slots are per server: each test database gets its own.
pub fn slot_for(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .unwrap_or_else(|_| "walhook".into())
}

/// A `walhook run` process, killed when the test ends however it ends.
pub struct RelayProcess(pub std::process::Child, std::path::PathBuf);

impl RelayProcess {
    /// Starts the binary against `url` in `mode`, private targets allowed.
    pub fn spawn(url: &str, mode: CaptureMode) -> RelayProcess {
        let slot = slot_for(url);
        let config = std::env::temp_dir().join(format!("walhook-{slot}.toml"));
        // A short lease: claims of a killed relay are taken over quickly.
        let text =
            format!("[capture]\nslot = \"{slot}\"\n[delivery]\ntimeout = \"2s\"\nlease = \"4s\"\n");
        std::fs::write(&config, text).expect("write test config");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"));
        command
            .args([
                "run",
                "--mode",
                mode.as_str(),
                "--admin-listen",
                "127.0.0.1:0",
                "--allow-private-targets",
            ])
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", url)
            .env_remove("WALHOOK_CONFIG")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // TEST_RELAY_LOGS=<dir> keeps each relay's debug log there.
        if let Ok(dir) = std::env::var("TEST_RELAY_LOGS") {
            static SPAWNED: AtomicU64 = AtomicU64::new(0);
            let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
            if let Ok(file) = std::fs::File::create(format!("{dir}/{slot}-{n}.log")) {
                command.env("WALHOOK_LOG", "walhook=debug").stderr(file);
            }
        }
        RelayProcess(command.spawn().expect("walhook run starts"), config)
    }

    pub fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then the exit status (None if it did not exit in time).
    pub fn sigterm(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

//! The benchmark's command line.

use anyhow::{bail, Context};

/// What to run and how much.
#[derive(Debug, Clone)]
pub struct Options {
    pub changes: usize,
    pub rate: usize,
    pub latency_seconds: u64,
    pub backlog: usize,
    /// Inserts in the fresh-database burst and in each burst through pruning.
    pub burst: usize,
    /// Seconds the last burst through pruning waits, at most, for
    /// autovacuum to analyze the emptied outbox (a quiet spell).
    pub quiet_spell: u64,
    pub server_url: String,
    /// Only these phases (by the names in `phases::PHASES`); all when empty.
    pub phases: Vec<String>,
}

impl Options {
    /// The command line: `--quick`, `--changes N`, ..., `--only PHASES`.
    pub fn parse() -> anyhow::Result<Options> {
        let mut options = Options {
            changes: 60_000,
            rate: 1_000,
            latency_seconds: 10,
            backlog: 200_000,
            burst: 20_000,
            quiet_spell: 75,
            server_url: std::env::var("BENCH_DATABASE_URL")
                .or_else(|_| std::env::var("TEST_DATABASE_URL"))
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            phases: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> anyhow::Result<usize> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{name} takes a whole number"))
            };
            match arg.as_str() {
                "--quick" => {
                    options.changes = 2_000;
                    options.rate = 500;
                    options.latency_seconds = 2;
                    options.backlog = 2_000;
                    options.burst = 2_000;
                    options.quiet_spell = 0;
                }
                "--changes" => options.changes = number("--changes")?,
                "--rate" => options.rate = number("--rate")?,
                "--latency-seconds" => {
                    options.latency_seconds = number("--latency-seconds")? as u64
                }
                "--backlog" => options.backlog = number("--backlog")?,
                "--burst" => options.burst = number("--burst")?,
                "--quiet-spell" => options.quiet_spell = number("--quiet-spell")? as u64,
                "--only" => {
                    let list = args
                        .next()
                        .context("--only takes phases, e.g. throughput,latency")?;
                    options.phases = list.split(',').map(str::to_owned).collect();
                }
                "--bench" => {}
                // A test runner asking what is in here: no tests.
                "--list" => std::process::exit(0),
                other if other.starts_with("--") => {
                    bail!("unknown option {other}; use --quick, --changes N, --rate N, --latency-seconds N, --backlog N, --burst N, --quiet-spell SECONDS, --only PHASES")
                }
                _ => {}
            }
        }
        Ok(options)
    }

    /// Whether the phase called `name` runs (every phase, without `--only`).
    pub fn runs(&self, name: &str) -> bool {
        self.phases.is_empty() || self.phases.iter().any(|p| p == name)
    }
}

//! The benchmark's phases, in the order they run. A phase is a file here
//! with `pub async fn run(bench: &mut Bench) -> anyhow::Result<()>` that
//! pushes its figures onto `bench.figures`, plus its line in the list
//! below (its name is what `--only` selects).

use std::future::Future;
use std::pin::Pin;

use crate::bench::Bench;

mod burst;

/// A phase's run, borrowing the bench while it runs.
pub type Running<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One phase: its `--only` name and what it runs.
pub struct Phase {
    pub name: &'static str,
    pub run: for<'a> fn(&'a mut Bench) -> Running<'a>,
}

/// Declares each phase's module and lists it in [`PHASES`].
macro_rules! phases {
    ($($name:literal => $module:ident,)*) => {
        $(mod $module;)*

        /// Every phase, in running order.
        pub const PHASES: &[Phase] = &[
            $(Phase { name: $name, run: |bench| Box::pin($module::run(bench)) },)*
        ];
    };
}

phases! {
    "write-cost" => write_cost,
    "throughput" => throughput,
    "durable-limit" => durable_limit,
    "latency" => latency,
    "backlog" => backlog,
    "fresh-burst" => fresh_burst,
    "prune-churn" => prune_churn,
    "filtered" => filtered,
}

//! `walhook demo`.
use tokio_util::sync::CancellationToken;
pub async fn run(
    _config: crate::config::Config,
    _shutdown: CancellationToken,
    _exit_after: Option<usize>,
) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}

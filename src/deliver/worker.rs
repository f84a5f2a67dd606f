//! The claim loop of a relay: claim due deliveries as the limits leave
//! room, group them into requests, dispatch those, and sleep until there
//! is more to do. Beside it run the recorder, the lease renewer, the
//! listener, the statistics check and the pruner. On shutdown it stops
//! claiming, waits for the requests already sent and their results, and
//! gives back whatever it still holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::claim::{Claimer, HeldClaims, MAX_IDLE};
use super::error::DeliverError;
use super::http::Sender;
use super::limits::Limits;
use super::record::{self, Finished};
use super::request::{group_into_requests, Dispatch};
use super::{lease, listen, prune, statistics};
use crate::config::DeliveryConfig;
use crate::health::StageHealth;

/// Once the requests in flight at shutdown are done (or this long past the
/// delivery timeout), the rest is released.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a claim waits for more requests to end.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

/// The delivery engine of one relay process.
pub struct Deliverer {
    url: String,
    config: DeliveryConfig,
    wake: Arc<Notify>,
    sender: Sender,
    claimer: Claimer,
    health: Arc<StageHealth>,
}

/// What the claim loop works with while it runs.
struct Running {
    held: Arc<HeldClaims>,
    limits: Arc<Limits>,
    /// Told when a request ends, results are recorded, or a notification
    /// says deliveries were written: look for work.
    kick: Arc<Notify>,
    dispatch: Dispatch,
    requests: JoinSet<()>,
}

/// The tasks that run beside the claim loop.
struct Helpers {
    recorder: JoinHandle<()>,
    renewer: JoinHandle<()>,
    /// Stops the renewer, once every claim is recorded or released.
    renewing: CancellationToken,
    listener: JoinHandle<()>,
    statistics: JoinHandle<()>,
    pruner: JoinHandle<()>,
    /// Stops the listener, the statistics check and the pruner.
    background: CancellationToken,
}

impl Deliverer {
    /// Connects to the database and prepares the HTTP client. Fails when
    /// the database cannot be reached now or the HTTP client cannot be
    /// built; later outages are ridden out. `wake` is notified by whatever
    /// writes deliveries in this process.
    pub async fn new(
        database_url: &str,
        config: DeliveryConfig,
        wake: Arc<Notify>,
    ) -> Result<Deliverer, DeliverError> {
        let sender = Sender::new(&config)?;
        let claimer = Claimer::connect(database_url, config.clone()).await?;
        Ok(Deliverer {
            url: database_url.to_owned(),
            config,
            wake,
            sender,
            claimer,
            health: Arc::default(),
        })
    }

    /// Claims that fail (and succeed again) are reported to `health`.
    pub fn reporting_to(mut self, health: Arc<StageHealth>) -> Deliverer {
        self.health = health;
        self
    }

    /// Runs until `shutdown` fires, then stops claiming, lets in-flight
    /// requests finish (bounded by the delivery timeout), records them,
    /// releases any claims it still holds (state back to `pending`), and
    /// returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DeliverError> {
        let (mut running, finished) = self.running(&shutdown);
        let helpers = Helpers::start(&self.url, &self.config, &running, finished);
        info!(
            max_in_flight = self.config.max_in_flight,
            "delivery started"
        );
        while !shutdown.is_cancelled() {
            if let Some(idle) = self.claim_round(&mut running, &shutdown).await {
                self.wait_for_work(&running.kick, idle, &shutdown).await;
            }
        }
        self.stop(running, helpers).await;
        Ok(())
    }

    /// The loop's state, and the receiving end of its results.
    fn running(
        &self,
        shutdown: &CancellationToken,
    ) -> (Running, mpsc::UnboundedReceiver<Finished>) {
        let limits = Arc::new(Limits::new(self.config.max_in_flight));
        let kick = Arc::new(Notify::new());
        let (results, finished) = mpsc::unbounded_channel::<Finished>();
        let dispatch = Dispatch::new(
            self.sender.clone(),
            limits.clone(),
            results,
            kick.clone(),
            shutdown.clone(),
        );
        let running = Running {
            held: Arc::default(),
            limits,
            kick,
            dispatch,
            requests: JoinSet::new(),
        };
        (running, finished)
    }

    /// One turn of the loop: claims what the limits leave room for and
    /// dispatches its requests. Returns how long to wait for more work at
    /// most, or `None` to claim again at once (the claim was full and room
    /// is left, or a failure was recovered from).
    async fn claim_round(
        &mut self,
        running: &mut Running,
        shutdown: &CancellationToken,
    ) -> Option<Duration> {
        while running.requests.try_join_next().is_some() {}
        let room = running.limits.room(self.config.claim_batch);
        if room == 0 {
            return Some(MAX_IDLE);
        }
        let claimed = match self
            .claimer
            .claim(&running.held, &running.limits, room)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%error, "claiming deliveries failed");
                self.health.failing(&error);
                self.claimer.recover(shutdown).await;
                return None;
            }
        };
        self.health.ok();
        let busy_with_more = claimed.len() >= room;
        for request in group_into_requests(claimed) {
            running.dispatch.spawn(&mut running.requests, request);
        }
        if busy_with_more && running.limits.free_places() > 0 {
            return None;
        }
        Some(self.claimer.until_next_due().await)
    }

    /// Sleeps until told there is work, or at most `idle`.
    async fn wait_for_work(&self, kick: &Notify, idle: Duration, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.wake.notified() => {}
            _ = kick.notified() => {
                // Requests end one by one; claiming after a moment fills
                // the room they left in one statement.
                tokio::time::sleep(CLAIM_LINGER).await;
            }
            _ = tokio::time::sleep(idle) => {}
        }
    }

    /// The shutdown: the requests in flight finish and their results are
    /// recorded (each within the delivery timeout and a grace period), the
    /// claims still held are released, and every helper task has ended.
    async fn stop(mut self, running: Running, mut helpers: Helpers) {
        let Running {
            held,
            dispatch,
            mut requests,
            ..
        } = running;
        info!(
            in_flight = requests.len(),
            "delivery stopping: finishing requests in flight"
        );
        helpers.background.cancel();
        let within = self.config.timeout + SHUTDOWN_GRACE;
        drain(&mut requests, within).await;
        // The last sender of results: the recorder ends once it has
        // written what the drained requests left.
        drop(dispatch);
        helpers.finish_recording(within).await;
        let released = self.claimer.release(&held).await;
        helpers.join().await;
        info!(released, "delivery stopped");
    }
}

/// Waits up to `within` for the requests to end, then abandons the rest
/// (their claims are released).
async fn drain(requests: &mut JoinSet<()>, within: Duration) {
    let drained = tokio::time::timeout(within, async {
        while requests.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = requests.len(),
            "requests still running at shutdown were abandoned"
        );
        requests.abort_all();
    }
}

impl Helpers {
    /// Starts the helper tasks of `running`; the recorder takes the
    /// results from `finished`.
    fn start(
        url: &str,
        config: &DeliveryConfig,
        running: &Running,
        finished: mpsc::UnboundedReceiver<Finished>,
    ) -> Helpers {
        let background = CancellationToken::new();
        let renewing = CancellationToken::new();
        Helpers {
            recorder: tokio::spawn(record::run(
                url.to_owned(),
                config.clone(),
                running.held.clone(),
                running.kick.clone(),
                finished,
            )),
            listener: tokio::spawn(listen::run(
                url.to_owned(),
                running.kick.clone(),
                background.clone(),
            )),
            renewer: tokio::spawn(lease::run(
                url.to_owned(),
                config.lease,
                running.held.clone(),
                renewing.clone(),
            )),
            statistics: tokio::spawn(statistics::run(url.to_owned(), background.clone())),
            pruner: tokio::spawn(prune::run(
                url.to_owned(),
                config.clone(),
                background.clone(),
            )),
            renewing,
            background,
        }
    }

    /// Waits up to `within` for the recorder to write the last results;
    /// past that their claims are released instead.
    async fn finish_recording(&mut self, within: Duration) {
        if tokio::time::timeout(within, &mut self.recorder)
            .await
            .is_err()
        {
            warn!("recording the last results took too long; their claims are released instead");
            self.recorder.abort();
        }
    }

    /// Stops the renewer and waits for every helper to end.
    async fn join(self) {
        self.renewing.cancel();
        let _ = self.renewer.await;
        let _ = self.listener.await;
        let _ = self.pruner.await;
        let _ = self.statistics.await;
    }
}

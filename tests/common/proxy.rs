//! A TCP proxy between the relay and Postgres that can blackhole every
//! connection: stop forwarding while keeping the sockets open, the way a
//! dropped route, an expired NAT entry or a load balancer failing over
//! looks to both ends.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    blackhole: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (blackhole, _) = watch::channel(false);
        let blackhole = Arc::new(blackhole);
        let stop = CancellationToken::new();
        let (accepting, stopping) = (blackhole.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stopping.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                tokio::spawn(serve(
                    client,
                    upstream,
                    accepting.subscribe(),
                    stopping.clone(),
                ));
            }
        });
        Proxy {
            addr,
            blackhole,
            stop,
        }
    }

    /// From now on nothing is forwarded, on open connections or new ones;
    /// every socket stays open.
    pub fn blackhole(&self) {
        self.blackhole.send_replace(true);
    }

    /// New connections are forwarded again. The connections caught in the
    /// blackhole stay dead: their server side is closed (as Postgres does
    /// after its own timeouts), their client side stays open and silent,
    /// so the client has to notice by itself.
    pub fn restore(&self) {
        self.blackhole.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut blackhole: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    if *blackhole.borrow_and_update() {
        // Accepted, never answered: held until the proxy goes.
        stop.cancelled().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = blackhole.wait_for(|on| *on) => {}
        _ = stop.cancelled() => return,
    }
    tokio::select! {
        _ = blackhole.wait_for(|on| !*on) => {}
        _ = stop.cancelled() => return,
    }
    drop(server);
    stop.cancelled().await;
    drop(client);
}

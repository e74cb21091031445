//! A loopback TCP proxy in front of a server (MariaDB) that can pass, refuse, cut or
//! black-hole connections, for the network faults a publisher meets in production.
//!
//! Every task it spawns is owned: connection tasks live in a `JoinSet` owned by the accept
//! task, which the proxy owns; [`TcpProxy::stop`] (or drop) aborts the accept task, and with
//! it every connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways.
    Pass,
    /// Close every new connection at once (the server looks down). Existing connections are
    /// left as they are; [`TcpProxy::cut_all`] ends them.
    Refuse,
    /// Keep every socket open (new ones are accepted) but forward no byte in either
    /// direction: a network path that silently drops packets. Bytes already read are held
    /// and forwarded when the mode goes back to `Pass`, as TCP retransmission would.
    BlackHole,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    /// Bumped by `cut_all`: connections opened before the bump are reset.
    cuts: watch::Sender<u64>,
}

pub struct TcpProxy {
    /// The port clients connect to (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            mode: watch::channel(ProxyMode::Pass).0,
            cuts: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        TcpProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.send_replace(mode);
    }

    /// Resets (RST) every connection open now; later connections are not affected.
    pub fn cut_all(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Stops listening and closes every connection; waits until all of its tasks ended.
    pub async fn stop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropped with this task (on stop/abort), which aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow with every one.
        while conns.try_join_next().is_some() {}
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *shared.mode.borrow() == ProxyMode::Refuse {
            // Reset rather than a clean close: what a client of a dead server sees.
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        conns.spawn(connection(client, shared.clone()));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let _ = client.set_nodelay(true);
    // While black-holed the upstream connect is held back too: a SYN that gets no answer.
    let mut mode = shared.mode.subscribe();
    let upstream = tokio::select! {
        _ = cuts.changed() => return reset(client),
        r = async {
            wait_for_pass(&mut mode).await;
            TcpStream::connect(shared.upstream).await
        } => r,
    };
    let Ok(upstream) = upstream else {
        return reset(client);
    };
    let _ = upstream.set_nodelay(true);
    let _ = upstream.set_zero_linger();
    let _ = client.set_zero_linger();
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    // Both directions in this one task: aborting it drops all four halves.
    let up = pump(cr, uw, shared.mode.subscribe());
    let down = pump(ur, cw, shared.mode.subscribe());
    tokio::select! {
        _ = cuts.changed() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
    // Halves dropped here with SO_LINGER 0: both peers see a reset.
}

fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

async fn wait_for_pass(mode: &mut watch::Receiver<ProxyMode>) {
    // Only an error when the proxy is gone, and then this task is being aborted anyway.
    let _ = mode.wait_for(|m| *m != ProxyMode::BlackHole).await;
}

/// Copies one direction, holding bytes while the mode is `BlackHole`. Ends at EOF or an
/// error of either side (then shuts the writer down so the other side sees the close).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_for_pass(&mut mode).await;
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Stop reading as soon as the path goes dark.
            _ = mode.wait_for(|m| *m == ProxyMode::BlackHole) => continue,
        };
        wait_for_pass(&mut mode).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> (u16, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut set = JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                set.spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (port, task)
    }

    async fn roundtrip(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        s.write_all(b"ping").await.ok()?;
        let mut b = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut b)).await {
            Ok(Ok(_)) => Some(b.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_refuses_cuts_and_black_holes() {
        let (port, server) = echo_server().await;
        let mut proxy = TcpProxy::start(port).await;
        let addr = ("127.0.0.1", proxy.port);
        let mut a = TcpStream::connect(addr).await.expect("connect");
        let short = Duration::from_millis(300);
        assert_eq!(
            roundtrip(&mut a, short).await.as_deref(),
            Some(&b"ping"[..])
        );

        // Black hole: nothing comes back, the socket stays open; bytes flow again after.
        proxy.set_mode(ProxyMode::BlackHole);
        assert_eq!(roundtrip(&mut a, short).await, None);
        proxy.set_mode(ProxyMode::Pass);
        let mut b = [0u8; 4];
        tokio::time::timeout(short, a.read_exact(&mut b))
            .await
            .expect("held bytes forwarded")
            .expect("read");
        assert_eq!(&b, b"ping");

        // Refuse: new connections are closed at once, existing ones keep working.
        proxy.set_mode(ProxyMode::Refuse);
        let mut r = TcpStream::connect(addr).await.expect("tcp accept");
        let mut one = [0u8; 1];
        let closed = tokio::time::timeout(short, r.read(&mut one)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert!(roundtrip(&mut a, short).await.is_some());

        // Cut: existing connections are reset.
        proxy.set_mode(ProxyMode::Pass);
        proxy.cut_all();
        let cut = tokio::time::timeout(short, a.read(&mut one)).await;
        assert!(matches!(cut, Ok(Ok(0)) | Ok(Err(_))), "{cut:?}");
        let mut c = TcpStream::connect(addr).await.expect("connect after cut");
        assert!(roundtrip(&mut c, short).await.is_some());

        proxy.stop().await;
        let gone = tokio::time::timeout(short, c.read(&mut one)).await;
        assert!(matches!(gone, Ok(Ok(0)) | Ok(Err(_))), "{gone:?}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
        server.abort();
    }
}

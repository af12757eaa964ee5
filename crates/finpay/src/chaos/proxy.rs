//! A small TCP fault proxy after Toxiproxy: it listens on 127.0.0.1, forwards every connection to
//! one upstream port, and applies one switchable toxic to the bytes on their way.
//!
//! Why not netem: this kernel has none, and the harness must not need root. Why not a crate: the
//! three toxics the scenarios need (latency, reset_peer, a blackhole) are a few dozen lines over
//! tokio, and owning them keeps their exact semantics in view:
//!
//! - `Latency { ms }`: every chunk from the upstream waits `ms` before it goes to the client
//!   (Toxiproxy's `latency` toxic on the downstream stream).
//! - `Reset`: a new connection is accepted and reset at once; an open one is reset (RST, via
//!   `SO_LINGER` 0) on its next chunk in either direction (`reset_peer`).
//! - `Blackhole`: chunks are read and dropped; nothing is answered and nothing is closed, so the
//!   client's own timeouts must notice (`timeout` with `timeout=0`).
//!
//! Toxics are checked per chunk, so switching one applies to open connections too, as it does in
//! Toxiproxy.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::schedule::Toxic;

/// Most connections one proxy holds open at once; more wait in the accept backlog.
pub const CONNECTIONS_MAX: usize = 1024;
/// Bound on connecting to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CHUNK_BYTES: usize = 16 * 1024;

/// One listening proxy. Dropping it stops accepting; open connections end with their peers.
pub struct FaultProxy {
    port: u16,
    toxic: Arc<RwLock<Toxic>>,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

/// What a proxy saw: evidence that traffic went through it and that its toxics bit.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// Connections reset, chunks swallowed or delayed by a toxic.
    pub toxic_hits: AtomicU64,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .context("bind fault proxy on 127.0.0.1:0")?;
        let port = listener.local_addr().context("proxy address")?.port();
        let toxic = Arc::new(RwLock::new(Toxic::None));
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
        let stats = Arc::new(Stats::default());
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            toxic.clone(),
            stats.clone(),
        ));
        Ok(FaultProxy {
            port,
            toxic,
            stats,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, toxic: Toxic) {
        *self.toxic.write().unwrap_or_else(PoisonError::into_inner) = toxic;
    }

    pub fn toxic(&self) -> Toxic {
        current(&self.toxic)
    }

    /// (connections accepted, toxic hits) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.connections.load(Ordering::Relaxed),
            self.stats.toxic_hits.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn current(toxic: &RwLock<Toxic>) -> Toxic {
    *toxic.read().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    toxic: Arc<RwLock<Toxic>>,
    stats: Arc<Stats>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (toxic, stats) = (toxic.clone(), stats.clone());
        tokio::spawn(async move {
            connection(client, upstream, &toxic, &stats).await;
            drop(permit);
        });
    }
}

/// Why a pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    toxic: &RwLock<Toxic>,
    stats: &Stats,
) {
    let _ = client.set_nodelay(true);
    if current(toxic) == Toxic::Reset {
        stats.toxic_hits.fetch_add(1, Ordering::Relaxed);
        reset(&client);
        return;
    }
    let mut up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        // The replica is down: the client sees what it would see without the proxy, a refusal.
        _ => {
            reset(&client);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let end = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = up.split();
        tokio::select! {
            e = pump(&mut cr, &mut uw, toxic, stats, false) => e,
            e = pump(&mut ur, &mut cw, toxic, stats, true) => e,
        }
    };
    if end == End::Reset {
        reset(&client);
        reset(&up);
    }
}

/// Sets `SO_LINGER` 0, so the close that follows is an RST rather than a FIN.
fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

/// Copies chunks from `from` to `to` under the current toxic until either side closes.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    toxic: &RwLock<Toxic>,
    stats: &Stats,
    downstream: bool,
) -> End
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        let t = current(toxic);
        if t != Toxic::None && (downstream || !matches!(t, Toxic::Latency { .. })) {
            stats.toxic_hits.fetch_add(1, Ordering::Relaxed);
        }
        match t {
            Toxic::Reset => return End::Reset,
            Toxic::Blackhole => continue,
            Toxic::Latency { ms } if downstream => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                // The toxic may have changed while this chunk waited.
                match current(toxic) {
                    Toxic::Reset => return End::Reset,
                    Toxic::Blackhole => continue,
                    _ => {}
                }
            }
            Toxic::Latency { .. } | Toxic::None => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return End::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every chunk back.
    async fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for _ in 0..100 {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    for _ in 0..1000 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        port
    }

    async fn roundtrip(port: u16, timeout: Duration) -> Result<Vec<u8>, String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(timeout, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Ok(buf.to_vec()),
            Ok(Err(e)) => Err(e.kind().to_string()),
            Err(_) => Err("timeout".into()),
        }
    }

    #[tokio::test]
    async fn proxy_forwards_and_applies_each_toxic() {
        let upstream = echo_server().await;
        let proxy = FaultProxy::start(upstream).await.expect("proxy");
        let long = Duration::from_secs(5);
        assert_eq!(roundtrip(proxy.port(), long).await, Ok(b"ping".to_vec()));

        proxy.set(Toxic::Blackhole);
        assert_eq!(
            roundtrip(proxy.port(), Duration::from_millis(200)).await,
            Err("timeout".into())
        );

        proxy.set(Toxic::Reset);
        let reset = roundtrip(proxy.port(), long).await;
        assert!(reset.is_err(), "{reset:?}");
        assert_ne!(reset, Err("timeout".into()));

        proxy.set(Toxic::Latency { ms: 50 });
        let started = tokio::time::Instant::now();
        assert_eq!(roundtrip(proxy.port(), long).await, Ok(b"ping".to_vec()));
        assert!(started.elapsed() >= Duration::from_millis(50));

        proxy.set(Toxic::None);
        assert_eq!(proxy.toxic(), Toxic::None);
        assert_eq!(roundtrip(proxy.port(), long).await, Ok(b"ping".to_vec()));
        let (connections, hits) = proxy.stats();
        assert_eq!(connections, 5);
        assert!(hits >= 3, "{hits}");
    }
}

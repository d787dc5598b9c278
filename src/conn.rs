//! Connections: the accept loop both listeners share ([`accept_loop`]; plain HTTP here,
//! HTTPS in `tls::listener`), and what it applies to every connection
//! (docs/operations.md "HTTP limits"):
//! - at most `limits.max_connections` open connections, and at most
//!   `limits.max_connections_per_source` from one source address (IPv6: per /64;
//!   trusted proxies exempt); a connection over either cap is closed at once;
//! - `limits.header_read_timeout` for a request's headers (hyper's timer, which on
//!   HTTP/1.1 also starts while a keep-alive connection waits for its next request);
//! - `limits.idle_timeout`: a connection that moves no byte either way for that long is
//!   closed;
//! - `limits.request_timeout` per request ([`request_timeout`] middleware: 503).
//!
//! A slowloris client (many connections trickling header bytes) therefore holds at most
//! its per-source share of connections, each for at most the header timeout, and never a
//! hardware session or a worker thread.

use crate::limits::{LimitsConfig, SourceKey, TrustedProxies};
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// How long shutdown waits for open connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket peer of a request, set by keygate's listeners.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Open-connection caps, global and per source.
pub struct ConnLimits {
    max: usize,
    per_source: usize,
    trusted: TrustedProxies,
    open: Mutex<(usize, HashMap<SourceKey, usize>)>,
}

/// One admitted connection; gives its slot back when dropped.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    source: Option<SourceKey>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.limits.open.lock() {
            open.0 = open.0.saturating_sub(1);
            if let Some(s) = &self.source {
                if let Some(n) = open.1.get_mut(s) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        open.1.remove(s);
                    }
                }
            }
            metrics::gauge!("keygate_http_connections_open").set(open.0 as f64);
        }
    }
}

impl ConnLimits {
    pub fn new(c: &LimitsConfig) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max: c.max_connections,
            per_source: c.max_connections_per_source,
            trusted: TrustedProxies::parse(&c.trusted_proxies).unwrap_or_default(),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Admits a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let source = (!self.trusted.contains(ip)).then(|| SourceKey::of(ip));
        let mut open = self.open.lock().ok()?;
        if open.0 >= self.max {
            metrics::counter!("keygate_http_connections_refused_total", "cap" => "global")
                .increment(1);
            return None;
        }
        if let Some(s) = &source {
            let n = open.1.entry(*s).or_insert(0);
            if *n >= self.per_source {
                metrics::counter!("keygate_http_connections_refused_total", "cap" => "source")
                    .increment(1);
                return None;
            }
            *n += 1;
        }
        open.0 += 1;
        metrics::gauge!("keygate_http_connections_open").set(open.0 as f64);
        Some(ConnGuard {
            limits: self.clone(),
            source,
        })
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder with the configured header timeout.
pub fn builder(c: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(c.header_read_timeout.0);
    b.http2().timer(TokioTimer::new());
    b
}

/// An IO stream that records when it last moved a byte.
pub struct Idle<T> {
    inner: T,
    clock: Activity,
}

/// Milliseconds since `base` of a connection's last byte.
#[derive(Clone)]
pub struct Activity {
    base: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            let since = now.saturating_sub(self.last.load(Ordering::Relaxed));
            if since >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Idle<T> {
    pub fn new(inner: T, clock: Activity) -> Idle<T> {
        Idle { inner, clock }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves one connection until it ends, goes idle, or shutdown drains it.
pub async fn drive<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    svc: S,
    watcher: Watcher,
    activity: Activity,
    idle: Duration,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::select! {
        r = watcher.watch(conn.into_owned()) => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        () = activity.idle_for(idle) => {
            tracing::debug!(peer = %peer, "idle connection closed");
        }
    }
}

/// The accept loop both listeners share, until `shutdown` completes: an accept error
/// (out of file descriptors, say) backs off briefly instead of spinning, a connection over
/// a cap is closed at once, and each admitted one gets `TCP_NODELAY` and is handed, with
/// its slot and a shutdown watcher, to `on_conn`, which spawns its task. Then it stops
/// accepting, lets every open connection finish its in-flight requests, and waits for
/// them for at most [`DRAIN_TIMEOUT`].
pub async fn accept_loop<F>(
    listener: TcpListener,
    limits: &LimitsConfig,
    shutdown: impl Future<Output = ()>,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr, ConnGuard, Watcher),
{
    let graceful = GracefulShutdown::new();
    let conns = ConnLimits::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(guard) = conns.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        on_conn(tcp, peer, guard, graceful.watcher());
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {}s; stopping anyway", DRAIN_TIMEOUT.as_secs());
        }
    }
}

/// Serves `router` over plain HTTP on `listener` until `shutdown` completes.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: &LimitsConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(limits);
    let idle = limits.idle_timeout.0;
    accept_loop(listener, limits, shutdown, |tcp, peer, guard, watcher| {
        let (router, builder) = (router.clone(), builder.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let activity = Activity::new();
            let io = Idle::new(tcp, activity.clone());
            let svc = router.map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req
            });
            drive(&builder, io, svc, watcher, activity, idle, peer).await;
        });
    })
    .await;
}

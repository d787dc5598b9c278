//! The HTTPS accept loop. `axum::serve` speaks plain HTTP only, so this loop accepts TCP
//! connections, runs each TLS handshake in its own task under a timeout (a slow or
//! garbage handshake never holds the loop or another client), and serves the router over
//! hyper-util's HTTP/1.1 + HTTP/2 connection builder.
//!
//! Connection caps, header/idle timeouts and the peer address come from `crate::conn`
//! (docs/operations.md "HTTP limits"); a connection over a cap is closed before its
//! handshake, so it costs no hardware signature.
//!
//! Each connection uses the `ServerConfig` that was in force when it was accepted, so a
//! reload never touches open connections. The accept loop itself, with the caps and the
//! bounded drain on shutdown, is `crate::conn::accept_loop`, shared with plain HTTP.

use super::client_identity::{self, ClientCert};
use super::state::{Active, TlsState};
use crate::conn::{Activity, Idle, PeerAddr};
use crate::limits::LimitsConfig;
use axum::Router;
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Serves `router` over TLS on `listener` until `shutdown` completes (the accept loop
/// and the drain are `crate::conn::accept_loop`'s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Arc<TlsState>,
    limits: &LimitsConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = crate::conn::builder(limits);
    let idle = limits.idle_timeout.0;
    let handshake_timeout = tls.config().handshake_timeout.0;
    crate::conn::accept_loop(listener, limits, shutdown, |tcp, peer, guard, watcher| {
        let Some(active) = tls.active() else {
            tracing::error!("no TLS configuration is loaded; closing the connection");
            return;
        };
        let (router, builder) = (router.clone(), builder.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let activity = Activity::new();
            let tcp = Idle::new(tcp, activity.clone());
            let Some((stream, client)) = handshake(tcp, peer, &active, handshake_timeout).await
            else {
                return;
            };
            let svc = router.map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                if let Some(c) = &client {
                    req.extensions_mut().insert(c.clone());
                }
                // The peer address, as for the plain-HTTP listener (login throttling, audit).
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            });
            crate::conn::drive(&builder, stream, svc, watcher, activity, idle, peer).await;
        });
    })
    .await;
}

/// Runs the handshake; logs and returns `None` when it fails or takes too long.
async fn handshake(
    tcp: Idle<TcpStream>,
    peer: SocketAddr,
    active: &Active,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<Idle<TcpStream>>,
    Option<ClientCert>,
)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(active.config.clone());
    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log_handshake_error(peer, &e);
            return None;
        }
        Err(_) => {
            tracing::info!(peer = %peer, timeout_secs = timeout.as_secs(), "TLS handshake timed out");
            return None;
        }
    };
    let client = client_cert(&stream, active);
    if let Some(c) = &client {
        tracing::info!(peer = %peer, client_cert.subject = %c.names.subject,
            client_cert.serial = %c.names.serial, profile = %c.profile,
            "client certificate verified");
    }
    Some((stream, client))
}

/// The verified client certificate of a finished handshake, with the profile that
/// accepted it.
fn client_cert(
    stream: &tokio_rustls::server::TlsStream<Idle<TcpStream>>,
    active: &Active,
) -> Option<ClientCert> {
    let certs = stream.get_ref().1.peer_certificates()?;
    let (ee, intermediates) = certs.split_first()?;
    let names = client_identity::names(ee.as_ref())?;
    let profile = active
        .profiles
        .as_ref()
        .and_then(|set| set.identify(ee, intermediates));
    Some(ClientCert {
        profile: profile.map(|p| p.name.clone()).unwrap_or_default(),
        principal_match: profile.map(|p| p.principal_match).unwrap_or_default(),
        names,
    })
}

/// Certificate problems are logged at warn (an operator wants to see refused clients);
/// other failures (scanners, clients that hang up, wrong protocol) at info.
fn log_handshake_error(peer: SocketAddr, e: &std::io::Error) {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            err @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_)),
        ) => {
            tracing::warn!(peer = %peer, error = %err, "TLS handshake refused: client certificate");
        }
        Some(err) => tracing::info!(peer = %peer, error = %err, "TLS handshake failed"),
        None => tracing::info!(peer = %peer, error = %e, "TLS handshake failed"),
    }
}

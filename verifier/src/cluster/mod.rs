//! The cluster CA service and node introduction (join tokens, node
//! certificates, renewal, removal).
//!
//! - [`server`]: `marque ca serve`, a tokio + rustls (TLS 1.3) HTTP/1.1
//!   service: discovery (the root), join (token proof + CSR), renewal and
//!   node listing (mutual TLS with a node certificate), and admin routes
//!   (mutual TLS with an admin certificate).
//! - [`node`]: the node side: `marque node join`, `renew`, `status`.
//! - [`state`]: the CA's durable state (tokens and nodes).
//! - [`tls`]: the rustls configurations.
//!
//! The formats (tokens, identities, certificates) are in
//! `marque_keys::node`; see docs/node-trust.md for the flow and threats.

pub use hyper::Method;

pub mod client;
pub mod node;
pub mod server;
pub mod state;
pub mod tls;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Connecting, or the connection, failed.
    #[error("{addr}: {reason}")]
    Connect {
        /// The CA's address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The CA answered with an error.
    #[error("the CA refused: {message} (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The CA's reason.
        message: String,
    },
    /// The CA's root does not match the join token's pin.
    #[error(
        "the CA at {addr} presented a root certificate whose SHA-256 is {found}, but the join token pins {pinned}: refusing to trust it (wrong address, or someone in the middle)"
    )]
    PinMismatch {
        /// The CA's address.
        addr: String,
        /// The pin in the token.
        pinned: String,
        /// What the CA served.
        found: String,
    },
    /// Something malformed.
    #[error("{0}")]
    Protocol(String),
    /// Local state could not be read or written.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A key or certificate operation failed.
    #[error(transparent)]
    Key(#[from] marque_keys::Error),
    /// Local files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A cluster certificate (DER), parsed, and the cluster identity its
/// `spiffe://` URI SAN names.
pub(crate) fn cluster_certificate(
    der: &[u8],
) -> Result<
    (
        marque_keys::node::ClusterIdentity,
        marque_keys::certificate::SignerCertificate,
    ),
    ClusterError,
> {
    let cert = marque_keys::certificate::SignerCertificate::from_der(der.to_vec())?;
    let uri = cert
        .identities()
        .iter()
        .find(|u| u.starts_with("spiffe://"))
        .ok_or_else(|| ClusterError::Protocol("the certificate has no spiffe:// URI SAN".into()))?;
    Ok((marque_keys::node::ClusterIdentity::parse(uri)?, cert))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    crate::verify::unix_seconds(std::time::SystemTime::now())
}

/// The next connection on `listener`. Accept errors (out of file
/// descriptors, a connection reset before it was accepted) are logged and
/// retried after a pause, so a service never stops accepting.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
    service: &str,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!("{service}: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A stop signal for services: `true` once they must stop accepting and
/// finish what they are serving.
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Accepts connections on `listener` and runs `handle` on each until
/// `shutdown` turns true; then stops accepting and waits for the
/// connections in flight (each is told through its own `Shutdown` to
/// finish its current request and close).
pub(crate) async fn serve_until<F, Fut>(
    listener: tokio::net::TcpListener,
    service: &str,
    mut shutdown: Shutdown,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, Shutdown) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    while !*shutdown.borrow() {
        tokio::select! {
            (tcp, addr) = accept(&listener, service) => {
                connections.spawn(handle(tcp, addr, shutdown.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    drop(listener);
    tracing::info!(
        "{service}: stopped accepting; finishing {} connection(s)",
        connections.len()
    );
    while connections.join_next().await.is_some() {}
}

/// Serves one HTTP/1.1 connection; on `shutdown`, the request in flight is
/// finished and the connection closed.
pub(crate) async fn serve_http1<I, S>(
    io: I,
    service: S,
    mut shutdown: Shutdown,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, service);
    tokio::pin!(conn);
    if *shutdown.borrow() {
        conn.as_mut().graceful_shutdown();
        return conn.await;
    }
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

//! An OCI registry that serves the OCI 1.1 referrers API
//! (`GET /v2/<name>/referrers/<digest>`), which Debian's docker-registry 2.8
//! lacks (it answers 404 there). It is the `ferro-oci-server` crate's axum
//! router with in-memory blob and metadata stores, run inside this test
//! process: a background thread owns a single-threaded tokio runtime that
//! serves a listener already bound to 127.0.0.1:<free port>. Dropping the
//! `ReferrersRegistry` stops the server and drops everything it stored.
//!
//! Behaviour that differs from docker-registry (see tests/it/referrers_api.rs):
//! - a manifest PUT with a `subject` answers 201 with an `OCI-Subject` header,
//!   and the referrers API lists it at once (no tag-schema index is written);
//! - the empty descriptor blob (`{}`, sha256:44136fa3…) always exists, so it
//!   need not be uploaded;
//! - blobs live in one store shared by all repositories, so a manifest's
//!   blobs must exist, but not necessarily in the manifest's own repository;
//! - a missing blob is 404 MANIFEST_BLOB_UNKNOWN (docker-registry: 400);
//! - pushing the same referrer twice lists it twice;
//! - a PUT's Content-Type is not checked against the body's `mediaType`
//!   (the referrers list reports the Content-Type), and any
//!   `application/vnd.*+json` type is taken as a manifest;
//! - `?artifactType=` is form-decoded: send '+' as %2B, or nothing matches.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::http;

pub(crate) struct ReferrersRegistry {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ReferrersRegistry {
    /// Starts an OCI registry with a native referrers API on
    /// 127.0.0.1:<free port>, in this test process (its own tokio runtime
    /// on a background thread), and waits until GET /v2/ answers.
    pub(crate) fn start() -> ReferrersRegistry {
        // Bind here, before the server thread exists: the port is ours from
        // now on (no pick-then-rebind race), and connections made before the
        // accept loop runs simply wait in the backlog.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr").to_string();
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on the registry listener");

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("referrers-registry-{addr}"))
            .spawn(move || serve(listener, stop_rx))
            .expect("spawn the referrers registry thread");

        let mut registry = ReferrersRegistry {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        registry.wait_ready();
        registry
    }

    /// "127.0.0.1:PORT"
    pub(crate) fn addr(&self) -> String {
        self.addr.clone()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = match http::get(&self.addr, "/v2/", &[]) {
                Ok(r) if r.status == 200 => return,
                Ok(r) => format!("status {}: {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let outcome = self.thread.take().map(JoinHandle::join);
                panic!(
                    "the referrers registry thread ended early ({outcome:?}); last answer: {last}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "the referrers registry on {} did not answer GET /v2/ in time: {last}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The server thread: runs until `stop` fires (or its sender is dropped),
/// then drops the runtime, which cancels every open connection.
fn serve(listener: TcpListener, stop: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the referrers registry's tokio runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("hand the listener to tokio");
        let state = ferro_oci_server::AppState::new(
            Arc::new(ferro_blob_store::InMemoryBlobStore::new()),
            Arc::new(ferro_oci_server::InMemoryRegistryMeta::new()),
        );
        let app = ferro_oci_server::router(state);
        tokio::select! {
            result = axum::serve(listener, app).into_future() => {
                if let Err(e) = result {
                    eprintln!("referrers registry: server error: {e}");
                }
            }
            _ = stop => {}
        }
    });
    // Dropping the runtime here drops the connection tasks too, so a client
    // holding a keep-alive connection cannot keep the server alive.
    drop(runtime);
}

impl Drop for ReferrersRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The local Tinker server: the real protocol over HTTP (protocol.md sections 5-7), a real toy
//! model behind it, fault injection and a recording of every exchange.
//!
//! It is the peer of every end-to-end test, example, benchmark and chaos run of tinker-rs, and the
//! official Python SDK runs against it unmodified (`tests/conformance/run.sh`). It shares the wire
//! types and codecs of `tinker-core` but none of the client's decision logic.
//!
//! Start it in-process on the current tokio runtime:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tinker_testkit::server::{LocalServer, LocalServerConfig};
//! let server = LocalServer::start(LocalServerConfig::default()).await?;
//! println!("{}", server.url()); // http://127.0.0.1:<port>; use with any `tml-…` API key
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! or on its own runtime thread, from any runtime or none (stopped when the handle drops):
//!
//! ```
//! use tinker_testkit::server::{LocalServer, LocalServerConfig};
//! let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! ```
//!
//! or as a binary: `tinker-local-server --port 0 --seed 7 [--config flags.json]
//! [--record traffic.jsonl]`, which prints its base URL on the first stdout line once it listens.
//!
//! Behaviour in brief: futures are long-polled (`long_poll_hold_ms`); a training run executes its
//! requests in `seq_id` order and deduplicates `(model_id, seq_id)` and `X-Idempotency-Key`;
//! forward/backward and sample results are protobuf when the poll sends
//! `Accept: application/x-protobuf` (JSON otherwise); errors are `{"detail": ...}`. See
//! [`LocalServerConfig`] for every knob, [`faults`] for the fault rules and [`admin`] for the
//! `/_admin/` control endpoints.

pub mod admin;
mod admin_recovery;
mod auth;
mod codec;
mod config;
mod custom_loss;
mod error;
pub mod faults;
mod futures;
pub mod hub;
mod middleware;
mod recording;
mod rest;
mod sampling;
mod sessions;
mod state;
mod training;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

pub use auth::Credential;
pub use config::LocalServerConfig;
pub use error::ApiError;
pub use faults::{Fault, FaultRule, FaultStatus};
pub use recording::Exchange;

use middleware::{ResetConnection, MAX_BODY};

/// Listen backlog (the kernel caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 8192;
use state::AppState;

fn api_router(st: Arc<AppState>) -> Router<Arc<AppState>> {
    use {futures as fut, rest as r, sampling as smp, sessions as s, training as t};
    let not_found = || async { ApiError::not_found("Not Found") };
    let not_allowed =
        || async { ApiError::new(http::StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed") };
    Router::new()
        .route("/api/v1/client/config", post(r::client_config))
        .route("/api/v1/client/dynamic_config", post(r::dynamic_config))
        .route("/api/v1/auth/token", post(r::auth_token))
        .route(
            "/api/v1/auth/apikey/me",
            get(r::apikey_me).delete(r::revoke_apikey),
        )
        .route("/api/v1/healthz", get(r::healthz))
        .route("/api/v1/get_server_capabilities", get(r::capabilities))
        .route("/api/v1/create_session", post(s::create_session))
        .route("/api/v1/session_heartbeat", post(s::session_heartbeat))
        .route("/api/v1/telemetry", post(s::telemetry))
        .route("/api/v1/sessions", get(s::list_sessions))
        .route("/api/v1/sessions/search", post(s::search_sessions))
        .route("/api/v1/sessions/{id}", get(s::get_session))
        .route("/api/v1/sessions/{id}/finish", post(s::finish_session))
        .route("/api/v1/sessions/{id}/project", put(s::assign_project))
        .route("/api/v1/sessions/{id}/trace_export", get(s::trace_export))
        .route("/api/v1/create_model", post(t::create_model))
        .route("/api/v1/get_info", post(t::get_info))
        .route("/api/v1/unload_model", post(t::unload_model))
        .route("/api/v1/forward_backward", post(t::forward_backward))
        .route("/api/v1/optim_step", post(t::optim_step))
        .route("/api/v1/load_weights", post(t::load_weights))
        .route("/api/v1/save_weights", post(t::save_weights))
        .route(
            "/api/v1/save_weights_for_sampler",
            post(t::save_weights_for_sampler),
        )
        .route(
            "/api/v1/save_weights_external",
            post(t::save_weights_external),
        )
        .route("/api/v1/create_custom_loss", post(t::create_custom_loss))
        .route("/api/v1/copy_weights", post(t::copy_weights))
        .route(
            "/api/v1/create_sampling_session",
            post(smp::create_sampling_session),
        )
        .route(
            "/api/v1/join_sampling_session",
            post(smp::join_sampling_session),
        )
        .route("/api/v1/asample", post(smp::asample))
        .route("/api/v1/stream_sample", post(smp::stream_sample))
        .route("/api/v1/samplers/{id}", get(smp::get_sampler))
        .route("/api/v1/retrieve_future", post(fut::retrieve_future))
        .route("/api/v1/retrieve_futures", post(fut::retrieve_futures))
        .route("/api/v1/cancel_future", post(fut::cancel_future))
        .route("/api/v1/training_runs", get(r::list_training_runs))
        .route(
            "/api/v1/training_runs/{*rest}",
            get(r::training_run_resource)
                .post(r::training_run_resource)
                .put(r::training_run_resource)
                .delete(r::training_run_resource),
        )
        .route("/api/v1/checkpoints", get(r::list_user_checkpoints))
        .route("/api/v1/weights_info", post(r::weights_info))
        .route("/api/v1/audit", get(r::audit))
        .route("/api/v1/billing/usage/events", get(r::billing_usage))
        .route(
            "/api/v1/billing/usage/checkpoints/current",
            get(r::checkpoint_storage),
        )
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(not_allowed)
        .layer(axum::middleware::from_fn_with_state(st, middleware::front))
}

fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .merge(api_router(st.clone()))
        .route(
            "/_admin/requests",
            get(admin::get_requests).delete(admin::clear_requests),
        )
        .route(
            "/_admin/faults",
            get(admin::get_faults)
                .post(admin::post_faults)
                .delete(admin::clear_faults),
        )
        .route(
            "/_admin/config",
            get(admin::get_config).post(admin::post_config),
        )
        .route(
            "/_admin/in_flight",
            get(admin::get_in_flight).delete(admin::reset_in_flight),
        )
        .route("/_admin/jwt/expire", post(admin::expire_jwts))
        .route("/_admin/sessions/{id}/expire", post(admin::expire_session))
        .route("/_admin/corrupt_run", post(admin_recovery::corrupt_run))
        .route(
            "/_admin/unloadable_checkpoint",
            post(admin_recovery::unloadable_checkpoint),
        )
        .route("/_files/{token}/{name}", get(rest::download))
        .nest("/_hub", hub::router())
        .route("/_archives/{token}/{name}", get(rest::archive_download))
        .fallback(|| async { ApiError::not_found("Not Found") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(st)
}

/// A running local server on the caller's tokio runtime. Dropping it without
/// [`LocalServer::shutdown`] stops it too (the accept loop ends; open connections are closed).
#[derive(Debug)]
pub struct LocalServer {
    control: ServerControl,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What tests use to watch and steer a running server (shared by [`LocalServer`] and
/// [`BackgroundServer`]).
#[derive(Debug, Clone)]
pub struct ServerControl {
    state: Arc<AppState>,
    addr: SocketAddr,
    url: String,
}

impl ServerControl {
    /// The base URL, `http://127.0.0.1:<port>` (no trailing slash; the API is under `/api/v1/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An API key the server accepts.
    pub fn api_key(&self) -> String {
        self.state
            .cfg
            .api_keys
            .first()
            .cloned()
            .unwrap_or_else(|| "tml-local-test-key".into())
    }

    /// The recorded exchanges, in arrival order.
    pub fn recording(&self) -> Vec<Exchange> {
        self.state.recorder.snapshot()
    }

    /// Forgets the recorded exchanges.
    pub fn clear_recording(&self) {
        self.state.recorder.clear();
    }

    /// Adds fault rules (after the existing ones).
    pub fn add_faults(&self, rules: Vec<FaultRule>) {
        self.state.faults.add(rules);
    }

    /// Replaces every fault rule.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.state.faults.replace(rules);
    }

    /// The fault rules with their counters.
    pub fn faults(&self) -> Vec<FaultStatus> {
        self.state.faults.status()
    }

    /// Changes the `client/config` reply from now on.
    pub fn set_client_config(&self, config: tinker_core::types::ClientConfig) {
        self.state
            .flags
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .0 = config;
    }

    /// The most requests of `endpoint` (e.g. `"asample"`) the server ever handled at once.
    pub fn peak_in_flight(&self, endpoint: &str) -> usize {
        self.state.peak_in_flight(endpoint)
    }

    /// How many requests of `endpoint` (e.g. `"optim_step"`) the training run `model_id` has
    /// executed: a step retried on the wire but applied once counts once.
    pub fn executed(&self, model_id: &str, endpoint: &str) -> u64 {
        self.state.executed(model_id, endpoint)
    }

    /// Every JWT issued so far is expired from now on.
    pub fn expire_jwts(&self) {
        self.state.auth.expire_all();
    }
}

impl std::ops::Deref for LocalServer {
    type Target = ServerControl;
    fn deref(&self) -> &ServerControl {
        &self.control
    }
}

impl LocalServer {
    /// Binds 127.0.0.1 (port from the config, 0 = any) and starts serving on the current tokio
    /// runtime. The server is accepting connections when this returns.
    pub async fn start(config: LocalServerConfig) -> std::io::Result<LocalServer> {
        // A deep accept backlog: benchmarks open thousands of connections at once, and the
        // default (1024) makes the kernel drop or reset the overflow.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, config.port)))?;
        let listener = socket.listen(ACCEPT_BACKLOG)?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let state = Arc::new(AppState::new(config)?);
        let _ = state.base_url.set(url.clone());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, router(state.clone()), stopped));
        Ok(LocalServer {
            control: ServerControl { state, addr, url },
            stop,
            task: Some(task),
        })
    }

    /// Starts a server on its own thread with its own tokio runtime, so tests of any runtime (or
    /// none) can use it. The returned handle stops it when dropped.
    pub fn start_background(config: LocalServerConfig) -> std::io::Result<BackgroundServer> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tinker-local-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .worker_threads(2)
                    .thread_name("tinker-local-server-worker")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match LocalServer::start(config).await {
                        Ok(server) => {
                            let _ = tx.send(Ok(server.control.clone()));
                            let _ = stop_rx.await;
                            server.shutdown().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
                // Dropping the runtime ends leftover tasks (workers, long polls).
            })?;
        let control = rx
            .recv()
            .map_err(|_| std::io::Error::other("the server thread exited before starting"))??;
        Ok(BackgroundServer {
            control,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The control handle (cloneable; outlives nothing: it only reads shared state).
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }

    /// Stops accepting, closes open connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.control.state.runs.clear();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A server running on its own thread; dropping it stops the server and joins the thread.
#[derive(Debug)]
pub struct BackgroundServer {
    control: ServerControl,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for BackgroundServer {
    type Target = ServerControl;
    fn deref(&self) -> &ServerControl {
        &self.control
    }
}

impl BackgroundServer {
    /// The control handle.
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a connection was dropped on purpose.
#[derive(Debug)]
struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for InjectedReset {}

/// The accept loop. Each connection is served by hyper (HTTP/1.1, or HTTP/2 with prior
/// knowledge); a response marked [`ResetConnection`] makes the service fail, and hyper then
/// closes the connection without writing a reply.
async fn serve(listener: TcpListener, app: Router, mut stopped: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let resp = app.oneshot(req).await.unwrap_or_else(|e| match e {});
                        if resp.extensions().get::<ResetConnection>().is_some() {
                            return Err(InjectedReset);
                        }
                        Ok(resp)
                    }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        });
    }
}

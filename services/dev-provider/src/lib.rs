//! A local stand-in for Resend's domains API.
//!
//! This crate's job is to answer like Resend does (same paths, status codes, JSON
//! shapes, error bodies, rate-limit headers) so that the real Resend adapter can be
//! run, tested and benchmarked over real HTTP without an account. `make run` uses it
//! when no `RESEND_API_KEY` is set; every test uses it.
//!
//! Beyond Resend it offers a control surface for tests, outside the API paths:
//! `POST /_control/faults` (inject 429s, 500s, delays of requests or of their
//! answers, optionally of one route only, a "lost" create), `DELETE /_control/faults`,
//! `GET /_control/stats` (request counts, domains created per name) and
//! `POST /_control/domains/{id}/status` (force a raw status string).
//!
//! Verification is judged by its own deliberately simple DNS check
//! (exact lower-case comparison, see `dns_check`); it shares nothing with the
//! service's verdict logic, so it can serve as an independent witness.
//!
//! What is deliberately absent: persistence (state lives in memory), receiving
//! (inbound) mail, tracking domains, and any DNS work outside verify and the GET of a
//! pending domain, so creates stay cheap enough for throughput benchmarks.
#![forbid(unsafe_code)]

mod api;
mod control;
mod dns_check;
mod gate;
mod records;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

pub use control::{DevProviderControl, Faults, ForcedRecordStatus, ForcedStatus, Stats};

/// How the dev provider behaves.
#[derive(Debug, Clone, Default)]
pub struct DevProviderConfig {
    /// DNS servers the verification check asks; empty means the system resolver.
    pub dns_nameservers: Vec<SocketAddr>,
    /// A natural rate limit (requests per second over all API calls), answered with 429.
    pub rate_limit_per_sec: Option<u32>,
    /// Added to every API request, to imitate a remote provider.
    pub latency: Duration,
}

/// The HTTP application (API and control routes) for `config`.
pub fn router(config: DevProviderConfig) -> Router {
    let state = Arc::new(state::AppState::new(config));
    let api = Router::new()
        .route("/domains", post(api::create_domain).get(api::list_domains))
        .route(
            "/domains/{id}",
            get(api::get_domain).delete(api::delete_domain),
        )
        .route("/domains/{id}/verify", post(api::verify_domain))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::gate,
        ));
    let control = Router::new()
        .route(
            "/_control/faults",
            post(control::set_faults).delete(control::clear_faults),
        )
        .route("/_control/stats", get(control::stats))
        .route("/_control/domains/{id}/status", post(control::force_status));
    api.merge(control)
        .fallback(api::not_found)
        .with_state(state)
}

/// Serves the dev provider on `listener` until the future is dropped or aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DevProviderConfig,
) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}

/// Like [`serve`], but returns once `shutdown` completes and open requests are answered.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    config: DevProviderConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts the dev provider on `127.0.0.1:0` in a background task; returns its address.
///
/// # Panics
/// When no local port can be bound (a broken test machine).
pub async fn spawn(
    config: DevProviderConfig,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the dev provider");
    let addr = listener
        .local_addr()
        .expect("local address of a bound socket");
    (addr, tokio::spawn(serve(listener, config)))
}

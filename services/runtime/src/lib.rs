//! The adapters every service of the managed email domain service shares.
//!
//! Configuration (contract §1), the JetStream streams and KV buckets (contract §2),
//! the event store with optimistic appends, the domain-name ownership index, leader
//! leases, outcomes, dead letters, Postgres set-up, logging and graceful shutdown.
//! Domain rules live in `email-domain-events`; this crate only moves bytes.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod dead_letters;
pub mod lease;
pub mod names;
pub mod ops;
pub mod outcomes;
pub mod retry;
pub mod shutdown;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod trace;

pub use config::Config;
pub use shutdown::Shutdown;

/// Connects to NATS with the settings every service uses: reconnect forever, so
/// a restarted server is picked up by itself.
pub async fn connect_nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to NATS at {url}: {e} (is nats-server running with -js?)"
            )
        })?;
    Ok(client)
}

/// A JetStream context tuned for pipelined publishing.
pub fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .max_ack_inflight(20_000)
        .build(client)
}

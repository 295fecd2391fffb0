//! Connections to NATS and Postgres, failing fast with a message that says what to check.

use crate::error::{CtlError, CtlResult};
use async_nats::jetstream;
use runtime::streams;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// Where the servers are, as given by flags or the environment.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub nats_url: String,
    pub database_url: String,
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` (the services'
/// one redaction, also for a URL without a scheme).
pub fn redact(url: &str) -> String {
    runtime::config::redact_url(url)
}

/// Connects to NATS once, without retrying in the background: an operator wants to
/// know now that the server is not there.
pub async fn nats(url: &str) -> CtlResult<async_nats::Client> {
    let connect = runtime::nats_options(url)
        .name("domainctl")
        .connection_timeout(Duration::from_secs(3))
        .connect(url);
    match tokio::time::timeout(Duration::from_secs(6), connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(CtlError::unreachable(format!(
            "cannot reach NATS at {}: {e}; is nats-server running with -js, and is NATS_URL (or --nats-url) right?", redact(url)
        ))),
        Err(_) => Err(CtlError::unreachable(format!(
            "cannot reach NATS at {}: no answer within 6 s; is nats-server running with -js, and is NATS_URL (or --nats-url) right?", redact(url)
        ))),
    }
}

/// A JetStream context with the service's streams and buckets in place (created
/// when missing, exactly as every service does at start-up).
pub async fn jetstream(client: async_nats::Client, url: &str) -> CtlResult<jetstream::Context> {
    let js = runtime::jetstream(client);
    let settings = streams::StreamSettings::default();
    let ensure = streams::ensure(&js, &settings);
    match tokio::time::timeout(Duration::from_secs(15), ensure).await {
        Ok(Ok(())) => Ok(js),
        Ok(Err(e)) => Err(CtlError::unreachable(format!(
            "NATS at {} answers, but its JetStream streams cannot be opened: {e:#}; is nats-server running with -js?", redact(url)
        ))),
        Err(_) => Err(CtlError::unreachable(format!(
            "NATS at {} answers, but JetStream does not; is nats-server running with -js?", redact(url)
        ))),
    }
}

fn pg_options(url: &str) -> CtlResult<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(|e| {
            CtlError::usage(format!(
                "DATABASE_URL {} is not a Postgres URL: {e}",
                redact(url)
            ))
        })?
        .options([("timezone", "UTC")]))
}

/// Connects to an existing database (no migrations: read-only commands).
pub async fn db(url: &str, max: u32) -> CtlResult<PgPool> {
    let options = pg_options(url)?;
    let unreachable = |e: &dyn std::fmt::Display| {
        CtlError::unreachable(format!(
            "cannot reach Postgres at {}: {e}; is Postgres running, does the database exist, and is DATABASE_URL (or --database-url) right?",
            redact(url)
        ))
    };
    // One direct attempt first: a refused connection or a missing database answers at
    // once, where the pool would retry until its timeout.
    match tokio::time::timeout(
        Duration::from_secs(5),
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(e)) => return Err(unreachable(&e)),
        Err(_) => return Err(unreachable(&"no answer within 5 s")),
    }
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| unreachable(&e))
}

/// Connects, creating and migrating the database when needed (what the services do).
pub async fn db_migrated(url: &str, max: u32) -> CtlResult<PgPool> {
    pg_options(url)?;
    runtime::db::connect_and_migrate(url, max).await.map_err(|e| {
        CtlError::unreachable(format!(
            "cannot reach or migrate Postgres at {}: {e:#}; is Postgres running and DATABASE_URL (or --database-url) right?",
            redact(url)
        ))
    })
}

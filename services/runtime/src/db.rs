//! Postgres for the projections: the database is created if missing and migrated at start.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Connects, creating the database when it does not exist, and applies the migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    connect_and_migrate_with(url, max_connections, true).await
}

/// A pool for a writer that retries every failed statement by itself (the projectors'
/// batch loop, the scheduler): connections are not pinged before each use. The ping
/// is a round trip before every transaction, and at a few events per batch it was a
/// sixth of the services' CPU at 500 registrations/s. A connection that died idle
/// (Postgres restarted) fails its next statement instead, and the retry gets a new one.
pub async fn connect_and_migrate_for_retrying_writer(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    connect_and_migrate_with(url, max_connections, false).await
}

async fn connect_and_migrate_with(
    url: &str,
    max_connections: u32,
    ping_before_use: bool,
) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a Postgres URL: {e}"))?
        // Times leave the database in UTC (contract: RFC 3339 in UTC).
        // Every table here is derived from the event log, and each projector writes its
        // checkpoint in the same transaction as its rows: a commit lost in a crash is
        // lost together with its checkpoint and simply applied again. So commits need
        // not wait for the WAL flush (a large share of projection latency otherwise).
        .options([("timezone", "UTC"), ("synchronous_commit", "off")]);
    let db = options.get_database().unwrap_or("postgres").to_string();
    if let Err(first) = options.connect().await {
        // Try to create it from the maintenance database.
        let admin = options.clone().database("postgres");
        let mut conn = admin.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Postgres for DATABASE_URL ({}): {e}; first error: {first}. Is Postgres running?",
                options.get_host()
            )
        })?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&db)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            let quoted = db.replace('"', "\"\"");
            // Services starting at once race here: the losers see 42P04 (duplicate
            // database) or 23505 (the catalogue's unique index). Both mean "it exists".
            if let Err(e) = sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
                .execute(&mut conn)
                .await
            {
                let code = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .map(|c| c.to_string());
                if !matches!(code.as_deref(), Some("42P04") | Some("23505")) {
                    return Err(e.into());
                }
            }
            tracing::info!(database = %db, "created database");
        }
        conn.close().await.ok();
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(ping_before_use)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies migrations; several services may start at once, so take an advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))
}

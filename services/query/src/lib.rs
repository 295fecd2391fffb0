//! Queries (docs/interface.md §2.6), answered from the projections over NATS request-reply:
//! `email_domains.query.sender` (the tenant's sender address) and
//! `email_domains.query.domains` (the tenant's rows). Any number of instances may
//! run: they share a queue group.
#![forbid(unsafe_code)]

use email_domain_events::tenant::TenantSettings;
use futures::StreamExt;
use runtime::{Config, Shutdown};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

pub const SENDER: &str = "email_domains.query.sender";
pub const DOMAINS: &str = "email_domains.query.domains";
const QUEUE: &str = "email-domains-query";

#[derive(Deserialize)]
struct Request {
    tenant_id: Option<Value>,
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let ops = runtime::ops::Ops::serve(&config, "query", &shutdown).await?;
    let client = runtime::connect_nats(&config.nats_url, "query").await?;
    let pool = runtime::db::connect_and_migrate(&config.database_url, 8).await?;
    let mut sender = client.queue_subscribe(SENDER, QUEUE.into()).await?;
    let mut domains = client.queue_subscribe(DOMAINS, QUEUE.into()).await?;
    ops.nats(&client).postgres(&pool).ready();
    tracing::info!("answering {SENDER} and {DOMAINS}");
    loop {
        let (msg, kind) = tokio::select! {
            Some(m) = sender.next() => (m, SENDER),
            Some(m) = domains.next() => (m, DOMAINS),
            _ = shutdown.wait() => break,
            else => break,
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let (client, pool, config) = (client.clone(), pool.clone(), config.clone());
        tokio::spawn(async move {
            let answer = answer(&pool, &config, kind, &msg.payload).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "query failed");
                json!({"error": {"code": "unavailable", "message": "the query could not be answered; try again"}})
            });
            let _ = client
                .publish(
                    reply,
                    serde_json::to_vec(&answer).unwrap_or_default().into(),
                )
                .await;
        });
    }
    Ok(())
}

fn bad_request(message: &str) -> Value {
    json!({"error": {"code": "invalid_request", "message": message}})
}

pub async fn answer(
    pool: &PgPool,
    config: &Config,
    kind: &str,
    payload: &[u8],
) -> anyhow::Result<Value> {
    let Ok(req) = serde_json::from_slice::<Request>(payload) else {
        return Ok(bad_request(
            "the request must be a JSON object {\"tenant_id\": uuid}",
        ));
    };
    let Some(tenant) = req
        .tenant_id
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
    else {
        return Ok(bad_request("`tenant_id` is missing or not a UUID"));
    };
    if kind == SENDER {
        let default: Option<Option<String>> = sqlx::query_scalar(
            "SELECT default_from_domain FROM tenant_email_settings WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
        let settings = TenantSettings {
            default_from_domain: default.flatten(),
            ..Default::default()
        };
        let s = settings.sender(&config.sender_local_part, &config.platform_from_address);
        Ok(json!({"from": s.from, "domain": s.domain, "managed": s.managed}))
    } else {
        let rows: Vec<Value> = sqlx::query_scalar(
            "SELECT to_jsonb(d) FROM email_domains d WHERE tenant = $1 ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(pool)
        .await?;
        Ok(json!({"domains": rows}))
    }
}

//! The scheduler owns every timer. Timers derive from the event log (each event says
//! when the domain is next due, see `schedule::timer_change`), live in Postgres
//! (`scheduler_timers`, written with the checkpoint in one transaction), and survive
//! restarts. Due timers are claimed with `FOR UPDATE SKIP LOCKED`, so several
//! instances never fire one twice; a fired timer publishes a `recheck` command whose
//! id derives from the domain and the due time, so a re-fire after a crash has no
//! second effect.
#![forbid(unsafe_code)]

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use email_domain_events::schedule::{timer_change, TimerChange};
use email_domain_events::{
    ids::derive, Command, CommandId, CommandType, DomainId, Event, TenantId,
};
use projector::consume::{run_db_named, DbProjection};
use runtime::retry::Failure;
use runtime::{streams, Config, Shutdown};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::time::Duration;

pub const TIMERS: &str = "scheduler_timers";
pub const CONSUMER: &str = "scheduler-timers";
/// Timers claimed per round.
const FIRE_BATCH: i64 = 500;
/// Re-checks fired a second at most: timers that all come due together (after an
/// outage) are fired over a few seconds, not at once, so the handlers take them up
/// without spending a whole second on nothing else; well above the pace at which the
/// handlers start them (`HANDLER_FLEET_RATE`), and above any steady rate of timers
/// coming due.
const FIRE_RATE: u32 = 4_000;

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let ops = runtime::ops::Ops::serve(&config, "scheduler", &shutdown).await?;
    let client = runtime::connect_nats(&config.nats_url, "scheduler").await?;
    let js = runtime::jetstream(client);
    streams::ensure(
        &js,
        &streams::StreamSettings {
            command_dedup_window: config.command_dedup_window,
        },
    )
    .await?;
    let pool =
        runtime::db::connect_and_migrate_for_retrying_writer(&config.database_url, 4).await?;
    ops.jetstream(&js).postgres(&pool).ready();
    tokio::spawn(count_pending(pool.clone(), shutdown.clone()));
    let keeper = {
        let (js, pool, shutdown) = (js.clone(), pool.clone(), shutdown.clone());
        tokio::spawn(async move {
            run_db_named(
                &js,
                pool,
                TIMERS,
                CONSUMER,
                Timers,
                &shutdown,
                &Default::default(),
            )
            .await
        })
    };
    let firing = fire_loop(&js, &pool, config.handler_partitions, &shutdown);
    let (keeper, firing) = tokio::join!(keeper, firing);
    keeper??;
    firing
}

/// Keeps `scheduler_timers` from the events.
#[derive(Default)]
pub struct Timers;

impl DbProjection for Timers {
    async fn apply(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        events: &[(u64, Event)],
    ) -> anyhow::Result<()> {
        // The last change per domain wins within a batch.
        let mut changes: HashMap<DomainId, (TenantId, String, TimerChange)> = HashMap::new();
        for (_, e) in events {
            match timer_change(e) {
                TimerChange::Keep => {}
                c => {
                    changes.insert(e.domain_id, (e.tenant_id, e.domain.clone(), c));
                }
            }
        }
        let mut set_ids = Vec::new();
        let mut set_tenants = Vec::new();
        let mut set_domains = Vec::new();
        let mut set_due = Vec::new();
        let mut clear = Vec::new();
        for (id, (tenant, domain, change)) in changes {
            match change {
                TimerChange::Set(due) => {
                    set_ids.push(id.0);
                    set_tenants.push(tenant.0);
                    set_domains.push(domain);
                    set_due.push(due);
                }
                TimerChange::Clear => clear.push(id.0),
                TimerChange::Keep => {}
            }
        }
        if !clear.is_empty() {
            sqlx::query("DELETE FROM scheduler_timers WHERE domain_id = ANY($1)")
                .bind(&clear)
                .execute(&mut **tx)
                .await?;
        }
        if !set_ids.is_empty() {
            sqlx::query(
                "INSERT INTO scheduler_timers (domain_id, tenant_id, domain, due_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
                 ON CONFLICT (domain_id) DO UPDATE SET due_at = EXCLUDED.due_at",
            )
            .bind(&set_ids)
            .bind(&set_tenants)
            .bind(&set_domains)
            .bind(&set_due)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    fn committed(&mut self) {}
    fn rolled_back(&mut self) {}
    fn reset(&mut self) {}

    fn linger(&self) -> Duration {
        projector::consume::OFF_PATH_LINGER
    }

    fn unchanged(&self, events: &[(u64, Event)]) -> bool {
        events
            .iter()
            .all(|(_, e)| matches!(timer_change(e), TimerChange::Keep))
    }

    /// A timer per domain (the scheduler keeps one instance of this fold).
    fn key(event: &Event) -> String {
        event.domain_id.to_string()
    }
}

/// The id of the re-check a timer fires: the same for the same domain and due time.
pub fn recheck_id(domain: DomainId, due_at: DateTime<Utc>) -> CommandId {
    CommandId(derive(
        domain.0,
        &format!("recheck/{}", due_at.timestamp_millis()),
    ))
}

/// Samples `email_domains_timers_pending` every 10 s (a count over the partial index).
async fn count_pending(pool: PgPool, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        let n: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM scheduler_timers WHERE fired_due_at IS DISTINCT FROM due_at",
        )
        .fetch_one(&pool)
        .await;
        match n {
            Ok(n) => runtime::ops::TIMERS_PENDING.set(n),
            Err(e) => tracing::debug!(error = %e, "pending timers not counted"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shutdown.wait() => break,
        }
    }
}

/// Fires due timers until shutdown.
async fn fire_loop(
    js: &jetstream::Context,
    pool: &PgPool,
    partitions: u32,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    while !shutdown.is_triggered() {
        let started = tokio::time::Instant::now();
        match fire_due(js, pool, partitions, Utc::now()).await {
            Ok(n) if n as i64 == FIRE_BATCH => {
                tokio::time::sleep_until(started + Duration::from_secs(1) * n as u32 / FIRE_RATE)
                    .await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "firing timers failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait() => break,
        }
    }
    Ok(())
}

/// A re-check that can never be stored is given up (its timer is marked fired with
/// the others): retrying would hold up every timer behind it, forever. Any other
/// failure fails the batch, which is tried again.
fn unless_permanent(failure: Failure) -> anyhow::Result<()> {
    if failure.is_permanent() {
        runtime::retry::give_up("recheck", &failure);
        Ok(())
    } else {
        Err(failure.into())
    }
}

/// Claims up to a batch of due timers, publishes their re-checks (straight into the
/// handler's partitions, `partitions` of them), marks them fired.
pub async fn fire_due(
    js: &jetstream::Context,
    pool: &PgPool,
    partitions: u32,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let due: Vec<(uuid::Uuid, uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT domain_id, tenant_id, domain, due_at FROM scheduler_timers
         WHERE fired_due_at IS DISTINCT FROM due_at AND due_at <= $1
         ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(FIRE_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut acks = Vec::with_capacity(due.len());
    for (domain_id, tenant_id, domain, due_at) in &due {
        let domain_id = DomainId(*domain_id);
        let cmd = Command {
            command_type: CommandType::Recheck,
            command_id: recheck_id(domain_id, *due_at),
            tenant_id: TenantId(*tenant_id),
            domain: domain.clone(),
            requested_by: Some("scheduler".into()),
            region: None,
            domain_id: Some(domain_id),
            reason: None,
            provider_result: None,
            correlation_id: None,
        };
        let publish = PublishMessage::build()
            .payload(serde_json::to_vec(&cmd.to_body())?.into())
            .message_id(cmd.command_id.to_string());
        let subject = runtime::partitions::internal_subject(&cmd, partitions);
        match js.send_publish(subject, publish).await {
            Ok(ack) => acks.push(ack),
            Err(e) => unless_permanent(Failure::of(&e))?,
        }
    }
    for a in acks {
        if let Err(e) = a.await {
            unless_permanent(Failure::of(&e))?;
        }
    }
    let ids: Vec<uuid::Uuid> = due.iter().map(|d| d.0).collect();
    sqlx::query(
        "UPDATE scheduler_timers SET fired_due_at = due_at, fired_count = fired_count + 1 WHERE domain_id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    runtime::ops::TIMERS_FIRED.inc_by(due.len() as u64);
    tracing::debug!(fired = due.len(), "timers fired");
    Ok(due.len())
}

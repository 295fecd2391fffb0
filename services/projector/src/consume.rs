//! The batch loop shared by the Postgres projectors.

use crate::{Options, Projection};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use email_domain_events::Event;
use futures::{FutureExt, StreamExt};
use runtime::{streams, Shutdown};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;

pub const MAX_BATCH: usize = 1000;

/// A projection that folds events into Postgres rows.
pub trait DbProjection: Send {
    /// Applies events (all above the checkpoint, in stream order) inside `tx`.
    fn apply(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        events: &[(u64, Event)],
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
    /// The transaction committed: keep what `apply` computed.
    fn committed(&mut self);
    /// The transaction failed: forget what `apply` computed.
    fn rolled_back(&mut self);
    /// The tables were rebuilt under us (`domainctl replay`): forget everything cached.
    fn reset(&mut self);
    /// True when applying `events` would change no row, whatever the rows hold now
    /// (so the batch only moves the checkpoint). False when unsure.
    fn unchanged(&self, _events: &[(u64, Event)]) -> bool {
        false
    }
    /// How long a batch waits, after its first event, for more (see `next_batch`).
    fn linger(&self) -> Duration {
        Duration::ZERO
    }
    /// What the projection's partitions are keyed by: events with one key are applied
    /// in log order (see `partitioned`).
    fn key(event: &Event) -> String
    where
        Self: Sized;
}

/// The projection's checkpoint row, read at start and locked in every batch.
async fn position(pool: &PgPool, projection: &str) -> anyhow::Result<(u64, i64)> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT stream_seq, generation FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(s, g)| (s as u64, g)).unwrap_or((0, 0)))
}

/// The rows (read as `T` from `to_jsonb`) of the distinct `keys` a projection does
/// not hold in memory; `query` selects by `= ANY($1)`.
pub async fn fetch_rows<T: serde::de::DeserializeOwned>(
    tx: &mut Transaction<'static, Postgres>,
    query: &str,
    keys: impl IntoIterator<Item = uuid::Uuid>,
) -> anyhow::Result<Vec<T>> {
    let keys: Vec<uuid::Uuid> = keys
        .into_iter()
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(query)
        .bind(&keys)
        .fetch_all(&mut **tx)
        .await?;
    rows.into_iter()
        .map(|r| Ok(serde_json::from_value(r)?))
        .collect()
}

/// How far a projection got: every event up to it is applied. For a partitioned one,
/// the lowest of its partitions' checkpoints (the projection's own row stands in for
/// partitions that have none yet).
pub async fn checkpoint(pool: &PgPool, projection: &str) -> anyhow::Result<u64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projection, stream_seq FROM projection_checkpoints WHERE projection = $1 OR projection LIKE $2",
    )
    .bind(projection)
    .bind(crate::partitioned::partition_rows_pattern(projection))
    .fetch_all(pool)
    .await?;
    let base = rows
        .iter()
        .find(|(name, _)| name == projection)
        .map_or(0, |(_, seq)| *seq);
    let parts: Vec<(&String, i64)> = rows
        .iter()
        .filter(|(name, _)| name != projection)
        .map(|(name, seq)| (name, *seq))
        .collect();
    let expected = parts
        .first()
        .and_then(|(name, _)| name.rsplit_once("of")?.1.parse::<usize>().ok())
        .unwrap_or(0);
    let lowest = parts.iter().map(|(_, seq)| *seq).min();
    let seq = match lowest {
        None => base,
        Some(lowest) if parts.len() < expected => lowest.min(base),
        Some(lowest) => lowest,
    };
    Ok(seq.max(0) as u64)
}

/// The durable consumer of a projection, created to start right after `from_seq`.
pub async fn consumer(
    js: &jetstream::Context,
    name: &str,
    from_seq: u64,
) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    let stream = js.get_stream(streams::EVENTS).await?;
    Ok(stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.into()),
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 50_000,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from_seq + 1,
                },
                ..Default::default()
            },
        )
        .await?)
}

/// Waits for one message, then takes what is already there, up to `MAX_BATCH`; with
/// a `linger`, also what arrives within that time of the first message.
pub async fn next_batch(
    messages: &mut jetstream::consumer::pull::Stream,
    shutdown: &Shutdown,
    linger: Duration,
) -> Option<Vec<jetstream::Message>> {
    let first = tokio::select! {
        m = messages.next() => m,
        _ = shutdown.wait() => None,
    }?;
    let until = tokio::time::Instant::now() + linger;
    let mut batch = Vec::with_capacity(64);
    if let Ok(m) = first {
        batch.push(m);
    }
    while batch.len() < MAX_BATCH {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None if linger.is_zero() => break,
            None => match tokio::time::timeout_at(until, messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            Some(Ok(m)) => batch.push(m),
            Some(Err(e)) => tracing::warn!(error = %e, "event stream error"),
            None => break,
        }
    }
    Some(batch)
}

/// How long the projections off the owner's path (tenant settings, timers,
/// analytics) wait after an event for more to come: at a few events per batch, a
/// transaction and a wake-up per event were most of their cost. The owner's row
/// (`email_domains`) does not wait.
pub const OFF_PATH_LINGER: Duration = Duration::from_millis(5);

/// Decodes a batch, dropping what is at or below the checkpoint.
pub fn decode(batch: &[jetstream::Message], checkpoint: u64) -> Vec<(u64, Event)> {
    batch
        .iter()
        .filter_map(|m| {
            let seq = m.info().ok()?.stream_sequence;
            if seq <= checkpoint {
                return None;
            }
            match Event::from_json(&m.payload) {
                Ok(e) => Some((seq, e)),
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable event skipped");
                    None
                }
            }
        })
        .collect()
}

/// With tracing on: a span per event that carries a trace context (a child of the
/// command that appended it), keyed by stream sequence. Each closes when dropped,
/// after its batch is committed. Empty, and free, when tracing is off.
pub fn event_spans(
    batch: &[jetstream::Message],
    projection: &str,
    checkpoint: u64,
) -> std::collections::HashMap<u64, tracing::Span> {
    if !runtime::trace::enabled() {
        return Default::default();
    }
    batch
        .iter()
        .filter(|m| {
            m.headers
                .as_ref()
                .is_some_and(|h| h.get("traceparent").is_some())
        })
        .filter_map(|m| {
            let seq = m.info().ok()?.stream_sequence;
            (seq > checkpoint).then(|| {
                let span = tracing::info_span!("project", projection, seq, subject = %m.subject);
                runtime::trace::follow(&span, m.headers.as_ref());
                (seq, span)
            })
        })
        .collect()
}

pub async fn run_db<P: DbProjection>(
    js: &jetstream::Context,
    pool: PgPool,
    projection: Projection,
    folder: P,
    shutdown: &Shutdown,
    options: &Options,
) -> anyhow::Result<()> {
    run_db_named(
        js,
        pool,
        projection.name(),
        projection.consumer(),
        folder,
        shutdown,
        options,
    )
    .await
}

/// [`run_db`] for a fold that is not one of the three projections (the scheduler's timers).
pub async fn run_db_named<P: DbProjection>(
    js: &jetstream::Context,
    pool: PgPool,
    name: &str,
    consumer_name: &str,
    mut folder: P,
    shutdown: &Shutdown,
    options: &Options,
) -> anyhow::Result<()> {
    // The checkpoint in Postgres is the position; the durable consumer is recreated
    // from it, so messages a crashed instance held can never be overtaken by later
    // ones (which would move the checkpoint past events not yet applied).
    let lag = runtime::ops::ProjectionLag::start(js, name, shutdown);
    'restart: loop {
        folder.reset();
        let (mut checkpoint, generation) = position(&pool, name).await?;
        lag.set(checkpoint);
        let stream = js.get_stream(streams::EVENTS).await?;
        let _ = stream.delete_consumer(consumer_name).await;
        let consumer = consumer(js, consumer_name, checkpoint).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(MAX_BATCH)
            .messages()
            .await?;
        tracing::info!(projection = name, checkpoint, "projecting");
        while let Some(batch) = next_batch(&mut messages, shutdown, folder.linger()).await {
            let Some(last) = batch.last() else { continue };
            let last_seq = last.info().map(|i| i.stream_sequence).unwrap_or(0);
            // The event log has no gaps (deny delete): the next event must be checkpoint + 1.
            let first_new = batch
                .iter()
                .filter_map(|m| m.info().ok())
                .map(|i| i.stream_sequence)
                .find(|s| *s > checkpoint);
            if first_new.is_some_and(|s| s != checkpoint + 1) {
                tracing::warn!(projection = name, checkpoint, next = ?first_new, "gap in delivery; restarting from the checkpoint");
                continue 'restart;
            }
            let events = decode(&batch, checkpoint);
            let _spans = event_spans(&batch, name, checkpoint);
            options.count_skipped(batch.len() - events.len());
            if last_seq > checkpoint {
                let mut delay = Duration::from_millis(100);
                loop {
                    match apply_batch(&pool, &mut folder, name, &events, last_seq, generation).await
                    {
                        Ok(true) => {
                            folder.committed();
                            break;
                        }
                        Ok(false) => {
                            folder.rolled_back();
                            tracing::info!(
                                projection = name,
                                "the projection was rebuilt; continuing from its new checkpoint"
                            );
                            continue 'restart;
                        }
                        Err(e) => {
                            folder.rolled_back();
                            tracing::warn!(projection = name, error = %e, "batch not applied; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                            if shutdown.is_triggered() {
                                return Ok(());
                            }
                        }
                    }
                }
                checkpoint = last_seq;
                lag.set(checkpoint);
            }
            if options.should_crash() {
                anyhow::bail!("crash point after commit, before ack (test)");
            }
            // AckPolicy::All: acknowledging the last acknowledges the batch.
            if let Err(e) = last.ack().await {
                tracing::warn!(error = %e, "ack failed; the batch comes again and is skipped by the checkpoint");
            }
        }
        return Ok(());
    }
}

/// Applies a batch; `false` when a replay swapped the tables since we started (the
/// batch is then not applied: the caller restarts from the new checkpoint).
async fn apply_batch<P: DbProjection>(
    pool: &PgPool,
    folder: &mut P,
    name: &str,
    events: &[(u64, Event)],
    last_seq: u64,
    generation: i64,
) -> anyhow::Result<bool> {
    if folder.unchanged(events) {
        // Nothing to write but the checkpoint: one statement, no transaction. It only
        // moves a checkpoint of our generation (a swap holds this row locked while it
        // runs); no row yet, or a new generation, and the full path below decides.
        let moved = sqlx::query(
            "UPDATE projection_checkpoints SET stream_seq = $2, updated_at = now()
             WHERE projection = $1 AND generation = $3",
        )
        .bind(name)
        .bind(last_seq as i64)
        .bind(generation)
        .execute(pool)
        .await?
        .rows_affected();
        if moved == 1 {
            return Ok(true);
        }
    }
    let mut tx = pool.begin().await?;
    // The checkpoint first: writing it takes the same row lock a replay's swap takes,
    // so a batch and a swap never interleave, and it saves a round trip against a
    // lock, then a write. A swap since we started means this batch is dropped (the
    // transaction rolls back, checkpoint and all).
    let current: i64 = sqlx::query_scalar(
        "INSERT INTO projection_checkpoints (projection, stream_seq, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (projection) DO UPDATE SET stream_seq = EXCLUDED.stream_seq, updated_at = now()
         RETURNING generation",
    )
    .bind(name)
    .bind(last_seq as i64)
    .fetch_one(&mut *tx)
    .await?;
    if current != generation {
        return Ok(false);
    }
    folder.apply(&mut tx, events).await?;
    tx.commit().await?;
    Ok(true)
}

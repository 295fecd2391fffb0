//! Partitioned projections: the instances of a projection share its partitions.
//!
//! Every event belongs to one partition of the projection ([`DbProjection::key`]: the
//! domain name for `email_domains`, so every registration of a name stays in log order
//! and the unique index on live names never sees them out of order; the tenant for
//! `tenant_settings`). Each partition has its own checkpoint row,
//! `<projection>/<p>of<n>`, written in the same transaction as its rows, and is owned
//! by one instance at a time through a lease in the `email_domain_partitions` bucket
//! (group `projector.<projection>.`, the same machinery as the command handlers'). So
//! two instances of a projector add capacity instead of standing by, and a killed one's
//! partitions move to the others once its leases run out.
//!
//! An instance reads the event log once (a pull consumer without acks, from the lowest
//! checkpoint it owns), decodes each event once, and hands each to its partition's
//! writer; the writers commit in parallel, so a large batch of one partition does not
//! hold back a small one of another.
//!
//! A checkpoint moves only from the value its writer last read or wrote (a
//! compare-and-set in the batch's transaction). A writer that finds it moved (a replay
//! swapped the tables, or another instance took the partition while this one had lost
//! its lease) applies nothing and the instance starts again from the checkpoints: no
//! event is applied twice, whoever held the lease.
//!
//! The first partition row of a projection starts at the projection's own row (the
//! position of the unpartitioned projector, or of the last replay). Changing the number
//! of partitions needs a replay (`domainctl replay` removes the partition rows).

use crate::consume::{next_batch, DbProjection, MAX_BATCH};
use crate::Options;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use email_domain_events::Event;
use runtime::partitions::{partition_of, Change, Group, Ownership};
use runtime::{streams, Shutdown};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How often a partition with nothing of its own in the log writes its checkpoint.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often the instance's lowest checkpoint is handed to the lag gauges.
const LAG_EVERY: Duration = Duration::from_millis(500);
/// Slices a writer may have queued before the reader waits for it.
const WRITER_QUEUE: usize = 64;

/// What one projection is, for the partitioned loop.
pub struct Spec<F> {
    /// The projection's name (its checkpoint row and lease group).
    pub name: &'static str,
    pub partitions: u32,
    pub lease_ttl: Duration,
    /// A fresh fold for one partition.
    pub fold: F,
}

/// The checkpoint row of one partition.
pub fn checkpoint_name(projection: &str, partition: u32, partitions: u32) -> String {
    format!("{projection}/{partition}of{partitions}")
}

/// The `LIKE` pattern of every partition row of a projection.
pub fn partition_rows_pattern(projection: &str) -> String {
    format!("{projection}/%")
}

/// Runs the instance's share of a partitioned projection until `shutdown`.
pub async fn run<P, F>(
    js: &jetstream::Context,
    pool: PgPool,
    spec: Spec<F>,
    shutdown: &Shutdown,
    options: &Options,
) -> anyhow::Result<()>
where
    P: DbProjection + 'static,
    F: Fn() -> P,
{
    let name = spec.name;
    refuse_other_partitioning(&pool, name, spec.partitions).await?;
    let kv = js.get_key_value(runtime::partitions::BUCKET).await?;
    let (ownership, mut changes) = Ownership::start(
        kv,
        Group::projection(spec.name),
        spec.partitions,
        spec.lease_ttl,
    );
    let (failed_tx, failed) = mpsc::unbounded_channel();
    let mut instance = Instance {
        js: js.clone(),
        pool,
        spec,
        options: options.clone(),
        ownership: ownership.clone(),
        writers: BTreeMap::new(),
        lag: runtime::ops::ProjectionLag::start(js, name, shutdown),
        failed_tx,
        failed,
    };
    let r = instance.follow(&mut changes, shutdown).await;
    match &r {
        Ok(()) => instance.stop_writers().await,
        // As a crash would: nothing queued is committed.
        Err(_) => instance.abort_writers(),
    }
    ownership.stop().await;
    r
}

/// Partition rows of another count mean the rows were made with another
/// `PROJECTOR_PARTITIONS`: starting from them would apply some events twice.
async fn refuse_other_partitioning(
    pool: &PgPool,
    projection: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT projection FROM projection_checkpoints WHERE projection LIKE $1",
    )
    .bind(partition_rows_pattern(projection))
    .fetch_all(pool)
    .await?;
    let suffix = format!("of{partitions}");
    if let Some(other) = names.iter().find(|n| !n.ends_with(&suffix)) {
        anyhow::bail!(
            "the {projection} projection was kept in other partitions ({other}) than PROJECTOR_PARTITIONS={partitions}: \
             stop every projector of it and run `domainctl replay {projection}`, which rebuilds it and forgets the old partitions"
        );
    }
    Ok(())
}

/// The events of one partition from one read batch, and how far the read got.
#[derive(Default)]
struct Slice {
    events: Vec<(u64, Event)>,
    upto: u64,
    /// With tracing on, a span per traced event, closed once it is committed.
    spans: Vec<tracing::Span>,
}

/// A partition's writer, as the reader sees it.
struct Writer {
    tx: mpsc::Sender<Slice>,
    /// The last sequence handed to it (or its checkpoint): later reads skip up to here.
    upto: u64,
    /// Its checkpoint as last committed.
    committed: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

struct Instance<F> {
    js: jetstream::Context,
    pool: PgPool,
    spec: Spec<F>,
    options: Options,
    ownership: Ownership,
    writers: BTreeMap<u32, Writer>,
    /// `email_domains_projection_lag_*{projection}`: from the lowest checkpoint this
    /// instance owns.
    lag: runtime::ops::ProjectionLag,
    /// A writer that cannot go on says so here (the instance then starts again).
    failed_tx: mpsc::UnboundedSender<(u32, WriterStop)>,
    failed: mpsc::UnboundedReceiver<(u32, WriterStop)>,
}

/// Why a writer stopped before its queue was closed.
enum WriterStop {
    /// Its checkpoint is not where it left it (a replay, or another owner).
    Moved(anyhow::Error),
    /// The test hook's crash point (`Options::crash_after_commit`).
    Crash,
}

/// Why the reading stopped.
enum Stop {
    Shutdown,
    /// Read again from the writers' positions (a partition came with an older
    /// checkpoint, the read broke, or a writer found its checkpoint moved).
    Reread,
}

impl<P, F> Instance<F>
where
    P: DbProjection + 'static,
    F: Fn() -> P,
{
    async fn follow(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        loop {
            match self.read(changes, shutdown).await? {
                Stop::Shutdown => return Ok(()),
                Stop::Reread => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Reads the log from the lowest position owned, routing each event to its writer,
    /// while following the leases.
    async fn read(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Change>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Stop> {
        let from = self.writers.values().map(|w| w.upto).min();
        let mut messages = match from {
            Some(from) => Some(open(&self.js, from).await?),
            None => None,
        };
        let mut next = from.map_or(0, |f| f + 1);
        if let Some(from) = from {
            tracing::info!(projection = self.spec.name, from, partitions = ?self.writers.keys().collect::<Vec<_>>(), "projecting");
        }
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        loop {
            let batch = async {
                match messages.as_mut() {
                    Some(m) => next_batch(m, shutdown, Duration::ZERO).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                b = batch => match b {
                    Some(batch) => {
                        if !self.route(&batch, &mut next).await {
                            return Ok(Stop::Reread);
                        }
                    }
                    None if shutdown.is_triggered() => return Ok(Stop::Shutdown),
                    None => return Ok(Stop::Reread),
                },
                c = changes.recv() => match c {
                    // A partition behind what was read so far needs the log again from
                    // its checkpoint; one at or ahead of it is served by this read.
                    Some(c) => match self.apply(c).await? {
                        Some(added) if messages.is_none() || added < next.saturating_sub(1) => {
                            return Ok(Stop::Reread)
                        }
                        _ => {}
                    },
                    None => return Ok(Stop::Shutdown),
                },
                f = self.failed.recv() => {
                    match f {
                        Some((_, WriterStop::Crash)) => anyhow::bail!("crash point after commit (test)"),
                        Some((p, WriterStop::Moved(e))) => {
                            tracing::warn!(projection = self.spec.name, partition = p, error = %e, "partition writer stopped; reading again from the checkpoints");
                            self.restart_writers().await?;
                        }
                        None => {}
                    }
                    return Ok(Stop::Reread);
                }
                _ = lag_tick.tick() => self.report_lag(),
                _ = shutdown.wait() => return Ok(Stop::Shutdown),
            }
        }
    }

    fn report_lag(&self) {
        let lowest = self
            .writers
            .values()
            .map(|w| w.committed.load(Ordering::SeqCst))
            .min();
        if let Some(lowest) = lowest {
            self.lag.set(lowest);
        }
    }

    /// Hands a read batch to the writers; false when the read has a gap (the log has
    /// none: deny delete), so it must be read again from the writers' positions.
    async fn route(&mut self, batch: &[jetstream::Message], next: &mut u64) -> bool {
        let mut spans = crate::consume::event_spans(batch, self.spec.name, next.saturating_sub(1));
        let mut slices: BTreeMap<u32, Slice> = BTreeMap::new();
        let mut last = None;
        for m in batch {
            let Ok(info) = m.info() else { continue };
            let seq = info.stream_sequence;
            if seq < *next {
                continue;
            }
            if seq != *next {
                tracing::warn!(
                    projection = self.spec.name,
                    expected = *next,
                    got = seq,
                    "gap in delivery; reading again"
                );
                return false;
            }
            *next = seq + 1;
            last = Some(seq);
            let event = match Event::from_json(&m.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(seq, error = %e, "unreadable event skipped");
                    continue;
                }
            };
            let p = partition_of(&P::key(&event), self.spec.partitions);
            match self.writers.get(&p) {
                Some(w) if seq > w.upto => {
                    let slice = slices.entry(p).or_default();
                    slice.events.push((seq, event));
                    slice.spans.extend(spans.remove(&seq));
                }
                Some(_) => self.options.count_skipped(1),
                None => {}
            }
        }
        let Some(upto) = last else { return true };
        for (p, w) in self.writers.iter_mut() {
            if upto <= w.upto {
                continue;
            }
            let slice = Slice {
                upto,
                ..slices.remove(p).unwrap_or_default()
            };
            w.upto = upto;
            // A writer that is gone has reported why on `failed`.
            let _ = w.tx.send(slice).await;
        }
        true
    }

    /// Follows one lease change; the position of a partition added.
    async fn apply(&mut self, change: Change) -> anyhow::Result<Option<u64>> {
        match change {
            Change::Acquired(p) => {
                if let Some(old) = self.writers.remove(&p) {
                    old.task.abort();
                }
                let w = self.start_writer(p).await?;
                let at = w.upto;
                self.writers.insert(p, w);
                Ok(Some(at))
            }
            Change::Revoked(p) => {
                let ownership = self.ownership.clone();
                match self.writers.remove(&p) {
                    Some(w) => {
                        tokio::spawn(async move {
                            // The queued slices are committed, then the lease is given up.
                            drop(w.tx);
                            let _ = w.task.await;
                            ownership.release(p);
                        });
                    }
                    None => ownership.release(p),
                }
                Ok(None)
            }
            Change::Lost(p) => {
                if let Some(w) = self.writers.remove(&p) {
                    w.task.abort();
                }
                Ok(None)
            }
        }
    }

    async fn start_writer(&self, p: u32) -> anyhow::Result<Writer> {
        let name = checkpoint_name(self.spec.name, p, self.spec.partitions);
        let (checkpoint, generation) = position(&self.pool, self.spec.name, &name).await?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let committed = Arc::new(AtomicU64::new(checkpoint));
        let writer = PartitionWriter {
            pool: self.pool.clone(),
            name,
            fold: (self.spec.fold)(),
            checkpoint,
            generation,
            options: self.options.clone(),
            committed: committed.clone(),
        };
        let failed = self.failed_tx.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = writer.run(rx).await {
                let _ = failed.send((p, e));
            }
        });
        Ok(Writer {
            tx,
            upto: checkpoint,
            committed,
            task,
        })
    }

    /// Every writer anew from its checkpoint (what was queued is dropped: it comes again).
    async fn restart_writers(&mut self) -> anyhow::Result<()> {
        let owned: Vec<u32> = self.writers.keys().copied().collect();
        for p in owned {
            if let Some(old) = self.writers.remove(&p) {
                old.task.abort();
                let _ = old.task.await;
            }
            let w = self.start_writer(p).await?;
            self.writers.insert(p, w);
        }
        Ok(())
    }

    fn abort_writers(&mut self) {
        for (_, w) in std::mem::take(&mut self.writers) {
            w.task.abort();
        }
    }

    /// At shutdown: what is queued is committed, then the writers end.
    async fn stop_writers(&mut self) {
        for (_, w) in std::mem::take(&mut self.writers) {
            drop(w.tx);
            let _ = w.task.await;
        }
    }
}

/// A pull consumer without acks over the events stream, from `after + 1` (ephemeral:
/// the positions are the checkpoints in Postgres).
async fn open(
    js: &jetstream::Context,
    after: u64,
) -> anyhow::Result<jetstream::consumer::pull::Stream> {
    let stream = js.get_stream_no_info(streams::EVENTS).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            description: Some("projector partitions".into()),
            ..Default::default()
        })
        .await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(MAX_BATCH)
        .messages()
        .await?)
}

/// A partition's checkpoint and generation; a partition seen for the first time
/// starts where the projection's own row is (in one transaction with a lock on that
/// row, so a replay's swap is either before or after it).
async fn position(pool: &PgPool, projection: &str, name: &str) -> anyhow::Result<(u64, i64)> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_seq, updated_at) VALUES ($1, 0, now())
         ON CONFLICT (projection) DO NOTHING",
    )
    .bind(projection)
    .execute(&mut *tx)
    .await?;
    let (seq, generation): (i64, i64) = sqlx::query_as(
        "SELECT stream_seq, generation FROM projection_checkpoints WHERE projection = $1 FOR SHARE",
    )
    .bind(projection)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_seq, generation, updated_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (projection) DO NOTHING",
    )
    .bind(name)
    .bind(seq)
    .bind(generation)
    .execute(&mut *tx)
    .await?;
    let (seq, generation): (i64, i64) = sqlx::query_as(
        "SELECT stream_seq, generation FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((seq.max(0) as u64, generation))
}

/// The first slice and what else is queued (waiting `linger` for more when there are
/// events), up to [`MAX_BATCH`] events.
async fn gather(
    first: Slice,
    rx: &mut mpsc::Receiver<Slice>,
    linger: Duration,
) -> (Vec<(u64, Event)>, u64, Vec<tracing::Span>) {
    let (mut events, mut upto, mut spans) = (first.events, first.upto, first.spans);
    let until = tokio::time::Instant::now() + linger;
    while events.len() < MAX_BATCH {
        let next = match rx.try_recv() {
            Ok(s) => s,
            Err(_) if events.is_empty() || linger.is_zero() => break,
            Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(s)) => s,
                _ => break,
            },
        };
        events.extend(next.events);
        spans.extend(next.spans);
        upto = next.upto;
    }
    (events, upto, spans)
}

/// Commits one partition's slices, in order, with its checkpoint.
struct PartitionWriter<P> {
    pool: PgPool,
    name: String,
    fold: P,
    checkpoint: u64,
    generation: i64,
    options: Options,
    committed: Arc<AtomicU64>,
}

impl<P: DbProjection> PartitionWriter<P> {
    /// Until the reader closes the queue (everything queued is committed first) or
    /// the checkpoint is found moved (the instance then reads again).
    async fn run(mut self, mut rx: mpsc::Receiver<Slice>) -> Result<(), WriterStop> {
        let mut idle_since_write = tokio::time::Instant::now();
        let mut idle_upto = None;
        loop {
            let first = match idle_upto {
                Some(_) => {
                    let due = idle_since_write + IDLE_CHECKPOINT_EVERY;
                    match tokio::time::timeout_at(due, rx.recv()).await {
                        Ok(s) => s,
                        Err(_) => {
                            let upto = idle_upto.take().expect("idle");
                            self.commit(&[], upto).await?;
                            idle_since_write = tokio::time::Instant::now();
                            continue;
                        }
                    }
                }
                None => rx.recv().await,
            };
            let Some(first) = first else {
                if let Some(upto) = idle_upto {
                    self.commit(&[], upto).await?;
                }
                return Ok(());
            };
            let (events, upto, _spans) = gather(first, &mut rx, self.fold.linger()).await;
            if events.is_empty() {
                idle_upto = Some(upto);
                continue;
            }
            idle_upto = None;
            self.commit(&events, upto).await?;
            idle_since_write = tokio::time::Instant::now();
            if self.options.should_crash() {
                return Err(WriterStop::Crash);
            }
        }
    }

    /// Applies `events` and moves the checkpoint to `upto`, retrying what fails; an
    /// error when the checkpoint is no longer where this writer left it.
    async fn commit(&mut self, events: &[(u64, Event)], upto: u64) -> Result<(), WriterStop> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_commit(events, upto).await {
                Ok(true) => {
                    self.fold.committed();
                    self.checkpoint = upto;
                    self.committed.store(upto, Ordering::SeqCst);
                    return Ok(());
                }
                Ok(false) => {
                    self.fold.rolled_back();
                    return Err(WriterStop::Moved(anyhow::anyhow!(
                        "checkpoint {} moved away from {} (a replay, or another owner)",
                        self.name,
                        self.checkpoint
                    )));
                }
                Err(e) => {
                    self.fold.rolled_back();
                    tracing::warn!(checkpoint = %self.name, error = %e, "batch not applied; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_commit(&mut self, events: &[(u64, Event)], upto: u64) -> anyhow::Result<bool> {
        let at = Position {
            name: &self.name,
            checkpoint: self.checkpoint,
            generation: self.generation,
        };
        commit_slice(&self.pool, &mut self.fold, &at, events, upto).await
    }
}

/// Where a writer believes its partition's checkpoint is.
pub struct Position<'a> {
    /// The checkpoint row ([`checkpoint_name`]).
    pub name: &'a str,
    pub checkpoint: u64,
    pub generation: i64,
}

/// Applies `events` and moves the checkpoint from `at` to `upto`, in one transaction:
/// the checkpoint first (compare-and-set; it takes the row lock a replay's swap
/// takes), then the rows. False, with nothing written, when the checkpoint is no
/// longer at `at` (another writer moved it, or a replay swapped the tables).
pub async fn commit_slice<P: DbProjection>(
    pool: &PgPool,
    fold: &mut P,
    at: &Position<'_>,
    events: &[(u64, Event)],
    upto: u64,
) -> anyhow::Result<bool> {
    let moved = || {
        sqlx::query(
            "UPDATE projection_checkpoints SET stream_seq = $2, updated_at = now()
             WHERE projection = $1 AND stream_seq = $3 AND generation = $4",
        )
        .bind(at.name.to_string())
        .bind(upto as i64)
        .bind(at.checkpoint as i64)
        .bind(at.generation)
    };
    if fold.unchanged(events) {
        // Only the checkpoint moves: one statement, no transaction.
        return Ok(moved().execute(pool).await?.rows_affected() == 1);
    }
    let mut tx = pool.begin().await?;
    if moved().execute(&mut *tx).await?.rows_affected() != 1 {
        return Ok(false);
    }
    fold.apply(&mut tx, events).await?;
    tx.commit().await?;
    Ok(true)
}

/// A partition's position, made from the projection's own row on first use.
pub async fn partition_position(
    pool: &PgPool,
    projection: &str,
    partition: u32,
    partitions: u32,
) -> anyhow::Result<(u64, i64)> {
    position(
        pool,
        projection,
        &checkpoint_name(projection, partition, partitions),
    )
    .await
}

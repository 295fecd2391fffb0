//! `domainctl replay`: rebuild the Postgres projections from the event log, fast, and
//! swap them in atomically so readers never see a half-built table.
//!
//! 1. Note the events stream's last sequence L. Read 1..=L in order (a pull consumer
//!    without acks, in large pulls, each delivery checked to follow the one before);
//!    decode chunks on the blocking pool in parallel (order kept); fold in memory
//!    with the core's `evolve` and `TenantSettings::apply`, exactly as the live
//!    projectors do. A DNS check's records (most of its bytes) stay raw JSON until
//!    the domain's next other event or the end: only the last check's are parsed.
//! 2. COPY the rows into fresh `<table>_rebuild` tables without indexes, then build
//!    the live table's indexes (read from the catalogue) on them, in parallel.
//! 3. One transaction per projection: lock the checkpoint row and the live table,
//!    fold and upsert the events the live projector applied beyond L, drop the live
//!    table, rename the rebuilt one and its indexes, set the checkpoint to max(C, L)
//!    and bump the generation.

use crate::connect::{self, Endpoints};
use crate::error::{self, CtlError, CtlResult};
use crate::Io;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use email_domain_events::event::DeferredRecords;
use email_domain_events::tenant::TenantSettings;
use email_domain_events::{evolve, DomainId, DomainState, Event, TenantId};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use projector::email_domains::Row;
use projector::tenant_settings::{managed_provider_configs, row as settings_row, SettingsRow};
use runtime::streams;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Row as _, Transaction};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A projection `replay` can rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    EmailDomains,
    TenantSettings,
}

impl Target {
    /// The checkpoint's name in `projection_checkpoints`.
    pub fn checkpoint(self) -> &'static str {
        match self {
            Target::EmailDomains => "email_domains",
            Target::TenantSettings => "tenant_settings",
        }
    }
    pub fn table(self) -> &'static str {
        match self {
            Target::EmailDomains => "email_domains",
            Target::TenantSettings => "tenant_email_settings",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub targets: Vec<Target>,
    /// Publish the analytics CloudEvents again (same ids).
    pub emit_analytics: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Messages per decode chunk.
    pub chunk: usize,
    /// Fold only up to this stream sequence instead of the stream's last one (tests,
    /// diagnostics); the swap still catches up to the live checkpoint.
    pub up_to: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            targets: vec![Target::EmailDomains, Target::TenantSettings],
            emit_analytics: false,
            progress: false,
            chunk: 2048,
            up_to: None,
        }
    }
}

/// Parses `--projection`: `email_domains`, `tenant_settings`, `analytics`, `all`
/// (= both tables; analytics only on request), comma-separated. Returns the tables
/// and whether analytics were named.
pub fn parse_projection(s: &str) -> Result<(Vec<Target>, bool), String> {
    let mut targets = Vec::new();
    let mut analytics = false;
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p {
            "all" => targets.extend([Target::EmailDomains, Target::TenantSettings]),
            "email_domains" => targets.push(Target::EmailDomains),
            "tenant_settings" | "tenant_email_settings" => targets.push(Target::TenantSettings),
            "analytics" => analytics = true,
            other => {
                return Err(format!(
                    "unknown projection {other:?}: use email_domains, tenant_settings, analytics or all"
                ))
            }
        }
    }
    targets.sort_by_key(|t| *t as u8);
    targets.dedup();
    if targets.is_empty() && !analytics {
        return Err("name a projection: email_domains, tenant_settings, analytics or all".into());
    }
    Ok((targets, analytics))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub seconds: f64,
    pub events_per_sec: f64,
}

impl Phase {
    fn new(d: Duration, events: u64) -> Phase {
        let seconds = d.as_secs_f64();
        Phase {
            seconds,
            events_per_sec: if seconds > 0.0 {
                events as f64 / seconds
            } else {
                0.0
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Reading 1..=L (decode and fold run alongside).
    pub read: Phase,
    /// CPU time of the fold itself (overlaps `read`), and the time parsing the last
    /// checks' deferred records took after the read.
    pub fold: Phase,
    /// CPU time of decoding, summed over the parallel decoders (overlaps `read`).
    pub decode: Phase,
    pub write: Phase,
    pub index: Phase,
    pub swap: Phase,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SwapSummary {
    pub projection: String,
    pub table: String,
    pub rows: usize,
    /// The live projector's checkpoint when the swap took its lock.
    pub live_checkpoint: u64,
    /// Events beyond L the rebuilt table got in the swap.
    pub caught_up_events: u64,
    pub checkpoint: u64,
    pub generation: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// Events read and folded (1..=L).
    pub events: u64,
    pub last_seq: u64,
    pub unreadable_events: u64,
    /// Times the read carried on with a new consumer: a delivery missing, its consumer
    /// failed or gone, or nothing from the server for `READ_IDLE` mid-range.
    pub consumer_restarts: u64,
    pub domains: usize,
    pub tenants: usize,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub phases: Phases,
    pub projections: Vec<SwapSummary>,
    pub analytics_emitted: u64,
    pub analytics_failed: u64,
}

/// Tenant settings as the live projector keeps them.
#[derive(Clone, Default)]
struct TenantEntry {
    settings: TenantSettings,
    updated_at: Option<DateTime<Utc>>,
}

/// The in-memory fold of both projections.
#[derive(Default)]
struct Fold {
    domains: HashMap<DomainId, Option<DomainState>>,
    /// A domain's records as its last applied DNS check left them, not parsed yet
    /// (see [`Fold::apply_domain`]); its state holds no records meanwhile.
    pending: HashMap<DomainId, DeferredRecords>,
    /// Deferred records that turned out unreadable (the state keeps no records).
    unreadable_records: u64,
    tenants: HashMap<TenantId, TenantEntry>,
    fold_time: Duration,
}

impl Fold {
    /// Applies `e` with the core's `evolve`. `deferred` is the records JSON of a DNS
    /// check decoded by `Event::from_json_deferring_records` (its `records` empty).
    /// A check replaces a state's records whole and nothing in `evolve` reads them,
    /// so only the last check's records need parsing: they wait in `pending` until
    /// the next event that is not such a check (parsed first, so `evolve` sees the
    /// state exactly as the live projector has it) or the end ([`Fold::finish`]).
    fn apply_domain(&mut self, e: &Event, deferred: Option<DeferredRecords>) -> bool {
        let slot = self.domains.entry(e.domain_id).or_insert(None);
        if deferred.is_none() {
            if let Some(raw) = self.pending.remove(&e.domain_id) {
                if let Some(state) = slot.as_mut() {
                    set_records(state, &raw, &mut self.unreadable_records);
                }
            }
        }
        let before = slot.as_ref().map(|s| s.version);
        *slot = evolve(slot.take(), e);
        let applied = match before {
            Some(v) => e.version > v,
            None => slot.is_some(),
        };
        // A check not applied (seen already, or no domain) changes no records.
        if let (Some(raw), true) = (deferred, applied) {
            self.pending.insert(e.domain_id, raw);
        }
        slot.is_some()
    }

    /// Parses every record list still pending into its state, in two threads.
    fn finish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut work: Vec<(&mut DomainState, DeferredRecords)> =
            Vec::with_capacity(self.pending.len());
        for (id, slot) in self.domains.iter_mut() {
            if let (Some(state), Some(raw)) = (slot.as_mut(), self.pending.remove(id)) {
                work.push((state, raw));
            }
        }
        self.pending.clear();
        let half = work.len() / 2;
        let (a, b) = work.split_at_mut(half);
        fn parse(part: &mut [(&mut DomainState, DeferredRecords)]) -> u64 {
            let mut bad = 0;
            for (state, raw) in part.iter_mut() {
                set_records(state, raw, &mut bad);
            }
            bad
        }
        let unreadable = std::thread::scope(|scope| {
            let other = scope.spawn(move || parse(b));
            parse(a) + other.join().unwrap_or(0)
        });
        self.unreadable_records += unreadable;
    }

    /// Mirrors `projector::tenant_settings`: a tenant's row exists from its first
    /// event; `updated_at` is the time of the last event that created or changed it.
    fn apply_tenant(&mut self, e: &Event) -> bool {
        let mut is_new = false;
        let entry = self.tenants.entry(e.tenant_id).or_insert_with(|| {
            is_new = true;
            TenantEntry::default()
        });
        // Skipping events that cannot change settings saves `apply`'s clone per event.
        let changed = TenantSettings::may_change(e) && entry.settings.apply(e);
        if changed || is_new {
            entry.updated_at = Some(e.occurred_at);
        }
        changed || is_new
    }

    fn apply(
        &mut self,
        e: &Event,
        deferred: Option<DeferredRecords>,
        domains: bool,
        tenants: bool,
    ) {
        if domains {
            self.apply_domain(e, deferred);
        }
        if tenants {
            self.apply_tenant(e);
        }
    }

    fn tenant_rows(&self) -> Vec<SettingsRow> {
        self.tenants
            .iter()
            .map(|(t, e)| settings_row(*t, &e.settings, e.updated_at))
            .collect()
    }
}

/// Puts deferred records into a state; unreadable ones are counted and logged, and
/// leave the state without records (the rest of their event was applied).
///
/// Unlike everything else the replay folds, this differs from the live projectors:
/// they skip a check whose records are JSON but not records whole, where the replay
/// has applied its other fields (and never looks at the records of a check a later
/// one replaced). Only a writer bug could store such an event; checking every
/// deferred list's shape costs as much as parsing it, which is what deferring saves.
fn set_records(state: &mut DomainState, raw: &DeferredRecords, unreadable: &mut u64) {
    match Event::parse_deferred_records(raw) {
        Ok(records) => state.records = records,
        Err(e) => {
            *unreadable += 1;
            tracing::error!(domain_id = %state.domain_id, version = state.version, error = %e,
                "unreadable records in a DNS check; the row shows none");
        }
    }
}

/// Decodes a stored event: [`Event::from_json`] (today's form directly, older
/// forms upcast). Kept as a function so the replay's decoding has one name.
pub fn decode_event(bytes: &[u8]) -> Result<Event, serde_json::Error> {
    Event::from_json(bytes)
}

/// The CPU time the calling thread has used: phase figures that overlap on two cores
/// are CPU, not wall time (a thread waiting for a core would count otherwise).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

struct Decoded {
    events: Vec<Event>,
    /// With `defer`: each event's deferred records (`None` for all but DNS checks).
    deferred: Vec<Option<DeferredRecords>>,
    unreadable: u64,
    took: Duration,
}

/// Decodes a chunk; with `defer`, DNS checks' records are left unparsed (see
/// [`Fold::apply_domain`]).
fn decode_chunk(chunk: Vec<(u64, Bytes)>, defer: bool) -> Decoded {
    let start = thread_cpu();
    let mut events = Vec::with_capacity(chunk.len());
    let mut deferred = Vec::with_capacity(if defer { chunk.len() } else { 0 });
    let mut unreadable = 0;
    for (seq, b) in chunk {
        let decoded = if defer {
            Event::from_json_deferring_records(&b).map(|(e, d)| {
                deferred.push(d);
                e
            })
        } else {
            decode_event(&b)
        };
        match decoded {
            Ok(e) => events.push(e),
            Err(e) => {
                unreadable += 1;
                tracing::error!(seq, error = %e, "unreadable event skipped");
            }
        }
    }
    Decoded {
        events,
        deferred,
        unreadable,
        took: thread_cpu().saturating_sub(start),
    }
}

/// How long the read waits for the server's next message before it looks why: the
/// range may be done (its last messages deleted), or the consumer stuck or gone, which
/// a new one from the next sequence resolves. The read asks for no idle heartbeats, so
/// async-nats notices neither (nats-server 2.9 tells a pull of a deleted consumer
/// nothing: the test that deletes one sees this wait).
const READ_IDLE: Duration = Duration::from_secs(5);

/// Messages asked for by one pull request of the read. Measured on this machine
/// (`cargo run --release -p bench --example read_methods`, 1,000,000 stored events'
/// sizes and headers): an ordered consumer (500 a request) read 118–146k msg/s at
/// 6.8–9.4 µs of nats-server CPU a message; pulls of 5,000 172k msg/s at 6.5 µs.
const READ_BATCH: usize = 5_000;

/// Consumers the read may create in a row without a single message arriving in
/// between before it gives up.
const READ_RESTARTS_WITHOUT_PROGRESS: u32 = 5;

/// A pull consumer without acks over the events stream from `start` (ephemeral: the
/// server drops it a minute after the read stops asking), and its messages.
async fn pull_from(
    stream: &jetstream::stream::Stream<()>,
    start: u64,
) -> anyhow::Result<(String, pull::Stream)> {
    let deliver_policy = if start <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            description: Some("domainctl replay".into()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create a consumer on {}: {e}", streams::EVENTS))?;
    let name = consumer.cached_info().name.clone();
    let messages = consumer
        .stream()
        .max_messages_per_batch(READ_BATCH)
        .messages()
        .await?;
    Ok((name, messages))
}

/// Reads stream sequences `from..=to` of the events stream in order and sends them on
/// in chunks. Messages deleted from the range are skipped. A pull consumer without
/// acks delivers in order, each message once; the read checks that (each delivery's
/// consumer sequence follows the one before) and, where a delivery went missing, the
/// consumer failed, or it went quiet for [`READ_IDLE`] before the range is done,
/// carries on with a new consumer from the next sequence it needs.
async fn read_range(
    js: &jetstream::Context,
    from: u64,
    to: u64,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<Vec<(u64, Bytes)>>,
    bar: ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    if to < from {
        return Ok((0, 0));
    }
    let stream = js.get_stream_no_info(streams::EVENTS).await?;
    let mut restarts = 0u64;
    let mut restarts_in_a_row = 0u32;
    let (mut consumer, mut messages) = pull_from(&stream, from).await?;
    let mut delivered = 0u64; // the consumer sequence of the last delivery
    let mut buf = Vec::with_capacity(chunk);
    let mut n = 0u64;
    // The next sequence the range still needs.
    let mut next = from;
    let result = loop {
        if next > to {
            break Ok(());
        }
        let why = match tokio::time::timeout(READ_IDLE, messages.next()).await {
            Ok(Some(Ok(m))) => {
                let info = match m.info() {
                    Ok(info) => info,
                    Err(e) => break Err(anyhow::anyhow!("event without stream info: {e}")),
                };
                let (seq, consumer_seq) = (info.stream_sequence, info.consumer_sequence);
                if consumer_seq == delivered + 1 && seq >= next {
                    delivered = consumer_seq;
                    restarts_in_a_row = 0;
                    if seq > to {
                        break Ok(());
                    }
                    next = seq + 1;
                    buf.push((seq, m.message.payload));
                    n += 1;
                    if buf.len() >= chunk {
                        bar.inc(buf.len() as u64);
                        if tx
                            .send(std::mem::replace(&mut buf, Vec::with_capacity(chunk)))
                            .await
                            .is_err()
                        {
                            break Err(anyhow::anyhow!("the fold stopped"));
                        }
                    }
                    continue;
                }
                format!("delivery {consumer_seq} after {delivered} (stream sequence {seq}, next needed {next})")
            }
            Ok(Some(Err(e))) => format!("the consumer failed: {e}"),
            Ok(None) => "the consumer's messages ended".to_string(),
            Err(_) => {
                // Is anything left in the range? (Its last messages may be deleted.)
                match stream
                    .direct_get_next_for_subject(streams::EVENT_SUBJECTS, Some(next))
                    .await
                {
                    Ok(m) if m.sequence <= to => {
                        format!("no event from the server for {READ_IDLE:?}")
                    }
                    Ok(_) => break Ok(()),
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break Ok(()),
                    Err(e) => {
                        break Err(anyhow::anyhow!("reading the event stream at {next}: {e}"))
                    }
                }
            }
        };
        restarts_in_a_row += 1;
        if restarts_in_a_row > READ_RESTARTS_WITHOUT_PROGRESS {
            break Err(anyhow::anyhow!(
                "reading the event stream at sequence {next}: {why}, and {READ_RESTARTS_WITHOUT_PROGRESS} new consumers in a row read nothing"
            ));
        }
        tracing::warn!(next, reason = %why, "reading on from the next sequence with a new consumer");
        let _ = stream.delete_consumer(&consumer).await;
        (consumer, messages) = match pull_from(&stream, next).await {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
        delivered = 0;
        restarts += 1;
    };
    drop(messages);
    let _ = stream.delete_consumer(&consumer).await;
    result?;
    if !buf.is_empty() {
        bar.inc(buf.len() as u64);
        tx.send(buf)
            .await
            .map_err(|_| anyhow::anyhow!("the fold stopped before the last events"))?;
    }
    Ok((n, restarts))
}

/// Reads the whole events stream as the replay does, in chunks of `chunk`, and drops
/// every event unread: the read's own cost, for the benchmark's floor. Returns the
/// events read.
pub async fn read_alone(js: &jetstream::Context, chunk: usize) -> anyhow::Result<u64> {
    let last = js
        .get_stream(streams::EVENTS)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(u64, Bytes)>>(8);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (n, _) = read_events(js, 1, last, chunk.max(64), tx).await?;
    drain.await?;
    Ok(n)
}

/// The replay's read without the fold: stream sequences `from..=to` of the events
/// stream, in order and each once, sent to `tx` as (sequence, payload) in chunks of
/// `chunk`. Returns the events read and how many times the read carried on with a
/// new consumer.
pub async fn read_events(
    js: &jetstream::Context,
    from: u64,
    to: u64,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<Vec<(u64, Bytes)>>,
) -> anyhow::Result<(u64, u64)> {
    read_range(js, from, to, chunk, tx, ProgressBar::hidden()).await
}

struct ReadResult {
    events: u64,
    consumer_restarts: u64,
    unreadable: u64,
    decode_time: Duration,
    emitted: u64,
    emit_failed: u64,
}

/// Reads `from..=to`, decodes in parallel and folds into `fold` in stream order.
#[allow(clippy::too_many_arguments)]
async fn read_and_fold(
    js: &jetstream::Context,
    fold: Fold,
    from: u64,
    to: u64,
    (domains, tenants): (bool, bool),
    emit: bool,
    chunk: usize,
    bar: ProgressBar,
) -> anyhow::Result<(Fold, ReadResult)> {
    let (raw_tx, raw_rx) = tokio::sync::mpsc::channel::<Vec<(u64, Bytes)>>(8);
    let (dec_tx, mut dec_rx) = tokio::sync::mpsc::channel::<Decoded>(8);
    let (emit_tx, mut emit_rx) = tokio::sync::mpsc::channel::<Vec<Event>>(8);
    let reader = {
        let js = js.clone();
        tokio::spawn(async move { read_range(&js, from, to, chunk, raw_tx, bar).await })
    };
    // Decoding: chunks on the blocking pool, up to 3 at once, results in order.
    let decoder = tokio::spawn(async move {
        let mut decoded = std::pin::pin!(tokio_stream_from(raw_rx)
            // Analytics need every event whole; a fold alone takes checks' records late.
            .map(move |c| tokio::task::spawn_blocking(move || decode_chunk(c, !emit)))
            .buffered(3));
        while let Some(d) = decoded.next().await {
            let d = d.map_err(|e| anyhow::anyhow!("decoder panicked: {e}"))?;
            if dec_tx.send(d).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    });
    let emitter = {
        let js = js.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while let Some(events) = emit_rx.recv().await {
                let results: Vec<Result<usize, runtime::retry::Failure>> =
                    futures::stream::iter(events)
                        .map(|e| {
                            let js = js.clone();
                            async move { projector::analytics::emit(&js, &e).await }
                        })
                        .buffer_unordered(256)
                        .collect()
                        .await;
                for r in results {
                    match r {
                        Ok(n) => ok += n as u64,
                        Err(e) => {
                            failed += 1;
                            tracing::warn!(error = %e, "analytics not stored");
                        }
                    }
                }
            }
            (ok, failed)
        })
    };
    // The fold: one blocking thread owns the maps.
    let folder = tokio::task::spawn_blocking(move || {
        let mut fold = fold;
        let (mut events, mut unreadable, mut decode_time) = (0u64, 0u64, Duration::ZERO);
        while let Some(mut d) = dec_rx.blocking_recv() {
            let start = thread_cpu();
            let mut deferred = std::mem::take(&mut d.deferred).into_iter();
            for e in &d.events {
                fold.apply(e, deferred.next().flatten(), domains, tenants);
            }
            fold.fold_time += thread_cpu().saturating_sub(start);
            events += d.events.len() as u64;
            unreadable += d.unreadable;
            decode_time += d.took;
            if emit && emit_tx.blocking_send(d.events).is_err() {
                break;
            }
        }
        drop(emit_tx);
        (fold, events, unreadable, decode_time)
    });
    let read = reader
        .await
        .map_err(|e| anyhow::anyhow!("reader panicked: {e}"))?;
    decoder
        .await
        .map_err(|e| anyhow::anyhow!("decoder panicked: {e}"))??;
    let (fold, events, unreadable, decode_time) = folder
        .await
        .map_err(|e| anyhow::anyhow!("fold panicked: {e}"))?;
    let (emitted, emit_failed) = emitter
        .await
        .map_err(|e| anyhow::anyhow!("emitter panicked: {e}"))?;
    let (_, consumer_restarts) = read?;
    Ok((
        fold,
        ReadResult {
            events: events + unreadable,
            consumer_restarts,
            unreadable,
            decode_time,
            emitted,
            emit_failed,
        },
    ))
}

/// A `Stream` over a tokio mpsc receiver.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

// ---- COPY ----------------------------------------------------------------------

/// Appends `s` escaped for COPY's text format.
fn esc(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn field_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => esc(out, s),
        None => out.extend_from_slice(b"\\N"),
    }
}

fn field_time(out: &mut Vec<u8>, t: Option<DateTime<Utc>>) {
    match t {
        Some(t) => out.extend_from_slice(
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .as_bytes(),
        ),
        None => out.extend_from_slice(b"\\N"),
    }
}

fn field_json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    esc(out, &s);
}

const DOMAIN_COLUMNS: &str = "id, tenant, domain_name, status, provider_id, provider_domain_id, dns_records, failure_reason, metadata, verified_at, dns_last_checked_at, next_check_at, created_at, updated_at, version";
const TENANT_COLUMNS: &str =
    "tenant, default_from_domain, previous_from_domain, provider_configs, verified_domains, updated_at";

fn domain_copy_text(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 1200);
    for r in rows {
        out.extend_from_slice(r.id.to_string().as_bytes());
        out.push(b'\t');
        out.extend_from_slice(r.tenant.to_string().as_bytes());
        out.push(b'\t');
        esc(&mut out, &r.domain_name);
        out.push(b'\t');
        esc(&mut out, &r.status);
        out.push(b'\t');
        field_str(&mut out, r.provider_id.as_deref());
        out.push(b'\t');
        field_str(&mut out, r.provider_domain_id.as_deref());
        out.push(b'\t');
        field_json(&mut out, &r.dns_records);
        out.push(b'\t');
        field_str(&mut out, r.failure_reason.as_deref());
        out.push(b'\t');
        field_json(&mut out, &r.metadata);
        out.push(b'\t');
        field_time(&mut out, r.verified_at);
        out.push(b'\t');
        field_time(&mut out, r.dns_last_checked_at);
        out.push(b'\t');
        field_time(&mut out, r.next_check_at);
        out.push(b'\t');
        field_time(&mut out, r.created_at);
        out.push(b'\t');
        field_time(&mut out, r.updated_at);
        out.push(b'\t');
        out.extend_from_slice(r.version.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn tenant_copy_text(rows: &[SettingsRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 300);
    let configs = serde_json::to_string(&managed_provider_configs()).unwrap_or_default();
    for r in rows {
        out.extend_from_slice(r.tenant.to_string().as_bytes());
        out.push(b'\t');
        field_str(&mut out, r.default_from_domain.as_deref());
        out.push(b'\t');
        field_str(&mut out, r.previous_from_domain.as_deref());
        out.push(b'\t');
        if r.provider_configs == managed_provider_configs() {
            esc(&mut out, &configs);
        } else {
            field_json(&mut out, &r.provider_configs);
        }
        out.push(b'\t');
        field_json(&mut out, &r.verified_domains);
        out.push(b'\t');
        field_time(&mut out, r.updated_at);
        out.push(b'\n');
    }
    out
}

/// COPY streams per table written, and rows per chunk handed to a stream.
const COPY_STREAMS: usize = 2;
const COPY_CHUNK_ROWS: usize = 2_000;

/// COPYs into `table` the text chunks `data` yields, as they come.
async fn copy_in(
    pool: &PgPool,
    table: &str,
    columns: &str,
    mut data: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> anyhow::Result<()> {
    let copy = async {
        let mut conn = pool.acquire().await?;
        // The rows are rebuilt from the log if lost: no need to wait for the WAL flush.
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut *conn)
            .await?;
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY {table} ({columns}) FROM STDIN (FORMAT text)"
            ))
            .await?;
        while let Some(chunk) = data.recv().await {
            for part in chunk.chunks(1 << 20) {
                copy.send(part).await?;
            }
        }
        copy.finish().await?;
        sqlx::query("RESET synchronous_commit")
            .execute(&mut *conn)
            .await?;
        anyhow::Ok(())
    };
    copy.await.map_err(|e| {
        let reason = match e
            .downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
        {
            Some(db) => db.message().to_string(),
            None => format!("{e:#}"),
        };
        anyhow::anyhow!(
            "copying the rebuilt rows into {table} failed: {reason} \
             (nothing was swapped: the live projections are as they were; the next replay \
             starts over)"
        )
    })
}

// ---- tables and indexes ------------------------------------------------------

fn rebuild_name(table: &str) -> String {
    format!("{table}_rebuild")
}

/// An index of the live table, as the catalogue has it.
#[derive(Debug, Clone)]
struct IndexDef {
    name: String,
    def: String,
    /// The constraint it backs (primary key or unique), if any.
    constraint: Option<(String, String)>,
}

async fn live_indexes(pool: &PgPool, table: &str) -> anyhow::Result<Vec<IndexDef>> {
    let rows = sqlx::query(
        "SELECT i.relname AS name, pg_get_indexdef(i.oid) AS def, c.conname AS conname, c.contype::text AS contype
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('p', 'u')
         WHERE t.relname = $1 AND n.nspname = current_schema()
         ORDER BY i.relname",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| IndexDef {
            name: r.get("name"),
            def: r.get("def"),
            constraint: r
                .get::<Option<String>, _>("conname")
                .map(|n| (n, r.get::<Option<String>, _>("contype").unwrap_or_default())),
        })
        .collect())
}

/// `CREATE [UNIQUE] INDEX name ON schema.table USING ...` for the rebuild table.
fn rebuild_index_sql(ix: &IndexDef, table: &str) -> anyhow::Result<String> {
    let (head, rest) = ix
        .def
        .split_once(" ON ")
        .ok_or_else(|| anyhow::anyhow!("unexpected index definition {:?}", ix.def))?;
    let head = head
        .strip_suffix(&ix.name)
        .or_else(|| head.strip_suffix(&format!("\"{}\"", ix.name)))
        .ok_or_else(|| anyhow::anyhow!("unexpected index definition {:?}", ix.def))?;
    let rest = rest.trim_start_matches("ONLY ");
    let (tname, tail) = rest
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("unexpected index definition {:?}", ix.def))?;
    let tname_plain = tname.rsplit('.').next().unwrap_or(tname).trim_matches('"');
    anyhow::ensure!(
        tname_plain == table,
        "index {} is on {tname}, not {table}",
        ix.name
    );
    Ok(format!(
        "{head}\"{}\" ON {} {tail}",
        rebuild_name(&ix.name),
        rebuild_name(table)
    ))
}

async fn create_rebuild_table(pool: &PgPool, table: &str) -> anyhow::Result<()> {
    let rb = rebuild_name(table);
    sqlx::query(&format!("DROP TABLE IF EXISTS {rb}"))
        .execute(pool)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {rb} (LIKE {table} INCLUDING DEFAULTS)"
    ))
    .execute(pool)
    .await?;
    Ok(())
}

async fn build_indexes(pool: &PgPool, table: &str, indexes: &[IndexDef]) -> anyhow::Result<()> {
    let rb = rebuild_name(table);
    let jobs = indexes.iter().map(|ix| {
        let pool = pool.clone();
        let sql = rebuild_index_sql(ix, table);
        async move {
            let sql = sql?;
            let mut conn = pool.acquire().await?;
            sqlx::query("SET maintenance_work_mem = '256MB'")
                .execute(&mut *conn)
                .await?;
            sqlx::query(&sql).execute(&mut *conn).await?;
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    for ix in indexes {
        if let Some((conname, contype)) = &ix.constraint {
            let kind = if contype == "p" {
                "PRIMARY KEY"
            } else {
                "UNIQUE"
            };
            sqlx::query(&format!(
                "ALTER TABLE {rb} ADD CONSTRAINT \"{}\" {kind} USING INDEX \"{}\"",
                rebuild_name(conname),
                rebuild_name(&ix.name)
            ))
            .execute(pool)
            .await?;
        }
    }
    sqlx::query(&format!("ANALYZE {rb}")).execute(pool).await?;
    Ok(())
}

// ---- the swap --------------------------------------------------------------------

fn is_retryable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
            .and_then(|d| d.code())
            .is_some_and(|code| code == "40P01" || code == "55P03" || code == "40001")
    })
}

struct SwapState {
    /// The stream sequence the in-memory fold reached for this projection.
    folded_to: u64,
    /// Rows changed by catch-up folds since the rebuilt table was written.
    dirty_domains: HashSet<DomainId>,
    dirty_tenants: HashSet<TenantId>,
}

async fn swap_once(
    pool: &PgPool,
    js: &jetstream::Context,
    target: Target,
    indexes: &[IndexDef],
    fold: &mut Fold,
    st: &mut SwapState,
    chunk: usize,
) -> anyhow::Result<SwapSummary> {
    let table = target.table();
    let rb = rebuild_name(table);
    let mut tx: Transaction<'static, Postgres> = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_seq, updated_at) VALUES ($1, 0, now())
         ON CONFLICT (projection) DO NOTHING",
    )
    .bind(target.checkpoint())
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "SELECT stream_seq FROM projection_checkpoints WHERE projection = $1 FOR UPDATE",
    )
    .bind(target.checkpoint())
    .fetch_one(&mut *tx)
    .await?;
    let live: i64 = row.get("stream_seq");
    // The partitions' rows too, before the table (the order a projector's batch takes
    // them in): the live position is the furthest any partition got.
    let partitions: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT stream_seq, generation FROM projection_checkpoints WHERE projection LIKE $1 FOR UPDATE",
    )
    .bind(projector::partitioned::partition_rows_pattern(target.checkpoint()))
    .fetch_all(&mut *tx)
    .await?;
    let live = partitions
        .iter()
        .map(|(seq, _)| *seq)
        .fold(live, i64::max)
        .max(0) as u64;
    let partition_generation = partitions.iter().map(|(_, g)| *g).max().unwrap_or(0);
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *tx)
        .await?;
    // The live projector applied events beyond our fold: apply them too.
    let mut caught_up = 0;
    if live > st.folded_to {
        let taken = std::mem::take(fold);
        let (domains, tenants) = (
            target == Target::EmailDomains,
            target == Target::TenantSettings,
        );
        let (collect_tx, mut collect_rx) = tokio::sync::mpsc::channel::<Vec<(u64, Bytes)>>(8);
        let reader = {
            let js = js.clone();
            let from = st.folded_to + 1;
            tokio::spawn(async move {
                read_range(&js, from, live, chunk, collect_tx, ProgressBar::hidden()).await
            })
        };
        let mut fold_back = taken;
        while let Some(c) = collect_rx.recv().await {
            for e in decode_chunk(c, false).events {
                caught_up += 1;
                if domains && fold_back.apply_domain(&e, None) {
                    st.dirty_domains.insert(e.domain_id);
                }
                if tenants && fold_back.apply_tenant(&e) {
                    st.dirty_tenants.insert(e.tenant_id);
                }
            }
        }
        *fold = fold_back;
        reader
            .await
            .map_err(|e| anyhow::anyhow!("reader panicked: {e}"))??;
        st.folded_to = live;
    }
    match target {
        Target::EmailDomains if !st.dirty_domains.is_empty() => {
            let rows: Vec<Row> = st
                .dirty_domains
                .iter()
                .filter_map(|id| fold.domains.get(id).and_then(|s| s.as_ref()))
                .map(Row::from_state)
                .collect();
            projector::email_domains::upsert_rows(&mut tx, &rb, &rows).await?;
        }
        Target::TenantSettings if !st.dirty_tenants.is_empty() => {
            let rows: Vec<SettingsRow> = st
                .dirty_tenants
                .iter()
                .filter_map(|t| {
                    fold.tenants
                        .get(t)
                        .map(|e| settings_row(*t, &e.settings, e.updated_at))
                })
                .collect();
            projector::tenant_settings::upsert_rows(&mut tx, &rb, &rows).await?;
        }
        _ => {}
    }
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("ALTER TABLE {rb} RENAME TO {table}"))
        .execute(&mut *tx)
        .await?;
    for ix in indexes {
        // An index that backs a constraint was renamed to the constraint's name.
        let (from, to) = match &ix.constraint {
            Some((conname, _)) => {
                sqlx::query(&format!(
                    "ALTER TABLE {table} RENAME CONSTRAINT \"{}\" TO \"{conname}\"",
                    rebuild_name(conname)
                ))
                .execute(&mut *tx)
                .await?;
                (None, ix.name.clone())
            }
            None => (Some(rebuild_name(&ix.name)), ix.name.clone()),
        };
        if let Some(from) = from {
            sqlx::query(&format!("ALTER INDEX \"{from}\" RENAME TO \"{to}\""))
                .execute(&mut *tx)
                .await?;
        }
    }
    let checkpoint = live.max(st.folded_to);
    let generation: i64 = sqlx::query_scalar(
        "UPDATE projection_checkpoints SET stream_seq = $2, generation = GREATEST(generation, $3) + 1, updated_at = now()
         WHERE projection = $1 RETURNING generation",
    )
    .bind(target.checkpoint())
    .bind(checkpoint as i64)
    .bind(partition_generation)
    .fetch_one(&mut *tx)
    .await?;
    // Every partition starts again from the rebuilt table's position (and a different
    // number of partitions may be used from now on).
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection LIKE $1")
        .bind(projector::partitioned::partition_rows_pattern(
            target.checkpoint(),
        ))
        .execute(&mut *tx)
        .await?;
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(SwapSummary {
        projection: target.checkpoint().into(),
        table: table.into(),
        rows: rows as usize,
        live_checkpoint: live,
        caught_up_events: caught_up,
        checkpoint,
        generation,
    })
}

/// Rebuilds the projections in `opts.targets` from the event log and swaps them in.
/// `pool` must reach a migrated database (see `runtime::db::connect_and_migrate`).
pub async fn replay(
    js: &jetstream::Context,
    pool: &PgPool,
    opts: &ReplayOptions,
) -> anyhow::Result<ReplaySummary> {
    let started = Instant::now();
    // One replay at a time.
    let mut guard = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(7362516001)")
        .fetch_one(&mut *guard)
        .await?;
    anyhow::ensure!(
        locked,
        "another `domainctl replay` is running against this database"
    );
    let result = replay_locked(js, pool, opts, started).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(7362516001)")
        .execute(&mut *guard)
        .await;
    result
}

fn bar(progress: bool, len: u64, what: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

fn spinner(progress: bool, what: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    b.set_message(what.to_string());
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

async fn replay_locked(
    js: &jetstream::Context,
    pool: &PgPool,
    opts: &ReplayOptions,
    started: Instant,
) -> anyhow::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let info = js
        .get_stream(streams::EVENTS)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", streams::EVENTS))?
        .cached_info()
        .clone();
    let last = match opts.up_to {
        Some(n) => n.min(info.state.last_sequence),
        None => info.state.last_sequence,
    };
    summary.last_seq = last;
    let domains = opts.targets.contains(&Target::EmailDomains);
    let tenants = opts.targets.contains(&Target::TenantSettings);

    // Fresh tables first (cheap), so a problem with the database shows before the read.
    let mut indexes = HashMap::new();
    for t in &opts.targets {
        indexes.insert(*t, live_indexes(pool, t.table()).await?);
        create_rebuild_table(pool, t.table()).await?;
    }

    // Read, decode, fold.
    let read_bar = bar(opts.progress, last, "reading");
    let t = Instant::now();
    // One subject per domain: size the maps once instead of growing (and moving) them.
    let subjects = usize::try_from(info.state.subjects_count).unwrap_or(0);
    let capacity = subjects.min(50_000_000);
    let fold = Fold {
        domains: HashMap::with_capacity(capacity),
        pending: HashMap::with_capacity(capacity),
        ..Fold::default()
    };
    let (mut fold, read) = read_and_fold(
        js,
        fold,
        1,
        last,
        (domains, tenants),
        opts.emit_analytics,
        opts.chunk.max(64),
        read_bar.clone(),
    )
    .await?;
    read_bar.finish_and_clear();
    let t_finish = Instant::now();
    fold.finish();
    fold.fold_time += t_finish.elapsed();
    summary.events = read.events;
    summary.unreadable_events = read.unreadable + fold.unreadable_records;
    summary.consumer_restarts = read.consumer_restarts;
    summary.analytics_emitted = read.emitted;
    summary.analytics_failed = read.emit_failed;
    summary.phases.read = Phase::new(t.elapsed(), read.events);
    summary.phases.fold = Phase::new(fold.fold_time, read.events);
    summary.phases.decode = Phase::new(read.decode_time, read.events);
    summary.domains = fold.domains.values().filter(|s| s.is_some()).count();
    summary.tenants = fold.tenants.len();

    if opts.targets.is_empty() {
        summary.seconds = started.elapsed().as_secs_f64();
        summary.events_per_sec = summary.events as f64 / summary.seconds.max(1e-9);
        return Ok(summary);
    }

    // Write.
    let sp = spinner(opts.progress, "writing rows");
    let t = Instant::now();
    let mut writes = Vec::new();
    // The domain rows go out as they are formatted: two COPY streams, each fed in
    // chunks by its own formatting thread, so Postgres parses the first rows while
    // the rest are still being written (formatting and parsing share the two cores).
    let states = std::sync::Arc::new(std::mem::take(&mut fold.domains));
    if domains {
        for part in 0..COPY_STREAMS {
            let states = states.clone();
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            let formatter = tokio::task::spawn_blocking(move || {
                let mut rows = Vec::with_capacity(COPY_CHUNK_ROWS);
                let mine = states
                    .values()
                    .flatten()
                    .enumerate()
                    .filter(|(i, _)| i % COPY_STREAMS == part);
                for (_, state) in mine {
                    rows.push(Row::from_state(state));
                    if rows.len() == COPY_CHUNK_ROWS {
                        if tx.blocking_send(domain_copy_text(&rows)).is_err() {
                            return; // the COPY failed; its error is reported
                        }
                        rows.clear();
                    }
                }
                if !rows.is_empty() {
                    let _ = tx.blocking_send(domain_copy_text(&rows));
                }
            });
            let pool = pool.clone();
            writes.push(tokio::spawn(async move {
                let copied =
                    copy_in(&pool, &rebuild_name("email_domains"), DOMAIN_COLUMNS, rx).await;
                formatter.await?;
                copied
            }));
        }
    }
    if tenants {
        let rows = fold.tenant_rows();
        let pool = pool.clone();
        writes.push(tokio::spawn(async move {
            let text = tokio::task::spawn_blocking(move || tenant_copy_text(&rows)).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(text).await?;
            drop(tx);
            copy_in(
                &pool,
                &rebuild_name("tenant_email_settings"),
                TENANT_COLUMNS,
                rx,
            )
            .await
        }));
    }
    let written = futures::future::join_all(writes).await;
    fold.domains = std::sync::Arc::try_unwrap(states)
        .map_err(|_| anyhow::anyhow!("a row formatter outlived the write"))?;
    for w in written {
        w??;
    }
    sp.finish_and_clear();
    summary.phases.write = Phase::new(t.elapsed(), read.events);

    // Indexes.
    let sp = spinner(opts.progress, "building indexes");
    let t = Instant::now();
    let jobs = opts
        .targets
        .iter()
        .map(|t| build_indexes(pool, t.table(), &indexes[t]));
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    sp.finish_and_clear();
    summary.phases.index = Phase::new(t.elapsed(), read.events);

    // Swap.
    let sp = spinner(opts.progress, "swapping");
    let t = Instant::now();
    for target in &opts.targets {
        let mut st = SwapState {
            folded_to: last,
            dirty_domains: HashSet::new(),
            dirty_tenants: HashSet::new(),
        };
        let mut attempt = 0;
        loop {
            match swap_once(
                pool,
                js,
                *target,
                &indexes[target],
                &mut fold,
                &mut st,
                opts.chunk.max(64),
            )
            .await
            {
                Ok(s) => {
                    summary.projections.push(s);
                    break;
                }
                Err(e) if is_retryable(&e) && attempt < 20 => {
                    attempt += 1;
                    tracing::warn!(projection = target.checkpoint(), error = %e, "swap lost a lock race; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => {
                    return Err(e.context(format!("swapping in the rebuilt {}", target.table())))
                }
            }
        }
    }
    sp.finish_and_clear();
    summary.phases.swap = Phase::new(t.elapsed(), read.events);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_sec = summary.events as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

fn print_summary(io: &mut Io, s: &ReplaySummary) {
    io.line(format!(
        "replayed {} events (stream 1..={}) in {:.2} s: {:.0} events/s; {} domains, {} tenants",
        s.events, s.last_seq, s.seconds, s.events_per_sec, s.domains, s.tenants
    ));
    let p = &s.phases;
    for (name, ph) in [
        ("read", &p.read),
        ("decode", &p.decode),
        ("fold", &p.fold),
        ("write", &p.write),
        ("index", &p.index),
        ("swap", &p.swap),
    ] {
        io.line(format!(
            "  {name:<7} {:>8.2} s  {:>12.0} events/s",
            ph.seconds, ph.events_per_sec
        ));
    }
    for sw in &s.projections {
        io.line(format!(
            "  {} -> {}: {} rows, checkpoint {} (live was {}, {} events caught up), generation {}",
            sw.projection,
            sw.table,
            sw.rows,
            sw.checkpoint,
            sw.live_checkpoint,
            sw.caught_up_events,
            sw.generation
        ));
    }
    if s.unreadable_events > 0 {
        io.line(format!(
            "  {} unreadable events skipped (as the live projectors do)",
            s.unreadable_events
        ));
    }
    if s.analytics_emitted > 0 || s.analytics_failed > 0 {
        io.line(format!(
            "  analytics: {} CloudEvents published again ({} events failed)",
            s.analytics_emitted, s.analytics_failed
        ));
    }
}

pub async fn run_cli(
    ep: &Endpoints,
    io: &mut Io,
    projection: &str,
    emit_analytics: bool,
) -> CtlResult<i32> {
    let (targets, analytics) = parse_projection(projection).map_err(CtlError::usage)?;
    let client = connect::nats(&ep.nats_url).await?;
    let js = connect::jetstream(client, &ep.nats_url).await?;
    let pool = connect::db_migrated(&ep.database_url, 6).await?;
    let opts = ReplayOptions {
        targets,
        emit_analytics: emit_analytics || analytics,
        progress: io.progress,
        ..Default::default()
    };
    let summary = replay(&js, &pool, &opts)
        .await
        .map_err(|e| CtlError::negative(format!("replay failed: {e:#}")))?;
    if io.json {
        io.json_value(&serde_json::to_value(&summary).unwrap_or_default());
    } else {
        print_summary(io, &summary);
    }
    if summary.analytics_failed > 0 {
        return Ok(error::NEGATIVE);
    }
    Ok(error::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_decoder_agrees_with_from_json() {
        let samples = [
            r#"{"event_id":"6f1f8a52-36a9-4a4c-8f1a-1b2c3d4e5f60","tenant_id":"1c9d6e2a-0000-4000-8000-000000000001","domain_id":"2c9d6e2a-0000-4000-8000-000000000002","domain":"a.test","version":1,"occurred_at":"2026-01-05T09:00:00.123456Z","causation_id":"3c9d6e2a-0000-4000-8000-000000000003","correlation_id":"3c9d6e2a-0000-4000-8000-000000000003","schema_version":1,"type":"domain_registered","data":{"region":null,"requested_by":"x","deadline_at":"2026-01-12T09:00:00Z"}}"#,
            // no schema_version, data before type, a field from the future
            r#"{"data":{"provider_status":"verified","verified":true,"activates":true,"provider_failed":false,"next_check_at":null},"event_id":"6f1f8a52-36a9-4a4c-8f1a-1b2c3d4e5f60","tenant_id":"1c9d6e2a-0000-4000-8000-000000000001","domain_id":"2c9d6e2a-0000-4000-8000-000000000002","domain":"a.test","version":4,"occurred_at":"2026-01-05T09:00:00Z","causation_id":"3c9d6e2a-0000-4000-8000-000000000003","correlation_id":"3c9d6e2a-0000-4000-8000-000000000003","type":"provider_polled","extra":1}"#,
            // no data at all (upcast adds it), schema version 0
            r#"{"event_id":"6f1f8a52-36a9-4a4c-8f1a-1b2c3d4e5f60","tenant_id":"1c9d6e2a-0000-4000-8000-000000000001","domain_id":"2c9d6e2a-0000-4000-8000-000000000002","domain":"a.test","version":5,"occurred_at":"2026-01-05T09:00:00Z","causation_id":"3c9d6e2a-0000-4000-8000-000000000003","correlation_id":"3c9d6e2a-0000-4000-8000-000000000003","schema_version":0,"type":"provider_cleaned_up"}"#,
            r#"{"event_id":"6f1f8a52-36a9-4a4c-8f1a-1b2c3d4e5f60","tenant_id":"1c9d6e2a-0000-4000-8000-000000000001","domain_id":"2c9d6e2a-0000-4000-8000-000000000002","domain":"a.test","version":5,"occurred_at":"2026-01-05T09:00:00Z","causation_id":"3c9d6e2a-0000-4000-8000-000000000003","correlation_id":"3c9d6e2a-0000-4000-8000-000000000003","type":"provider_cleaned_up","data":null}"#,
            r#"{"not":"an event"}"#,
        ];
        for s in samples {
            let a = decode_event(s.as_bytes()).map_err(|e| e.to_string());
            let b = Event::from_json(s.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(a.is_ok(), b.is_ok(), "{s}");
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b, "{s}");
            }
        }
    }

    /// Folding with checks' records deferred ends in exactly the states a fold of
    /// whole events reaches: for every prefix of the frozen log of every event type,
    /// and of a history built from it where checks with different records follow
    /// each other, an older check is delivered again (not applied), and events that
    /// also set records (a failure, a re-provisioning) come between checks.
    #[test]
    fn deferring_records_folds_to_the_same_states() {
        let log: Vec<String> = include_str!("../../../tests/fixtures/events-v1.jsonl")
            .lines()
            .map(String::from)
            .collect();
        // acme.test's events are lines 1-6: registered, check requested, provisioned,
        // checked (4), polled (5), failed (6).
        let at = |line: usize, version: u64, mark: Option<&str>| {
            let mut v: serde_json::Value = serde_json::from_str(&log[line - 1]).unwrap();
            assert_eq!(v["domain"], "acme.test");
            v["version"] = version.into();
            if let Some(mark) = mark {
                let check: serde_json::Value = serde_json::from_str(&log[3]).unwrap();
                let mut records = check["data"]["records"].clone();
                records[0]["value"] = mark.into();
                v["data"]["records"] = records;
            }
            serde_json::to_string(&v).unwrap()
        };
        let history: Vec<String> = vec![
            at(1, 1, None),
            at(2, 2, None),
            at(3, 3, None),
            at(4, 4, None),
            at(4, 5, Some("check-5")),
            at(4, 4, None), // delivered again: not applied
            at(6, 6, Some("failed-6")),
            at(4, 7, Some("check-7")),
            at(5, 8, None),
            at(4, 9, Some("check-9")),
            at(3, 10, Some("provisioned-10")),
            at(4, 11, Some("check-11")),
        ];
        let fold = |lines: &[String], defer: bool| {
            let chunk = lines
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, Bytes::copy_from_slice(l.as_bytes())))
                .collect();
            let mut d = decode_chunk(chunk, defer);
            assert_eq!(d.unreadable, 0);
            let mut fold = Fold::default();
            let mut deferred = std::mem::take(&mut d.deferred).into_iter();
            for e in &d.events {
                fold.apply(e, deferred.next().flatten(), true, true);
            }
            fold.finish();
            assert_eq!(fold.unreadable_records, 0);
            fold.domains
        };
        for source in [&log, &history] {
            for n in 1..=source.len() {
                let whole = fold(&source[..n], false);
                assert_eq!(fold(&source[..n], true), whole, "{n} events");
            }
        }
        // The history's marks all reach the state in turn (the test can tell them apart).
        let marks: HashSet<String> = (1..=history.len())
            .filter_map(|n| {
                let states = fold(&history[..n], false);
                let s = states.values().flatten().next()?;
                Some(s.records.first()?.value.clone())
            })
            .collect();
        assert!(marks.len() >= 6, "{marks:?}");
    }

    /// The last check's records are JSON but not records: the fold counts them, keeps
    /// the domain (without records), and goes on; a fold of whole events skips that
    /// check as unreadable instead (see `set_records`).
    #[test]
    fn unreadable_deferred_records_are_counted_and_leave_no_records() {
        let log: Vec<&str> = include_str!("../../../tests/fixtures/events-v1.jsonl")
            .lines()
            .collect();
        let mut check: serde_json::Value = serde_json::from_str(log[3]).unwrap();
        assert_eq!(check["type"], "dns_checked");
        check["data"]["records"] = serde_json::json!([{"purpose": 1}]);
        let lines = [log[0], log[1], log[2], &check.to_string()];
        let chunk = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, Bytes::copy_from_slice(l.as_bytes())))
            .collect();
        let mut d = decode_chunk(chunk, true);
        assert_eq!(d.unreadable, 0, "the envelope and the other fields read");
        let mut fold = Fold::default();
        let mut deferred = std::mem::take(&mut d.deferred).into_iter();
        for e in &d.events {
            fold.apply(e, deferred.next().flatten(), true, false);
        }
        fold.finish();
        assert_eq!(fold.unreadable_records, 1);
        let state = fold.domains.values().flatten().next().expect("the domain");
        assert_eq!(state.version, 4);
        assert!(state.records.is_empty());
        // Whole, the same check is an unreadable event.
        let whole = decode_chunk(
            vec![(4, Bytes::copy_from_slice(check.to_string().as_bytes()))],
            false,
        );
        assert_eq!(whole.unreadable, 1);
    }

    #[test]
    fn projections_parse() {
        assert_eq!(
            parse_projection("all").unwrap(),
            (vec![Target::EmailDomains, Target::TenantSettings], false)
        );
        assert_eq!(
            parse_projection("tenant_settings,analytics").unwrap(),
            (vec![Target::TenantSettings], true)
        );
        assert!(parse_projection("nope").is_err());
    }

    #[test]
    fn copy_text_escapes() {
        let mut out = Vec::new();
        esc(&mut out, "a\\b\tc\nd");
        assert_eq!(out, b"a\\\\b\\tc\\nd");
    }
}

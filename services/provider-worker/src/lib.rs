//! The provider worker: every provider call happens here, never on the command path.
//!
//! A dispatcher reads the event log and turns events that need the provider
//! (registered → create, all records found → verify, verifying → poll, deleted →
//! delete) into work items on `EMAIL_DOMAIN_PROVIDER_WORK`, split into interactive
//! and background subjects. Executors take interactive work first and tenants in
//! turn (`queue`), hold one rate
//! limit (`PROVIDER_RATE_LIMIT`) for the whole deployment (one active instance,
//! by lease), and report back as `provider_result` commands. A 429 pauses every call
//! for its `retry-after`; a failing provider delays work and never fails a domain.
#![forbid(unsafe_code)]

pub mod name_claims;
mod queue;
mod rate;
mod work;

use name_claims::{ClaimOutcome, NameClaims};
pub use rate::RateLimiter;
pub use work::{work_for, WorkItem, WorkKind};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, AckKind};
use email_domain_events::{
    event::Event, ids::derive, Command, CommandId, CommandType, ProviderResult, ProviderStatus,
};
use futures::StreamExt;
use provider::{ApiKey, EmailProvider, ProviderError, ResendProvider};
use runtime::{lease::Lease, streams, Config, Shutdown};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub const DISPATCH_CONSUMER: &str = "provider-dispatch";
pub const INTERACTIVE_CONSUMER: &str = "provider-interactive";
pub const BACKGROUND_CONSUMER: &str = "provider-background";
pub const POLL_CONSUMER: &str = "provider-poll";

/// How many provider calls may be in flight at once.
const CONCURRENCY: usize = 64;

/// At most this many scheduled polls are answered together (one list page holds 100).
const POLL_BATCH: usize = 100;

/// How long the first poll of a batch waits for others to arrive.
const POLL_GATHER: Duration = Duration::from_millis(20);

/// A create waiting for an older registration's clean-up looks again after this,
/// doubling up to `CLAIM_WAIT_MAX`.
const CLAIM_WAIT_FIRST: Duration = Duration::from_millis(200);
const CLAIM_WAIT_MAX: Duration = Duration::from_secs(3);

pub fn provider_from_config(config: &Config) -> anyhow::Result<Arc<dyn EmailProvider>> {
    // The development provider accepts any key; a real deployment sets RESEND_API_KEY.
    let key = ApiKey::new(
        config
            .resend_api_key
            .clone()
            .unwrap_or_else(|| "dev-key".into()),
    );
    Ok(Arc::new(ResendProvider::new(
        &config.resend_base_url,
        key,
        config.provider_timeout,
    )?))
}

pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let ops = runtime::ops::Ops::serve(&config, "provider-worker", &shutdown).await?;
    let client = runtime::connect_nats(&config.nats_url, "provider-worker").await?;
    let js = runtime::jetstream(client);
    streams::ensure(
        &js,
        &streams::StreamSettings {
            command_dedup_window: config.command_dedup_window,
        },
    )
    .await?;
    let provider = provider_from_config(&config)?;
    let limiter = Arc::new(RateLimiter::new(config.provider_rate_limit));
    let claims = NameClaims::new(js.get_key_value(streams::PROVIDER_NAMES_BUCKET).await?);
    let lease = Lease::new(
        js.get_key_value(streams::LEASES_BUCKET).await?,
        "provider-worker",
        config.lease_ttl,
    );
    ops.jetstream(&js).ready();
    loop {
        let Some(mut guard) = lease.acquire(&shutdown).await else {
            break;
        };
        tokio::select! {
            r = dispatch(&js, config.handler_partitions, &shutdown) => if let Err(e) = r { tracing::error!(error = %e, "dispatcher stopped") },
            r = execute(&js, provider.clone(), limiter.clone(), &claims, config.handler_partitions, &shutdown) => if let Err(e) = r { tracing::error!(error = %e, "executor stopped") },
            _ = guard.lost() => tracing::warn!("lease lost: standing by"),
        }
        if shutdown.is_triggered() {
            lease.release().await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Events → work items. Idempotent: the work id derives from the event id.
async fn dispatch(
    js: &jetstream::Context,
    partitions: u32,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let stream = js.get_stream(streams::EVENTS).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            DISPATCH_CONSUMER,
            pull::Config {
                durable_name: Some(DISPATCH_CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    let js = js.clone();
    let work = messages
        .take_until(shutdown.wait())
        .for_each_concurrent(512, |msg| {
            let js = js.clone();
            async move {
                let Ok(msg) = msg else { return };
                // A span per event only when traces are exported: this is the hot path.
                let span = if runtime::trace::enabled() {
                    let span = tracing::info_span!("provider.dispatch", subject = %msg.subject);
                    runtime::trace::follow(&span, msg.headers.as_ref());
                    span
                } else {
                    tracing::Span::none()
                };
                dispatch_one(&js, partitions, msg).instrument(span).await
            }
        });
    work.await;
    Ok(())
}

/// One event: its provider work item and its pre-flight command, if any.
async fn dispatch_one(js: &jetstream::Context, partitions: u32, msg: jetstream::Message) {
    let (item, preflight) = match Event::from_json(&msg.payload) {
        Ok(ev) => (work_for(&ev), work::preflight_for(&ev)),
        Err(e) => {
            tracing::error!(error = %e, subject = %msg.subject, "unreadable event skipped by the provider worker");
            (None, None)
        }
    };
    if let Some(item) = item {
        let body = serde_json::to_vec(&item).expect("work items serialise");
        publish_until_stored(js, item.subject(), body, &item.work_id, "provider_work").await;
    }
    // The pre-flight is DNS work, not provider work: it goes to the handler as a
    // command, off the provider's rate limit.
    if let Some(cmd) = preflight {
        let body = serde_json::to_vec(&cmd.to_body()).expect("commands serialise");
        let id = cmd.command_id.to_string();
        let subject = runtime::partitions::internal_subject(&cmd, partitions);
        publish_until_stored(js, &subject, body, &id, "preflight_command").await;
    }
    // Acknowledged also after a permanent failure: a redelivery would fail the same way.
    let _ = msg.ack().await;
}

/// Publishes with a dedup id, retrying until JetStream has stored it, or until it
/// fails in a way retrying cannot change (then `operation` is given up, loudly).
async fn publish_until_stored(
    js: &jetstream::Context,
    subject: &str,
    body: Vec<u8>,
    msg_id: &str,
    operation: &str,
) {
    loop {
        let publish = runtime::trace::message()
            .payload(body.clone().into())
            .message_id(msg_id);
        match runtime::retry::publish(js, subject, publish).await {
            Ok(_) => return,
            Err(e) if e.is_permanent() => {
                runtime::retry::give_up(operation, &e);
                return;
            }
            Err(e) => tracing::warn!(error = %e, subject, "not stored yet"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn work_consumer(
    stream: &jetstream::stream::Stream,
    name: &str,
    subject: &str,
    window: usize,
) -> anyhow::Result<jetstream::consumer::pull::Stream> {
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.into()),
                filter_subject: subject.into(),
                ack_policy: AckPolicy::Explicit,
                // Short enough that work a killed worker held comes back soon; a call
                // (at most 15 s) plus the wait for its rate-limit slot fits well inside.
                // A redelivered item only repeats an idempotent call.
                ack_wait: Duration::from_secs(60),
                max_ack_pending: window as i64,
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(window.min(500))
        .messages()
        .await?)
}

async fn execute(
    js: &jetstream::Context,
    provider: Arc<dyn EmailProvider>,
    limiter: Arc<RateLimiter>,
    claims: &NameClaims,
    partitions: u32,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let stream = js.get_stream(streams::PROVIDER_WORK).await?;
    let interactive = work_consumer(
        &stream,
        INTERACTIVE_CONSUMER,
        streams::PROVIDER_WORK_INTERACTIVE,
        queue::READ_AHEAD,
    )
    .await?;
    let background = work_consumer(
        &stream,
        BACKGROUND_CONSUMER,
        streams::PROVIDER_WORK_BACKGROUND,
        queue::READ_AHEAD,
    )
    .await?;
    let mut polls = work_consumer(
        &stream,
        POLL_CONSUMER,
        streams::PROVIDER_WORK_POLL,
        POLL_BATCH * 2,
    )
    .await?;
    let waiting = Arc::new(queue::Waiting::default());
    let reading = {
        let waiting = waiting.clone();
        tokio::spawn(async move { waiting.read(interactive, background).await })
    };
    let keeping = {
        let waiting = waiting.clone();
        tokio::spawn(async move { waiting.keep_alive().await })
    };
    let _stop = AbortOnDrop(vec![reading.abort_handle(), keeping.abort_handle()]);
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    loop {
        let permit = permits.clone().acquire_owned().await?;
        limiter.acquire().await;
        // Interactive work first, tenants in turn (`queue`); polls when none waits.
        let held = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            held = waiting.take() => held,
            Some(m) = polls.next() => {
                // Scheduled polls ride together on one slot: the polls already
                // delivered are answered from the provider's domain list.
                // The first one says how many more the consumer holds; those still
                // on their way from the server are waited for, briefly.
                let mut batch: Vec<jetstream::Message> = m.into_iter().collect();
                let more = batch
                    .first()
                    .and_then(|m| m.info().ok())
                    .map_or(0, |i| i.pending as usize);
                let want = (more + 1).min(POLL_BATCH);
                let gather = tokio::time::Instant::now() + POLL_GATHER;
                while batch.len() < want {
                    match tokio::time::timeout_at(gather, polls.next()).await {
                        Ok(Some(Ok(m))) => batch.push(m),
                        Ok(Some(Err(_))) => continue,
                        _ => break,
                    }
                }
                let (js, provider, limiter, claims) = (js.clone(), provider.clone(), limiter.clone(), claims.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    execute_polls(&js, provider.as_ref(), &limiter, &claims, partitions, batch).await;
                });
                continue;
            }
        };
        let js = js.clone();
        let provider = provider.clone();
        let limiter = limiter.clone();
        let claims = claims.clone();
        tokio::spawn(async move {
            let _permit = permit;
            execute_one(
                &js,
                provider.as_ref(),
                &limiter,
                &claims,
                partitions,
                held.msg,
                held.item,
            )
            .await;
        });
    }
}

/// Stops the reader and keeper tasks when the executor ends (lease lost, error).
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn execute_one(
    js: &jetstream::Context,
    provider: &dyn EmailProvider,
    limiter: &RateLimiter,
    claims: &NameClaims,
    partitions: u32,
    msg: jetstream::Message,
    item: WorkItem,
) {
    let span = tracing::info_span!("provider", kind = ?item.kind, domain = %item.domain, domain_id = %item.domain_id);
    runtime::trace::follow(&span, msg.headers.as_ref());
    execute_item(js, provider, limiter, claims, partitions, msg, item)
        .instrument(span)
        .await
}

async fn execute_item(
    js: &jetstream::Context,
    provider: &dyn EmailProvider,
    limiter: &RateLimiter,
    claims: &NameClaims,
    partitions: u32,
    msg: jetstream::Message,
    item: WorkItem,
) {
    if item.kind == WorkKind::Create && !may_create(claims, &item, &msg).await {
        return;
    }
    let started = std::time::Instant::now();
    let called = call(provider, &item).await;
    observe_call(&item, &called, started.elapsed());
    match called {
        Ok(Some(result)) => {
            if gives_up_the_name(&result) {
                if let Err(e) = claims.release(&item.domain, item.domain_id).await {
                    // The call is repeated (a delete of a gone domain is a no-op).
                    tracing::warn!(error = %e, "provider name claim not released yet");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                    return;
                }
            }
            report(js, partitions, &item, result, &msg).await
        }
        Ok(None) => {
            let _ = msg.ack().await;
        }
        Err(e) => retry_later(limiter, &item, e, &msg).await,
    }
}

/// After these results the registration has no provider domain of its name.
fn gives_up_the_name(result: &ProviderResult) -> bool {
    matches!(
        result,
        ProviderResult::CleanedUp | ProviderResult::CreateRejected { .. }
    )
}

/// Claims the name for a create (see `name_claims`). A create behind an older
/// registration's clean-up comes back soon (a person is usually waiting); a create a
/// newer registration has overtaken is done with. False when the create must not run now.
async fn may_create(claims: &NameClaims, item: &WorkItem, msg: &jetstream::Message) -> bool {
    let me = name_claims::Holder {
        domain_id: item.domain_id,
        since: item.requested_at.unwrap_or_else(chrono::Utc::now),
    };
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
    let wait = CLAIM_WAIT_FIRST
        .saturating_mul(1 << (delivered - 1).min(8))
        .min(CLAIM_WAIT_MAX);
    match claims.claim(&item.domain, me).await {
        Ok(ClaimOutcome::Held) => return true,
        Ok(ClaimOutcome::WaitFor(older)) => {
            tracing::info!(older = %older.0, ?wait, "create waits for an older registration's provider clean-up");
        }
        Ok(ClaimOutcome::Superseded(newer)) => {
            tracing::info!(newer = %newer.0, "create skipped: a newer registration holds the name");
            let _ = msg.ack().await;
            return false;
        }
        Err(e) => tracing::warn!(error = %e, ?wait, "provider name claim unreadable; will retry"),
    }
    let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
    false
}

/// Sends a call's result to the handler as a `provider_result` command (its id
/// derives from the work id, so a repeated call reports once), then acknowledges
/// the work item.
async fn report(
    js: &jetstream::Context,
    partitions: u32,
    item: &WorkItem,
    result: ProviderResult,
    msg: &jetstream::Message,
) {
    if let ProviderResult::Polled {
        provider_status: ProviderStatus::Unknown(raw),
        ..
    } = &result
    {
        // The core leaves the domain as it is and waits for the next check; a person
        // should learn the provider's new word.
        tracing::warn!(status = %raw, "the provider answered a status this service does not know");
    }
    let cmd = Command {
        command_type: CommandType::ProviderResult,
        command_id: CommandId(derive(
            uuid::Uuid::parse_str(&item.work_id).unwrap_or_default(),
            "result",
        )),
        tenant_id: item.tenant_id,
        domain: item.domain.clone(),
        requested_by: Some("provider-worker".into()),
        region: None,
        domain_id: Some(item.domain_id),
        reason: None,
        provider_result: Some(result),
        correlation_id: item.correlation_id,
    };
    let body = serde_json::to_vec(&cmd.to_body()).expect("commands serialise");
    let publish = runtime::trace::message()
        .payload(body.into())
        .message_id(cmd.command_id.to_string());
    let subject = runtime::partitions::internal_subject(&cmd, partitions);
    match runtime::retry::publish(js, subject, publish).await {
        Ok(_) => {
            let _ = msg.ack().await;
        }
        // The same result would fail the same way on every redelivery.
        Err(e) if e.is_permanent() => {
            runtime::retry::give_up("provider_result", &e);
            let _ = msg.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "provider result not stored yet; the work comes back");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// Scheduled status polls, answered together: the provider's domain list is walked
/// page by page (the first page on the slot the batch was taken with, each further
/// page on a slot of its own) until every polled domain was seen; a domain the list
/// does not show (deleted at the provider, or past the pages worth walking) is asked
/// for alone, and so is one the list shows as partially failed (only its own answer
/// has the records that name what failed). A batch of one is simply asked for.
async fn execute_polls(
    js: &jetstream::Context,
    provider: &dyn EmailProvider,
    limiter: &RateLimiter,
    claims: &NameClaims,
    partitions: u32,
    batch: Vec<jetstream::Message>,
) {
    let mut items = Vec::with_capacity(batch.len());
    for msg in batch {
        match serde_json::from_slice::<WorkItem>(&msg.payload) {
            Ok(item) => items.push((item, msg)),
            Err(e) => {
                tracing::error!(error = %e, "unreadable work item dropped");
                let _ = msg.ack_with(AckKind::Term).await;
            }
        }
    }
    let mut wanted: std::collections::HashMap<String, usize> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (item, _))| item.provider_domain_id.clone().map(|id| (id, i)))
        .collect();
    let mut statuses: Vec<Option<provider::ProviderStatus>> = vec![None; items.len()];
    let mut pages_read = 0;
    if wanted.len() > 1 {
        // Walking more pages than there are polls would cost more than asking alone.
        let max_pages = wanted.len() / 2;
        let mut after: Option<String> = None;
        for page_no in 0..max_pages {
            if page_no > 0 {
                limiter.acquire().await;
            }
            let started = std::time::Instant::now();
            let page = provider.list_domains_page(after.as_deref()).await;
            pages_read += 1;
            observe(
                "list",
                if page.is_ok() {
                    "ok"
                } else {
                    error_label(page.as_ref().err())
                },
                started.elapsed(),
            );
            match page {
                Ok(page) => {
                    for d in page.domains {
                        if let Some(i) = wanted.remove(&d.provider_domain_id) {
                            // A partially failed domain is asked for alone below: only
                            // its own answer has the records that name what failed.
                            if work::list_status_is_enough(&d.status) {
                                statuses[i] = Some(d.status);
                            }
                        }
                    }
                    match page.next {
                        Some(next) if !wanted.is_empty() => after = Some(next),
                        _ => break,
                    }
                }
                Err(e) => {
                    // The batch waits as a whole: each item comes back on its own.
                    for (item, msg) in &items {
                        retry_later(limiter, item, e.clone(), msg).await;
                    }
                    return;
                }
            }
        }
    }
    let mut slot_unused = pages_read == 0;
    for ((item, msg), status) in items.into_iter().zip(statuses) {
        match status {
            Some(status) => {
                let span = tracing::info_span!("provider", kind = ?item.kind, domain = %item.domain, domain_id = %item.domain_id, batched = true);
                runtime::trace::follow(&span, msg.headers.as_ref());
                let result = work::listed(item.provider_domain_id.as_deref(), &status);
                report(js, partitions, &item, result, &msg)
                    .instrument(span)
                    .await;
            }
            None => {
                // The batch's slot pays for the first call made alone, if no page was read.
                if !std::mem::take(&mut slot_unused) {
                    limiter.acquire().await;
                }
                execute_one(js, provider, limiter, claims, partitions, msg, item).await;
            }
        }
    }
}

/// A failed call: a 429 pauses every call and the item comes back after the wait;
/// anything else comes back after a backoff. Never a failed domain.
async fn retry_later(
    limiter: &RateLimiter,
    item: &WorkItem,
    error: ProviderError,
    msg: &jetstream::Message,
) {
    match error {
        ProviderError::RateLimited { retry_after } => {
            let wait =
                provider::retry_after_with_jitter(retry_after, item.domain_id.0.as_u128() as u64);
            tracing::info!(?wait, "provider rate limit: pausing all calls");
            limiter.pause(wait);
            let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
        }
        e => {
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
            let wait = provider::jittered_backoff(
                delivered - 1,
                Duration::from_secs(1),
                Duration::from_secs(300),
                item.domain_id.0.as_u128() as u64,
            );
            tracing::warn!(error = %e, ?wait, "provider call failed; will retry");
            let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
        }
    }
}

/// `email_domains_provider_calls_total` and `email_domains_provider_call_duration_seconds`.
fn observe_call(
    item: &WorkItem,
    called: &Result<Option<ProviderResult>, ProviderError>,
    took: Duration,
) {
    let operation = serde_json::to_value(item.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let status = match called {
        Ok(Some(ProviderResult::CreateRejected { .. })) => "rejected",
        Ok(_) => "ok",
        Err(e) => error_label(Some(e)),
    };
    observe(&operation, status, took);
}

fn error_label(e: Option<&ProviderError>) -> &'static str {
    match e {
        None => "ok",
        Some(ProviderError::RateLimited { .. }) => "rate_limited",
        Some(ProviderError::Transient(_)) => "unavailable",
        Some(ProviderError::NotFound) => "not_found",
        Some(ProviderError::Rejected { .. }) => "rejected",
    }
}

fn observe(operation: &str, status: &str, took: Duration) {
    runtime::ops::PROVIDER_CALLS
        .with_label_values(&[operation, status])
        .inc();
    runtime::ops::PROVIDER_SECONDS
        .with_label_values(&[operation])
        .observe(took.as_secs_f64());
}

/// One provider call; `None` when there is nothing to report.
async fn call(
    provider: &dyn EmailProvider,
    item: &WorkItem,
) -> Result<Option<ProviderResult>, ProviderError> {
    match item.kind {
        WorkKind::Create => match provider
            .create_domain(&item.domain, item.region.as_deref())
            .await
        {
            Ok(d) => Ok(Some(ProviderResult::Created {
                provider_id: provider.provider_id().to_string(),
                provider_domain_id: d.provider_domain_id,
                region: d.region,
                records: d.records.into_iter().map(work::to_dns_record).collect(),
            })),
            Err(ProviderError::Rejected { message, .. }) => {
                Ok(Some(ProviderResult::CreateRejected { message }))
            }
            Err(e) => Err(e),
        },
        WorkKind::Verify | WorkKind::Poll => {
            let Some(id) = item.provider_domain_id.as_deref() else {
                return Ok(None);
            };
            if item.kind == WorkKind::Verify {
                match provider.request_verification(id).await {
                    // Gone at the provider: the core decides what that leads to.
                    Err(ProviderError::NotFound) => return Ok(Some(work::vanished(id))),
                    other => other?,
                }
            }
            match provider.get_domain(id).await {
                Ok(d) => Ok(Some(work::polled(&d))),
                Err(ProviderError::NotFound) => Ok(Some(work::vanished(id))),
                Err(ProviderError::Rejected { message, .. }) => {
                    tracing::warn!(%message, "provider refused a status request");
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
        WorkKind::Delete => {
            if let Some(id) = item.provider_domain_id.as_deref() {
                provider.delete_domain(id).await?;
            }
            Ok(Some(ProviderResult::CleanedUp))
        }
    }
}

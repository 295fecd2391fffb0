//! The analytics emitter: CloudEvents for each source event, published with
//! `Nats-Msg-Id` = the CloudEvent id.

use crate::consume::{next_batch, MAX_BATCH};
use crate::{Options, Projection};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use email_domain_events::{analytics, Event};
use runtime::retry::Failure;
use runtime::{streams, Shutdown};
use std::time::Duration;
use tracing::Instrument;

/// Publishes the CloudEvents of `event` and waits until JetStream stored them. Every
/// one is tried; the error returned is a transient one if any failed so (the batch is
/// then retried as a whole), else a permanent one.
pub async fn emit(js: &jetstream::Context, event: &Event) -> Result<usize, Failure> {
    let mut acks = Vec::new();
    let mut worst: Option<Failure> = None;
    for name in analytics::names(event) {
        let ce = analytics::cloud_event(event, name);
        let id = analytics::cloud_event_id(event, name);
        let publish = runtime::trace::message()
            .payload(
                serde_json::to_vec(&ce)
                    .expect("a CloudEvent serialises")
                    .into(),
            )
            .message_id(id)
            .header("Content-Type", "application/cloudevents+json");
        match js
            .send_publish(format!("analytics.email_domain.{name}"), publish)
            .await
        {
            Ok(ack) => acks.push(ack),
            Err(e) => keep_worst(&mut worst, Failure::of(&e)),
        }
    }
    let n = acks.len();
    for a in acks {
        if let Err(e) = a.await {
            keep_worst(&mut worst, Failure::of(&e));
        }
    }
    match worst {
        None => Ok(n),
        Some(f) => Err(f),
    }
}

/// Keeps a transient failure over a permanent one: it is the one worth retrying for.
fn keep_worst(worst: &mut Option<Failure>, f: Failure) {
    if worst.as_ref().is_none_or(Failure::is_permanent) {
        *worst = Some(f);
    }
}

pub async fn run(
    js: &jetstream::Context,
    shutdown: &Shutdown,
    options: &Options,
) -> anyhow::Result<()> {
    let stream = js.get_stream(streams::EVENTS).await?;
    let name = Projection::Analytics.consumer();
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.into()),
                // Explicit, not All: this emitter has no checkpoint of its own, and with
                // AckPolicy::All a restarted instance acknowledging a later event would
                // also acknowledge events a killed instance held but never emitted
                // (found by the chaos test). Each event is acknowledged once emitted.
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(15),
                max_ack_pending: 50_000,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(MAX_BATCH)
        .messages()
        .await?;
    while let Some(batch) =
        next_batch(&mut messages, shutdown, crate::consume::OFF_PATH_LINGER).await
    {
        if batch.is_empty() {
            continue;
        }
        let events = crate::consume::decode(&batch, 0);
        // With tracing on, each CloudEvent is published inside a span that continues
        // the trace of the command behind its event (carried in the event's headers).
        let spans = crate::consume::event_spans(&batch, "analytics", 0);
        let mut delay = Duration::from_millis(100);
        loop {
            let results = futures::future::join_all(events.iter().map(|(seq, e)| {
                let span = spans.get(seq).cloned().unwrap_or_else(tracing::Span::none);
                emit(js, e).instrument(span)
            }))
            .await;
            let failures: Vec<Failure> = results.into_iter().filter_map(Result::err).collect();
            if failures.is_empty() {
                break;
            }
            // Only CloudEvents that can never be stored are left: they are given up (the
            // rest of the batch is stored), not retried forever.
            if failures.iter().all(Failure::is_permanent) {
                for f in &failures {
                    runtime::retry::give_up("analytics", f);
                }
                break;
            }
            // Re-publishing is safe: JetStream drops ids it has stored already.
            let e = failures
                .iter()
                .find(|f| !f.is_permanent())
                .unwrap_or(&failures[0]);
            tracing::warn!(error = %e, "analytics not all stored; retrying the batch");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
        if options.should_crash() {
            anyhow::bail!("crash point after publish, before ack (test)");
        }
        for m in &batch {
            let _ = m.ack().await;
        }
    }
    Ok(())
}

//! The analytics emitter: CloudEvents for each source event, published with
//! `Nats-Msg-Id` = the CloudEvent id.

use crate::consume::{next_batch, MAX_BATCH};
use crate::{Options, Projection};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use email_domain_events::{analytics, Event};
use runtime::{streams, Shutdown};
use std::time::Duration;
use tracing::Instrument;

/// Publishes the CloudEvents of `event` and waits until JetStream stored them.
pub async fn emit(js: &jetstream::Context, event: &Event) -> anyhow::Result<usize> {
    let mut acks = Vec::new();
    for name in analytics::names(event) {
        let ce = analytics::cloud_event(event, name);
        let id = analytics::cloud_event_id(event, name);
        let publish = runtime::trace::message()
            .payload(serde_json::to_vec(&ce)?.into())
            .message_id(id)
            .header("Content-Type", "application/cloudevents+json");
        acks.push(
            js.send_publish(format!("analytics.email_domain.{name}"), publish)
                .await?,
        );
    }
    let n = acks.len();
    for a in acks {
        a.await?;
    }
    Ok(n)
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
            match results.into_iter().find_map(Result::err) {
                None => break,
                Some(e) => {
                    // Re-publishing is safe: JetStream drops ids it has stored already.
                    tracing::warn!(error = %e, "analytics not all stored; retrying the batch");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if shutdown.is_triggered() {
                        return Ok(());
                    }
                }
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

//! One trace follows a command across the hops: the publisher's `traceparent` →
//! the handler → the events it appended → the projectors and the analytics emitter
//! → the provider worker and the result it reports back. Spans are caught by an
//! in-memory exporter installed as this process's tracer (one test per binary: the
//! subscriber is global).

use email_domain_events::outcome::Verdict;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use std::time::{Duration, Instant};
use system_tests::Stack;
use uuid::Uuid;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn trace_of(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    runtime::trace::trace_id_of(headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_of_one_command_share_the_publishers_trace_across_every_hop() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    assert!(runtime::telemetry::init_with(
        "system-test",
        Some(provider.clone())
    ));
    assert!(runtime::trace::enabled());

    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let domain = "traced.example.com";

    // The publisher's own trace context.
    let trace_hex = Uuid::new_v4().simple().to_string();
    let parent_hex = &Uuid::new_v4().simple().to_string()[..16];
    let trace_id = TraceId::from_hex(&trace_hex).unwrap();
    let parent_id = SpanId::from_hex(parent_hex).unwrap();
    let command_id = Uuid::new_v4();
    let body = json!({"command_id": command_id, "tenant_id": tenant, "domain": domain, "requested_by": "test"});
    let mut outcome_sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{command_id}"))
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", command_id.to_string().as_str());
    headers.insert(
        "traceparent",
        format!("00-{trace_hex}-{parent_hex}-01").as_str(),
    );
    stack
        .js
        .publish_with_headers(
            "email_domains.commands.register_domain",
            headers,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // The outcome carries the trace on.
    let msg = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut outcome_sub),
    )
    .await
    .expect("an outcome")
    .expect("an outcome");
    let outcome: email_domain_events::outcome::Outcome =
        serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(outcome.outcome, Verdict::Accepted, "{outcome:?}");
    assert_eq!(trace_of(msg.headers.as_ref()).as_deref(), Some(&*trace_hex));

    stack.wait_status(tenant, domain, "awaiting_dns").await;

    // The stored events and CloudEvents carry it in their headers.
    let events = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await.unwrap();
    let first = events
        .direct_get_next_for_subject("email_domains.events.>", Some(1))
        .await
        .unwrap();
    assert_eq!(
        trace_of(Some(&first.headers)).as_deref(),
        Some(&*trace_hex),
        "the registered event carries the command's trace"
    );
    let analytics = stack.js.get_stream("EMAIL_DOMAIN_ANALYTICS").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ce = loop {
        if let Ok(m) = analytics
            .direct_get_next_for_subject("analytics.email_domain.registered", Some(1))
            .await
        {
            break m;
        }
        assert!(Instant::now() < deadline, "no registered CloudEvent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(trace_of(Some(&ce.headers)).as_deref(), Some(&*trace_hex));

    // Every hop left a span in the publisher's trace.
    let wanted = |spans: &[SpanData]| {
        let ours: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        let has = |name: &str, key: &str, value: &str| {
            ours.iter()
                .any(|s| s.name == name && attr(s, key).as_deref() == Some(value))
        };
        let handler_root = ours
            .iter()
            .any(|s| s.name == "command" && s.parent_span_id == parent_id);
        handler_root
            && has("command", "type", "provider_result")
            && has("project", "projection", "email_domains")
            && has("project", "projection", "tenant_settings")
            && has("project", "projection", "analytics")
            && ours.iter().any(|s| s.name == "provider.dispatch")
            && has("provider", "kind", "Create")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        if wanted(&spans) {
            break;
        }
        if Instant::now() > deadline {
            let ours: Vec<_> = spans
                .iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .map(|s| (s.name.to_string(), s.attributes.clone()))
                .collect();
            panic!("spans in the trace: {ours:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A command sent without a context starts a trace of its own.
    let out = stack.send("refresh_status", tenant, domain).await;
    assert_eq!(out.outcome, Verdict::Accepted, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refresh = loop {
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let refresh: Vec<SpanData> = spans
            .into_iter()
            .filter(|s| s.name == "command" && attr(s, "type").as_deref() == Some("refresh_status"))
            .collect();
        if !refresh.is_empty() || Instant::now() > deadline {
            break refresh;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refresh.len(), 1, "one handler span for the refresh");
    assert_ne!(refresh[0].span_context.trace_id(), trace_id);
    assert_ne!(refresh[0].span_context.trace_id(), TraceId::INVALID);

    stack.shutdown().await;
}

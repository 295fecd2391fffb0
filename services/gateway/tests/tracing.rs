//! A request that carries a W3C `traceparent` (the platform's own tracing) gets its
//! command published in the caller's trace, so the gateway's span and every hop after
//! it (handler, events, projectors) join the trace the platform started. Spans are
//! caught by an in-memory exporter installed as this process's tracer (one test in
//! this binary: the subscriber is global).

mod common;

use common::Gw;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Registers `domain` through the gateway, with `traceparent` when given, and returns
/// the trace id the published command carries.
async fn register(
    gw: &Gw,
    token: &str,
    commands: &mut async_nats::Subscriber,
    domain: &str,
    traceparent: Option<&str>,
) -> Option<String> {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/domains", gw.base))
        .bearer_auth(token)
        .json(&json!({ "domain": domain }));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let published =
        tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(commands))
            .await
            .expect("the command is published")
            .expect("the command is published");
    runtime::trace::trace_id_of(published.headers.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_with_a_traceparent_publishes_its_command_in_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    assert!(runtime::telemetry::init_with(
        "gateway-test",
        Some(provider.clone())
    ));
    let gw = Gw::start().await;
    let tenant = Uuid::new_v4();
    let token = gw.token(tenant, "enterprise", 600);
    // Commands leave the stream once handled: watch the subject as they are published.
    let mut commands = gw
        .stack
        .client
        .subscribe("email_domains.commands.register_domain")
        .await
        .unwrap();
    gw.stack.client.flush().await.unwrap();
    // The caller's trace context.
    let trace_hex = Uuid::new_v4().simple().to_string();
    let parent_hex = Uuid::new_v4().simple().to_string()[..16].to_string();
    let trace_id = TraceId::from_hex(&trace_hex).unwrap();
    let parent_id = SpanId::from_hex(&parent_hex).unwrap();
    let caller = format!("00-{trace_hex}-{parent_hex}-01");
    let traced = register(
        &gw,
        &token,
        &mut commands,
        "traced-gw.example.com",
        Some(&caller),
    )
    .await;
    assert_eq!(
        traced.as_deref(),
        Some(&*trace_hex),
        "the command joins the caller's trace"
    );

    // The gateway's span is the caller's child, and the handler's span follows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let gateway = spans
            .iter()
            .find(|s| s.name == "gateway.command" && s.span_context.trace_id() == trace_id);
        if let Some(g) = gateway {
            assert_eq!(g.parent_span_id, parent_id);
            let handler = spans.iter().any(|s| {
                s.name == "command"
                    && s.span_context.trace_id() == trace_id
                    && s.parent_span_id == g.span_context.span_id()
            });
            if handler {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "spans: {:?}",
            spans
                .iter()
                .map(|s| (s.name.to_string(), s.span_context.trace_id()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without one, the command starts a trace of its own.
    let own = register(&gw, &token, &mut commands, "untraced-gw.example.com", None)
        .await
        .expect("a trace of its own");
    assert_ne!(own, trace_hex);

    // A traceparent that cannot be read is ignored: again a trace of its own.
    let garbled = register(
        &gw,
        &token,
        &mut commands,
        "garbled-gw.example.com",
        Some("not-a-trace-context"),
    )
    .await
    .expect("a trace");
    assert!(
        TraceId::from_hex(&garbled).is_ok_and(|t| t != TraceId::INVALID),
        "{garbled}"
    );
    assert_ne!(garbled, own);
    gw.stop().await;
}

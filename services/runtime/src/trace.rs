//! W3C trace context across NATS hops.
//!
//! A command's `traceparent` header (when its publisher sent one) becomes the parent
//! of the handler's span; the events the handler appends, the outcome it publishes,
//! the provider work and results, and the analytics CloudEvents carry the context on
//! in their own headers, so one trace follows a command through every service.
//!
//! All of it is off, at the cost of one relaxed load, unless tracing was switched on
//! by [`crate::telemetry`] (`OTEL_EXPORTER_OTLP_ENDPOINT`, or a test's exporter).

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (and so whether trace context is worth carrying).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

struct Headers<'a>(&'a mut HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Writes the current span's context (`traceparent`, `tracestate`) into `headers`.
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut Headers(headers));
}

/// The current span's context as fresh headers, or `None` when tracing is off.
pub fn headers() -> Option<HeaderMap> {
    if !enabled() {
        return None;
    }
    let mut h = HeaderMap::new();
    inject(&mut h);
    Some(h)
}

/// A JetStream publish carrying the current span's context (a plain one when off).
/// Start every traced publish here: later `.headers()` calls would replace it.
pub fn message() -> async_nats::jetstream::message::PublishMessage {
    let m = async_nats::jetstream::message::PublishMessage::build();
    match headers() {
        Some(h) => m.headers(h),
        None => m,
    }
}

/// Makes `span` a child of the context carried in `headers`, when they carry one.
pub fn follow(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(headers) = headers {
        follow_w3c(span, |k| headers.get(k).map(|v| v.as_str()));
    }
}

/// Makes `span` a child of a W3C trace context read by `get` (`traceparent`,
/// `tracestate`) from any carrier, such as an HTTP request's headers. A missing or
/// malformed `traceparent` leaves the span a root.
pub fn follow_w3c<'a>(span: &tracing::Span, get: impl Fn(&str) -> Option<&'a str>) {
    if !enabled() {
        return;
    }
    struct Carrier<'a>(Vec<(&'static str, &'a str)>);
    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
    }
    let carrier = Carrier(
        ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| get(k).map(|v| (k, v)))
            .collect(),
    );
    if carrier.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    span.set_parent(cx);
}

/// The trace id a `traceparent` header names (for tests and logs).
pub fn trace_id_of(headers: Option<&HeaderMap>) -> Option<String> {
    let tp = headers?.get("traceparent")?.as_str();
    let mut parts = tp.split('-');
    let _version = parts.next()?;
    parts.next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_read_from_a_traceparent() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(
            trace_id_of(Some(&h)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_of(None), None);
    }

    #[test]
    fn off_by_default_writes_nothing() {
        let mut h = HeaderMap::new();
        inject(&mut h);
        assert!(h.get("traceparent").is_none());
        assert!(headers().is_none());
    }
}

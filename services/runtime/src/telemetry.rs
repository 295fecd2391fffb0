//! Logging and tracing.
//!
//! Logs are human-readable by default, JSON lines with `LOG_FORMAT=json`. Spans are
//! exported over OTLP (HTTP/protobuf) when the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not
//! `true`; otherwise no exporter, no OpenTelemetry layer and no trace headers exist.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub fn init(service: &str) {
    init_with(service, otlp_provider(service));
}

/// Installs the global subscriber; with `provider`, spans go to its exporters and
/// trace context is carried across NATS hops (see [`crate::trace`]). Returns false
/// when a subscriber was installed already.
pub fn init_with(service: &str, provider: Option<SdkTracerProvider>) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,async_nats=warn,sqlx=warn,hyper=warn,reqwest=warn")
    });
    let json = std::env::var("LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service.to_string()))
            .with_tracked_inactivity(false)
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if json {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    if result.is_err() {
        return false;
    }
    if let Some(p) = provider {
        let _ = PROVIDER.set(p);
        crate::trace::enable();
    }
    tracing::info!(service, tracing = crate::trace::enabled(), "starting");
    true
}

/// Exports what is still buffered; call before the process exits.
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
}

fn otlp_provider(service: &str) -> Option<SdkTracerProvider> {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP exporter not started ({e}); tracing is off");
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build(),
    )
}

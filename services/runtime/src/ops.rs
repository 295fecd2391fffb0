//! Operations endpoints every service serves on `METRICS_ADDR` (when set):
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
//! `/readyz` (200 only when start-up finished and NATS, the streams and, where the
//! service has one, the Postgres pool answer; 503 with the reason otherwise).
//!
//! The metrics live in one process-wide registry ([`REGISTRY`]): in production each
//! service is its own process, so each scrape shows that service's metrics (services
//! run in one process, as in the tests, share them).

use crate::{streams, Config, Shutdown};
use async_nats::jetstream;
use axum::{extract::State, http::header, http::StatusCode, response::IntoResponse, routing::get};
pub use prometheus::IntGauge;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

/// Every metric of this crate's services.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<M: prometheus::core::Collector + Clone + 'static>(m: M) -> M {
    REGISTRY
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histograms(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(HistogramVec::new(opts, labels).expect("valid metric"))
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Command handler: commands handled, by `type` and `outcome` (`accepted`, `rejected`,
/// `duplicate` = a repeated command id answered from the ledger, `internal` = a
/// `recheck` / `provider_result`, which have no outcome, `invalid` = dead-lettered).
pub static COMMANDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counters(
        "email_domains_commands_total",
        "Commands handled, by command type and outcome.",
        &["type", "outcome"],
    )
});

/// Command handler: appends refused because another writer moved the domain first.
pub static APPEND_CONFLICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counters(
        "email_domains_append_conflicts_total",
        "Event appends refused by the expected-last-sequence check, by command type.",
        &["type"],
    )
});

/// Command handler: from the command's arrival to its outcome being published.
pub static COMMAND_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histograms(
        "email_domains_command_duration_seconds",
        "Time from receiving a command to publishing its outcome, by command type.",
        &["type"],
        LATENCY_BUCKETS,
    )
});

/// Every service: operations abandoned because they failed in a way trying again
/// cannot change (see `retry`), by operation. Each one also logged an error saying why.
pub static GIVEN_UP: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counters(
        "email_domains_given_up_total",
        "Operations abandoned after a permanent failure (e.g. a message over the server's max payload), by operation.",
        &["operation"],
    )
});

/// Command handler: verdicts of the DNS records it checked.
pub static DNS_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counters(
        "email_domains_dns_records_checked_total",
        "DNS records checked, by verdict (found, missing, mismatch, lookup_failed, pending).",
        &["verdict"],
    )
});

/// Projectors: events in the log not yet applied (stream last sequence − checkpoint).
pub static PROJECTION_LAG_EVENTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "email_domains_projection_lag_events",
                "Events in the log not yet applied by the projection (stream last seq - checkpoint).",
            ),
            &["projection"],
        )
        .expect("valid metric"),
    )
});

/// Projectors: how old the oldest event not yet applied is (0 when caught up).
pub static PROJECTION_LAG_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register(
        GaugeVec::new(
            Opts::new(
                "email_domains_projection_lag_seconds",
                "Age of the oldest event the projection has not applied yet; 0 when caught up.",
            ),
            &["projection"],
        )
        .expect("valid metric"),
    )
});

/// Command handler: commands taken from the stream and waiting for a worker, by
/// `class` (`interactive`: a person waits; `background`).
pub static HANDLER_QUEUED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "email_domains_handler_queued_commands",
                "Commands the handler holds and has not started, by class.",
            ),
            &["class"],
        )
        .expect("valid metric"),
    )
});

/// Command handler: each owned partition's commands not finished yet (waiting on the
/// server plus taken in and not acknowledged), sampled every few seconds; 0 once the
/// partition is given up.
pub static PARTITION_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "email_domains_partition_lag",
                "Commands of a partition this instance owns that are not finished yet.",
            ),
            &["partition"],
        )
        .expect("valid metric"),
    )
});

/// Command handler: public commands the intake has read and not yet moved to their
/// partition (it moves them fair between tenants, people first).
pub static INTAKE_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "email_domains_intake_backlog",
            "Commands the intake has read and not yet moved to their partition.",
        )
        .expect("valid metric"),
    )
});

/// Command handler: how many partitions this instance owns.
pub static PARTITIONS_OWNED: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "email_domains_partitions_owned",
            "Partitions of the command work this instance owns.",
        )
        .expect("valid metric"),
    )
});

/// Scheduler: timers not fired yet.
pub static TIMERS_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "email_domains_timers_pending",
            "Timers waiting to fire (sampled).",
        )
        .expect("valid metric"),
    )
});

/// Scheduler: timers fired (each published one `recheck` command).
pub static TIMERS_FIRED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "email_domains_timers_fired_total",
            "Timers fired (recheck commands published).",
        )
        .expect("valid metric"),
    )
});

/// Provider worker: provider calls by `operation` (create, verify, poll, delete) and
/// `status` (ok, rejected, not_found, rate_limited, unavailable).
pub static PROVIDER_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counters(
        "email_domains_provider_calls_total",
        "Provider calls, by operation and status.",
        &["operation", "status"],
    )
});

/// Provider worker: duration of one work item's provider calls.
pub static PROVIDER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histograms(
        "email_domains_provider_call_duration_seconds",
        "Duration of provider calls, by operation.",
        &["operation"],
        LATENCY_BUCKETS,
    )
});

/// Counts the verdicts of one DNS check.
pub fn dns_checked(records: &[email_domain_events::records::DnsRecord]) {
    for r in records {
        let verdict = serde_json::to_value(r.dns_status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        DNS_RECORDS.with_label_values(&[verdict.as_str()]).inc();
    }
}

/// The Prometheus text of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).unwrap_or_default()
}

/// A service's readiness, and the handle that serves the endpoints.
#[derive(Clone)]
pub struct Ops(Arc<Inner>);

struct Inner {
    service: &'static str,
    started: AtomicBool,
    shutdown: Shutdown,
    nats: OnceLock<async_nats::Client>,
    jetstream: OnceLock<jetstream::Context>,
    postgres: OnceLock<sqlx::PgPool>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Ops {
    /// Serves `/metrics`, `/healthz` and `/readyz` on `config.ops_addr` until shutdown
    /// (nothing is served when it is `None`). Not ready until [`Ops::ready`].
    pub async fn serve(
        config: &Config,
        service: &'static str,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Ops> {
        let ops = Ops(Arc::new(Inner {
            service,
            started: AtomicBool::new(false),
            shutdown: shutdown.clone(),
            nats: OnceLock::new(),
            jetstream: OnceLock::new(),
            postgres: OnceLock::new(),
        }));
        LazyLock::force(&COMMANDS); // the registry exists before the first scrape
        if let Some(addr) = config.ops_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on METRICS_ADDR={addr}: {e}"))?;
            let app = axum::Router::new()
                .route("/metrics", get(metrics))
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/readyz", get(readyz))
                .with_state(ops.clone());
            tracing::info!(service, %addr, "serving /metrics, /healthz and /readyz");
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.wait().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(service, error = %e, "ops server stopped");
                }
            });
        }
        Ok(ops)
    }

    /// Readiness needs this NATS connection to be up.
    pub fn nats(&self, client: &async_nats::Client) -> &Self {
        let _ = self.0.nats.set(client.clone());
        self
    }

    /// Readiness needs NATS up and the streams of docs/interface.md §2 present.
    pub fn jetstream(&self, js: &jetstream::Context) -> &Self {
        let _ = self.0.jetstream.set(js.clone());
        self.nats(&js.client())
    }

    /// Readiness needs this pool to answer.
    pub fn postgres(&self, pool: &sqlx::PgPool) -> &Self {
        let _ = self.0.postgres.set(pool.clone());
        self
    }

    /// Start-up has finished: from now on readiness is the checks'.
    pub fn ready(&self) {
        self.0.started.store(true, Ordering::SeqCst);
        tracing::info!(service = self.0.service, "started");
    }

    /// `Ok` when ready; else what is not.
    pub async fn check(&self) -> Result<(), String> {
        let me = &self.0;
        if me.shutdown.is_triggered() {
            return Err("shutting down".into());
        }
        if !me.started.load(Ordering::SeqCst) {
            return Err("starting".into());
        }
        if let Some(client) = me.nats.get() {
            let state = client.connection_state();
            if state != async_nats::connection::State::Connected {
                return Err(format!("NATS not connected ({state:?})"));
            }
        }
        if let Some(js) = me.jetstream.get() {
            use futures::TryStreamExt;
            let names = tokio::time::timeout(
                CHECK_TIMEOUT,
                js.stream_names().try_collect::<Vec<String>>(),
            )
            .await
            .map_err(|_| "JetStream did not answer".to_string())?
            .map_err(|e| format!("JetStream: {e}"))?;
            for s in streams::stream_configs(&Default::default()) {
                if !names.contains(&s.name) {
                    return Err(format!("stream {} missing", s.name));
                }
            }
        }
        if let Some(pool) = me.postgres.get() {
            tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool))
                .await
                .map_err(|_| "Postgres did not answer".to_string())?
                .map_err(|e| format!("Postgres: {e}"))?;
        }
        Ok(())
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        render(),
    )
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    match ops.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Keeps `email_domains_projection_lag_*{projection}` from the checkpoint it is given,
/// sampling the event stream every few seconds while it lives.
pub struct ProjectionLag {
    checkpoint: Arc<AtomicU64>,
}

const UNKNOWN: u64 = u64::MAX;

impl ProjectionLag {
    pub fn start(js: &jetstream::Context, projection: &str, shutdown: &Shutdown) -> Self {
        let checkpoint = Arc::new(AtomicU64::new(UNKNOWN));
        let weak = Arc::downgrade(&checkpoint);
        let (js, name, shutdown) = (js.clone(), projection.to_string(), shutdown.clone());
        tokio::spawn(async move {
            // Ends when the projection drops its `ProjectionLag`, or at shutdown.
            while let Some(cp) = weak.upgrade().map(|c| c.load(Ordering::SeqCst)) {
                let pause = if cp == UNKNOWN {
                    Duration::from_millis(200)
                } else {
                    if let Err(e) = sample_lag(&js, &name, cp).await {
                        tracing::debug!(projection = %name, error = %e, "lag not sampled");
                    }
                    Duration::from_secs(5)
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait() => break,
                }
            }
        });
        ProjectionLag { checkpoint }
    }

    /// The projection's checkpoint moved (or was read at start).
    pub fn set(&self, checkpoint: u64) {
        self.checkpoint.store(checkpoint, Ordering::SeqCst);
    }
}

async fn sample_lag(js: &jetstream::Context, name: &str, checkpoint: u64) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(CHECK_TIMEOUT, js.get_stream(streams::EVENTS)).await??;
    let last = stream.cached_info().state.last_sequence;
    let behind = last.saturating_sub(checkpoint);
    PROJECTION_LAG_EVENTS
        .with_label_values(&[name])
        .set(behind as i64);
    let seconds = if behind == 0 {
        0.0
    } else {
        let oldest =
            tokio::time::timeout(CHECK_TIMEOUT, stream.direct_get(checkpoint + 1)).await??;
        let now = chrono::Utc::now().timestamp_micros() as i128 * 1000;
        ((now - oldest.time.unix_timestamp_nanos()).max(0) as f64) / 1e9
    };
    PROJECTION_LAG_SECONDS
        .with_label_values(&[name])
        .set(seconds);
    Ok(())
}

//! P6, noisy neighbour: while one tenant's burst (or a fleet's re-checks coming due
//! together) is being worked off, another tenant sends one command every 20 ms.
//! That tenant's latency, publish → outcome and publish → row visible, is the figure.

use crate::{count_status, percentile, publish_command, Figure};
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

/// What loads the stack while the quiet tenant sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Tenant X publishes this many `register_domain` at once.
    Burst(usize),
    /// This many registered domains' re-checks come due in the same second.
    RecheckStorm(usize),
}

pub struct P6 {
    pub outcome_ms: Latency,
    pub row_ms: Latency,
    /// How long X's burst took to reach `awaiting_dns` (bursts only).
    pub burst_secs: Option<f64>,
    pub sent: usize,
}

pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut v: Vec<f64>) -> Latency {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Latency {
            p50: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

/// One P6 run on a stack of `options` (the scheduler only for the re-check storm).
pub async fn run(load: Load, quiet_secs: u64, options: StackOptions) -> anyhow::Result<P6> {
    let options_handlers = options.handlers;
    let storm = matches!(load, Load::RecheckStorm(_));
    let stack = Stack::start_with(StackOptions {
        scheduler: storm,
        policy: if storm {
            storm_policy()
        } else {
            options.policy.clone()
        },
        ..options
    })
    .await;
    stack
        .wait_partitions(
            stack.config.handler_partitions,
            options_handlers,
            Duration::from_secs(60),
        )
        .await;
    let rows = watch_rows(&stack).await?;
    let outcomes = watch_outcomes(&stack).await?;
    let tracing = std::env::var_os("BENCH_TRACE").is_some();
    let moves = if tracing {
        Some(watch_moves(&stack).await?)
    } else {
        None
    };
    let noisy = Uuid::new_v4();
    let burst_started = Instant::now();
    let burst = match load {
        Load::Burst(n) => {
            publish_registrations(&stack, noisy, "x", n).await?;
            Some(n)
        }
        Load::RecheckStorm(n) => {
            publish_registrations(&stack, noisy, "x", n).await?;
            wait_awaiting(&stack, n, Duration::from_secs(600)).await?;
            hold_timers(&stack).await?;
            wait_all_due(&stack).await?;
            // Every timer due now, and every domain's check due by the handler's own
            // reckoning: the scheduler fires them all at once, and each does a check.
            sqlx::query("UPDATE scheduler_timers SET due_at = now()")
                .execute(&stack.pool)
                .await?;
            None
        }
    };
    let quiet = Uuid::new_v4();
    let sampler = tracing.then(|| {
        tokio::spawn(sample_queues(
            stack.js.clone(),
            stack.config.handler_partitions,
        ))
    });
    let published = send_quietly(&stack, quiet, quiet_secs).await?;
    if let Some(s) = sampler {
        s.abort();
    }
    let burst_secs = match burst {
        Some(n) => {
            wait_awaiting(&stack, n, Duration::from_secs(600)).await?;
            Some(burst_started.elapsed().as_secs_f64())
        }
        None => None,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while (rows.lock().unwrap().len() < published.len()
        || outcomes.lock().unwrap().len() < published.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let since = |seen: &Times| -> Vec<f64> {
        let seen = seen.lock().unwrap();
        published
            .iter()
            .filter_map(|(key, at)| seen.get(key).map(|s| ms(*at, *s)))
            .collect()
    };
    let (row_ms, outcome_ms) = (since(&rows), since(&outcomes));
    if let Some(moves) = &moves {
        trace_by_second(
            &published,
            &moves.lock().unwrap(),
            &outcomes.lock().unwrap(),
            &rows.lock().unwrap(),
        );
    }
    anyhow::ensure!(
        row_ms.len() == published.len() && outcome_ms.len() == published.len(),
        "P6: of {} commands, {} rows and {} outcomes arrived",
        published.len(),
        row_ms.len(),
        outcome_ms.len()
    );
    stack.shutdown().await;
    Ok(P6 {
        outcome_ms: Latency::of(outcome_ms),
        row_ms: Latency::of(row_ms),
        burst_secs,
        sent: published.len(),
    })
}

/// Where in the run the slow commands were: per second of sending, how long the
/// quiet tenant's commands took to reach their partition (the intake's move), their
/// outcome and their row, median and maximum (`BENCH_TRACE=1`).
fn trace_by_second(
    published: &HashMap<String, Instant>,
    moved: &HashMap<String, Instant>,
    answered: &HashMap<String, Instant>,
    rows: &HashMap<String, Instant>,
) {
    let Some(start) = published.values().min().copied() else {
        return;
    };
    let mut by_second: std::collections::BTreeMap<u64, [Vec<f64>; 3]> = Default::default();
    for (key, at) in published {
        let second = by_second
            .entry(at.duration_since(start).as_secs())
            .or_default();
        for (stage, seen) in [moved, answered, rows].into_iter().enumerate() {
            if let Some(s) = seen.get(key) {
                second[stage].push(ms(*at, *s));
            }
        }
    }
    for (second, [moved, answered, rows]) in by_second {
        let [m, a, r] = [moved, answered, rows].map(Latency::of);
        eprintln!(
            "    second {second:>2}: p50 / max moved {:.1} / {:.1}, outcome {:.1} / {:.1}, row {:.1} / {:.1} ms",
            m.p50, m.max, a.p50, a.max, r.p50, r.max
        );
    }
}

fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Row visibility is observed, not polled: a trigger notifies at the projector's commit.
async fn watch_rows(stack: &Stack) -> anyhow::Result<Times> {
    sqlx::query(
        "CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger AS $$
         BEGIN PERFORM pg_notify('bench_rows', NEW.domain_name); RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    .execute(&stack.pool)
    .await?;
    sqlx::query("CREATE TRIGGER bench_rows AFTER INSERT ON email_domains FOR EACH ROW WHEN (NEW.domain_name LIKE 'y-%') EXECUTE FUNCTION bench_notify()")
        .execute(&stack.pool)
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&stack.pool).await?;
    listener.listen("bench_rows").await?;
    let seen: Times = Default::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok(n) = listener.recv().await {
            seen.lock()
                .unwrap()
                .entry(n.payload().to_string())
                .or_insert_with(Instant::now);
        }
    });
    Ok(out)
}

/// Every 100 ms for the first 3 s of the quiet tenant's sending: where commands wait
/// (`BENCH_TRACE`): in the commands stream not yet read by the intake, read and not
/// moved, and in the partition streams not yet delivered to a handler, or delivered
/// and not handled.
async fn sample_queues(js: async_nats::jetstream::Context, partitions: u32) {
    let start = Instant::now();
    let (Ok(commands), Ok(parts)) = (
        js.get_stream(runtime::streams::COMMANDS).await,
        js.get_stream(runtime::partitions::STREAM).await,
    ) else {
        return;
    };
    while start.elapsed() < Duration::from_secs(3) {
        let intake = commands.consumer_info("command-handler").await.ok();
        let (mut pending, mut delivered) = (0u64, 0usize);
        for p in 0..partitions {
            if let Ok(i) = parts.consumer_info(runtime::partitions::consumer(p)).await {
                pending += i.num_pending;
                delivered += i.num_ack_pending;
            }
        }
        eprintln!(
            "    at {:>4} ms: intake not read {}, read not moved {}; partitions not delivered {}, delivered not handled {}",
            start.elapsed().as_millis(),
            intake.as_ref().map_or(0, |i| i.num_pending),
            intake.as_ref().map_or(0, |i| i.num_ack_pending),
            pending,
            delivered
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When the intake moved each of the quiet tenant's commands to its partition
/// (`BENCH_TRACE` only: it reads every move of the burst too).
async fn watch_moves(stack: &Stack) -> anyhow::Result<Times> {
    let subject = format!(
        "{}*.register_domain",
        runtime::partitions::SUBJECTS.trim_end_matches('>')
    );
    let mut sub = stack.client.subscribe(subject).await?;
    let seen: Times = Default::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let at = Instant::now();
            if !m.payload.windows(3).any(|w| w == b"\"y-") {
                continue;
            }
            let Ok(c) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            if let Some(d) = c["domain"].as_str() {
                seen.lock().unwrap().entry(d.to_string()).or_insert(at);
            }
        }
    });
    Ok(out)
}

/// Outcomes of the quiet tenant's commands, by domain name.
async fn watch_outcomes(stack: &Stack) -> anyhow::Result<Times> {
    let mut sub = stack.client.subscribe("email_domains.outcomes.>").await?;
    let seen: Times = Default::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let at = Instant::now();
            let Ok(o) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            if let Some(d) = o["domain"].as_str().filter(|d| d.starts_with("y-")) {
                seen.lock().unwrap().entry(d.to_string()).or_insert(at);
            }
        }
    });
    Ok(out)
}

async fn publish_registrations(
    stack: &Stack,
    tenant: Uuid,
    prefix: &str,
    n: usize,
) -> anyhow::Result<()> {
    let mut acks = Vec::with_capacity(2048);
    for i in 0..n {
        let body = json!({"command_id": Uuid::new_v4(), "tenant_id": tenant, "domain": format!("{prefix}-{i}.test")});
        acks.push(publish_command(&stack.js, "register_domain", body).await?);
        if acks.len() == 2048 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// The storm's cadence: the first check 30 s after provisioning (the default is
/// 300 s, which would make the bench wait five minutes for the checks to be due; the
/// work of a check is the same), the next one a minute after it, after the run.
/// A burst slower than 27 s lets the scheduler check its first domains early (those
/// then are not due in the storm).
fn storm_policy() -> email_domain_events::Policy {
    email_domain_events::Policy {
        recheck_initial: chrono::Duration::seconds(30),
        ..email_domain_events::Policy::default()
    }
}

/// Holds every timer back (an hour) while the domains' checks come due.
async fn hold_timers(stack: &Stack) -> anyhow::Result<()> {
    sqlx::query("UPDATE scheduler_timers SET due_at = now() + interval '1 hour'")
        .execute(&stack.pool)
        .await?;
    Ok(())
}

/// Waits until every domain's next check has passed by the handler's own reckoning,
/// so each re-check the scheduler fires does a check.
async fn wait_all_due(stack: &Stack) -> anyhow::Result<()> {
    let last: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT max(next_check_at) FROM email_domains")
            .fetch_one(&stack.pool)
            .await?;
    let last = last.ok_or_else(|| anyhow::anyhow!("P6: no checks to come due"))?;
    let wait = (last - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(1)).await;
    Ok(())
}

async fn wait_awaiting(stack: &Stack, n: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while (count_status(stack, "awaiting_dns").await as usize) < n {
        anyhow::ensure!(Instant::now() < deadline, "P6: the burst never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One `register_domain` every 20 ms for `secs`; returns when each was published.
async fn send_quietly(
    stack: &Stack,
    tenant: Uuid,
    secs: u64,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut published = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..(secs * 50) {
        ticker.tick().await;
        let name = format!("y-{i}.test");
        let body = json!({"command_id": Uuid::new_v4(), "tenant_id": tenant, "domain": name});
        published.insert(name, Instant::now());
        let ack = publish_command(&stack.js, "register_domain", body).await?;
        tokio::spawn(async move {
            let _ = ack.await;
        });
    }
    Ok(published)
}

/// The figures of one P6 run, with `label` naming the load.
pub fn figures(label: &str, p6: &P6, p1_secs: Option<f64>) -> Vec<Figure> {
    let target = "p99 ≤ 50 ms";
    let row = |measure: &str, l: &Latency| Figure {
        case: "P6".into(),
        measure: format!(
            "{label}: quiet tenant publish → {measure}, p50 / max {:.1} / {:.1} ms ({} commands)",
            l.p50, l.max, p6.sent
        ),
        value: l.p99,
        unit: "ms p99".into(),
        baseline: None,
        ratio: None,
        target: target.into(),
        pass: Some(l.p99 <= 50.0),
    };
    let mut out = vec![
        row("outcome", &p6.outcome_ms),
        row("row visible", &p6.row_ms),
    ];
    if let Some(secs) = p6.burst_secs {
        out.push(Figure {
            case: "P6".into(),
            measure: format!(
                "{label}: the burst all awaiting_dns (P1's pace for the same count, ≤ +10 %)"
            ),
            value: secs,
            unit: "s".into(),
            baseline: p1_secs,
            ratio: p1_secs.map(|b| secs / b),
            target: "≤ 1.1 × P1".into(),
            pass: p1_secs.map(|b| secs <= 1.1 * b),
        });
    }
    out
}

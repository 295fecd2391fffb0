//! `make bench`: the service measured against raw JetStream in the same run.
//!
//! Starts its own nats-server (JetStream, temporary store) and a fresh database,
//! measures the raw baselines first (async publish with acks of same-sized
//! messages; ordered-consumer read), then each case, and prints one table: figure,
//! baseline, ratio, target, pass/fail. Results also go to `bench/results/*.json`.
//! `--quick` runs smaller sizes; `--only P1,P3` some cases.
//!
//! Besides the cases, it measures where the time goes: the CPU each process used
//! and the JetStream traffic per registration (P1), cores busy and Postgres work at
//! 500/s (P2), the replay's floor (the read alone, Postgres loading the rows alone)
//! (P3), and the handler's own part of a cold command (P5). `BENCH_TRACE=1` prints
//! more; `BENCH_P2_RATE=N` offers P2 at another rate.
#![forbid(unsafe_code)]

mod noisy;

use async_nats::jetstream::{self, message::PublishMessage};
use bench::{cpu_secs, cpu_secs_of, ordered_read};
use email_domain_events::event::{Event, EventData, SCHEMA_VERSION};
use email_domain_events::{evolve, CommandId, DomainId, EventId, TenantId};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use system_tests::{Nats, Stack, StackOptions};
use uuid::Uuid;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Serialize, Clone)]
struct Figure {
    case: String,
    measure: String,
    value: f64,
    unit: String,
    baseline: Option<f64>,
    ratio: Option<f64>,
    target: String,
    pass: Option<bool>,
}

struct Sizes {
    raw: usize,
    p1: usize,
    p2_secs: u64,
    p3_domains: usize,
    p4_timers: usize,
    p4_due: usize,
    p5_domains: usize,
    p6_burst: usize,
    p6_secs: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let sizes = if quick {
        Sizes {
            raw: 50_000,
            p1: 5_000,
            p2_secs: 5,
            p3_domains: 10_000,
            p4_timers: 100_000,
            p4_due: 5_000,
            p5_domains: 3,
            p6_burst: 5_000,
            p6_secs: 5,
        }
    } else {
        Sizes {
            raw: 200_000,
            p1: 30_000,
            p2_secs: 20,
            p3_domains: 100_000,
            p4_timers: 1_000_000,
            p4_due: 20_000,
            p5_domains: 10,
            p6_burst: 20_000,
            p6_secs: 20,
        }
    };
    // P1's pace, for P6's burst to be compared with.
    let mut p1_rate: Option<f64> = None;
    let wants = |c: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == c));
    let mut figures = Vec::new();

    eprintln!(
        "raw JetStream baselines ({} messages of 300 bytes)...",
        sizes.raw
    );
    let Raw {
        publish: raw_publish,
        read: raw_read,
        publish_cpu_us: raw_cpu_us,
        ..
    } = raw_baselines(sizes.raw).await?;
    figures.push(Figure {
        case: "raw".into(),
        measure: "JetStream async publish with acks".into(),
        value: raw_publish,
        unit: "msg/s".into(),
        baseline: None,
        ratio: None,
        target: "-".into(),
        pass: None,
    });
    figures.push(Figure {
        case: "raw".into(),
        measure: "CPU per raw publish (client + nats-server)".into(),
        value: raw_cpu_us,
        unit: "µs".into(),
        baseline: None,
        ratio: None,
        target: "-".into(),
        pass: None,
    });
    figures.push(Figure {
        case: "raw".into(),
        measure: "JetStream ordered-consumer read".into(),
        value: raw_read,
        unit: "msg/s".into(),
        baseline: None,
        ratio: None,
        target: "-".into(),
        pass: None,
    });

    for handlers in if wants("P1") { HANDLERS } else { &[][..] } {
        let handlers = *handlers;
        let shape = shape(handlers);
        eprintln!(
            "P1: {} register_domain commands to awaiting_dns, {shape}...",
            sizes.p1
        );
        let (rate, cost) = p1_throughput(sizes.p1, handlers).await?;
        if handlers == 1 {
            p1_rate = Some(rate);
        }
        let ratio = rate / raw_publish;
        let cpu = cost.cpu_us_services + cost.cpu_us_nats + cost.cpu_us_postgres;
        // Where the time goes: what one registration costs, in CPU and in JetStream
        // traffic, against what one raw publish costs (client and server) in this run.
        for (measure, value, unit) in [
            ("CPU per registration, all processes".to_string(), cpu, "µs"),
            (
                "CPU per registration, the services and the load (bench process and service processes)".into(),
                cost.cpu_us_services,
                "µs",
            ),
            (
                "CPU per registration, nats-server".into(),
                cost.cpu_us_nats,
                "µs",
            ),
            (
                "CPU per registration, Postgres".into(),
                cost.cpu_us_postgres,
                "µs",
            ),
            (
                "JetStream messages stored per registration".into(),
                cost.messages_stored,
                "msgs",
            ),
            (
                "JetStream consumer deliveries per registration".into(),
                cost.deliveries,
                "msgs",
            ),
            (
                "cores busy during P1 (of 2)".into(),
                cost.cores_busy,
                "cores",
            ),
        ] {
            let is_cpu = unit == "µs";
            figures.push(Figure {
                case: "P1 cost".into(),
                measure: format!("{measure} ({shape})"),
                value,
                unit: unit.into(),
                baseline: is_cpu.then_some(raw_cpu_us),
                ratio: is_cpu.then_some(value / raw_cpu_us),
                target: if is_cpu {
                    "(baseline: CPU of one raw publish)".into()
                } else {
                    "-".into()
                },
                pass: None,
            });
        }
        figures.push(Figure {
            case: "P1".into(),
            measure: format!(
                "register_domain → awaiting_dns, {} domains, {shape}",
                sizes.p1
            ),
            value: rate,
            unit: "commands/s".into(),
            baseline: Some(raw_publish),
            ratio: Some(ratio),
            target: "≥ 0.05 × raw publish (aim 0.08)".into(),
            pass: Some(ratio >= 0.05),
        });
    }
    for handlers in if wants("P2") { HANDLERS } else { &[][..] } {
        let handlers = *handlers;
        let shape = shape(handlers);
        eprintln!(
            "P2: 500 commands/s for {} s, publish → row visible, {shape}...",
            sizes.p2_secs
        );
        let (p50, p99, max, busy) = p2_latency(sizes.p2_secs, handlers).await?;
        figures.push(Figure {
            case: "P2".into(),
            measure: format!("cores busy while 500/s are offered (of 2), {shape}"),
            value: busy,
            unit: "cores".into(),
            baseline: None,
            ratio: None,
            target: "-".into(),
            pass: None,
        });
        for (m, v) in [("p50", p50), ("max", max)] {
            figures.push(Figure {
                case: "P2".into(),
                measure: format!("publish → row visible at 500/s, {m}, {shape}"),
                value: v,
                unit: "ms".into(),
                baseline: None,
                ratio: None,
                target: "-".into(),
                pass: None,
            });
        }
        figures.push(Figure {
            case: "P2".into(),
            measure: format!("publish → row visible at 500/s, p99, {shape}"),
            value: p99,
            unit: "ms".into(),
            baseline: None,
            ratio: None,
            target: "p99 ≤ 25 ms".into(),
            pass: Some(p99 <= 25.0),
        });
    }
    if wants("P3") {
        let events = sizes.p3_domains * 10;
        eprintln!(
            "P3: replay of both projections from {events} events ({} domains × 10)...",
            sizes.p3_domains
        );
        let P3 {
            rate,
            postgres_alone,
            cpu,
            read_alone,
            read_alone_nats_us,
            ordered_alone,
        } = p3_replay(sizes.p3_domains).await?;
        let ratio = rate / raw_read;
        // The events replayed are larger than the baseline's 300-byte messages: the
        // same read of messages of the events' mean size, for comparison.
        let size = mean_event_size();
        let Raw {
            read: sized_read, ..
        } = raw_baselines_sized(sizes.raw, size).await?;
        figures.push(Figure {
            case: "P3".into(),
            measure: format!(
                "replay email_domains + tenant_settings, {events} events, swap included"
            ),
            value: rate,
            unit: "events/s".into(),
            baseline: Some(raw_read),
            ratio: Some(ratio),
            target: "≥ 0.5 × raw ordered read".into(),
            pass: Some(ratio >= 0.5),
        });
        // Where the floor is: reading the very events replayed (no decoding, nothing
        // else), and Postgres loading the rows (nothing else), each alone.
        figures.push(Figure {
            case: "P3 floor".into(),
            measure: format!(
                "an ordered-consumer read (the baseline's read) of the {events} events replayed, alone, each dropped unread"
            ),
            value: ordered_alone,
            unit: "events/s".into(),
            baseline: Some(raw_read),
            ratio: Some(ordered_alone / raw_read),
            target: "-".into(),
            pass: None,
        });
        let read_alone_rate = events as f64 / read_alone;
        figures.push(Figure {
            case: "P3 floor".into(),
            measure: format!(
                "the replay's own read of the {events} events, alone, each dropped unread ({read_alone:.1} s)"
            ),
            value: read_alone_rate,
            unit: "events/s".into(),
            baseline: Some(raw_read),
            ratio: Some(read_alone_rate / raw_read),
            target: "-".into(),
            pass: None,
        });
        figures.push(Figure {
            case: "P3 floor".into(),
            measure: "Postgres loading the rebuilt rows alone (2 COPY streams)".to_string(),
            value: postgres_alone,
            unit: "s".into(),
            baseline: None,
            ratio: None,
            target: "-".into(),
            pass: None,
        });
        let floor_rate = events as f64 / (read_alone + postgres_alone);
        figures.push(Figure {
            case: "P3 floor".into(),
            measure: "events / (the replay's read alone + load alone): a replay with free decoding, folding and formatting".into(),
            value: floor_rate,
            unit: "events/s".into(),
            baseline: Some(raw_read),
            ratio: Some(floor_rate / raw_read),
            target: "(what 0.5 would need)".into(),
            pass: None,
        });
        // What each process used while the replay ran, and what that leaves: the
        // server and the database alone would keep both cores busy this long.
        let seconds = events as f64 / rate;
        let others = cpu.nats + cpu.postgres;
        figures.push(Figure {
            case: "P3 cost".into(),
            measure: format!(
                "CPU during the replay: replay {:.1} / nats-server {:.1} / Postgres {:.1} core-seconds ({:.2} of 2 cores busy)",
                cpu.services,
                cpu.nats,
                cpu.postgres,
                cpu.total() / seconds
            ),
            value: cpu.total(),
            unit: "core-s".into(),
            baseline: None,
            ratio: None,
            target: "-".into(),
            pass: None,
        });
        figures.push(Figure {
            case: "P3 cost".into(),
            measure: format!(
                "nats-server CPU per event delivered: during the replay (against {read_alone_nats_us:.1} µs in the replay's read of the same log alone)"
            ),
            value: cpu.nats / events as f64 * 1e6,
            unit: "µs".into(),
            baseline: Some(read_alone_nats_us),
            ratio: Some(cpu.nats / events as f64 * 1e6 / read_alone_nats_us.max(1e-9)),
            target: "-".into(),
            pass: None,
        });
        let cpu_floor = events as f64 / (others / 2.0);
        figures.push(Figure {
            case: "P3 floor".into(),
            measure: "events / ((nats-server + Postgres CPU) / 2 cores): a replay process that cost no CPU at all".into(),
            value: cpu_floor,
            unit: "events/s".into(),
            baseline: Some(raw_read),
            ratio: Some(cpu_floor / raw_read),
            target: "(what 0.5 would need)".into(),
            pass: None,
        });
        figures.push(Figure {
            case: "P3'".into(),
            measure: format!(
                "the same replay against an ordered read of {size}-byte messages (the events' mean size)"
            ),
            value: rate,
            unit: "events/s".into(),
            baseline: Some(sized_read),
            ratio: Some(rate / sized_read),
            target: "(for comparison)".into(),
            pass: None,
        });
    }
    if wants("P4") {
        eprintln!(
            "P4: scheduler with {} pending timers, {} falling due...",
            sizes.p4_timers, sizes.p4_due
        );
        let (rss_mb, p99, max) = p4_timers(sizes.p4_timers, sizes.p4_due).await?;
        figures.push(Figure {
            case: "P4".into(),
            measure: format!("scheduler peak RSS, {} pending timers", sizes.p4_timers),
            value: rss_mb,
            unit: "MB".into(),
            baseline: None,
            ratio: None,
            target: "≤ 256 MB".into(),
            pass: Some(rss_mb <= 256.0),
        });
        figures.push(Figure {
            case: "P4".into(),
            measure: "firing lag (publish − due), max".into(),
            value: max,
            unit: "ms".into(),
            baseline: None,
            ratio: None,
            target: "-".into(),
            pass: None,
        });
        figures.push(Figure {
            case: "P4".into(),
            measure: "firing lag (publish − due), p99".into(),
            value: p99,
            unit: "ms".into(),
            baseline: None,
            ratio: None,
            target: "p99 ≤ 1000 ms".into(),
            pass: Some(p99 <= 1000.0),
        });
    }
    if wants("P5") {
        eprintln!(
            "P5: one command on {} domains with 10,015 past events each, cold handler...",
            sizes.p5_domains
        );
        let p5 = p5_long_history(sizes.p5_domains).await?;
        let (p50, max) = (p5.median, p5.max);
        for (m, v, target, pass) in [
            ("median", p5.server_warm_median, "-", None),
            (
                "max",
                p5.server_warm_max,
                "(≤ 5 ms: the handler's own part)",
                Some(p5.server_warm_max <= 5.0),
            ),
        ] {
            figures.push(Figure {
                case: "P5 handler".into(),
                measure: format!(
                    "the same commands, handler restarted, nats-server's block cache warm, {m}"
                ),
                value: v,
                unit: "ms".into(),
                baseline: None,
                ratio: None,
                target: target.into(),
                pass,
            });
        }
        figures.push(Figure {
            case: "P5".into(),
            measure: "cold command on a 10,015-event history, median".into(),
            value: p50,
            unit: "ms".into(),
            baseline: None,
            ratio: None,
            target: "-".into(),
            pass: None,
        });
        figures.push(Figure {
            case: "P5".into(),
            measure: "cold command on a 10,015-event history, max".into(),
            value: max,
            unit: "ms".into(),
            baseline: None,
            ratio: None,
            target: "≤ 5 ms".into(),
            pass: Some(max <= 5.0),
        });
    }

    if wants("P6") {
        for (label, load) in [
            (
                format!("{} registrations of one tenant at once", sizes.p6_burst),
                noisy::Load::Burst(sizes.p6_burst),
            ),
            (
                format!("{} re-checks due in one second", sizes.p6_burst),
                noisy::Load::RecheckStorm(sizes.p6_burst),
            ),
        ] {
            eprintln!(
                "P6: {label}, and a quiet tenant's command every 20 ms for {} s...",
                sizes.p6_secs
            );
            let p6 = noisy::run(load, sizes.p6_secs, process_options(1)).await?;
            let p1_secs = p1_rate.map(|r| sizes.p6_burst as f64 / r);
            for f in noisy::figures(&label, &p6, p1_secs) {
                eprintln!("  {}: {:.1} {}", f.measure, f.value, f.unit);
                figures.push(f);
            }
        }
    }
    print_table(&figures);
    write_results(&figures, quick)?;
    Ok(())
}

fn print_table(figures: &[Figure]) {
    println!();
    println!("| case | measure | figure | baseline | ratio | target | pass |");
    println!("|---|---|---|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | {} | {:.1} {} | {} | {} | {} | {} |",
            f.case,
            f.measure,
            f.value,
            f.unit,
            f.baseline
                .map(|b| if b < 100.0 {
                    format!("{b:.1}")
                } else {
                    format!("{b:.0}")
                })
                .unwrap_or("-".into()),
            f.ratio.map(|r| format!("{r:.3}")).unwrap_or("-".into()),
            f.target,
            match f.pass {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "-",
            }
        );
    }
}

fn write_results(figures: &[Figure], quick: bool) -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!("bench-{stamp}.json"));
    let doc = json!({
        "at": chrono::Utc::now(),
        "quick": quick,
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "figures": figures,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    std::fs::copy(&path, dir.join("latest.json"))?;
    eprintln!("results written to {}", path.display());
    Ok(())
}

/// Raw JetStream on a server of its own: async publish with acks, then an ordered read.
async fn raw_baselines(n: usize) -> anyhow::Result<Raw> {
    raw_baselines_sized(n, 300).await
}

/// What raw JetStream does on this machine, measured in the same run.
struct Raw {
    /// Async publish with acks, msg/s.
    publish: f64,
    /// Ordered-consumer read, msg/s.
    read: f64,
    /// CPU (client and server) of one published message, µs.
    publish_cpu_us: f64,
}

/// The raw baselines with messages of `size` bytes.
async fn raw_baselines_sized(n: usize, size: usize) -> anyhow::Result<Raw> {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await?;
    let js = runtime::jetstream(client);
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let cpu_before = Cpu::now(&nats);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(4096);
    for i in 0..n {
        acks.push(
            js.send_publish(
                format!("raw.{}", i % 1000),
                PublishMessage::build().payload(payload.clone()),
            )
            .await?,
        );
        if acks.len() == 4096 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    let publish = n as f64 / started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&nats).since(cpu_before);
    let publish_cpu_us = (cpu.services + cpu.nats) / n as f64 * 1e6;

    Ok(Raw {
        publish,
        read: ordered_read(&stream, n as u64).await?,
        publish_cpu_us,
    })
}

/// The handler's settings as the services read them from the environment
/// (`HANDLER_WORKERS`, `HANDLER_FLEET_RATE`, ...); the defaults where unreadable.
fn service_settings() -> runtime::Config {
    runtime::Config::from_env()
        .or_else(|_| runtime::Config::from_vars(|_| None))
        .expect("the default configuration")
}

/// The handler instances P1 and P2 are measured with, in the same run.
const HANDLERS: &[usize] = &[1, 2];

/// Whether P1, P2 and P6 run the services as processes (the default, as deployed) or,
/// with `--in-process`, as tasks in the bench process.
fn as_processes() -> bool {
    !std::env::args().any(|a| a == "--in-process")
}

fn shape(handlers: usize) -> String {
    let how = if as_processes() {
        "services as processes"
    } else {
        "services in-process"
    };
    let s = if handlers == 1 { "" } else { "s" };
    format!("{handlers} handler{s}, {how}")
}

/// Where the service binaries are: beside the bench's own (`make bench` builds them).
fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the bench's path");
    let dir = exe.parent().expect("the bench's folder");
    system_tests::service_binaries_in(dir, "`make bench` builds them beside the bench")
}

/// P1's and P2's stack, started, its partitions shared by its `handlers` instances.
async fn measured_stack(handlers: usize) -> Stack {
    let stack = Stack::start_with(process_options(handlers)).await;
    stack
        .wait_partitions(
            stack.config.handler_partitions,
            handlers,
            Duration::from_secs(60),
        )
        .await;
    stack
}

/// The stack P1, P2 and P6 measure: `handlers` handler instances, as processes unless
/// `--in-process`.
fn process_options(handlers: usize) -> StackOptions {
    StackOptions {
        handlers,
        processes: as_processes().then(bin_dir),
        ..bench_options()
    }
}

/// The stack as deployed: the default number of handler lanes and workers.
fn bench_options() -> StackOptions {
    let settings = service_settings();
    StackOptions {
        handler_lanes: 256,
        handler_workers: settings.handler_workers,
        handler_fleet_rate: settings.handler_fleet_rate,
        handler_partitions: 8,
        ..StackOptions::default()
    }
}

async fn count_status(stack: &Stack, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM email_domains WHERE status = $1")
        .bind(status)
        .fetch_one(&stack.pool)
        .await
        .unwrap_or(0)
}

/// CPU seconds used so far by the bench process (all the services run in it), its
/// nats-server and the machine's Postgres.
#[derive(Clone, Copy)]
struct Cpu {
    services: f64,
    nats: f64,
    postgres: f64,
}

impl Cpu {
    fn now(nats: &Nats) -> Cpu {
        Cpu {
            services: cpu_secs(std::process::id()),
            nats: nats.pid().map(cpu_secs).unwrap_or(0.0),
            postgres: cpu_secs_of("postgres"),
        }
    }

    /// The services (the bench process and any service processes), nats-server, Postgres.
    fn of(stack: &Stack) -> Cpu {
        let mut cpu = Cpu::now(&stack.nats);
        cpu.services += stack.service_pids().into_iter().map(cpu_secs).sum::<f64>();
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            services: self.services - before.services,
            nats: self.nats - before.nats,
            postgres: self.postgres - before.postgres,
        }
    }

    fn total(self) -> f64 {
        self.services + self.nats + self.postgres
    }
}

/// Every message each stream has stored and every delivery each consumer has made.
async fn jetstream_traffic(js: &jetstream::Context) -> anyhow::Result<(u64, u64)> {
    let (mut stored, mut delivered) = (0, 0);
    let mut names = js.stream_names();
    while let Some(name) = names.next().await {
        let mut stream = js.get_stream(name?).await?;
        stored += stream.info().await?.state.last_sequence;
        let mut consumers = stream.consumers();
        while let Some(c) = consumers.next().await {
            delivered += c?.delivered.consumer_sequence;
        }
    }
    Ok((stored, delivered))
}

async fn publish_command(
    js: &jetstream::Context,
    t: &str,
    body: serde_json::Value,
) -> anyhow::Result<jetstream::context::PublishAckFuture> {
    let id = body["command_id"].as_str().unwrap_or_default().to_string();
    Ok(js
        .send_publish(
            format!("email_domains.commands.{t}"),
            PublishMessage::build()
                .payload(serde_json::to_vec(&body)?.into())
                .message_id(id),
        )
        .await?)
}

/// P1: distinct registrations published as fast as JetStream accepts them, until
/// every row is `awaiting_dns`.
/// What one registration costs in P1, measured over the run.
struct P1Cost {
    messages_stored: f64,
    deliveries: f64,
    cpu_us_services: f64,
    cpu_us_nats: f64,
    cpu_us_postgres: f64,
    cores_busy: f64,
}

async fn p1_throughput(n: usize, handlers: usize) -> anyhow::Result<(f64, P1Cost)> {
    let stack = measured_stack(handlers).await;
    let tenants: Vec<Uuid> = (0..(n / 100).max(1)).map(|_| Uuid::new_v4()).collect();
    let (stored_before, delivered_before) = jetstream_traffic(&stack.js).await?;
    let cpu_before = Cpu::of(&stack);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(2048);
    for i in 0..n {
        let body = json!({"command_id": Uuid::new_v4(), "tenant_id": tenants[i % tenants.len()], "domain": format!("p1-{i}.test")});
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
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        if std::env::var("BENCH_TRACE").is_ok()
            && last_report.elapsed() > Duration::from_millis(500)
        {
            last_report = Instant::now();
            let by_status: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, count(*) FROM email_domains GROUP BY 1")
                    .fetch_all(&stack.pool)
                    .await
                    .unwrap_or_default();
            let mut pending = Vec::new();
            for (stream, consumer) in [
                ("EMAIL_DOMAIN_COMMANDS", "command-handler"),
                ("EMAIL_DOMAIN_EVENTS", "provider-dispatch"),
                ("EMAIL_DOMAIN_PROVIDER_WORK", "provider-interactive"),
                ("EMAIL_DOMAIN_EVENTS", "projector-email-domains"),
                ("EMAIL_DOMAIN_EVENTS", "analytics-emitter"),
                ("EMAIL_DOMAIN_EVENTS", "scheduler-timers"),
            ] {
                if let Ok(s) = stack.js.get_stream(stream).await {
                    if let Ok(mut c) = s
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
                        .await
                    {
                        if let Ok(i) = c.info().await {
                            pending.push(format!(
                                "{consumer}: pending {} ack-pending {}",
                                i.num_pending, i.num_ack_pending
                            ));
                        }
                    }
                }
            }
            eprintln!(
                "  t={:.1}s {by_status:?} {}",
                started.elapsed().as_secs_f64(),
                pending.join("; ")
            );
        }
        let done = count_status(&stack, "awaiting_dns").await;
        if done as usize >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "P1: only {done} of {n} reached awaiting_dns"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu = Cpu::of(&stack).since(cpu_before);
    let (stored, delivered) = jetstream_traffic(&stack.js).await?;
    eprintln!(
        "  published in {:.2} s, all awaiting_dns after {:.2} s",
        published.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    let per = |x: f64| x / n as f64;
    let cost = P1Cost {
        messages_stored: per((stored - stored_before) as f64),
        deliveries: per((delivered - delivered_before) as f64),
        cpu_us_services: per(cpu.services) * 1e6,
        cpu_us_nats: per(cpu.nats) * 1e6,
        cpu_us_postgres: per(cpu.postgres) * 1e6,
        cores_busy: cpu.total() / elapsed.as_secs_f64(),
    };
    eprintln!(
        "  per registration: {:.1} JetStream messages stored, {:.1} deliveries; CPU {:.0} µs services + {:.0} µs nats-server + {:.0} µs Postgres; {:.2} cores busy",
        cost.messages_stored,
        cost.deliveries,
        cost.cpu_us_services,
        cost.cpu_us_nats,
        cost.cpu_us_postgres,
        cost.cores_busy
    );
    stack.shutdown().await;
    Ok((n as f64 / elapsed.as_secs_f64(), cost))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// P2: 500 registrations per second, each timed from publish to its row in Postgres.
async fn p2_latency(secs: u64, handlers: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let stack = measured_stack(handlers).await;
    let tenant = Uuid::new_v4();
    // BENCH_P2_RATE offers another rate (for finding where the latency comes from;
    // the case as defined is 500/s).
    let rate: u64 = std::env::var("BENCH_P2_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(500);
    let n = (secs * rate) as usize;
    let published: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let seen: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Row visibility is observed, not polled: a trigger notifies at the projector's commit.
    sqlx::query(
        "CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger AS $$
         BEGIN PERFORM pg_notify('bench_rows', NEW.domain_name); RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    .execute(&stack.pool)
    .await?;
    sqlx::query("CREATE TRIGGER bench_rows AFTER INSERT ON email_domains FOR EACH ROW EXECUTE FUNCTION bench_notify()")
        .execute(&stack.pool)
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&stack.pool).await?;
    listener.listen("bench_rows").await?;
    let poller = {
        let (seen, done) = (seen.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), listener.recv()).await
                {
                    seen.lock()
                        .unwrap()
                        .entry(n.payload().to_string())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    // With BENCH_TRACE: when each registration's first event is appended, seen by a
    // core subscriber, to split the latency into handler and projector parts.
    let appended: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let event_watch = if std::env::var("BENCH_TRACE").is_ok() {
        let mut sub = stack.client.subscribe("email_domains.events.>").await?;
        let appended = appended.clone();
        Some(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let at = Instant::now();
                if let Ok(e) = Event::from_json(&m.payload) {
                    if e.version == 1 {
                        appended.lock().unwrap().entry(e.domain).or_insert(at);
                    }
                }
            }
        }))
    } else {
        None
    };
    let db_stats = "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, tup_returned + tup_fetched FROM pg_stat_database WHERE datname = current_database()";
    let db_before: (i64, i64, i64) = sqlx::query_as(db_stats).fetch_one(&stack.pool).await?;
    let cpu_before = Cpu::of(&stack);
    let load_started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        ticker.tick().await;
        let name = format!("p2-{i}.test");
        let body = json!({"command_id": Uuid::new_v4(), "tenant_id": tenant, "domain": name});
        published.lock().unwrap().insert(name, Instant::now());
        let ack = publish_command(&stack.js, "register_domain", body).await?;
        tokio::spawn(async move {
            let _ = ack.await;
        });
    }
    let cpu = Cpu::of(&stack).since(cpu_before);
    let load_secs = load_started.elapsed().as_secs_f64();
    let busy = cpu.total() / load_secs;
    if std::env::var("BENCH_TRACE").is_ok() {
        // The statistics collector lags by up to a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let db_after: (i64, i64, i64) = sqlx::query_as(db_stats).fetch_one(&stack.pool).await?;
        eprintln!(
            "  Postgres per registration: {:.1} commits, {:.1} rows written, {:.1} rows read",
            (db_after.0 - db_before.0) as f64 / n as f64,
            (db_after.1 - db_before.1) as f64 / n as f64,
            (db_after.2 - db_before.2) as f64 / n as f64
        );
    }
    eprintln!(
        "  while publishing: {busy:.2} cores busy (services {:.2}, nats-server {:.2}, Postgres {:.2})",
        cpu.services / load_secs,
        cpu.nats / load_secs,
        cpu.postgres / load_secs
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    poller.await?;
    let mut lat: Vec<f64> = {
        let published = published.lock().unwrap();
        let seen = seen.lock().unwrap();
        anyhow::ensure!(
            seen.len() >= n,
            "P2: only {} of {n} rows appeared",
            seen.len()
        );
        published
            .iter()
            .filter_map(|(name, at)| {
                seen.get(name)
                    .map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    if let Some(w) = event_watch {
        w.abort();
        let published = published.lock().unwrap();
        let seen = seen.lock().unwrap();
        let appended = appended.lock().unwrap();
        // When the slowest hundredth were published (100 ms buckets from the first
        // publish): stalls show as clusters.
        let t0 = published.values().min().copied();
        let mut slow: Vec<(f64, f64)> = published
            .iter()
            .filter_map(|(name, at)| {
                let r = seen.get(name)?;
                Some((
                    at.saturating_duration_since(t0?).as_secs_f64(),
                    r.saturating_duration_since(*at).as_secs_f64() * 1000.0,
                ))
            })
            .collect();
        slow.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        slow.truncate(published.len() / 100);
        let mut buckets: std::collections::BTreeMap<u64, usize> = Default::default();
        for (t, _) in &slow {
            *buckets.entry((t * 10.0) as u64).or_default() += 1;
        }
        eprintln!(
            "  slowest 1% by publish time (0.1 s bucket: count): {:?}",
            buckets
        );
        if let Some(t0) = t0 {
            // The wall clock at the first publish, for `perf record -k CLOCK_REALTIME`.
            let first = chrono::Utc::now()
                - chrono::Duration::from_std(
                    std::time::Instant::now().saturating_duration_since(t0),
                )
                .unwrap_or_default();
            eprintln!(
                "  first publish at {:.3} s since the epoch",
                first.timestamp_micros() as f64 / 1e6
            );
        }
        // The slowest ten, split into their handler and projector parts.
        let mut worst: Vec<(f64, f64, f64, f64)> = published
            .iter()
            .filter_map(|(name, at)| {
                let (a, r) = (appended.get(name)?, seen.get(name)?);
                Some((
                    at.saturating_duration_since(t0?).as_secs_f64(),
                    r.saturating_duration_since(*at).as_secs_f64() * 1000.0,
                    a.saturating_duration_since(*at).as_secs_f64() * 1000.0,
                    r.saturating_duration_since(*a).as_secs_f64() * 1000.0,
                ))
            })
            .collect();
        worst.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        for (t, total, h, p) in worst.iter().take(10) {
            eprintln!("    at {t:.2} s: {total:.1} ms = handler {h:.1} + projector {p:.1}");
        }
        let (mut handler, mut projector) = (Vec::new(), Vec::new());
        for (name, at) in published.iter() {
            if let (Some(a), Some(r)) = (appended.get(name), seen.get(name)) {
                handler.push(a.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                projector.push(r.saturating_duration_since(*a).as_secs_f64() * 1000.0);
            }
        }
        for (what, v) in [
            ("publish → appended", &mut handler),
            ("appended → row", &mut projector),
        ] {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            eprintln!(
                "  {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().copied().unwrap_or(f64::NAN),
                v.len()
            );
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    stack.shutdown().await;
    Ok((
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        *lat.last().unwrap_or(&f64::NAN),
        busy,
    ))
}

/// P5: a command on a domain with a long history, the handler started cold just before.
async fn p5_long_history(domains: usize) -> anyhow::Result<P5> {
    const HISTORY: u64 = 10_015;
    let mut stack = Stack::start_with(StackOptions {
        handlers: 0,
        provider_worker: false,
        scheduler: false,
        ..bench_options()
    })
    .await;
    let store = runtime::store::EventStore::open(&stack.js, stack.config.snapshot_every).await?;
    let names = runtime::names::NameIndex::new(
        stack
            .js
            .get_key_value(runtime::streams::NAMES_BUCKET)
            .await?,
    );
    let tenant = TenantId(Uuid::new_v4());
    let mut targets = Vec::new();
    let trace = std::env::var("BENCH_TRACE").is_ok();
    // With BENCH_TRACE, two more domains (seeded first, so the coldest) for probes.
    let probes = if trace { 2 } else { 0 };
    let mut seeded: Vec<(DomainId, String, u64)> = Vec::new();
    for d in 0..=(domains + probes) {
        let domain_id = DomainId(Uuid::new_v4());
        let name = format!("p5-{d}.test");
        names
            .claim(
                &name,
                runtime::names::Holder {
                    tenant_id: tenant,
                    domain_id,
                },
                None,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut state = None;
        let mut seq = 0;
        for version in 1..=HISTORY {
            let data = if version == 1 {
                EventData::DomainRegistered {
                    region: None,
                    requested_by: None,
                    deadline_at: chrono::Utc::now() + chrono::Duration::days(7),
                }
            } else {
                EventData::CheckRequested {
                    trigger: email_domain_events::event::CheckTrigger::DnsConfigured,
                }
            };
            let event = Event {
                event_id: EventId(Uuid::new_v4()),
                tenant_id: tenant,
                domain_id,
                domain: name.clone(),
                version,
                occurred_at: chrono::Utc::now(),
                causation_id: CommandId(Uuid::new_v4()),
                correlation_id: Uuid::new_v4(),
                schema_version: SCHEMA_VERSION,
                data,
            };
            seq = store
                .append(&event, seq)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            state = evolve(state, &event);
            // Snapshots as the handler writes them.
            store.maybe_snapshot(state.as_ref().unwrap(), seq).await;
        }
        seeded.push((domain_id, name.clone(), seq));
        targets.push(name);
    }
    let probe_domains: Vec<(DomainId, String, u64)> = seeded.drain(..probes).collect();
    targets.drain(..probes);
    // Let the last snapshots land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = targets.pop().expect("a warm-up domain");
    let (handler_stop, handler_task) = start_warm_handler(&mut stack, tenant, &warm).await?;
    if trace {
        // Where a cold command's time goes on the server: a last-for-subject read and
        // an append (with its expected-last-subject-sequence check), each on a domain
        // whose blocks nothing has touched since it was written.
        let events = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await?;
        let (read_id, _, _) = &probe_domains[0];
        let subject = email_domain_events::event::subject(tenant, *read_id);
        for pass in ["cold", "warm"] {
            let t = Instant::now();
            events.direct_get_last_for_subject(subject.clone()).await?;
            eprintln!("  probe: last for subject, {pass}: {:?}", t.elapsed());
        }
        let (append_id, append_name, append_seq) = &probe_domains[1];
        let mut seq = *append_seq;
        for pass in ["cold", "warm"] {
            let event = Event {
                event_id: EventId(Uuid::new_v4()),
                tenant_id: tenant,
                domain_id: *append_id,
                domain: append_name.clone(),
                version: HISTORY + 1 + u64::from(pass == "warm"),
                occurred_at: chrono::Utc::now(),
                causation_id: CommandId(Uuid::new_v4()),
                correlation_id: Uuid::new_v4(),
                schema_version: SCHEMA_VERSION,
                data: EventData::CheckRequested {
                    trigger: email_domain_events::event::CheckTrigger::DnsConfigured,
                },
            };
            let t = Instant::now();
            seq = store
                .append(&event, seq)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "  probe: append with the subject's expected sequence, {pass}: {:?}",
                t.elapsed()
            );
        }
        let probe_store = runtime::store::EventStore::open(&stack.js, 4).await?;
        let h = names.get(&targets[0]).await?.expect("claim");
        let t = Instant::now();
        let loaded = probe_store
            .load(h.holder.tenant_id, h.holder.domain_id)
            .await?;
        eprintln!(
            "  load: {:?} (version {:?}, seq {})",
            t.elapsed(),
            loaded.state.map(|s| s.version),
            loaded.last_seq
        );
        let t = Instant::now();
        let _ = names.get(&targets[0]).await?;
        eprintln!("  name get: {:?}", t.elapsed());
        let events = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await?;
        let subject = email_domain_events::event::subject(h.holder.tenant_id, h.holder.domain_id);
        let t = Instant::now();
        let last = events.direct_get_last_for_subject(subject.clone()).await?;
        eprintln!(
            "  last for subject: {:?} (seq {})",
            t.elapsed(),
            last.sequence
        );
        let snaps = stack
            .js
            .get_key_value(runtime::streams::SNAPSHOTS_BUCKET)
            .await?;
        let t = Instant::now();
        let snap = snaps.get(h.holder.domain_id.to_string()).await?;
        eprintln!(
            "  snapshot get: {:?} ({} bytes)",
            t.elapsed(),
            snap.map(|b| b.len()).unwrap_or(0)
        );
        let t = Instant::now();
        let _ = events
            .direct_get_next_for_subject(subject.clone(), Some(last.sequence - 2))
            .await?;
        eprintln!("  next for subject: {:?}", t.elapsed());
    }
    let mut cold = p5_round(&stack, tenant, &targets).await?;
    // The same domains again with a handler restarted just before, while nats-server
    // still holds their message blocks in its cache: what the handler itself costs.
    handler_stop.trigger();
    handler_task.await?;
    let _again = start_warm_handler(&mut stack, tenant, &warm).await?;
    let mut warm_server = p5_round(&stack, tenant, &targets).await?;
    cold.sort_by(|a, b| a.partial_cmp(b).unwrap());
    warm_server.sort_by(|a, b| a.partial_cmp(b).unwrap());
    stack.shutdown().await;
    Ok(P5 {
        median: percentile(&cold, 0.5),
        max: *cold.last().unwrap(),
        server_warm_median: percentile(&warm_server, 0.5),
        server_warm_max: *warm_server.last().unwrap(),
    })
}

/// A cold handler: started now, and warmed (lease, consumer, connections, stream
/// handles) only on `warm`, a domain that is not measured: the measured domains stay
/// cold (no state of theirs in memory).
async fn start_warm_handler(
    stack: &mut Stack,
    tenant: TenantId,
    warm: &str,
) -> anyhow::Result<(runtime::Shutdown, tokio::task::JoinHandle<()>)> {
    let handler = stack.start_own_handler();
    let out = stack.send("dns_configured", tenant.0, warm).await;
    anyhow::ensure!(
        out.outcome == email_domain_events::outcome::Verdict::Accepted,
        "warm-up failed"
    );
    Ok(handler)
}

struct P5 {
    median: f64,
    max: f64,
    server_warm_median: f64,
    server_warm_max: f64,
}

/// One `dns_configured` on each of `targets`, in turn: publish → outcome, in ms.
async fn p5_round(stack: &Stack, tenant: TenantId, targets: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::new();
    for name in targets {
        let id = Uuid::new_v4();
        let mut sub = stack
            .client
            .subscribe(format!("email_domains.outcomes.{id}"))
            .await?;
        let body = json!({"command_id": id, "tenant_id": tenant.0, "domain": name});
        let started = Instant::now();
        publish_command(&stack.js, "dns_configured", body)
            .await?
            .await?;
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await?
            .expect("outcome");
        lat.push(started.elapsed().as_secs_f64() * 1000.0);
        let o: serde_json::Value = serde_json::from_slice(&m.payload)?;
        anyhow::ensure!(o["outcome"] == "accepted", "P5 command rejected: {o}");
    }
    Ok(lat)
}

/// What P3 measured.
struct P3 {
    /// The replay, events/s.
    rate: f64,
    /// Postgres loading the rebuilt rows alone, s.
    postgres_alone: f64,
    /// CPU of each process while the replay ran.
    cpu: Cpu,
    /// The replay's own read of the same log, events dropped unread: s, and
    /// nats-server's CPU per event in it (µs).
    read_alone: f64,
    read_alone_nats_us: f64,
    /// An ordered-consumer read (the baseline's read) of the same log alone: events/s.
    ordered_alone: f64,
}

/// P3: `domainctl replay` of both projections from a log of `domains` × 10 events.
async fn p3_replay(domains: usize) -> anyhow::Result<P3> {
    let stack = Stack::start_with(StackOptions {
        handlers: 0,
        provider_worker: false,
        scheduler: false,
        projectors: false,
        ..bench_options()
    })
    .await;
    let start = chrono::Utc::now();
    let tenants: Vec<TenantId> = (0..(domains / 10).max(1))
        .map(|_| TenantId(Uuid::new_v4()))
        .collect();
    let mut acks = std::collections::VecDeque::with_capacity(8192);
    for d in 0..domains {
        let name = format!("p3-{d}.test");
        for e in
            system_tests::fixtures::domain_history(tenants[d % tenants.len()], &name, 10, start)
        {
            let publish = PublishMessage::build()
                .payload(e.to_json().into())
                .message_id(e.event_id.to_string());
            acks.push_back(stack.js.send_publish(e.subject(), publish).await?);
            if acks.len() >= 8192 {
                acks.pop_front().unwrap().await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    let opts = domainctl::replay::ReplayOptions {
        progress: false,
        ..Default::default()
    };
    let cpu_before = Cpu::of(&stack);
    let summary = domainctl::replay::replay(&stack.js, &stack.pool, &opts).await?;
    let cpu = Cpu::of(&stack).since(cpu_before);
    eprintln!(
        "  {} events in {:.2} s ({} consumer restarts); phases: {}",
        summary.events,
        summary.seconds,
        summary.consumer_restarts,
        serde_json::to_string(&summary.phases).unwrap_or_default()
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM email_domains")
        .fetch_one(&stack.pool)
        .await?;
    anyhow::ensure!(
        rows as usize == domains,
        "P3: {rows} rows after replay, expected {domains}"
    );
    let postgres_alone = copy_rows_again(&stack.pool).await?;
    // The same log read alone: as the replay reads it, and with an ordered consumer
    // (the baseline's read), each event dropped unread; each twice, in turn, and the
    // faster of the two kept (the first read after the COPY finds colder caches).
    let (mut read_alone, mut read_alone_nats_us, mut ordered_alone) = (f64::MAX, 0.0, 0.0f64);
    for _ in 0..2 {
        let before = Cpu::of(&stack);
        let started = Instant::now();
        let n = domainctl::replay::read_alone(&stack.js, opts.chunk).await?;
        let took = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            n == summary.events,
            "P3: the read alone saw {n} events, the replay {}",
            summary.events
        );
        if took < read_alone {
            read_alone = took;
            read_alone_nats_us = Cpu::of(&stack).since(before).nats / n.max(1) as f64 * 1e6;
        }
        let events = stack.js.get_stream(runtime::streams::EVENTS).await?;
        ordered_alone = ordered_alone.max(ordered_read(&events, n).await?);
    }
    if std::env::var("BENCH_TRACE").is_ok() {
        let (row, recs, meta, total): (f64, f64, f64, i64) = sqlx::query_as(
            "SELECT avg(pg_column_size(t.*))::float8, avg(pg_column_size(dns_records))::float8,
                    avg(pg_column_size(metadata))::float8, pg_total_relation_size('email_domains')
             FROM email_domains t",
        )
        .fetch_one(&stack.pool)
        .await?;
        eprintln!("  rows: {row:.0} bytes on average (dns_records {recs:.0}, metadata {meta:.0}); table {total} bytes");
    }
    stack.shutdown().await;
    Ok(P3 {
        rate: summary.events_per_sec,
        postgres_alone,
        cpu,
        read_alone,
        read_alone_nats_us,
        ordered_alone,
    })
}

/// How long Postgres alone takes to load the rebuilt `email_domains` rows: their COPY
/// text, read back out first, written into a fresh table by two COPY streams, as the
/// replay writes them. A floor under the replay's write phase.
async fn copy_rows_again(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    let mut out = conn.copy_out_raw("COPY email_domains TO STDOUT").await?;
    let mut text = Vec::new();
    while let Some(chunk) = out.next().await {
        text.extend_from_slice(&chunk?);
    }
    drop(out);
    sqlx::query("CREATE TABLE bench_copy_floor (LIKE email_domains INCLUDING DEFAULTS)")
        .execute(&mut *conn)
        .await?;
    drop(conn);
    // Two halves at line boundaries.
    let mid = text[text.len() / 2..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| text.len() / 2 + p + 1)
        .unwrap_or(text.len());
    let (a, b) = text.split_at(mid);
    let started = Instant::now();
    let load = |part: Vec<u8>| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await?;
            sqlx::query("SET synchronous_commit = off")
                .execute(&mut *conn)
                .await?;
            let mut copy = conn
                .copy_in_raw("COPY bench_copy_floor FROM STDIN (FORMAT text)")
                .await?;
            for c in part.chunks(1 << 20) {
                copy.send(c).await?;
            }
            copy.finish().await?;
            anyhow::Ok(())
        }
    };
    let (ra, rb) = futures::join!(load(a.to_vec()), load(b.to_vec()));
    ra?;
    rb?;
    Ok(started.elapsed().as_secs_f64())
}

/// The mean size of the events P3 replays, as stored.
fn mean_event_size() -> usize {
    let events = system_tests::fixtures::domain_history(
        TenantId(Uuid::new_v4()),
        "p3-12345.test",
        10,
        chrono::Utc::now(),
    );
    events.iter().map(|e| e.to_json().len()).sum::<usize>() / events.len()
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// P4: the scheduler as its own process with `timers` pending, `due` of them falling
/// due over the measurement window; lag = when the re-check was published − due time.
async fn p4_timers(timers: usize, due: usize) -> anyhow::Result<(f64, f64, f64)> {
    let stack = Stack::start_with(StackOptions {
        handlers: 0,
        provider_worker: false,
        scheduler: false,
        projectors: false,
        ..bench_options()
    })
    .await;
    let window_secs = 10.0;
    // Far-future timers first: the pending load.
    sqlx::query(
        "INSERT INTO scheduler_timers (domain_id, tenant_id, domain, due_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'far-' || i || '.test', $1 + (i || ' seconds')::interval
         FROM generate_series(1, $2) AS i",
    )
    .bind(chrono::Utc::now() + chrono::Duration::days(1))
    .bind((timers - due) as i64)
    .execute(&stack.pool)
    .await?;
    let mut fired = stack
        .client
        .subscribe("email_domains.partitioned.*.recheck")
        .await?;
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/scheduler");
    anyhow::ensure!(
        bin.exists(),
        "build the scheduler first: cargo build --release -p scheduler"
    );
    let mut child = tokio::process::Command::new(bin)
        .env("NATS_URL", &stack.config.nats_url)
        .env("DATABASE_URL", &stack.config.database_url)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    // The scheduler is up (connected, migrated) before the timers that fall due are
    // laid: what is measured is the firing lag, not the start-up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = chrono::Utc::now() + chrono::Duration::seconds(1);
    let mut due_at: HashMap<Uuid, chrono::DateTime<chrono::Utc>> = HashMap::with_capacity(due);
    let (mut ids, mut tenants, mut names, mut dues) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..due {
        let id = Uuid::new_v4();
        let at =
            t0 + chrono::Duration::microseconds((window_secs * 1e6 * i as f64 / due as f64) as i64);
        due_at.insert(id, at);
        ids.push(id);
        tenants.push(Uuid::new_v4());
        names.push(format!("due-{i}.test"));
        dues.push(at);
    }
    sqlx::query(
        "INSERT INTO scheduler_timers (domain_id, tenant_id, domain, due_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&names)
    .bind(&dues)
    .execute(&stack.pool)
    .await?;
    let mut lags = Vec::with_capacity(due);
    let deadline = Instant::now() + Duration::from_secs_f64(window_secs + 30.0);
    while lags.len() < due && Instant::now() < deadline {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), fired.next()).await else {
            continue;
        };
        let now = chrono::Utc::now();
        let body: serde_json::Value = serde_json::from_slice(&m.payload)?;
        let id: Uuid = body["domain_id"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .unwrap_or_default();
        if let Some(at) = due_at.get(&id) {
            lags.push((now - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    let rss = peak_rss_mb(pid);
    child.kill().await.ok();
    anyhow::ensure!(
        lags.len() == due,
        "P4: {} of {due} due timers fired",
        lags.len()
    );
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    stack.shutdown().await;
    Ok((rss, percentile(&lags, 0.99), *lags.last().unwrap()))
}

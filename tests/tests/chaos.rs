//! Chaos: a load of `register_domain` commands while a random service (command
//! handler, provider worker, scheduler, one of the projectors) is killed without
//! warning at random moments and restarted, for several rounds. Afterwards every
//! published command has one outcome, the log has no duplicate and no gap, every
//! domain reaches `awaiting_dns`, and the `email_domains` rows equal a fresh fold of
//! the log.
//!
//! Two ways to kill:
//! - the short test (in `make test`) runs each service in a tokio runtime of its own
//!   and kills it with `Runtime::shutdown_background()`: every task the service spawned
//!   (lanes, lease keeper, NATS connection, Postgres pool) stops at its next await
//!   point, nothing graceful runs, its lease stays held until it expires, its
//!   unacknowledged messages wait for redelivery. (Aborting a single `JoinHandle`
//!   would leave the service's inner tasks running, which is not a crash.) This needs
//!   no binaries, so `make test` need not build them;
//! - the long test (`make chaos`, `scripts/chaos.sh`, `#[ignore]`d here) runs the
//!   service binaries from `CHAOS_BIN_DIR` as processes and sends them SIGKILL.
//!
//! `CHAOS_SEED` replays a run's random choices (the seed is printed); the long test
//! also reads `CHAOS_COMMANDS` (10,000), `CHAOS_ROUNDS` (20), `CHAOS_TENANTS` (20).

use email_domain_events::Event;
use futures::StreamExt;
use projector::Projection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Handler,
    ProviderWorker,
    Scheduler,
    Projector(Projection),
}

const KINDS: [Kind; 6] = [
    Kind::Handler,
    Kind::ProviderWorker,
    Kind::Scheduler,
    Kind::Projector(Projection::EmailDomains),
    Kind::Projector(Projection::TenantSettings),
    Kind::Projector(Projection::Analytics),
];

enum Running {
    InProcess(tokio::runtime::Runtime),
    Process(Child),
}

#[allow(clippy::large_enum_variant)]
enum Mode {
    InProcess(runtime::Config),
    Processes {
        bin: PathBuf,
        env: Vec<(String, String)>,
        logs: PathBuf,
    },
}

struct Svc {
    kind: Kind,
    running: Option<Running>,
    starts: usize,
}

impl Svc {
    fn start(&mut self, mode: &Mode) {
        assert!(self.running.is_none());
        self.starts += 1;
        self.running = Some(match mode {
            Mode::InProcess(config) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                let (config, shutdown) = (config.clone(), runtime::Shutdown::new());
                let kind = self.kind;
                rt.spawn(async move {
                    let r = match kind {
                        Kind::Handler => command_handler::run(config, shutdown).await,
                        Kind::ProviderWorker => provider_worker::run(config, shutdown).await,
                        Kind::Scheduler => scheduler::run(config, shutdown).await,
                        Kind::Projector(p) => {
                            projector::run(config, vec![p], shutdown, Default::default()).await
                        }
                    };
                    if let Err(e) = r {
                        tracing::error!(?kind, error = %e, "service ended with an error");
                    }
                });
                Running::InProcess(rt)
            }
            Mode::Processes { bin, env, logs } => {
                let (name, args): (&str, Vec<&str>) = match self.kind {
                    Kind::Handler => ("command-handler", vec![]),
                    Kind::ProviderWorker => ("provider-worker", vec![]),
                    Kind::Scheduler => ("scheduler", vec![]),
                    Kind::Projector(p) => ("projector", vec!["--projection", p.name()]),
                };
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(logs.join(format!("{}.log", self.label())))
                    .unwrap();
                let child = Command::new(bin.join(name))
                    .args(args)
                    .env_clear()
                    .envs(env.iter().cloned())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("{}: {e}", bin.join(name).display()));
                Running::Process(child)
            }
        });
    }

    /// kill -9, or the closest thing in-process.
    fn kill(&mut self) {
        match self.running.take() {
            Some(Running::InProcess(rt)) => rt.shutdown_background(),
            Some(Running::Process(mut c)) => {
                let _ = c.kill(); // SIGKILL
                let _ = c.wait();
            }
            None => {}
        }
    }

    /// A process that exited on its own is a failure of its own.
    fn exited(&mut self) -> Option<String> {
        if let Some(Running::Process(c)) = &mut self.running {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(format!("{} exited by itself: {st}", self.label()));
            }
        }
        None
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Handler => "command-handler".into(),
            Kind::ProviderWorker => "provider-worker".into(),
            Kind::Scheduler => "scheduler".into(),
            Kind::Projector(p) => format!("projector-{}", p.name()),
        }
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Params {
    commands: usize,
    tenants: usize,
    rounds: usize,
    /// Pause between kills (ms range) and downtime of the killed service (ms range).
    between_ms: (u64, u64),
    down_ms: (u64, u64),
    /// How long the publisher spreads its load.
    publish_secs: f64,
    converge_within: Duration,
    /// `Some(s)`: the provider work consumers redeliver after `s` seconds instead of 300.
    provider_work_ack_wait_secs: Option<u64>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn chaos(processes: Option<PathBuf>, p: Params) {
    let seed: u64 = env_or("CHAOS_SEED", rand::random());
    eprintln!(
        "CHAOS_SEED={seed} commands={} rounds={} mode={}",
        p.commands,
        p.rounds,
        if processes.is_some() {
            "processes (SIGKILL)"
        } else {
            "in-process runtimes"
        }
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    // Only the infrastructure and the query service; the services under test are ours.
    let stack = Stack::start_with(StackOptions::infrastructure_only()).await;
    let logs = tempfile::Builder::new()
        .prefix("chaos-logs")
        .tempdir()
        .unwrap();
    let mode = match &processes {
        None => Mode::InProcess(stack.config.clone()),
        Some(bin) => {
            // The stack's own configuration, as every service process gets it, with
            // the logs kept in JSON for the run's log files.
            let mut env = system_tests::service_env(&stack.config);
            env.retain(|(k, _)| k != "RUST_LOG");
            env.extend([
                (
                    "PATH".to_string(),
                    std::env::var("PATH").unwrap_or_default(),
                ),
                ("LOG_FORMAT".to_string(), "json".to_string()),
                ("RUST_LOG".to_string(), "info".to_string()),
            ]);
            let logs = std::env::var("CHAOS_LOG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| logs.path().to_path_buf());
            std::fs::create_dir_all(&logs).unwrap();
            eprintln!("service logs in {}", logs.display());
            Mode::Processes {
                bin: bin.clone(),
                env,
                logs,
            }
        }
    };
    if let Some(secs) = p.provider_work_ack_wait_secs {
        // The provider worker's work consumers wait 300 s before redelivering what a
        // killed worker held (services/provider-worker/src/lib.rs `work_consumer`).
        // Created here first, identical but for a shorter ack wait, so that the short
        // test can see those items come back; the worker gets the existing consumers.
        let stream = stack
            .js
            .get_stream(runtime::streams::PROVIDER_WORK)
            .await
            .unwrap();
        for (name, subject) in [
            (
                provider_worker::INTERACTIVE_CONSUMER,
                runtime::streams::PROVIDER_WORK_INTERACTIVE,
            ),
            (
                provider_worker::BACKGROUND_CONSUMER,
                runtime::streams::PROVIDER_WORK_BACKGROUND,
            ),
        ] {
            stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(name.into()),
                    filter_subject: subject.into(),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(secs),
                    max_ack_pending: 128,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let mut svcs: Vec<Svc> = KINDS
        .iter()
        .map(|k| Svc {
            kind: *k,
            running: None,
            starts: 0,
        })
        .collect();
    for s in &mut svcs {
        s.start(&mode);
    }

    // Every outcome as published: progress, and repeats.
    let mut outcome_sub = stack
        .client
        .subscribe("email_domains.outcomes.>")
        .await
        .unwrap();
    stack.client.flush().await.unwrap();
    let seen: Arc<std::sync::Mutex<HashMap<String, Vec<Vec<u8>>>>> = Default::default();
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = outcome_sub.next().await {
                let id = m
                    .subject
                    .as_str()
                    .trim_start_matches("email_domains.outcomes.")
                    .to_string();
                seen.lock()
                    .unwrap()
                    .entry(id)
                    .or_default()
                    .push(m.payload.to_vec());
            }
        })
    };

    // The load, spread over `publish_secs`, concurrently with the kills.
    let tenants: Vec<Uuid> = (0..p.tenants).map(|_| Uuid::new_v4()).collect();
    let commands: Vec<(Uuid, Uuid, String)> = (0..p.commands)
        .map(|i| {
            (
                Uuid::new_v4(),
                tenants[i % tenants.len()],
                format!("chaos{i}.test"),
            )
        })
        .collect();
    let publisher = {
        let js = stack.js.clone();
        let commands = commands.clone();
        let per = Duration::from_secs_f64(p.publish_secs / p.commands as f64);
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut acks = Vec::new();
            for (i, (id, tenant, name)) in commands.iter().enumerate() {
                let body = json!({"command_id": id, "tenant_id": tenant, "domain": name, "requested_by": "chaos"});
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", id.to_string().as_str());
                acks.push(
                    js.publish_with_headers(
                        "email_domains.commands.register_domain",
                        h,
                        serde_json::to_vec(&body).unwrap().into(),
                    )
                    .await
                    .expect("publish"),
                );
                if acks.len() >= 64 {
                    for a in acks.drain(..) {
                        a.await.expect("JetStream ack");
                    }
                }
                let due = t0 + per * (i as u32 + 1);
                tokio::time::sleep_until(due.into()).await;
            }
            for a in acks {
                a.await.expect("JetStream ack");
            }
            t0.elapsed()
        })
    };

    let mut kills: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for round in 0..p.rounds {
        let pause = rng.random_range(p.between_ms.0..=p.between_ms.1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        for s in &mut svcs {
            failures.extend(s.exited());
        }
        let i = rng.random_range(0..svcs.len());
        let down = rng.random_range(p.down_ms.0..=p.down_ms.1);
        let done = seen.lock().unwrap().len();
        let at = started.elapsed();
        svcs[i].kill();
        kills.push(format!(
            "round {round} at {:.1}s: killed {} ({done} outcomes so far), down {down} ms",
            at.as_secs_f64(),
            svcs[i].label()
        ));
        tokio::time::sleep(Duration::from_millis(down)).await;
        svcs[i].start(&mode);
    }
    for k in &kills {
        eprintln!("{k}");
    }
    let publish_took = publisher.await.expect("publisher");
    eprintln!("published {} commands in {publish_took:?}", p.commands);

    // Convergence: every command answered, every domain awaiting_dns, projections at the end.
    let deadline = Instant::now() + p.converge_within;
    let ids: Vec<String> = commands.iter().map(|(id, _, _)| id.to_string()).collect();
    loop {
        let answered = {
            let seen = seen.lock().unwrap();
            ids.iter().filter(|id| seen.contains_key(*id)).count()
        };
        let awaiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM email_domains WHERE status = 'awaiting_dns'")
                .fetch_one(&stack.pool)
                .await
                .unwrap_or(0);
        if answered == ids.len() && awaiting == p.commands as i64 {
            eprintln!(
                "converged {:.1}s after the start: {answered} outcomes, {awaiting} rows awaiting_dns",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if Instant::now() > deadline {
            failures.push(format!(
                "not converged within {:?}: {answered}/{} outcomes, {awaiting} rows awaiting_dns",
                p.converge_within,
                ids.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the projectors reach the log's end.
    let mut stream = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence as i64;
    let cp_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut behind = 0;
        for name in ["email_domains", "tenant_settings"] {
            let at = projector::consume::checkpoint(&stack.pool, name)
                .await
                .unwrap_or(0);
            behind += i64::from(at as i64 >= last);
        }
        if behind == 2 || Instant::now() > cp_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in &mut svcs {
        failures.extend(s.exited());
    }

    // 1. Every published command has one outcome, stored, accepted.
    let mut no_outcome = Vec::new();
    for (id, _, name) in &commands {
        match stack.stored_outcome(&id.to_string()).await {
            None => no_outcome.push(name.clone()),
            Some(o) if o["outcome"] != "accepted" => {
                failures.push(format!("{name}: {o}"));
            }
            Some(_) => {}
        }
    }
    if !no_outcome.is_empty() {
        failures.push(format!(
            "{} commands without a stored outcome, e.g. {:?}",
            no_outcome.len(),
            &no_outcome[..no_outcome.len().min(10)]
        ));
    }
    {
        let seen = seen.lock().unwrap();
        for (id, payloads) in seen.iter() {
            if payloads.windows(2).any(|w| w[0] != w[1]) {
                failures.push(format!("{id}: different outcomes published: {payloads:?}"));
            }
        }
    }
    // 2. The log: distinct event ids, gapless versions per registration, one
    //    registration per command.
    let events = stack.events().await;
    let distinct: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    if distinct.len() != events.len() {
        failures.push(format!(
            "{} events but {} distinct event ids",
            events.len(),
            distinct.len()
        ));
    }
    let mut per: BTreeMap<Uuid, Vec<Event>> = BTreeMap::new();
    for e in &events {
        per.entry(e.domain_id.0).or_default().push(e.clone());
    }
    for (d, es) in &per {
        let versions: Vec<u64> = es.iter().map(|e| e.version).collect();
        if versions != (1..=es.len() as u64).collect::<Vec<_>>() {
            failures.push(format!("{d} ({}): versions {versions:?}", es[0].domain));
        }
    }
    if per.len() != p.commands {
        failures.push(format!(
            "{} registrations for {} commands",
            per.len(),
            p.commands
        ));
    }
    let mut regs_by_cause: HashMap<Uuid, usize> = HashMap::new();
    for e in events
        .iter()
        .filter(|e| e.data.type_name() == "domain_registered")
    {
        *regs_by_cause.entry(e.causation_id.0).or_default() += 1;
    }
    if let Some((c, n)) = regs_by_cause.iter().find(|(_, n)| **n != 1) {
        failures.push(format!("command {c} caused {n} registrations"));
    }
    // 3. + 4. Rows: awaiting_dns, and equal to a fresh fold of the log.
    let rows: Vec<Value> = sqlx::query_scalar("SELECT to_jsonb(d) FROM email_domains d")
        .fetch_all(&stack.pool)
        .await
        .unwrap();
    if rows.len() != per.len() {
        failures.push(format!(
            "{} rows for {} registrations",
            rows.len(),
            per.len()
        ));
    }
    let mut mismatches = 0;
    for row in rows {
        let id: Uuid = row["id"].as_str().unwrap().parse().unwrap();
        let status = row["status"].as_str().unwrap_or("").to_string();
        let row: projector::email_domains::Row = serde_json::from_value(row).unwrap();
        let Some(es) = per.get(&id) else {
            failures.push(format!("row {id} has no events"));
            continue;
        };
        let folded = email_domain_events::state::replay(es.iter()).unwrap();
        let want = projector::email_domains::Row::from_state(&folded);
        if row != want {
            mismatches += 1;
            if mismatches <= 3 {
                failures.push(format!(
                    "row {id} ≠ fold of its {} events:\n  row  {row:?}\n  fold {want:?}",
                    es.len()
                ));
            }
        }
        if status != "awaiting_dns" {
            failures.push(format!(
                "row {id} ({}): status {status}; its events: {:?}",
                es[0].domain,
                es.iter().map(|e| e.data.type_name()).collect::<Vec<_>>()
            ));
        }
    }
    if mismatches > 3 {
        failures.push(format!("{mismatches} rows differ from the fold in all"));
    }
    // 5. Analytics: each source event's CloudEvent once.
    // (The analytics emitter keeps no Postgres checkpoint: wait up to 30 s for it.)
    let analytics_deadline = Instant::now() + Duration::from_secs(30);
    let analytics = loop {
        let a = stack.analytics().await;
        let n = a
            .iter()
            .filter(|a| a["type"] == "email_domain.registered")
            .count();
        if n >= p.commands || Instant::now() > analytics_deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let registered: Vec<&Value> = analytics
        .iter()
        .filter(|a| a["type"] == "email_domain.registered")
        .collect();
    let ids: HashSet<&str> = registered.iter().filter_map(|a| a["id"].as_str()).collect();
    if registered.len() != p.commands || ids.len() != p.commands {
        failures.push(format!(
            "analytics: {} `registered` CloudEvents ({} distinct ids) for {} registrations",
            registered.len(),
            ids.len(),
            p.commands
        ));
    }

    eprintln!(
        "chaos run took {:.1}s; restarts: {}",
        started.elapsed().as_secs_f64(),
        svcs.iter()
            .map(|s| format!("{}×{}", s.label(), s.starts - 1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &mut svcs {
        s.kill();
    }
    collector.abort();
    stack.shutdown().await;
    assert!(
        failures.is_empty(),
        "CHAOS_SEED={seed}: {} failures:\n{}\nkills:\n{}",
        failures.len(),
        failures.join("\n"),
        kills.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_at_random_moments_lose_nothing_and_duplicate_nothing() {
    chaos(
        None,
        Params {
            commands: env_or("CHAOS_COMMANDS", 1000),
            tenants: 10,
            rounds: env_or("CHAOS_ROUNDS", 8),
            between_ms: (500, 2500),
            down_ms: (0, 800),
            publish_secs: 10.0,
            converge_within: Duration::from_secs(120),
            provider_work_ack_wait_secs: Some(20),
        },
    )
    .await;
}

/// The long version with real processes and SIGKILL: `make chaos`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run by scripts/chaos.sh (make chaos) with CHAOS_BIN_DIR"]
async fn service_processes_killed_with_sigkill_lose_nothing_and_duplicate_nothing() {
    let bin = std::env::var("CHAOS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release"))
        });
    for b in [
        "command-handler",
        "provider-worker",
        "scheduler",
        "projector",
    ] {
        assert!(
            bin.join(b).exists(),
            "{} missing: cargo build --release --bins",
            bin.join(b).display()
        );
    }
    let commands = env_or("CHAOS_COMMANDS", 10_000);
    chaos(
        Some(bin),
        Params {
            commands,
            tenants: env_or("CHAOS_TENANTS", 20),
            rounds: env_or("CHAOS_ROUNDS", 20),
            between_ms: (
                env_or("CHAOS_MIN_GAP_MS", 500),
                env_or("CHAOS_MAX_GAP_MS", 4000),
            ),
            down_ms: (0, env_or("CHAOS_MAX_DOWN_MS", 1500)),
            publish_secs: env_or("CHAOS_PUBLISH_SECS", (commands as f64 / 200.0).max(10.0)),
            converge_within: Duration::from_secs(env_or("CHAOS_CONVERGE_SECS", 420)),
            provider_work_ack_wait_secs: std::env::var("CHAOS_PROVIDER_ACK_WAIT_SECS")
                .ok()
                .and_then(|v| v.parse().ok()),
        },
    )
    .await;
}

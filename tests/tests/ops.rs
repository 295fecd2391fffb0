//! The ops endpoints: `/metrics` moves with the work done, `/readyz` follows NATS.

use email_domain_events::outcome::Verdict;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(format!("http://{addr}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// One sample of the Prometheus text format: name and labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut labels = BTreeMap::new();
                for pair in rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    labels.insert(k.to_string(), v.trim_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.insert((name, labels), value.parse().expect("a number"));
    }
    out
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), labels)).copied()
}

async fn scrape(addr: SocketAddr) -> Samples {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics: {body}");
    parse(&body)
}

async fn wait_for<T>(what: &str, within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ACCEPTED: &[(&str, &str)] = &[("type", "register_domain"), ("outcome", "accepted")];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_with_commands_and_readiness_follows_nats() {
    let mut stack = Stack::start_with(StackOptions {
        ops: true,
        ..Default::default()
    })
    .await;
    let handler = stack
        .ops_addr("command-handler")
        .expect("handler ops address");
    let projector = stack
        .ops_addr("email_domains")
        .expect("projector ops address");

    assert_eq!(get(handler, "/healthz").await.0, 200);
    wait_for(
        "the handler to be ready",
        Duration::from_secs(10),
        async || (get(handler, "/readyz").await.0 == 200).then_some(()),
    )
    .await;
    wait_for(
        "the projector to be ready",
        Duration::from_secs(10),
        async || (get(projector, "/readyz").await.0 == 200).then_some(()),
    )
    .await;

    // One accepted registration moves the commands counter by one.
    let before = sample(
        &scrape(handler).await,
        "email_domains_commands_total",
        ACCEPTED,
    )
    .unwrap_or(0.0);
    let tenant = Uuid::new_v4();
    let outcome = stack.send("register_domain", tenant, "metrics.test").await;
    assert_eq!(outcome.outcome, Verdict::Accepted);
    let after = wait_for(
        "the commands counter to move",
        Duration::from_secs(5),
        async || {
            let n = sample(
                &scrape(handler).await,
                "email_domains_commands_total",
                ACCEPTED,
            )?;
            (n > before).then_some(n)
        },
    )
    .await;
    assert_eq!(after - before, 1.0, "one register_domain, accepted");
    let latency = scrape(handler).await;
    assert!(
        sample(
            &latency,
            "email_domains_command_duration_seconds_count",
            &[("type", "register_domain")]
        )
        .is_some_and(|n| n >= 1.0),
        "the latency histogram has the command"
    );

    // The projector reports its lag, and catches up.
    let projection = [("projection", "email_domains")];
    stack
        .wait_status(tenant, "metrics.test", "awaiting_dns")
        .await;
    wait_for(
        "the projection lag to be 0",
        Duration::from_secs(20),
        async || {
            let m = scrape(projector).await;
            let events = sample(&m, "email_domains_projection_lag_events", &projection)?;
            let seconds = sample(&m, "email_domains_projection_lag_seconds", &projection)?;
            (events == 0.0 && seconds == 0.0).then_some(())
        },
    )
    .await;

    // A projection that has applied nothing is behind by the whole log, and by the age
    // of its oldest event.
    let stopped = runtime::Shutdown::new();
    let probe = runtime::ops::ProjectionLag::start(&stack.js, "probe", &stopped);
    probe.set(0);
    let log = stack.events().await.len() as f64;
    let (events, seconds) = wait_for("the probe's lag", Duration::from_secs(5), async || {
        let m = parse(&runtime::ops::render());
        let p = [("projection", "probe")];
        Some((
            sample(&m, "email_domains_projection_lag_events", &p)?,
            sample(&m, "email_domains_projection_lag_seconds", &p)?,
        ))
    })
    .await;
    assert!(
        log >= 1.0 && events >= log,
        "behind by {events} of {log} events"
    );
    assert!(seconds > 0.0 && seconds < 60.0, "lag {seconds} s");
    stopped.trigger();

    // NATS goes away: not ready within a few seconds; back: ready again.
    stack.nats.stop();
    let why = wait_for("/readyz to say 503", Duration::from_secs(5), async || {
        let (status, body) = get(handler, "/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(why.contains("NATS"), "the reason names NATS: {why}");
    assert_eq!(get(handler, "/healthz").await.0, 200, "alive all the same");

    stack.nats.restart();
    wait_for(
        "/readyz to say 200 again",
        Duration::from_secs(20),
        async || (get(handler, "/readyz").await.0 == 200).then_some(()),
    )
    .await;

    stack.shutdown().await;
}

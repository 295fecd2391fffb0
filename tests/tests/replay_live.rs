//! `domainctl replay` on a live stack: run while commands keep flowing, it ends with
//! the projections consistent; the rows match what the commands the test sent
//! should have produced (computed here, not by the projection code, so a bug shared
//! by the live projector and the replay cannot hide); and a replay of the quiet log
//! reproduces the live projections exactly (rows and checkpoint).

use email_domain_events::outcome::Verdict;
use email_domain_events::{evolve, DomainId, Event};
use projector::email_domains::Row;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::Stack;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    /// register only: waits for DNS
    Await,
    /// register, add the records, "I've added them": verified, the tenant's default
    Verify,
    /// register, then delete: deactivated, the default untouched
    Delete,
}

const SCRIPTS: [Script; 3] = [Script::Verify, Script::Await, Script::Delete];

/// What the test expects of one tenant, from the commands it sent alone.
#[derive(Default, Debug)]
struct Expected {
    status: BTreeMap<String, &'static str>,
    verified_in_order: Vec<String>,
}

async fn run_script(stack: &Stack, tenant: Uuid, domain: &str, script: Script) {
    let out = stack.send("register_domain", tenant, domain).await;
    assert_eq!(out.outcome, Verdict::Accepted, "{domain}: {out:?}");
    let row = stack.wait_status(tenant, domain, "awaiting_dns").await;
    match script {
        Script::Await => {}
        Script::Verify => {
            stack.publish_records(domain, &row);
            let out = stack.send("dns_configured", tenant, domain).await;
            assert_eq!(out.outcome, Verdict::Accepted, "{domain}: {out:?}");
            stack.wait_status(tenant, domain, "verified").await;
        }
        Script::Delete => {
            let out = stack.send("delete_domain", tenant, domain).await;
            assert_eq!(out.outcome, Verdict::Accepted, "{domain}: {out:?}");
            stack.wait_status(tenant, domain, "deactivated").await;
        }
    }
}

/// One tenant's domains, one after another, from `first`; stops after `min` domains
/// once `stop` is set (or at once without a `stop`).
async fn tenant_load(
    stack: Arc<Stack>,
    tenant: Uuid,
    t: usize,
    first: usize,
    min: usize,
    stop: Option<Arc<AtomicBool>>,
) -> Expected {
    let mut expected = Expected::default();
    let mut i = first;
    loop {
        let done = i - first >= min && stop.as_ref().is_none_or(|s| s.load(Ordering::SeqCst));
        if done {
            return expected;
        }
        let script = SCRIPTS[i % SCRIPTS.len()];
        let domain = format!("d{i}.t{t}.replay.test");
        run_script(&stack, tenant, &domain, script).await;
        let status = match script {
            Script::Await => "awaiting_dns",
            Script::Verify => "verified",
            Script::Delete => "deactivated",
        };
        expected.status.insert(domain.clone(), status);
        if script == Script::Verify {
            expected.verified_in_order.push(domain);
        }
        i += 1;
    }
}

async fn last_event_seq(stack: &Stack) -> u64 {
    let mut s = stack.js.get_stream("EMAIL_DOMAIN_EVENTS").await.unwrap();
    s.info().await.unwrap().state.last_sequence
}

async fn checkpoint(pool: &sqlx::PgPool, name: &str) -> i64 {
    projector::consume::checkpoint(pool, name).await.unwrap() as i64
}

async fn table_rows(pool: &sqlx::PgPool) -> BTreeMap<DomainId, Row> {
    let rows: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(d) FROM email_domains d")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|v| serde_json::from_value::<Row>(v).unwrap())
        .map(|r| (r.id, r))
        .collect()
}

type Settings = BTreeMap<Uuid, (Option<String>, Option<String>)>;

async fn settings(pool: &sqlx::PgPool) -> Settings {
    let rows: Vec<(Uuid, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT tenant, default_from_domain, previous_from_domain FROM tenant_email_settings",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(t, d, p)| (t, (d, p))).collect()
}

fn fold(events: &[Event]) -> BTreeMap<DomainId, Row> {
    let mut states = HashMap::new();
    for e in events {
        let s = states.remove(&e.domain_id);
        if let Some(n) = evolve(s, e) {
            states.insert(e.domain_id, n);
        }
    }
    states
        .values()
        .map(|s| (s.domain_id, Row::from_state(s)))
        .collect()
}

/// Waits until both table projections have applied every event in the log.
async fn quiesce(stack: &Stack) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = last_event_seq(stack).await;
        let a = checkpoint(&stack.pool, "email_domains").await as u64;
        let b = checkpoint(&stack.pool, "tenant_settings").await as u64;
        if a == last && b == last {
            // Still the same a moment later: nothing was in flight.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if last_event_seq(stack).await == last {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "projections stuck at {a}/{b} of {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_while_commands_flow_ends_consistent_and_matches_what_the_commands_asked_for() {
    let stack = Arc::new(Stack::start().await);
    let tenants: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();

    // Phase 1: a mixed history to rebuild.
    let phase1 = futures::future::join_all(
        tenants
            .iter()
            .enumerate()
            .map(|(t, &tenant)| tenant_load(stack.clone(), tenant, t, 0, SCRIPTS.len(), None)),
    )
    .await;

    // Phase 2: the same mix keeps flowing while the replay runs, and goes on until
    // the replay has ended.
    let stop = Arc::new(AtomicBool::new(false));
    let phase1_end = last_event_seq(&stack).await;
    let flowing: Vec<_> = tenants
        .iter()
        .enumerate()
        .map(|(t, &tenant)| {
            tokio::spawn(tenant_load(
                stack.clone(),
                tenant,
                t,
                SCRIPTS.len(),
                SCRIPTS.len(),
                Some(stop.clone()),
            ))
        })
        .collect();
    // The replay starts once the new commands are appending.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while last_event_seq(&stack).await == phase1_end {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never flowed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = last_event_seq(&stack).await;
    let summary = domainctl::replay(&stack.js, &stack.pool, &Default::default())
        .await
        .expect("replay");
    let after = last_event_seq(&stack).await;
    stop.store(true, Ordering::SeqCst);
    let mut expected = Vec::new();
    for (p1, task) in phase1.into_iter().zip(flowing) {
        let mut p2 = task.await.unwrap();
        let mut e = p1;
        e.status.append(&mut p2.status);
        e.verified_in_order.append(&mut p2.verified_in_order);
        expected.push(e);
    }
    assert!(
        after > before,
        "commands were appending events during the replay ({before} → {after})"
    );
    assert!(summary.last_seq >= before);

    let last = quiesce(&stack).await;
    let events = stack.events().await;
    assert_eq!(events.len() as u64, last);

    // 1. Consistent: the live tables after the replay are the fold of the whole log.
    let rows = table_rows(&stack.pool).await;
    assert_eq!(rows, fold(&events), "rows after a replay under load");

    // 2. What the commands asked for, computed from the commands alone.
    let by_name: HashMap<(Uuid, String), &Row> = rows
        .values()
        .map(|r| ((r.tenant.0, r.domain_name.clone()), r))
        .collect();
    let live_settings = settings(&stack.pool).await;
    let mut domains = 0;
    for (tenant, e) in tenants.iter().zip(&expected) {
        for (domain, status) in &e.status {
            let row = by_name
                .get(&(*tenant, domain.clone()))
                .unwrap_or_else(|| panic!("no row for {domain}"));
            assert_eq!(row.status, *status, "{domain}");
            domains += 1;
        }
        let n = e.verified_in_order.len();
        assert!(n >= 2, "each tenant verified at least two domains");
        assert_eq!(
            live_settings.get(tenant),
            Some(&(
                Some(e.verified_in_order[n - 1].clone()),
                Some(e.verified_in_order[n - 2].clone())
            )),
            "the newest verified domain is the default, the one before it the previous"
        );
    }
    assert_eq!(rows.len(), domains, "no row the commands did not ask for");

    // 3. Live equals replay: the quiet log rebuilt gives the same rows and checkpoint.
    let live_checkpoint = checkpoint(&stack.pool, "email_domains").await;
    let again = domainctl::replay(&stack.js, &stack.pool, &Default::default())
        .await
        .expect("second replay");
    assert_eq!(again.last_seq, last);
    assert_eq!(table_rows(&stack.pool).await, rows);
    assert_eq!(settings(&stack.pool).await, live_settings);
    assert_eq!(
        checkpoint(&stack.pool, "email_domains").await,
        live_checkpoint
    );
    assert_eq!(
        checkpoint(&stack.pool, "tenant_settings").await,
        live_checkpoint
    );

    // And the live projectors go on from the rebuilt checkpoint: one more command lands.
    let tenant = tenants[0];
    run_script(&stack, tenant, "after.t0.replay.test", Script::Await).await;
    let last = quiesce(&stack).await;
    assert_eq!(table_rows(&stack.pool).await, fold(&stack.events().await));
    assert_eq!(checkpoint(&stack.pool, "email_domains").await as u64, last);
    match Arc::try_unwrap(stack) {
        Ok(s) => s.shutdown().await,
        Err(_) => panic!("the load tasks still hold the stack"),
    }
}

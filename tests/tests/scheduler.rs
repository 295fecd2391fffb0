//! Timed re-checks: the deadline, drift, and timers that fire exactly once.

use email_domain_events::outcome::Verdict;
use email_domain_events::Policy;
use futures::StreamExt;
use std::time::Duration;
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

fn fast(deadline_secs: i64) -> Policy {
    Policy {
        recheck_initial: chrono::Duration::milliseconds(300),
        recheck_max: chrono::Duration::milliseconds(600),
        verification_deadline: chrono::Duration::seconds(deadline_secs),
        monitor_interval: chrono::Duration::milliseconds(400),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_whose_dns_is_never_fixed_fails_at_the_deadline_with_a_reason_a_person_can_act_on()
{
    let stack = Stack::start_with(StackOptions {
        policy: fast(3),
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    assert_eq!(
        stack
            .send("register_domain", tenant, "never.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    let row = stack
        .wait_status(tenant, "never.test", "awaiting_dns")
        .await;
    // Only the DKIM record is added: SPF and the return path stay missing.
    stack.dns.add_zone("never.test", 1);
    let dkim = row["dns_records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "dkim")
        .unwrap()
        .clone();
    stack.dns.add(
        dkim["name"].as_str().unwrap(),
        "TXT",
        dkim["value"].as_str().unwrap(),
        None,
        1,
    );
    let failed = stack.wait_status(tenant, "never.test", "failed").await;
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("send.never.test"),
        "names the missing records: {reason}"
    );
    assert!(
        reason.contains("v=spf1 include:amazonses.com ~all"),
        "says what to enter: {reason}"
    );
    assert!(
        !reason.contains("resend._domainkey"),
        "the DKIM record was found and is not blamed: {reason}"
    );
    assert!(failed["next_check_at"].is_null(), "no more re-checks");
    let checks = stack
        .events()
        .await
        .iter()
        .filter(|e| e.data.type_name() == "dns_checked")
        .count();
    assert!(
        checks >= 2,
        "it was re-checked on a schedule before failing ({checks} checks)"
    );
    // refresh_status opens a new window.
    assert_eq!(
        stack
            .send("refresh_status", tenant, "never.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack
        .wait_status(tenant, "never.test", "awaiting_dns")
        .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verified_domain_whose_record_disappears_drifts_and_recovers_without_changing_the_default(
) {
    let stack = Stack::start_with(StackOptions {
        policy: fast(30),
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    assert_eq!(
        stack
            .send("register_domain", tenant, "drift.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    let row = stack
        .wait_status(tenant, "drift.test", "awaiting_dns")
        .await;
    stack.publish_records("drift.test", &row);
    assert_eq!(
        stack
            .send("dns_configured", tenant, "drift.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack.wait_status(tenant, "drift.test", "verified").await;
    // The settings projector has its own lag behind the row.
    stack.wait_sender(tenant, "drift.test").await;

    stack.dns.remove("send.drift.test", Some("TXT"));
    let drifting = stack
        .wait_row(tenant, "drift.test", "drift detected", |r| {
            r["metadata"]["drift_since"].is_string()
        })
        .await;
    assert_eq!(
        drifting["status"], "verified",
        "drift alone does not fail the domain"
    );
    let spf = row["dns_records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "spf")
        .unwrap()
        .clone();
    stack.dns.add(
        "send.drift.test",
        "TXT",
        spf["value"].as_str().unwrap(),
        None,
        1,
    );
    stack
        .wait_row(tenant, "drift.test", "drift resolved", |r| {
            r["metadata"]["drift_since"].is_null()
        })
        .await;
    assert_eq!(
        stack.sender(tenant).await["domain"],
        "drift.test",
        "the default did not change"
    );
    // The analytics emitter has its own lag behind the row: wait for the restore.
    let analytics = stack
        .analytics_until(|a| a.iter().any(|a| a["type"] == "email_domain.dns_restored"))
        .await;
    assert!(analytics
        .iter()
        .any(|a| a["type"] == "email_domain.dns_drift"));
    assert_eq!(
        analytics
            .iter()
            .filter(|a| a["type"] == "email_domain.activated")
            .count(),
        1
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_that_is_never_repaired_fails_the_domain_and_rolls_the_default_back() {
    let stack = Stack::start_with(StackOptions {
        policy: fast(4),
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    assert_eq!(
        stack
            .send("register_domain", tenant, "gone.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    let row = stack.wait_status(tenant, "gone.test", "awaiting_dns").await;
    stack.publish_records("gone.test", &row);
    assert_eq!(
        stack
            .send("dns_configured", tenant, "gone.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack.wait_status(tenant, "gone.test", "verified").await;
    stack.dns.remove("resend._domainkey.gone.test", None);
    let failed = stack.wait_status(tenant, "gone.test", "failed").await;
    assert!(failed["failure_reason"]
        .as_str()
        .unwrap()
        .contains("resend._domainkey.gone.test"));
    // Rolled back to the platform address (once the settings projector has caught up
    // with the failure).
    let sender = stack
        .wait_sender_until(tenant, "rolled back to the platform address", |s| {
            s["managed"] == false
        })
        .await;
    assert!(sender["domain"].is_null(), "{sender}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scheduler_instances_and_a_restart_fire_every_due_timer_exactly_once() {
    let mut stack = Stack::start_with(StackOptions {
        scheduler: false,
        ..Default::default()
    })
    .await;
    // Timers of domains that do not exist: the handler ignores their re-checks, so
    // what is counted here is what the schedulers published.
    let mut fired = stack
        .client
        .subscribe("email_domains.partitioned.*.recheck")
        .await
        .unwrap();
    let now = chrono::Utc::now();
    for i in 0..600 {
        sqlx::query("INSERT INTO scheduler_timers (domain_id, tenant_id, domain, due_at) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4())
            .bind(format!("t{i}.test"))
            .bind(now - chrono::Duration::milliseconds(i))
            .execute(&stack.pool)
            .await
            .unwrap();
    }
    let first = stack.start_scheduler();
    let _second = stack.start_scheduler();
    let mut ids = std::collections::HashMap::<String, u32>::new();
    let mut count = |m: async_nats::Message| {
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *ids.entry(body["domain_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    };
    // Stop one instance once they are firing, and start another: a restart mid-work.
    let started = tokio::time::timeout(Duration::from_secs(10), fired.next())
        .await
        .expect("the schedulers fire")
        .unwrap();
    count(started);
    first.trigger();
    let _third = stack.start_scheduler();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(3), fired.next()).await {
        count(m);
    }
    assert_eq!(ids.len(), 600, "every due timer fired");
    assert!(
        ids.values().all(|n| *n == 1),
        "none fired twice: {:?}",
        ids.values().filter(|n| **n > 1).count()
    );
    let counts: Vec<i32> = sqlx::query_scalar("SELECT fired_count FROM scheduler_timers")
        .fetch_all(&stack.pool)
        .await
        .unwrap();
    assert!(
        counts.iter().all(|c| *c == 1),
        "the schedulers' own count: each timer once"
    );
    stack.shutdown().await;
}

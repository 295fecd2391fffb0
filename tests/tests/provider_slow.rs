//! A slow provider, through the whole stack: answers that take long but come within
//! the adapter's request timeout are waited for (no retry, no duplicate); answers that
//! come after it are given up on, the call is retried, and the domain the timed-out
//! create made is adopted: never a second provider domain, never a failed domain.
//!
//! The timeout test gives the adapter a 2 s request timeout (`PROVIDER_TIMEOUT_MS`,
//! default 15 s), so it takes seconds, not half a minute.

use dev_provider::{DevProviderControl, Faults};
use email_domain_events::outcome::Verdict;
use serde_json::Value;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

/// The adapter's request timeout in the timeout test (`PROVIDER_TIMEOUT_MS`).
const ADAPTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until the newest row of `domain` has `status`; fails at once if it is ever
/// `failed`. Returns the row and every status seen on the way.
async fn wait_never_failing(
    stack: &Stack,
    tenant: Uuid,
    domain: &str,
    status: &str,
    within: Duration,
) -> (Value, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let rows = stack.domains(tenant).await;
        if let Some(row) = rows.iter().rfind(|r| r["domain_name"] == domain) {
            let now = row["status"].as_str().unwrap_or("?").to_string();
            if seen.last() != Some(&now) {
                seen.push(now.clone());
            }
            assert_ne!(now, "failed", "{domain} failed: {row}; statuses {seen:?}");
            if now == status {
                return (row.clone(), seen);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{domain}: no status {status} within {within:?}; statuses {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the domains the dev provider holds under `name` (through its API).
async fn provider_ids(stack: &Stack, name: &str) -> Vec<String> {
    let list: Value = reqwest::Client::new()
        .get(format!("{}/domains?limit=100", stack.provider_url))
        .bearer_auth("test-reader")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == name)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

/// The event types of one domain, in order.
async fn event_types(stack: &Stack, domain: &str) -> Vec<&'static str> {
    stack
        .events()
        .await
        .iter()
        .filter(|e| e.domain == domain)
        .map(|e| e.data.type_name())
        .collect()
}

/// One provider domain for the name, the one the row points at; one provisioning, no
/// failure in the log.
async fn assert_one_provider_domain(stack: &Stack, row: &Value, name: &str) {
    let control = DevProviderControl::new(&stack.provider_url);
    let stats = control.stats().await.unwrap();
    assert_eq!(
        stats.created_by_name.get(name),
        Some(&1),
        "{name}: exactly one provider domain was ever created ({:?})",
        stats.created_by_name
    );
    let ids = provider_ids(stack, name).await;
    assert_eq!(ids.len(), 1, "{name}: one provider domain: {ids:?}");
    assert_eq!(
        row["provider_domain_id"].as_str(),
        Some(ids[0].as_str()),
        "{name}: the row points at the provider's domain"
    );
    let types = event_types(stack, name).await;
    assert_eq!(
        types.iter().filter(|t| **t == "domain_provisioned").count(),
        1,
        "{name}: provisioned once: {types:?}"
    );
    assert!(
        !types
            .iter()
            .any(|t| *t == "provisioning_failed" || *t == "verification_failed"),
        "{name}: no failure: {types:?}"
    );
}

/// The owner publishes the records and says so; the domain must verify.
async fn configure_and_verify(stack: &Stack, tenant: Uuid, name: &str, row: &Value) -> Value {
    stack.publish_records(name, row);
    assert_eq!(
        stack.send("dns_configured", tenant, name).await.outcome,
        Verdict::Accepted
    );
    wait_never_failing(stack, tenant, name, "verified", Duration::from_secs(60))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_answers_within_the_timeout_are_waited_for_without_retries_or_duplicates() {
    let stack = Stack::start().await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();
    let names = ["slow-a.test", "slow-b.test", "slow-c.test"];
    let delay = Duration::from_millis(2_000);
    assert!(delay < StackOptions::default().provider_timeout);

    // Every API call (create, verify, status) takes 2 s.
    control
        .set_faults(&Faults {
            delay_ms: Some(delay.as_millis() as u64),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    for name in names {
        assert_eq!(
            stack.send("register_domain", tenant, name).await.outcome,
            Verdict::Accepted
        );
    }
    let mut rows = Vec::new();
    for name in names {
        let (row, _) = wait_never_failing(
            &stack,
            tenant,
            name,
            "awaiting_dns",
            Duration::from_secs(60),
        )
        .await;
        rows.push(row);
    }
    assert!(started.elapsed() >= delay, "the answers were slow");
    let stats = control.stats().await.unwrap();
    assert_eq!(
        stats.by_path.get("POST /domains"),
        Some(&(names.len() as u64)),
        "one create per name: a slow answer is waited for, not retried"
    );

    for (name, row) in names.iter().zip(&rows) {
        configure_and_verify(&stack, tenant, name, row).await;
    }
    control.clear_faults().await.unwrap();
    for name in names {
        let row = stack.wait_status(tenant, name, "verified").await;
        assert_one_provider_domain(&stack, &row, name).await;
    }
    let stats = control.stats().await.unwrap();
    assert_eq!(stats.domains, names.len() as u64);
    assert_eq!(
        stats.by_path.get("POST /domains"),
        Some(&(names.len() as u64))
    );
    assert_eq!(stats.server_errors + stats.rate_limited, 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_answered_after_the_timeout_is_retried_and_adopted_never_duplicated_or_failed() {
    let stack = Stack::start_with(StackOptions {
        provider_timeout: ADAPTER_TIMEOUT,
        ..Default::default()
    })
    .await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();
    let name = "late.test";

    // The next two creates are carried out at once, but answered only after the
    // adapter has given up: the first makes the domain, the second is told "registered
    // already"; neither answer arrives. The third create gets its answer.
    let late = ADAPTER_TIMEOUT + Duration::from_millis(1_500);
    control
        .set_faults(&Faults {
            delay_ms: Some(late.as_millis() as u64),
            delay_next: Some(2),
            delay_route: Some("POST /domains".into()),
            delay_after_handling: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        stack.send("register_domain", tenant, name).await.outcome,
        Verdict::Accepted
    );
    let (row, statuses) = wait_never_failing(
        &stack,
        tenant,
        name,
        "awaiting_dns",
        Duration::from_secs(120),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= ADAPTER_TIMEOUT * 2,
        "two creates timed out before the third was answered ({took:?})"
    );
    assert!(row["provider_domain_id"].is_string());

    let stats = control.stats().await.unwrap();
    assert_eq!(
        stats.by_path.get("POST /domains"),
        Some(&3),
        "two timed-out creates and the one answered: {:?}",
        stats.by_path
    );
    assert!(
        stats.by_path.get("GET /domains").is_some_and(|n| *n >= 1),
        "the answered create adopted the domain (listed it): {:?}",
        stats.by_path
    );
    assert_one_provider_domain(&stack, &row, name).await;

    // And the domain goes on to verify as any other.
    let row = configure_and_verify(&stack, tenant, name, &row).await;
    assert_one_provider_domain(&stack, &row, name).await;
    assert_eq!(control.stats().await.unwrap().domains, 1);
    eprintln!("{name}: awaiting_dns after {took:?}; statuses {statuses:?}");
    stack.shutdown().await;
}

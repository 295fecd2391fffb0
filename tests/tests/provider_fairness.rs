//! The provider worker takes its calls in turn between tenants: one tenant's burst
//! of registrations does not put another tenant's domain behind all of its calls at
//! the one rate-limited provider account.

use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

const BURST: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenants_create_is_called_among_the_first_while_another_tenants_burst_waits() {
    let stack = Stack::start_with(StackOptions {
        // 20 calls a second: X's 60 creates take 3 s, first come first served.
        provider_rate_limit: Some(20.0),
        ..Default::default()
    })
    .await;
    let mut results = stack
        .client
        .subscribe(format!(
            "{}*.provider_result",
            runtime::partitions::SUBJECTS.trim_end_matches('>')
        ))
        .await
        .unwrap();
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let bodies = (0..BURST).map(|i| {
        json!({"command_id": Uuid::new_v4(), "tenant_id": x, "domain": format!("x{i}.example.org")})
    });
    stack.publish_all("register_domain", bodies).await;
    stack
        .publish_all(
            "register_domain",
            [json!({"command_id": Uuid::new_v4(), "tenant_id": y, "domain": "y.example.org"})],
        )
        .await;

    // The tenants of the provider's creates, in the order the calls finished.
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while order.len() < BURST + 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(m)) = tokio::time::timeout(left, results.next()).await else {
            panic!("{} of {} provider results in 60 s", order.len(), BURST + 1);
        };
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        if body["provider_result"]["kind"] == "created" {
            order.push(body["tenant_id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
    }
    let at = order
        .iter()
        .position(|t| *t == y)
        .expect("Y's create answered");
    assert!(
        at < 15,
        "Y's create was answered after {at} of X's {BURST} (first come, first served would be {BURST})"
    );
    stack.shutdown().await;
}

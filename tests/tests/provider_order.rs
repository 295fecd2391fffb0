//! Provider work for one name is ordered across registrations: when a name changes
//! hands, the new registration's create at the provider waits for the old
//! registration's provider clean-up, and never adopts the old one's domain.
//!
//! The dev provider holds every delete back (`hold_deletes`), so the create always
//! arrives while the old domain still exists: the order is forced, not left to luck.

use dev_provider::{DevProviderControl, Faults};
use email_domain_events::outcome::Verdict;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use system_tests::Stack;
use uuid::Uuid;

const NAME: &str = "handover.test";

/// Waits until `check` holds, for at most 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the provider still has the domain with this id.
async fn provider_has(stack: &Stack, id: &str) -> bool {
    let status = reqwest::Client::new()
        .get(format!("{}/domains/{id}", stack.provider_url))
        .bearer_auth("dev-key")
        .send()
        .await
        .unwrap()
        .status();
    status.is_success()
}

/// How many times the provider worker has been handed an interactive work item again:
/// a create waiting for a clean-up comes back instead of being called.
async fn interactive_redeliveries(stack: &Stack) -> u64 {
    let stream = stack
        .js
        .get_stream("EMAIL_DOMAIN_PROVIDER_WORK")
        .await
        .unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(provider_worker::INTERACTIVE_CONSUMER)
        .await
        .unwrap();
    consumer.info().await.unwrap().num_redelivered as u64
}

fn provider_id(row: &Value) -> String {
    row["provider_domain_id"]
        .as_str()
        .expect("provisioned")
        .to_string()
}

/// Registers NAME for `tenant` and returns its provider domain id once provisioned.
async fn provisioned(stack: &Stack, tenant: Uuid) -> String {
    let o = stack.send("register_domain", tenant, NAME).await;
    assert_eq!(o.outcome, Verdict::Accepted, "{o:?}");
    provider_id(&stack.wait_status(tenant, NAME, "awaiting_dns").await)
}

/// With the old registration's delete held at the provider, registers NAME for `new`
/// and checks its create waits; then lets the delete through and checks the new
/// registration gets a domain of its own.
async fn hand_over(stack: &Stack, control: &DevProviderControl, new: Uuid, old_id: &str) {
    let o = stack.send("register_domain", new, NAME).await;
    assert_eq!(o.outcome, Verdict::Accepted, "{o:?}");
    let id = o.domain_id.expect("a new registration's id").0.to_string();
    until("the old domain's delete to be held", || async {
        control.stats().await.unwrap().deletes_held == 1
    })
    .await;
    // The create is handed to the worker and comes back unexecuted (or, before the
    // ordering, adopts the old domain: the row would leave `created`).
    until("the new registration's create to be deferred", || async {
        let row = stack
            .wait_row(new, NAME, "the new row", |r| r["id"] == id)
            .await;
        assert_eq!(
            row["status"], "created",
            "the create ran before the clean-up: {row}"
        );
        interactive_redeliveries(stack).await >= 1
    })
    .await;
    assert_eq!(control.stats().await.unwrap().created_by_name[NAME], 1);
    control
        .set_faults(&Faults {
            hold_deletes: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let row = stack.wait_status(new, NAME, "awaiting_dns").await;
    let new_id = provider_id(&row);
    assert_ne!(
        new_id, old_id,
        "the new registration adopted the old domain"
    );
    assert!(provider_has(stack, &new_id).await, "the new domain exists");
    assert!(!provider_has(stack, old_id).await, "the old domain is gone");
    assert_eq!(control.stats().await.unwrap().created_by_name[NAME], 2);
}

async fn hold_deletes(control: &DevProviderControl) {
    control
        .set_faults(&Faults {
            hold_deletes: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_released_from_a_failed_registration_is_created_anew_after_the_old_domain_is_deleted(
) {
    let stack = Stack::start().await;
    let control = DevProviderControl::new(&stack.provider_url);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let old_id = provisioned(&stack, a).await;
    hold_deletes(&control).await;
    let fail =
        json!({"command_id": Uuid::new_v4(), "tenant_id": a, "domain": NAME, "reason": "test"});
    assert_eq!(
        stack.send_body("fail_domain", &fail).await.outcome,
        Verdict::Accepted
    );
    stack.wait_status(a, NAME, "failed").await;
    hand_over(&stack, &control, b, &old_id).await;
    let released = stack.wait_status(a, NAME, "deactivated").await;
    assert_eq!(released["metadata"]["deactivation_reason"], "released");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_name_registered_again_is_created_anew_after_the_old_domain_is_deleted() {
    let stack = Stack::start().await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();
    let old_id = provisioned(&stack, tenant).await;
    hold_deletes(&control).await;
    let gone = stack.send("delete_domain", tenant, NAME).await;
    assert_eq!(gone.outcome, Verdict::Accepted);
    stack.wait_status(tenant, NAME, "deactivated").await;
    hand_over(&stack, &control, tenant, &old_id).await;
    stack.shutdown().await;
}

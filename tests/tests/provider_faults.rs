//! The provider misbehaving: rate limits, errors and lost answers delay work, never
//! fail a domain, and never create a second provider domain.

use dev_provider::{DevProviderControl, Faults};
use email_domain_events::outcome::Verdict;
use system_tests::Stack;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_errors_and_a_lost_create_answer_delay_the_work_but_never_fail_or_duplicate() {
    let stack = Stack::start().await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();

    // 429 with retry-after twice, then a 500: the domain still gets provisioned.
    control
        .set_faults(&Faults {
            rate_limit_next: Some(2),
            retry_after_secs: Some(0.5),
            server_error_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        stack
            .send("register_domain", tenant, "limited.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack
        .wait_status(tenant, "limited.test", "awaiting_dns")
        .await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "retry-after was honoured"
    );
    let stats = control.stats().await.unwrap();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.server_errors, 1);

    // A create whose answer is lost (403 "registered already"): the existing provider
    // domain is adopted, not duplicated.
    control
        .set_faults(&Faults {
            forbid_next_create: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = control.stats().await.unwrap().domains;
    assert_eq!(
        stack
            .send("register_domain", tenant, "lost.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    let row = stack.wait_status(tenant, "lost.test", "awaiting_dns").await;
    assert!(row["provider_domain_id"].is_string());
    assert_eq!(
        control.stats().await.unwrap().domains,
        before + 1,
        "one provider domain"
    );
    stack.shutdown().await;
}

//! Scheduled provider polls are answered many at a time from the provider's paged
//! domain list, over real HTTP to the development provider: the calls are counted by
//! the provider itself.

use dev_provider::DevProviderControl;
use futures::StreamExt;
use provider::{ApiKey, EmailProvider, ResendProvider};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

fn hits(stats: &dev_provider::Stats, route: &str) -> u64 {
    stats.by_path.get(route).copied().unwrap_or(0)
}

/// Waits for `n` `provider_result` commands and returns provider status by domain.
async fn results(sub: &mut async_nats::Subscriber, n: usize) -> HashMap<String, String> {
    let mut out = HashMap::new();
    while out.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} poll results", out.len()))
            .unwrap();
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        let r = &body["provider_result"];
        assert_eq!(r["kind"], "polled", "{body}");
        out.insert(
            body["domain"].as_str().unwrap().to_string(),
            r["provider_status"].as_str().unwrap().to_string(),
        );
    }
    out
}

fn poll_item(domain: &str, provider_domain_id: &str) -> Value {
    json!({
        "work_id": Uuid::new_v4(),
        "kind": "poll",
        "tenant_id": Uuid::new_v4(),
        "domain_id": Uuid::new_v4(),
        "domain": domain,
        "region": null,
        "provider_domain_id": provider_domain_id,
        "interactive": false,
        "correlation_id": null,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_polls_are_answered_from_list_pages_and_a_domain_the_list_lacks_alone() {
    // No provider worker yet: the polls wait in their queue, as they do behind a
    // rate limit.
    let stack = Stack::start_with(StackOptions {
        provider_worker: false,
        ..Default::default()
    })
    .await;
    let control = DevProviderControl::new(&stack.provider_url);
    let adapter = ResendProvider::new(
        &stack.provider_url,
        ApiKey::new("dev-key"),
        Duration::from_secs(5),
    )
    .unwrap();

    // 150 domains at the provider (two list pages); 40 of them are polled, spread over
    // both pages, with statuses the provider sets.
    let mut ids = Vec::new();
    for i in 0..150 {
        let d = adapter
            .create_domain(&format!("p{i}.polls.test"), None)
            .await
            .unwrap();
        ids.push(d.provider_domain_id);
    }
    let statuses = ["pending", "verified", "failed", "not_started"];
    let mut expected = HashMap::new();
    for (k, i) in (0..150).step_by(4).take(38).enumerate() {
        let status = statuses[k % statuses.len()];
        control.force_status(&ids[i], status, None).await.unwrap();
        expected.insert(format!("p{i}.polls.test"), status.to_string());
    }
    // And one the provider no longer has: the list cannot show it, so it is asked
    // for alone and reported as not found.
    let gone = adapter
        .create_domain("gone.polls.test", None)
        .await
        .unwrap();
    adapter
        .delete_domain(&gone.provider_domain_id)
        .await
        .unwrap();
    expected.insert("gone.polls.test".into(), "not_found".into());

    let mut sub = stack
        .client
        .subscribe("email_domains.partitioned.*.provider_result")
        .await
        .unwrap();
    for name in expected.keys() {
        let id = match name.as_str() {
            "gone.polls.test" => gone.provider_domain_id.clone(),
            n => {
                let i: usize = n[1..n.find('.').unwrap()].parse().unwrap();
                ids[i].clone()
            }
        };
        let item = poll_item(name, &id);
        stack
            .js
            .publish(
                "email_domains.provider_work.poll",
                serde_json::to_vec(&item).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let before = control.stats().await.unwrap();

    let shutdown = runtime::Shutdown::new();
    let worker = tokio::spawn(provider_worker::run(stack.config.clone(), shutdown.clone()));
    let got = results(&mut sub, expected.len()).await;
    assert_eq!(got, expected);

    let after = control.stats().await.unwrap();
    let lists = hits(&after, "GET /domains") - hits(&before, "GET /domains");
    let gets = hits(&after, "GET /domains/{id}") - hits(&before, "GET /domains/{id}");
    // 39 polls: two list pages and one call alone, instead of 39 calls.
    assert_eq!(lists, 2, "list pages walked");
    assert_eq!(gets, 1, "the domain the list lacks, asked for alone");

    shutdown.trigger();
    let _ = worker.await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partially_failed_domain_in_a_list_page_is_asked_for_alone_to_name_its_failed_records() {
    let stack = Stack::start_with(StackOptions {
        provider_worker: false,
        ..Default::default()
    })
    .await;
    let control = DevProviderControl::new(&stack.provider_url);
    let adapter = ResendProvider::new(
        &stack.provider_url,
        ApiKey::new("dev-key"),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut ids = HashMap::new();
    for (name, status) in [
        ("partly.polls.test", "partially_failed"),
        ("fine.polls.test", "verified"),
        ("slow.polls.test", "pending"),
    ] {
        let d = adapter.create_domain(name, None).await.unwrap();
        control
            .force(
                &d.provider_domain_id,
                &dev_provider::ForcedStatus {
                    status: status.into(),
                    records: if status == "partially_failed" {
                        vec![dev_provider::ForcedRecordStatus {
                            name: "resend._domainkey".into(),
                            record_type: Some("TXT".into()),
                            status: "failed".into(),
                        }]
                    } else {
                        vec![]
                    },
                    hold: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        ids.insert(name, d.provider_domain_id);
    }
    let mut sub = stack
        .client
        .subscribe("email_domains.partitioned.*.provider_result")
        .await
        .unwrap();
    for (name, id) in &ids {
        stack
            .js
            .publish(
                "email_domains.provider_work.poll",
                serde_json::to_vec(&poll_item(name, id)).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let before = control.stats().await.unwrap();
    let shutdown = runtime::Shutdown::new();
    let worker = tokio::spawn(provider_worker::run(stack.config.clone(), shutdown.clone()));

    let mut got = HashMap::new();
    while got.len() < ids.len() {
        let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} poll results", got.len(), ids.len()))
            .unwrap();
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        got.insert(
            body["domain"].as_str().unwrap().to_string(),
            body["provider_result"].clone(),
        );
    }
    let partly = &got["partly.polls.test"];
    assert_eq!(partly["provider_status"], "partially_failed");
    assert_eq!(
        partly["failed_records"],
        json!([{"type": "TXT", "name": "resend._domainkey.partly.polls.test"}])
    );
    assert_eq!(
        partly["provider_domain_id"],
        ids["partly.polls.test"].as_str()
    );
    for name in ["fine.polls.test", "slow.polls.test"] {
        assert_eq!(got[name]["failed_records"], Value::Null, "{name}");
        assert_eq!(
            got[name]["provider_domain_id"],
            ids[name].as_str(),
            "{name}"
        );
    }
    let after = control.stats().await.unwrap();
    let lists = hits(&after, "GET /domains") - hits(&before, "GET /domains");
    let gets = hits(&after, "GET /domains/{id}") - hits(&before, "GET /domains/{id}");
    assert_eq!(lists, 1, "one list page for the three");
    assert_eq!(gets, 1, "the partially failed domain, asked for alone");

    shutdown.trigger();
    let _ = worker.await;
    stack.shutdown().await;
}

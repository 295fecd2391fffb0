//! Provider states other than pending / verified / failed, produced with the dev
//! provider: a temporary failure is asked about again at the fast cadence, a partial
//! failure sends the domain back to awaiting DNS naming the failed records, and a
//! provider domain deleted out of band is set up again (or, when the owner deletes the
//! domain, counts as cleaned up).

use chrono::{DateTime, Utc};
use dev_provider::{DevProviderControl, ForcedRecordStatus, ForcedStatus};
use email_domain_events::event::EventData;
use email_domain_events::outcome::Verdict;
use email_domain_events::schedule::recheck_delay;
use email_domain_events::{DomainId, Event, Policy, ProviderStatus};
use provider::{ApiKey, EmailProvider, ResendProvider};
use serde_json::Value;
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

/// Registers `domain` and waits until its records are ready; returns the row.
async fn registered(stack: &Stack, tenant: Uuid, domain: &str) -> Value {
    assert_eq!(
        stack.send("register_domain", tenant, domain).await.outcome,
        Verdict::Accepted
    );
    stack.wait_status(tenant, domain, "awaiting_dns").await
}

fn provider_domain_id(row: &Value) -> String {
    row["provider_domain_id"]
        .as_str()
        .expect("provisioned")
        .to_owned()
}

/// The events of `domain`, once `pred` holds for them (or a panic after 30 s).
async fn events_until(
    stack: &Stack,
    domain: &str,
    what: &str,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<Event> = stack
            .events()
            .await
            .into_iter()
            .filter(|e| e.domain == domain)
            .collect();
        if pred(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{domain}: waited 30 s for {what}; events: {:?}",
            events
                .iter()
                .map(|e| e.data.type_name())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `provider_polled` events with this status: (occurred_at, next_check_at).
fn polls_with(
    events: &[Event],
    status: &ProviderStatus,
) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::ProviderPolled {
                provider_status,
                next_check_at,
                ..
            } if provider_status == status => Some((e.occurred_at, *next_check_at)),
            _ => None,
        })
        .collect()
}

fn adapter(stack: &Stack) -> ResendProvider {
    ResendProvider::new(
        &stack.provider_url,
        ApiKey::new("dev-key"),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_temporary_failure_is_asked_about_again_at_the_fast_cadence_until_the_provider_answers() {
    // A fast cadence (2 s) so the retry is seen; backed-off checks reach a minute.
    let policy = Policy {
        recheck_initial: chrono::Duration::seconds(2),
        recheck_max: chrono::Duration::seconds(60),
        ..StackOptions::default().policy
    };
    let stack = Stack::start_with(StackOptions {
        policy: policy.clone(),
        ..Default::default()
    })
    .await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();
    let domain = "temporary.test";
    let row = registered(&stack, tenant, domain).await;
    let domain_id = DomainId(Uuid::parse_str(row["id"].as_str().unwrap()).unwrap());
    control
        .force(
            &provider_domain_id(&row),
            &ForcedStatus {
                status: "temporary_failure".into(),
                hold: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stack.publish_records(domain, &row);
    stack.send("dns_configured", tenant, domain).await;

    // Asked again and again, each time at the fast end of the cadence.
    let temporary = ProviderStatus::TemporaryFailure;
    let events = events_until(&stack, domain, "two temporary failures", |ev| {
        polls_with(ev, &temporary).len() >= 2
    })
    .await;
    let fast = recheck_delay(&policy, domain_id, 0);
    for (at, next) in polls_with(&events, &temporary) {
        let next = next.expect("a next check");
        let off = ((next - at) - fast).num_milliseconds().abs();
        assert!(
            off <= 1,
            "next check {next} is the fast delay {fast} after {at}"
        );
    }
    let row = stack
        .wait_row(tenant, domain, "the temporary failure recorded", |r| {
            r["metadata"]["provider_status"] == "temporary_failure"
        })
        .await;
    assert_eq!(row["status"], "verifying");
    assert_eq!(row["failure_reason"], Value::Null);

    // The provider finishes its check: the next retry finds it verified.
    control
        .force_status(&provider_domain_id(&row), "verified", None)
        .await
        .unwrap();
    let row = stack.wait_status(tenant, domain, "verified").await;
    assert_eq!(row["metadata"]["provider_status"], "verified");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_failure_goes_back_to_awaiting_dns_naming_the_failed_record_until_dns_is_fixed() {
    let stack = Stack::start().await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();
    let domain = "partly.test";
    let row = registered(&stack, tenant, domain).await;
    let id = provider_domain_id(&row);
    control
        .force(
            &id,
            &ForcedStatus {
                status: "partially_failed".into(),
                record_status: Some("verified".into()),
                records: vec![ForcedRecordStatus {
                    name: "resend._domainkey".into(),
                    record_type: Some("TXT".into()),
                    status: "failed".into(),
                }],
                hold: true,
            },
        )
        .await
        .unwrap();
    stack.publish_records(domain, &row);
    stack.send("dns_configured", tenant, domain).await;

    let dkim = format!("TXT record at resend._domainkey.{domain}");
    let row = stack
        .wait_row(tenant, domain, "the provider's partial failure", |r| {
            r["metadata"]["provider_status"] == "partially_failed"
        })
        .await;
    assert_eq!(row["status"], "awaiting_dns");
    let reason = row["failure_reason"].as_str().expect("a failure reason");
    assert!(reason.contains(&dkim), "{reason}");
    assert!(
        !reason.contains(&format!("send.{domain}")),
        "only the failed record is named: {reason}"
    );
    let events = events_until(&stack, domain, "provider_polled", |ev| {
        !polls_with(ev, &ProviderStatus::PartiallyFailed).is_empty()
    })
    .await;
    let failed = events.iter().find_map(|e| match &e.data {
        EventData::ProviderPolled {
            provider_failed: true,
            failed_records,
            reason,
            ..
        } => Some((failed_records.clone(), reason.clone())),
        _ => None,
    });
    let (failed_records, event_reason) = failed.expect("a provider_failed poll");
    assert_eq!(failed_records.len(), 1);
    assert_eq!(failed_records[0].record_type, "TXT");
    assert_eq!(
        failed_records[0].name,
        format!("resend._domainkey.{domain}")
    );
    assert_eq!(event_reason.as_deref(), Some(reason));

    // The owner fixes it and says so: verified, and the reason is gone.
    control.force_status(&id, "pending", None).await.unwrap();
    stack.send("dns_configured", tenant, domain).await;
    let row = stack.wait_status(tenant, domain, "verified").await;
    assert_eq!(row["failure_reason"], Value::Null);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_domain_deleted_out_of_band_is_set_up_again_with_new_records_to_enter() {
    let stack = Stack::start().await;
    let control = DevProviderControl::new(&stack.provider_url);
    let tenant = Uuid::new_v4();
    let domain = "vanished.test";
    let row = registered(&stack, tenant, domain).await;
    let old_id = provider_domain_id(&row);
    let dkim_of = |row: &Value| {
        row["dns_records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["purpose"] == "dkim")
            .map(|r| r["value"].clone())
            .expect("a DKIM record")
    };
    let old_dkim = dkim_of(&row);
    // Someone removes it at the provider, through the provider's own API.
    adapter(&stack).delete_domain(&old_id).await.unwrap();

    // The owner adds the records and asks: the verification request finds it gone.
    stack.publish_records(domain, &row);
    stack.send("dns_configured", tenant, domain).await;
    let events = events_until(&stack, domain, "provider_domain_vanished", |ev| {
        ev.iter()
            .any(|e| e.data.type_name() == "provider_domain_vanished")
    })
    .await;
    let vanished = events
        .iter()
        .find_map(|e| match &e.data {
            EventData::ProviderDomainVanished {
                provider_domain_id,
                reason,
                ..
            } => Some((provider_domain_id.clone(), reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(vanished.0, old_id);

    // Set up again by the same registration (its name claim still held): a new
    // provider domain, new records, and the owner told that they changed.
    let row = stack
        .wait_row(tenant, domain, "a new provider domain", |r| {
            r["status"] == "awaiting_dns"
                && r["provider_domain_id"].is_string()
                && r["provider_domain_id"] != old_id.as_str()
        })
        .await;
    let new_dkim = dkim_of(&row);
    assert_ne!(
        new_dkim, old_dkim,
        "the new provider domain has a new DKIM key"
    );
    assert_eq!(row["failure_reason"].as_str(), Some(vanished.1.as_str()));
    assert!(vanished.1.contains("DNS records change"), "{}", vanished.1);
    assert_eq!(row["metadata"]["provider_status"], "not_found");
    let stats = control.stats().await.unwrap();
    assert_eq!(stats.created_by_name.get(domain), Some(&2));
    assert_eq!(stats.domains, 1, "only the new provider domain exists");

    // The owner enters the new records (in place of the old ones): verified on the new
    // provider domain.
    stack.dns.clear();
    stack.publish_records(domain, &row);
    stack.send("dns_configured", tenant, domain).await;
    let row = stack.wait_status(tenant, domain, "verified").await;
    assert_eq!(row["provider_domain_id"], provider_domain_id(&row).as_str());
    assert_eq!(row["failure_reason"], Value::Null);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_domain_deleted_out_of_band_counts_as_cleaned_up_when_the_owner_deletes_and_the_name_is_free_again(
) {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let domain = "gone-then-deleted.test";
    let row = registered(&stack, tenant, domain).await;
    adapter(&stack)
        .delete_domain(&provider_domain_id(&row))
        .await
        .unwrap();
    assert_eq!(
        stack.send("delete_domain", tenant, domain).await.outcome,
        Verdict::Accepted
    );
    events_until(&stack, domain, "provider_cleaned_up", |ev| {
        ev.iter()
            .any(|e| e.data.type_name() == "provider_cleaned_up")
    })
    .await;
    // The clean-up gave the name up: a new registration is set up at the provider.
    assert_eq!(
        stack.send("register_domain", tenant, domain).await.outcome,
        Verdict::Accepted
    );
    let row = stack
        .wait_row(tenant, domain, "the new registration set up", |r| {
            r["status"] == "awaiting_dns"
        })
        .await;
    assert!(row["provider_domain_id"].is_string());
    stack.shutdown().await;
}

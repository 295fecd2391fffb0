//! Analytics CloudEvents (docs/interface.md §2.5), derived from stored events.

mod common;

use common::*;
use email_domain_events::analytics::{cloud_event, cloud_event_id, names};
use email_domain_events::{CommandType, DnsStatus, Event, EventData};
use std::collections::HashSet;

const NAME: &str = "acme.test";

/// A story touching every analytics name: registered, provisioned, checked, verified,
/// drift and recovery, failed, deleted, released.
fn story() -> Vec<Event> {
    let d = in_verified(NAME);
    let due = d.state().next_check_at.unwrap();
    let missing = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let d = d
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(missing)
        .then();
    let due = d.state().next_check_at.unwrap();
    let d = d
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(d.dns_all_found())
        .then();
    let d = d.when_command(CommandType::FailDomain).then();
    let mut events = d.events.clone();
    events.extend(
        in_verified("other.test")
            .when_command(CommandType::DeleteDomain)
            .then()
            .events,
    );
    let mut released = in_failed("third.test");
    released.record(
        at(40 * DAY),
        fresh_command_id(),
        EventData::DomainReleased {
            to_tenant: tenant_b(),
            cleanup_required: true,
            provider_domain_id: Some("rs-third.test".into()),
        },
    );
    events.extend(released.events);
    events
}

fn names_of(story: &[Event], type_name: &str) -> Vec<Vec<&'static str>> {
    story
        .iter()
        .filter(|e| e.data.type_name() == type_name)
        .map(names)
        .collect()
}

#[test]
fn each_event_type_maps_to_its_analytics_names() {
    let s = story();
    assert_eq!(names_of(&s, "domain_registered")[0], ["registered"]);
    assert_eq!(names_of(&s, "domain_provisioned")[0], ["provisioned"]);
    assert_eq!(
        names_of(&s, "provider_polled")[0],
        ["verified", "activated"]
    );
    assert_eq!(names_of(&s, "verification_failed")[0], ["failed"]);
    assert_eq!(names_of(&s, "domain_deleted")[0], ["deleted"]);
    assert_eq!(names_of(&s, "domain_released")[0], ["released"]);
    let checks = names_of(&s, "dns_checked");
    assert!(
        checks.iter().all(|n| n[0] == "dns_checked"),
        "every DNS check is a dns_checked: {checks:?}"
    );
    assert!(checks.contains(&vec!["dns_checked", "dns_drift"]));
    assert!(checks.contains(&vec!["dns_checked", "dns_restored"]));
    assert!(checks.contains(&vec!["dns_checked"]));
}

#[test]
fn the_contracts_minimum_names_all_occur_in_a_domains_life() {
    let all: HashSet<&str> = story().iter().flat_map(names).collect();
    for name in [
        "registered",
        "dns_checked",
        "verified",
        "activated",
        "failed",
        "deleted",
    ] {
        assert!(all.contains(name), "{name} missing from {all:?}");
    }
}

#[test]
fn a_provisioning_refusal_is_a_failure_and_a_pending_poll_is_no_analytics_event() {
    let refused = in_failed_unprovisioned(NAME);
    assert_eq!(names(refused.last()), ["failed"]);
    let pending = in_verifying(NAME).when_provider(polled("pending")).then();
    assert!(names(pending.last()).is_empty());
    let pending_failed = in_verifying(NAME).when_provider(polled("failed")).then();
    assert!(!names(pending_failed.last()).contains(&"verified"));
}

#[test]
fn a_provisioning_after_delete_is_no_provisioned_event() {
    let d = in_created(NAME)
        .when_command(CommandType::DeleteDomain)
        .then();
    let d = d.when_provider(created(NAME)).then();
    assert!(matches!(
        d.last().data,
        EventData::DomainProvisioned {
            cleanup_required: true,
            ..
        }
    ));
    assert!(names(d.last()).is_empty());
}

#[test]
fn a_source_event_never_yields_the_same_name_twice() {
    for e in story() {
        let n = names(&e);
        let unique: HashSet<_> = n.iter().collect();
        assert_eq!(unique.len(), n.len(), "{n:?} for {}", e.data.type_name());
    }
}

#[test]
fn a_cloud_event_has_the_contracts_shape() {
    for e in story() {
        for name in names(&e) {
            let ce = cloud_event(&e, name);
            assert_eq!(ce["specversion"], "1.0");
            assert_eq!(ce["type"], format!("email_domain.{name}"));
            assert_eq!(ce["source"], "/email-domains");
            assert_eq!(ce["subject"], e.domain_id.to_string());
            assert_eq!(ce["tenantid"], e.tenant_id.to_string());
            assert_eq!(ce["id"], cloud_event_id(&e, name));
            assert_eq!(ce["datacontenttype"], "application/json");
            let time = ce["time"].as_str().expect("time is a string");
            assert_eq!(
                chrono::DateTime::parse_from_rfc3339(time)
                    .unwrap()
                    .with_timezone(&chrono::Utc),
                e.occurred_at
            );
            assert_eq!(ce["data"]["domain"], e.domain);
            assert_eq!(ce["data"]["event_type"], e.data.type_name());
        }
    }
}

#[test]
fn a_dns_checked_cloud_event_carries_the_verdicts() {
    let d = in_awaiting_dns(NAME);
    let missing = found_except(&d.state().records, "dkim", DnsStatus::Missing, &[]);
    let d = d
        .when_command(CommandType::DnsConfigured)
        .dns(missing)
        .then();
    let ce = cloud_event(d.last(), "dns_checked");
    assert_eq!(ce["data"]["all_required_found"], false);
    assert_eq!(ce["data"]["trigger"], "dns_configured");
    let dkim = ce["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "dkim")
        .unwrap()
        .clone();
    assert_eq!(dkim["dns_status"], "missing");
}

#[test]
fn a_cloud_event_id_is_the_same_on_every_derivation() {
    for e in story() {
        // Also after the event went through the log and was read back.
        let reread = Event::from_json(&e.to_json()).unwrap();
        for name in names(&e) {
            assert_eq!(cloud_event_id(&e, name), cloud_event_id(&e, name));
            assert_eq!(cloud_event_id(&e, name), cloud_event_id(&reread, name));
            assert_eq!(
                cloud_event(&e, name),
                cloud_event(&reread, name),
                "the whole CloudEvent is reproducible"
            );
            assert!(uuid::Uuid::parse_str(&cloud_event_id(&e, name)).is_ok());
        }
    }
}

#[test]
fn cloud_event_ids_differ_per_name_and_per_source_event() {
    let mut seen = HashSet::new();
    let mut count = 0;
    for e in story() {
        for name in names(&e) {
            seen.insert(cloud_event_id(&e, name));
            count += 1;
        }
    }
    assert!(count > 8);
    assert_eq!(seen.len(), count, "every (event, name) has its own id");
    let polled = story()
        .into_iter()
        .find(|e| e.data.type_name() == "provider_polled")
        .unwrap();
    assert_ne!(
        cloud_event_id(&polled, "verified"),
        cloud_event_id(&polled, "activated")
    );
}

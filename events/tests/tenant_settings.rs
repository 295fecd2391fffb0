//! The tenant's sender settings (docs/interface.md §3 activation and rollback, §2.5 sender).

mod common;

use common::*;
use email_domain_events::tenant::{Sender, TenantSettings};
use email_domain_events::{CommandType, DnsStatus, Event, EventData, Status};

fn apply_all(settings: &mut TenantSettings, events: &[Event]) {
    for e in events {
        settings.apply(e);
    }
}

fn settings_after(domains: &[&Domain]) -> TenantSettings {
    let mut s = TenantSettings::default();
    for d in domains {
        apply_all(&mut s, &d.events);
    }
    s
}

fn deleted(d: &Domain) -> Domain {
    d.when_command(CommandType::DeleteDomain).then()
}

fn failed_by_drift(d: &Domain) -> Domain {
    // Drift detected, then not restored within the window.
    let due = d.state().next_check_at.unwrap();
    let missing = found_except(&d.state().records, "dkim", DnsStatus::Missing, &[]);
    let d = d
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(missing.clone())
        .then();
    let end = d.state().drift_since.unwrap() + policy().verification_deadline;
    let d = d
        .when_command(CommandType::Recheck)
        .at(end)
        .dns(missing)
        .then();
    assert_eq!(d.status(), Status::Failed);
    d
}

fn default_and_previous(s: &TenantSettings) -> (Option<&str>, Option<&str>) {
    (
        s.default_from_domain.as_deref(),
        s.previous_from_domain.as_deref(),
    )
}

#[test]
fn a_tenant_without_a_verified_domain_has_no_default() {
    let s = settings_after(&[&in_verifying("a.test")]);
    assert_eq!(default_and_previous(&s), (None, None));
    assert!(s.verified.is_empty());
}

#[test]
fn the_first_verified_domain_becomes_the_default() {
    let a = in_verified("a.test");
    let mut s = TenantSettings::default();
    let (last, before) = a.events.split_last().unwrap();
    apply_all(&mut s, before);
    assert_eq!(s.default_from_domain, None);
    assert!(s.apply(last), "activation changes the settings");
    assert_eq!(default_and_previous(&s), (Some("a.test"), None));
    assert_eq!(s.verified.get(&a.id).map(String::as_str), Some("a.test"));
}

#[test]
fn a_second_verified_domain_becomes_the_default_and_keeps_the_first_as_previous() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let s = settings_after(&[&a, &b]);
    assert_eq!(default_and_previous(&s), (Some("b.test"), Some("a.test")));
}

#[test]
fn deleting_the_default_rolls_back_to_the_previous_domain_still_verified() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let mut s = settings_after(&[&a, &b]);
    let b_deleted = deleted(&b);
    assert!(s.apply(b_deleted.last()));
    assert_eq!(default_and_previous(&s), (Some("a.test"), None));
    assert!(!s.verified.contains_key(&b.id));
}

#[test]
fn deleting_the_default_when_the_previous_is_no_longer_verified_falls_back_to_the_platform() {
    let b = in_verified("b.test");
    let mut s = settings_after(&[&b]);
    // Settings as a projection may hold them: a previous domain that is not verified.
    s.previous_from_domain = Some("gone.test".into());
    s.apply(deleted(&b).last());
    assert_eq!(default_and_previous(&s), (None, None));
}

#[test]
fn deleting_the_previous_domain_then_the_default_leaves_no_default() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let mut s = settings_after(&[&a, &b]);
    s.apply(deleted(&a).last());
    assert_eq!(
        default_and_previous(&s),
        (Some("b.test"), None),
        "a deleted previous can never be rolled back to"
    );
    s.apply(deleted(&b).last());
    assert_eq!(default_and_previous(&s), (None, None));
}

#[test]
fn a_failed_default_rolls_back_like_a_deleted_one() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let mut s = settings_after(&[&a, &b]);
    let b_failed = failed_by_drift(&b);
    apply_all(&mut s, &b_failed.events[b.events.len()..]);
    assert_eq!(default_and_previous(&s), (Some("a.test"), None));

    // And with nothing verified to go back to: the platform address.
    let mut s = settings_after(&[&a]);
    apply_all(&mut s, &failed_by_drift(&a).events[a.events.len()..]);
    assert_eq!(default_and_previous(&s), (None, None));
}

#[test]
fn an_operator_failing_the_default_rolls_it_back() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let mut s = settings_after(&[&a, &b]);
    s.apply(b.when_command(CommandType::FailDomain).then().last());
    assert_eq!(default_and_previous(&s), (Some("a.test"), None));
}

#[test]
fn a_drift_and_its_recovery_change_no_default() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let mut s = settings_after(&[&a, &b]);
    let before = s.clone();

    let due = a.state().next_check_at.unwrap();
    let missing = found_except(&a.state().records, "spf", DnsStatus::Missing, &[]);
    let a = a
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(missing)
        .then();
    assert!(!s.apply(a.last()), "drift detected changes nothing");
    let due = a.state().next_check_at.unwrap();
    let a = a
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(a.dns_all_found())
        .then();
    assert!(matches!(
        a.last().data,
        EventData::DnsChecked {
            drift_resolved: true,
            ..
        }
    ));
    assert!(!s.apply(a.last()), "drift resolved changes nothing");
    assert_eq!(s, before);
    assert_eq!(
        default_and_previous(&s),
        (Some("b.test"), Some("a.test")),
        "the recovered domain does not take over"
    );
}

#[test]
fn a_domain_verified_again_in_a_new_window_becomes_the_default_again() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let b_failed = failed_by_drift(&b);
    let mut s = settings_after(&[&a, &b_failed]);
    assert_eq!(default_and_previous(&s), (Some("a.test"), None));

    let now = b_failed.last().occurred_at + chrono::Duration::hours(1);
    let b_again = b_failed
        .when_command(CommandType::RefreshStatus)
        .at(now)
        .dns(b_failed.dns_all_found())
        .then();
    let b_again = b_again
        .when_provider(polled("verified"))
        .at(now + chrono::Duration::minutes(5))
        .then();
    apply_all(&mut s, &b_again.events[b_failed.events.len()..]);
    assert_eq!(default_and_previous(&s), (Some("b.test"), Some("a.test")));
}

#[test]
fn a_domain_that_never_verified_going_away_changes_no_default() {
    let a = in_verified("a.test");
    let c = in_awaiting_dns("c.test");
    let mut s = settings_after(&[&a, &c]);
    let before = s.clone();
    assert!(!s.apply(deleted(&c).last()));
    assert_eq!(s, before);
}

#[test]
fn applying_the_same_event_twice_changes_nothing_the_second_time() {
    let a = in_verified("a.test");
    let b = in_verified("b.test");
    let mut s = settings_after(&[&a, &b]);
    let snapshot = s.clone();
    assert!(!s.apply(b.last()), "a redelivered activation");
    assert_eq!(s, snapshot);
    let b_deleted = deleted(&b);
    assert!(s.apply(b_deleted.last()));
    let after_delete = s.clone();
    assert!(!s.apply(b_deleted.last()), "a redelivered deletion");
    assert_eq!(s, after_delete);
}

#[test]
fn the_sender_is_the_local_part_at_the_default_domain() {
    let s = settings_after(&[&in_verified("acme.example")]);
    assert_eq!(
        s.sender("notifications", "notifications@platform.invalid"),
        Sender {
            from: "notifications@acme.example".into(),
            domain: Some("acme.example".into()),
            managed: true
        }
    );
}

#[test]
fn without_a_default_the_sender_is_the_platform_address_and_not_managed() {
    let s = TenantSettings::default();
    assert_eq!(
        s.sender("notifications", "notifications@platform.invalid"),
        Sender {
            from: "notifications@platform.invalid".into(),
            domain: None,
            managed: false
        }
    );
    let a = in_verified("a.test");
    let mut s = settings_after(&[&a]);
    s.apply(deleted(&a).last());
    assert_eq!(
        s.sender("hello", "noreply@platform.invalid").from,
        "noreply@platform.invalid"
    );
}

/// Given a tenant whose default, previous and verified domains are the event's own
/// domain, when an event of a kind `may_change` rules out is applied, then nothing
/// changes. (Projectors skip writing for such events.) Every kind of the frozen log.
#[test]
fn events_that_may_not_change_settings_never_do() {
    let log = include_str!("../../tests/fixtures/events-v1.jsonl");
    let (mut ruled_out, mut changed_some) = (0, 0);
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let e = Event::from_json(line.as_bytes()).expect("fixture event");
        let mut s = TenantSettings::default();
        s.verified.insert(e.domain_id, e.domain.clone());
        s.default_from_domain = Some(e.domain.clone());
        s.previous_from_domain = Some(e.domain.clone());
        let changed = s.clone().apply(&e);
        if TenantSettings::may_change(&e) {
            changed_some += changed as usize;
        } else {
            ruled_out += 1;
            assert!(!changed, "{:?} changed the settings", e.data);
        }
    }
    assert!(
        ruled_out >= 5,
        "the log has kinds that cannot change settings"
    );
    assert!(changed_some >= 1, "and kinds that can (the check can fail)");
}

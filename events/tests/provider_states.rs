//! What each provider status leads to: `temporary_failure` asks again soon,
//! `failed` / `partially_failed` send the domain back to awaiting DNS naming the
//! records, a provider domain that vanished (404) is set up again, and a word the core
//! does not know changes nothing.

mod common;

use common::*;
use email_domain_events::event::CheckTrigger;
use email_domain_events::schedule::{next_check, timer_change, TimerChange};
use email_domain_events::{
    CommandType, Decision, EventData, FailedRecord, ProviderResult, ProviderStatus, Status,
};

const NAME: &str = "acme.test";

fn dkim() -> FailedRecord {
    FailedRecord {
        record_type: "TXT".into(),
        name: format!("resend._domainkey.{NAME}"),
    }
}

fn return_path() -> FailedRecord {
    FailedRecord {
        record_type: "MX".into(),
        name: format!("send.{NAME}"),
    }
}

fn polled_about(status: &str, id: &str, failed_records: Vec<FailedRecord>) -> ProviderResult {
    ProviderResult::Polled {
        provider_status: status.into(),
        provider_domain_id: Some(id.into()),
        failed_records,
    }
}

fn provider_id() -> String {
    format!("rs-{NAME}")
}

/// Verifying, after scheduled checks backed off to attempt 4 (next check ~80 min out).
fn verifying_backed_off() -> Domain {
    let d = in_verifying(NAME);
    let records = d.dns_all_found();
    let next = at(HOUR) + chrono::Duration::minutes(80);
    let d = d.given(
        at(HOUR),
        checked_event(records, CheckTrigger::Scheduled, false, true, next, 4),
    );
    assert_eq!(d.state().next_check_at, Some(next));
    d
}

struct Polled {
    provider_status: ProviderStatus,
    verified: bool,
    provider_failed: bool,
    next_check_at: Option<chrono::DateTime<chrono::Utc>>,
    reason: Option<String>,
    failed_records: Vec<FailedRecord>,
}

fn as_polled(data: EventData) -> Polled {
    match data {
        EventData::ProviderPolled {
            provider_status,
            verified,
            provider_failed,
            next_check_at,
            reason,
            failed_records,
            ..
        } => Polled {
            provider_status,
            verified,
            provider_failed,
            next_check_at,
            reason,
            failed_records,
        },
        other => panic!("expected provider_polled, got {other:?}"),
    }
}

// --- temporary_failure --------------------------------------------------------------

#[test]
fn a_temporary_failure_while_verifying_asks_again_at_the_fast_end_of_the_cadence() {
    let d = verifying_backed_off();
    let now = at(HOUR + MIN);
    let when = d.when_provider(polled("temporary_failure")).at(now);
    let p = as_polled(when.then_appends());
    assert_eq!(p.provider_status, ProviderStatus::TemporaryFailure);
    assert!(!p.verified && !p.provider_failed);
    assert_eq!(
        p.next_check_at,
        Some(next_check(&policy(), d.id, 0, now, Some(at(DEADLINE)))),
        "the jittered first delay of the cadence, not the backed-off check"
    );
    assert_fast_cadence(now, p.next_check_at);
    let s = when.then().state();
    assert_eq!(s.status, Status::Verifying);
    assert_eq!(s.provider_status.as_deref(), Some("temporary_failure"));
    assert_eq!(s.next_check_at, p.next_check_at);
    assert_eq!(s.failure_reason, None);
}

#[test]
fn a_temporary_failure_just_before_the_deadline_is_asked_again_at_the_deadline() {
    let d = verifying_backed_off();
    let now = at(DEADLINE - MIN);
    let p = as_polled(
        d.when_provider(polled("temporary_failure"))
            .at(now)
            .then_appends(),
    );
    assert_eq!(p.next_check_at, Some(at(DEADLINE)));
}

#[test]
fn the_schedulers_timer_follows_a_temporary_failure_to_its_sooner_check() {
    let now = at(HOUR + MIN);
    let d = verifying_backed_off()
        .when_provider(polled("temporary_failure"))
        .at(now)
        .then();
    match timer_change(d.last()) {
        TimerChange::Set(t) => assert_fast_cadence(now, Some(t)),
        other => panic!("expected the timer set, got {other:?}"),
    }
}

// --- failed / partially_failed ------------------------------------------------------

#[test]
fn a_partially_failed_verification_goes_back_to_awaiting_dns_naming_the_failed_records() {
    let d = in_verifying(NAME);
    let when = d.when_provider(polled_about(
        "partially_failed",
        &provider_id(),
        vec![dkim(), return_path()],
    ));
    let p = as_polled(when.then_appends());
    assert_eq!(p.provider_status, ProviderStatus::PartiallyFailed);
    assert!(p.provider_failed && !p.verified);
    assert_eq!(p.failed_records, vec![dkim(), return_path()]);
    let reason = p.reason.expect("a reason");
    assert!(
        reason.contains("TXT record at resend._domainkey.acme.test")
            && reason.contains("MX record at send.acme.test"),
        "{reason}"
    );
    let s = when.then().state();
    assert_eq!(s.status, Status::AwaitingDns);
    assert_eq!(s.failure_reason.as_deref(), Some(reason.as_str()));
    assert_eq!(s.provider_status.as_deref(), Some("partially_failed"));
    assert!(s.next_check_at.is_some(), "re-checks go on");
}

#[test]
fn a_partially_failed_answer_that_names_no_records_still_says_what_happened() {
    let d = in_verifying(NAME);
    let when = d.when_provider(polled("partially_failed"));
    let p = as_polled(when.then_appends());
    assert!(p.provider_failed);
    let reason = p.reason.expect("a reason");
    assert!(reason.contains("some of the DNS records"), "{reason}");
    assert_eq!(when.then().status(), Status::AwaitingDns);
}

#[test]
fn a_failed_verification_names_the_records_too_when_the_provider_said_which() {
    let d = in_verifying(NAME);
    let p = as_polled(
        d.when_provider(polled_about("failed", &provider_id(), vec![dkim()]))
            .then_appends(),
    );
    assert!(p.provider_failed);
    assert!(p
        .reason
        .unwrap()
        .contains("TXT record at resend._domainkey.acme.test"));
}

#[test]
fn a_partially_failed_answer_after_the_domain_went_back_to_awaiting_dns_changes_nothing() {
    let d = in_awaiting_dns(NAME);
    let when = d.when_provider(polled_about(
        "partially_failed",
        &provider_id(),
        vec![dkim()],
    ));
    let p = as_polled(when.then_appends());
    assert!(!p.provider_failed && p.reason.is_none() && p.failed_records.is_empty());
    let s = when.then().state();
    assert_eq!(s.status, Status::AwaitingDns);
    assert_eq!(s.failure_reason, None);
}

#[test]
fn what_the_provider_failed_is_cleared_once_verification_is_asked_for_again() {
    let d = in_verifying(NAME)
        .when_provider(polled_about(
            "partially_failed",
            &provider_id(),
            vec![dkim()],
        ))
        .then();
    assert!(d.state().failure_reason.is_some());
    let d = d
        .when_command(CommandType::DnsConfigured)
        .dns(d.dns_all_found())
        .then();
    assert_eq!(d.status(), Status::Verifying);
    assert_eq!(d.state().failure_reason, None);
}

#[test]
fn a_domain_verified_after_a_provider_failure_shows_no_failure_reason() {
    let mut d = in_verifying(NAME)
        .when_provider(polled_about(
            "partially_failed",
            &provider_id(),
            vec![dkim()],
        ))
        .then();
    // A late answer of the verification asked for before (still the same domain).
    d = d.when_provider(polled("verified")).then();
    assert_eq!(d.status(), Status::Verified);
    assert_eq!(d.state().failure_reason, None);
}

// --- a provider domain that vanished (404) --------------------------------------------

#[test]
fn a_provider_domain_that_vanished_while_verifying_is_set_up_again_in_a_new_window() {
    let d = in_verifying(NAME);
    let now = at(3 * DAY);
    let when = d
        .when_provider(polled_about("not_found", &provider_id(), vec![]))
        .at(now);
    match when.then_appends() {
        EventData::ProviderDomainVanished {
            provider_domain_id,
            region,
            reason,
            deadline_at,
        } => {
            assert_eq!(provider_domain_id, provider_id());
            assert_eq!(region.as_deref(), Some("us-east-1"));
            assert_eq!(deadline_at, now + policy().verification_deadline);
            assert!(reason.contains("setting it up again"), "{reason}");
            assert!(reason.contains("DNS records change"), "{reason}");
        }
        other => panic!("expected provider_domain_vanished, got {other:?}"),
    }
    let d = when.then();
    let s = d.state();
    assert_eq!(s.status, Status::Created);
    assert!(!s.is_provisioned(), "the old provider domain id is gone");
    assert!(
        s.records.is_empty(),
        "the old records are no longer the ones to enter"
    );
    assert_eq!(s.next_check_at, None);
    assert_eq!(s.deadline_at, Some(now + policy().verification_deadline));
    assert_eq!(s.provider_status.as_deref(), Some("not_found"));
    assert!(s.failure_reason.is_some(), "the owner is told why");
    assert_eq!(
        timer_change(d.last()),
        TimerChange::Set(now + policy().verification_deadline),
        "the new window's deadline is watched while it is set up"
    );

    // The new create comes back with a new provider domain and new records.
    let new_id = "rs-acme.test-again";
    let d = d
        .when_provider(ProviderResult::Created {
            provider_id: "resend".into(),
            provider_domain_id: new_id.into(),
            region: Some("us-east-1".into()),
            records: provider_records(NAME),
        })
        .at(now + chrono::Duration::seconds(MIN))
        .then();
    let s = d.state();
    assert_eq!(s.status, Status::AwaitingDns);
    assert_eq!(s.provider_domain_id.as_deref(), Some(new_id));
    assert!(!s.records.is_empty());
    assert!(
        s.failure_reason.is_some(),
        "the owner still reads that the records changed until they verify again"
    );

    // A late 404 about the old provider domain is stale now.
    d.when_provider(polled_about("not_found", &provider_id(), vec![]))
        .then_nothing();
}

#[test]
fn a_provider_domain_that_vanished_is_noticed_while_awaiting_dns_too() {
    let d = in_awaiting_dns(NAME);
    let when = d.when_provider(polled_about("not_found", &provider_id(), vec![]));
    assert!(matches!(
        when.then_appends(),
        EventData::ProviderDomainVanished { .. }
    ));
    assert_eq!(when.then().status(), Status::Created);
}

#[test]
fn a_not_found_result_reported_before_results_named_the_provider_domain_still_counts() {
    let d = in_verifying(NAME);
    assert!(matches!(
        d.when_provider(polled("not_found")).then_appends(),
        EventData::ProviderDomainVanished { .. }
    ));
}

#[test]
fn a_vanished_provider_domain_of_a_failed_verified_or_deleted_domain_changes_nothing() {
    for status in [Status::Failed, Status::Verified, Status::Deactivated] {
        let d = in_status(status, NAME);
        let decision = d
            .when_provider(polled_about("not_found", &provider_id(), vec![]))
            .decision();
        assert_eq!(decision, Ok(Decision::Nothing), "{}", status.as_str());
    }
}

#[test]
fn a_domain_deleted_while_it_is_set_up_again_leaves_only_the_new_create_to_clean_up() {
    let d = in_verifying(NAME)
        .when_provider(polled_about("not_found", &provider_id(), vec![]))
        .then();
    let d = d.when_command(CommandType::DeleteDomain).then();
    match &d.last().data {
        EventData::DomainDeleted {
            cleanup_required,
            provider_domain_id,
            ..
        } => {
            assert!(!cleanup_required, "the vanished domain needs no delete");
            assert_eq!(provider_domain_id, &None);
        }
        other => panic!("expected domain_deleted, got {other:?}"),
    }
    // The create asked for before the delete lands: that one is removed.
    match d.when_provider(created(NAME)).then_appends() {
        EventData::DomainProvisioned {
            cleanup_required, ..
        } => assert!(cleanup_required),
        other => panic!("expected domain_provisioned, got {other:?}"),
    }
}

// --- the rest -------------------------------------------------------------------------

#[test]
fn an_unknown_status_is_recorded_and_changes_nothing_else() {
    let d = verifying_backed_off();
    let before = d.state();
    let when = d.when_provider(polled("Quarantined-Weird"));
    let p = as_polled(when.then_appends());
    assert_eq!(
        p.provider_status,
        ProviderStatus::Unknown("Quarantined-Weird".into())
    );
    assert!(!p.verified && !p.provider_failed);
    assert_eq!(
        p.next_check_at, before.next_check_at,
        "wait for the next check"
    );
    let s = when.then().state();
    assert_eq!(s.status, Status::Verifying);
    assert_eq!(s.provider_status.as_deref(), Some("Quarantined-Weird"));
}

/// The rule for every status, seen from a verification in progress.
#[test]
fn every_provider_status_leads_to_its_own_next_state() {
    let now = at(HOUR + MIN);
    for (status, after, next) in [
        ("not_started", Status::Verifying, "kept"),
        ("pending", Status::Verifying, "kept"),
        ("partially_verified", Status::Verifying, "kept"),
        ("verified", Status::Verified, "monitor"),
        ("failed", Status::AwaitingDns, "kept"),
        ("partially_failed", Status::AwaitingDns, "kept"),
        ("temporary_failure", Status::Verifying, "fast"),
        ("not_found", Status::Created, "none"),
        ("something_new", Status::Verifying, "kept"),
    ] {
        let d = verifying_backed_off();
        let kept = d.state().next_check_at;
        let s = d
            .when_provider(polled_about(status, &provider_id(), vec![]))
            .at(now)
            .then()
            .state();
        assert_eq!(s.status, after, "{status}");
        let expected = match next {
            "kept" => kept,
            "monitor" => Some(now + policy().monitor_interval),
            "fast" => Some(next_check(&policy(), d.id, 0, now, s.deadline_at)),
            _ => None,
        };
        assert_eq!(s.next_check_at, expected, "{status}");
    }
}

#[test]
fn a_result_about_another_provider_domain_than_the_registrations_changes_nothing() {
    let d = in_verifying(NAME);
    for status in [
        "verified",
        "partially_failed",
        "temporary_failure",
        "not_found",
    ] {
        d.when_provider(polled_about(status, "rs-some-older-domain", vec![dkim()]))
            .then_nothing();
    }
}

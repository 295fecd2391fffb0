//! A domain's life (docs/interface.md §3): provisioning, DNS checks, verification, deadlines,
//! drift, and the idempotence that lets every step be redelivered.

mod common;

use common::*;
use email_domain_events::event::CheckTrigger;
use email_domain_events::schedule::{next_check, recheck_delay};
use email_domain_events::state::{evolve, RECENT_CAUSATIONS};
use email_domain_events::{
    decide_register, CommandType, DnsStatus, DomainName, Event, EventData, EventId, ProviderResult,
    Status,
};

const NAME: &str = "acme.test";

// ---- the whole path -------------------------------------------------------------

#[test]
fn provisioning_tells_the_owner_full_names_required_flags_and_dmarc_advice_but_never_an_apex_mx() {
    let d = in_created(NAME)
        .when_provider(created(NAME))
        .at(at(MIN))
        .then();
    let records = d.state().records;

    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    for r in &records {
        assert!(
            r.name == NAME || r.name.ends_with(".acme.test"),
            "full name: {}",
            r.name
        );
        assert!(!r.name.ends_with('.'), "no trailing dot: {}", r.name);
        assert_eq!(r.name, r.name.to_ascii_lowercase());
        assert_eq!(r.record_type, r.record_type.to_ascii_uppercase());
        assert_eq!(r.dns_status, DnsStatus::Pending);
        assert!(
            !(r.record_type == "MX" && r.name == NAME),
            "an MX at the apex would take the owner's mail: {names:?}"
        );
    }
    let by = |purpose: &str| {
        records
            .iter()
            .find(|r| r.purpose == purpose)
            .unwrap_or_else(|| panic!("no {purpose} in {names:?}"))
    };
    assert_eq!(by("spf").name, "send.acme.test");
    assert_eq!(by("spf").record_type, "TXT");
    assert!(by("spf").required);
    assert!(by("dkim").required);
    assert_eq!(by("dkim").name, "resend._domainkey.acme.test");
    assert!(by("return_path").required);
    assert_eq!(by("return_path").priority, Some(10));
    assert!(
        !by("tracking").required,
        "tracking records are not required"
    );
    let dmarc = by("dmarc");
    assert_eq!(dmarc.name, "_dmarc.acme.test");
    assert_eq!(dmarc.record_type, "TXT");
    assert!(dmarc.value.starts_with("v=DMARC1"));
    assert!(!dmarc.required, "DMARC is advice");
    assert_eq!(
        records.len(),
        5,
        "spf, return path, dkim, tracking, dmarc: {names:?}"
    );
}

#[test]
fn a_dmarc_record_the_provider_asks_for_is_kept_once_and_not_required() {
    let mut provider = provider_records(NAME);
    provider.push(record(
        "dmarc",
        "TXT",
        "_dmarc.acme.test",
        "v=DMARC1; p=quarantine;",
        None,
        true,
    ));
    let records = email_domain_events::decide::records_to_enter(NAME, &provider);
    let dmarcs: Vec<_> = records.iter().filter(|r| r.purpose == "dmarc").collect();
    assert_eq!(dmarcs.len(), 1);
    assert_eq!(dmarcs[0].value, "v=DMARC1; p=quarantine;");
    assert!(!dmarcs[0].required);
}

#[test]
fn records_the_provider_names_relative_to_the_zone_are_entered_with_their_full_names() {
    let provider = vec![
        record(
            "spf",
            "TXT",
            "send",
            "v=spf1 include:amazonses.com ~all",
            None,
            false,
        ),
        record("dkim", "TXT", "resend._domainkey", "p=KEY", None, false),
        record(
            "receiving",
            "MX",
            "@",
            "inbound-smtp.us-east-1.amazonaws.com",
            Some(10),
            false,
        ),
    ];
    let records = email_domain_events::decide::records_to_enter(NAME, &provider);
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "send.acme.test",
            "resend._domainkey.acme.test",
            "_dmarc.acme.test"
        ]
    );
}

#[test]
fn a_domain_goes_from_registration_to_verified_and_is_activated() {
    // Registered.
    let mut d = Domain::named(NAME);
    let reg = d.command(CommandType::RegisterDomain);
    let plan = decide_register(
        d.tenant,
        &DomainName::from_trusted(NAME),
        &reg,
        None,
        t0(),
        &policy(),
    )
    .unwrap();
    d.record(t0(), reg.command_id, plan.registered);
    assert_eq!(d.status(), Status::Created);
    assert_eq!(d.state().deadline_at, Some(at(DEADLINE)));

    // Provisioned: awaiting DNS, first check at the fast cadence.
    let d = d.when_provider(created(NAME)).at(at(MIN)).then();
    let s = d.state();
    assert_eq!(s.status, Status::AwaitingDns);
    assert_eq!(
        s.next_check_at,
        Some(next_check(&policy(), d.id, 0, at(MIN), Some(at(DEADLINE))))
    );

    // The owner says DNS is in place; every required record is found: verify.
    let when = d
        .when_command(CommandType::DnsConfigured)
        .at(at(10 * MIN))
        .dns(d.dns_all_found());
    let c = as_checked(when.then_appends());
    assert!(c.all_required_found && c.request_verification && !c.poll_provider);
    let d = when.then();
    assert_eq!(d.status(), Status::Verifying);
    assert_eq!(d.state().dns_last_checked_at, Some(at(10 * MIN)));

    // The provider still says pending: still verifying.
    let d = d.when_provider(polled("pending")).at(at(11 * MIN)).then();
    assert_eq!(d.status(), Status::Verifying);
    assert_eq!(d.state().provider_status.as_deref(), Some("pending"));
    let d = d
        .when_provider(polled("partially_verified"))
        .at(at(12 * MIN))
        .then();
    assert_eq!(d.status(), Status::Verifying);

    // The provider says verified: verified and activated.
    let when = d.when_provider(polled("verified")).at(at(20 * MIN));
    match when.then_appends() {
        EventData::ProviderPolled {
            verified,
            activates,
            provider_failed,
            next_check_at,
            ..
        } => {
            assert!(verified && activates && !provider_failed);
            assert_eq!(
                next_check_at,
                Some(at(20 * MIN) + policy().monitor_interval),
                "verified domains are monitored"
            );
        }
        other => panic!("expected provider_polled, got {other:?}"),
    }
    let s = when.then().state();
    assert_eq!(s.status, Status::Verified);
    assert_eq!(s.verified_at, Some(at(20 * MIN)));
    assert_eq!(s.attempt, 0);
}

#[test]
fn a_provider_failure_while_verifying_waits_for_dns_and_then_asks_again() {
    let d = in_verifying(NAME);
    let when = d.when_provider(polled("failed")).at(at(20 * MIN));
    match when.then_appends() {
        EventData::ProviderPolled {
            verified,
            activates,
            provider_failed,
            next_check_at,
            ..
        } => {
            assert!(!verified && !activates && provider_failed);
            assert!(next_check_at.is_some(), "re-checks go on");
        }
        other => panic!("expected provider_polled, got {other:?}"),
    }
    let d = when.then();
    assert_eq!(d.status(), Status::AwaitingDns);

    // The next check with DNS still broken does not ask the provider.
    let due = d.state().next_check_at.unwrap();
    let broken = found_except(&d.state().records, "dkim", DnsStatus::Mismatch, &["p=OLD"]);
    let when = d.when_command(CommandType::Recheck).at(due).dns(broken);
    assert!(!as_checked(when.then_appends()).request_verification);
    let d = when.then();
    assert_eq!(d.status(), Status::AwaitingDns);

    // Once DNS is right again, verification is requested again.
    let due = d.state().next_check_at.unwrap();
    let when = d
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(d.dns_all_found());
    assert!(as_checked(when.then_appends()).request_verification);
    assert_eq!(when.then().status(), Status::Verifying);
}

#[test]
fn a_lookup_failure_of_a_required_record_is_not_all_found() {
    let d = in_awaiting_dns(NAME);
    let dns = found_except(
        &d.state().records,
        "return_path",
        DnsStatus::LookupFailed,
        &[],
    );
    let c = as_checked(
        d.when_command(CommandType::DnsConfigured)
            .dns(dns)
            .then_appends(),
    );
    assert!(!c.all_required_found);
    assert!(!c.request_verification);
}

#[test]
fn a_record_that_is_not_required_does_not_hold_verification_back() {
    let d = in_awaiting_dns(NAME);
    let dns = found_except(&d.state().records, "dmarc", DnsStatus::Missing, &[]);
    let c = as_checked(
        d.when_command(CommandType::DnsConfigured)
            .dns(dns)
            .then_appends(),
    );
    assert!(c.all_required_found);
    assert!(c.request_verification);
}

// ---- deadlines and the re-check cadence -----------------------------------------

#[test]
fn a_scheduled_check_at_the_deadline_with_records_missing_fails_naming_what_is_wrong() {
    let d = in_awaiting_dns(NAME);
    let mut dns = found_except(
        &d.state().records,
        "dkim",
        DnsStatus::Mismatch,
        &["p=SOMEOLDKEY"],
    );
    for r in dns.iter_mut().filter(|r| r.purpose == "spf") {
        r.dns_status = DnsStatus::Missing;
    }
    // A re-check scheduled exactly at the deadline.
    let mut d = d;
    d.record(
        at(DEADLINE - HOUR),
        fresh_command_id(),
        checked_event(
            dns.clone(),
            CheckTrigger::Scheduled,
            false,
            false,
            at(DEADLINE),
            9,
        ),
    );
    let when = d
        .when_command(CommandType::Recheck)
        .at(at(DEADLINE))
        .dns(dns.clone());
    match when.then_appends() {
        EventData::VerificationFailed {
            reason,
            records,
            by_operator,
        } => {
            assert!(!by_operator);
            assert_eq!(records, dns, "the failure keeps the check that proved it");
            assert!(
                reason.contains("resend._domainkey.acme.test"),
                "names the DKIM record: {reason}"
            );
            assert!(
                reason.contains("p=SOMEOLDKEY"),
                "says what was observed: {reason}"
            );
            assert!(
                reason.contains("send.acme.test"),
                "names the SPF record: {reason}"
            );
            assert!(reason.contains("missing"), "{reason}");
            assert!(
                !reason.contains("links.acme.test"),
                "found records are not listed: {reason}"
            );
        }
        other => panic!("expected verification_failed, got {other:?}"),
    }
    let s = when.then().state();
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.next_check_at, None);
    assert!(s
        .failure_reason
        .unwrap()
        .contains("resend._domainkey.acme.test"));
}

#[test]
fn a_scheduled_check_after_the_deadline_fails_even_when_the_timer_fired_late() {
    let d = in_awaiting_dns(NAME);
    let dns = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let data = d
        .when_command(CommandType::Recheck)
        .at(at(DEADLINE + DAY))
        .dns(dns)
        .then_appends();
    assert!(
        matches!(
            data,
            EventData::VerificationFailed {
                by_operator: false,
                ..
            }
        ),
        "{data:?}"
    );
}

#[test]
fn a_created_domain_the_provider_never_set_up_fails_at_its_deadline() {
    let d = in_created(NAME);
    d.when_command(CommandType::Recheck)
        .at(at(DEADLINE - MIN))
        .then_nothing();
    let when = d.when_command(CommandType::Recheck).at(at(DEADLINE));
    match when.then_appends() {
        EventData::VerificationFailed {
            reason,
            records,
            by_operator,
        } => {
            assert!(!by_operator);
            assert!(records.is_empty());
            assert!(reason.contains("provider"), "{reason}");
        }
        other => panic!("expected verification_failed, got {other:?}"),
    }
    assert_eq!(when.then().status(), Status::Failed);
}

#[test]
fn a_stale_recheck_before_the_next_check_does_nothing() {
    let d = in_awaiting_dns(NAME);
    let due = d.state().next_check_at.unwrap();
    d.when_command(CommandType::Recheck)
        .at(due - chrono::Duration::seconds(30))
        .then_nothing();
    // A timer a moment early (clock skew) still counts.
    d.when_command(CommandType::Recheck)
        .at(due - chrono::Duration::seconds(1))
        .dns(d.dns_all_found())
        .then_appends();
}

#[test]
fn scheduled_rechecks_back_off_and_an_owner_command_resets_the_cadence() {
    let mut d = in_awaiting_dns(NAME);
    let missing = found_except(&d.state().records, "dkim", DnsStatus::Missing, &[]);
    let mut delays = Vec::new();
    for expected_attempt in 1..=4u32 {
        let due = d.state().next_check_at.unwrap();
        let when = d
            .when_command(CommandType::Recheck)
            .at(due)
            .dns(missing.clone());
        let c = as_checked(when.then_appends());
        assert_eq!(c.trigger, CheckTrigger::Scheduled);
        assert_eq!(c.attempt, expected_attempt);
        assert_eq!(
            c.next_check_at,
            Some(due + recheck_delay(&policy(), d.id, expected_attempt))
        );
        delays.push((c.next_check_at.unwrap() - due).num_seconds());
        d = when.then();
        assert_eq!(d.state().attempt, expected_attempt);
    }
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "the delay grows: {delays:?}"
    );
    assert!(
        delays[3] <= 3960,
        "capped at RECHECK_MAX_SECS + jitter: {delays:?}"
    );

    let now = d.state().next_check_at.unwrap() - chrono::Duration::seconds(100);
    let c = as_checked(
        d.when_command(CommandType::DnsConfigured)
            .at(now)
            .dns(missing.clone())
            .then_appends(),
    );
    assert_eq!(c.attempt, 0);
    assert_eq!(
        c.next_check_at,
        Some(now + recheck_delay(&policy(), d.id, 0))
    );
    assert_fast_cadence(now, c.next_check_at);
    let c = as_checked(
        d.when_command(CommandType::RefreshStatus)
            .at(now)
            .dns(missing)
            .then_appends(),
    );
    assert_eq!(c.attempt, 0);
}

#[test]
fn the_next_check_is_never_after_the_deadline_so_the_deadline_is_noticed_on_time() {
    let mut d = in_awaiting_dns(NAME);
    let deadline = d.state().deadline_at.unwrap();
    let missing = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let mut checks = 0;
    loop {
        let due = d.state().next_check_at.expect("a live domain has a timer");
        assert!(
            due <= deadline,
            "next check {due} is after the deadline {deadline}"
        );
        let when = d
            .when_command(CommandType::Recheck)
            .at(due)
            .dns(missing.clone());
        let data = when.then_appends();
        d = when.then();
        if let EventData::VerificationFailed { .. } = data {
            assert_eq!(due, deadline, "it fails exactly at the deadline");
            break;
        }
        checks += 1;
        assert!(checks < 1000, "never reached the deadline");
    }
    assert_eq!(d.status(), Status::Failed);
    assert!(checks > 100, "checked about hourly for a week: {checks}");
}

#[test]
fn a_new_window_on_a_failed_domain_counts_its_deadline_from_the_refresh() {
    let d = in_failed(NAME);
    let now = at(20 * DAY);
    let missing = found_except(&d.state().records, "dkim", DnsStatus::Missing, &[]);
    let d = d
        .when_command(CommandType::RefreshStatus)
        .at(now)
        .dns(missing.clone())
        .then();
    let deadline = now + policy().verification_deadline;
    assert_eq!(d.state().deadline_at, Some(deadline));
    // A day later (long past the first deadline) the domain is still waiting.
    let c = as_checked(
        d.when_command(CommandType::Recheck)
            .at(now + chrono::Duration::days(1))
            .dns(missing.clone())
            .then_appends(),
    );
    assert!(c.next_check_at.unwrap() <= deadline);
    let data = d
        .when_command(CommandType::Recheck)
        .at(deadline)
        .dns(missing)
        .then_appends();
    assert!(matches!(data, EventData::VerificationFailed { .. }));
}

// ---- drift ----------------------------------------------------------------------

fn drifted() -> (Domain, chrono::DateTime<chrono::Utc>) {
    let d = in_verified(NAME);
    let due = d.state().next_check_at.unwrap();
    let missing = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let when = d.when_command(CommandType::Recheck).at(due).dns(missing);
    (when.then(), due)
}

#[test]
fn a_verified_domain_whose_required_record_disappears_is_in_drift_at_the_fast_cadence() {
    let d = in_verified(NAME);
    let due = d.state().next_check_at.unwrap();
    let missing = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let when = d.when_command(CommandType::Recheck).at(due).dns(missing);
    let c = as_checked(when.then_appends());
    assert!(c.drift_detected);
    assert!(!c.drift_resolved);
    assert!(!c.request_verification);
    assert_eq!(c.attempt, 0);
    assert_fast_cadence(due, c.next_check_at);
    let s = when.then().state();
    assert_eq!(s.status, Status::Verified, "a drifting domain still sends");
    assert_eq!(s.drift_since, Some(due));
}

#[test]
fn a_drift_restored_is_resolved_and_the_domain_back_to_monitoring() {
    let (d, _) = drifted();
    let due = d.state().next_check_at.unwrap();
    let when = d
        .when_command(CommandType::Recheck)
        .at(due)
        .dns(d.dns_all_found());
    let c = as_checked(when.then_appends());
    assert!(c.drift_resolved);
    assert!(!c.drift_detected);
    assert_eq!(c.next_check_at, Some(due + policy().monitor_interval));
    let s = when.then().state();
    assert_eq!(s.status, Status::Verified);
    assert_eq!(s.drift_since, None);
}

#[test]
fn a_drift_still_there_is_detected_only_once_and_backs_off() {
    let (d, since) = drifted();
    let due = d.state().next_check_at.unwrap();
    let missing = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let when = d.when_command(CommandType::Recheck).at(due).dns(missing);
    let c = as_checked(when.then_appends());
    assert!(!c.drift_detected, "already known");
    assert_eq!(c.attempt, 1);
    assert_eq!(
        when.then().state().drift_since,
        Some(since),
        "the window counts from detection"
    );
}

#[test]
fn a_drift_not_restored_within_the_window_from_detection_fails_the_domain() {
    let (mut d, since) = drifted();
    let missing = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
    let end = since + policy().verification_deadline;
    assert!(end > at(DEADLINE), "the registration deadline is long gone");

    // Just before the end of the window: still a drift check, scheduled no later than the end.
    let c = as_checked(
        d.when_command(CommandType::Recheck)
            .at(end - chrono::Duration::minutes(1))
            .dns(missing.clone())
            .then_appends(),
    );
    assert!(c.next_check_at.unwrap() <= end);

    // Walk the timers to the end of the window.
    let mut steps = 0;
    loop {
        let due = d.state().next_check_at.unwrap();
        assert!(due <= end);
        let when = d
            .when_command(CommandType::Recheck)
            .at(due)
            .dns(missing.clone());
        if let EventData::VerificationFailed { reason, .. } = when.then_appends() {
            assert_eq!(due, end);
            assert!(reason.contains("send.acme.test"), "{reason}");
            d = when.then();
            break;
        }
        d = when.then();
        steps += 1;
        assert!(steps < 1000);
    }
    let s = d.state();
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.drift_since, None);
}

#[test]
fn a_drift_whose_record_cannot_be_looked_up_stays_at_the_fast_cadence_within_its_window() {
    let (d, since) = drifted();
    let end = since + policy().verification_deadline;
    let unreadable = found_except(&d.state().records, "spf", DnsStatus::LookupFailed, &[]);
    let now = end - chrono::Duration::hours(2);
    let when = d.when_command(CommandType::Recheck).at(now).dns(unreadable);
    let c = as_checked(when.then_appends());
    assert!(
        !c.drift_resolved,
        "an unreadable record is no proof the drift is over"
    );
    let next = c.next_check_at.unwrap();
    assert!(
        next <= end,
        "the next check {next} must not pass the end of the drift window {end}"
    );
    assert_eq!(when.then().state().drift_since, Some(since));
}

// ---- idempotence ----------------------------------------------------------------

#[test]
fn evolve_ignores_an_event_at_or_below_the_state_version() {
    let d = in_verified(NAME);
    let state = d.state();
    let mut stale = d.last().clone();
    stale.data = EventData::DomainDeleted {
        requested_by: None,
        cleanup_required: true,
        provider_domain_id: None,
    };
    for version in [state.version, state.version - 1, 1] {
        stale.version = version;
        assert_eq!(
            evolve(Some(state.clone()), &stale),
            Some(state.clone()),
            "version {version}"
        );
    }
    // The same event at the next version does apply (so the test above could fail).
    stale.version = state.version + 1;
    assert_eq!(
        evolve(Some(state), &stale).unwrap().status,
        Status::Deactivated
    );
}

#[test]
fn a_redelivered_log_folds_to_the_same_state() {
    let d = in_verified(NAME);
    let twice: Vec<Event> = d
        .events
        .iter()
        .flat_map(|e| [e.clone(), e.clone()])
        .collect();
    let folded = twice.iter().fold(None, evolve).unwrap();
    assert_eq!(folded, d.state());
}

#[test]
fn a_log_that_does_not_start_with_a_registration_is_no_domain() {
    let d = in_awaiting_dns(NAME);
    assert_eq!(evolve(None, &d.events[1]), None);
}

#[test]
fn the_state_remembers_the_commands_that_caused_its_recent_events() {
    let d = in_awaiting_dns(NAME);
    let cmd = d.command(CommandType::DnsConfigured);
    let id = cmd.command_id;
    assert!(!d.state().has_seen(id));
    let d = d.when(cmd).dns(d.dns_all_found()).then();
    assert!(d.state().has_seen(id));
    assert_eq!(d.last().causation_id, id);
    assert_eq!(
        d.last().event_id,
        EventId::for_command(id, d.id, d.last().version)
    );
    assert!(!d.state().has_seen(fresh_command_id()));
}

#[test]
fn the_memory_of_causations_is_bounded_and_forgets_the_oldest() {
    let mut d = in_created(NAME);
    let first = d.events[0].causation_id;
    for i in 0..RECENT_CAUSATIONS as i64 {
        d.record(
            at(i + 1),
            fresh_command_id(),
            EventData::CheckRequested {
                trigger: CheckTrigger::DnsConfigured,
            },
        );
    }
    let s = d.state();
    assert_eq!(s.recent_causations.len(), RECENT_CAUSATIONS);
    assert!(!s.has_seen(first));
    assert!(s.has_seen(d.last().causation_id));
    assert!(s.has_seen(d.events[1].causation_id));
}

#[test]
fn a_redelivered_provider_create_for_a_provisioned_domain_changes_nothing() {
    let d = in_created(NAME);
    let first = d.when_provider(created(NAME)).at(at(MIN)).then();
    first
        .when_provider(created(NAME))
        .at(at(2 * MIN))
        .then_nothing();
    // Also when the provider adopted the domain under another id after a lost response.
    first
        .when_provider(ProviderResult::Created {
            provider_id: "resend".into(),
            provider_domain_id: "other".into(),
            region: None,
            records: vec![],
        })
        .then_nothing();
}

#[test]
fn a_provider_create_after_delete_only_asks_for_cleanup() {
    let d = in_created(NAME)
        .when_command(CommandType::DeleteDomain)
        .at(at(MIN))
        .then();
    let d = d.when_provider(created(NAME)).at(at(2 * MIN)).then();
    let s = d.state();
    assert_eq!(s.status, Status::Deactivated);
    assert!(s.cleanup_pending);
    assert_eq!(s.next_check_at, None);
    // The clean-up is then reported once.
    let d = d.when_provider(ProviderResult::CleanedUp).then();
    assert!(!d.state().cleanup_pending);
}

// ---- timers follow from the log -------------------------------------------------

#[test]
fn the_schedulers_timer_follows_each_event() {
    use email_domain_events::schedule::{timer_change, TimerChange};
    let d = in_created(NAME);
    assert_eq!(
        timer_change(d.last()),
        TimerChange::Set(at(DEADLINE)),
        "a created domain still has its deadline"
    );
    let d = d.when_provider(created(NAME)).at(at(MIN)).then();
    assert_eq!(
        timer_change(d.last()),
        TimerChange::Set(d.state().next_check_at.unwrap())
    );
    let f = d.when_command(CommandType::FailDomain).then();
    assert_eq!(timer_change(f.last()), TimerChange::Clear);
    let x = d.when_command(CommandType::DeleteDomain).then();
    assert_eq!(timer_change(x.last()), TimerChange::Clear);
    let late = in_created(NAME)
        .when_command(CommandType::DeleteDomain)
        .then()
        .when_provider(created(NAME))
        .then();
    assert_eq!(
        timer_change(late.last()),
        TimerChange::Clear,
        "a deleted domain gets no timer from a late create"
    );
}

#[test]
fn a_check_that_saw_resolvers_still_denying_a_record_keeps_when_that_ends_until_the_next_check() {
    let d = in_awaiting_dns("cache.test");
    let cmd = d.command(CommandType::DnsConfigured);
    let records = d.dns_all_found();
    let data =
        match email_domain_events::decide(&d.state(), &cmd, Some(records), at(100), &policy())
            .unwrap()
        {
            email_domain_events::Decision::Append(data) => data,
            other => panic!("expected an event, got {other:?}"),
        };
    let waiting = email_domain_events::records::Propagation {
        name: "send.cache.test".into(),
        record_type: "TXT".into(),
        resolver_answer: "nx_domain".into(),
        expires_in_secs: Some(900),
    };
    let mut d = d;
    d.record(
        at(100),
        cmd.command_id,
        data.clone().with_propagation(vec![waiting.clone()]),
    );
    assert_eq!(d.state().propagation, vec![waiting]);
    // The stored event says so, and an event without the field reads as "nothing to wait for".
    let json = String::from_utf8(d.last().to_json()).unwrap();
    assert!(json.contains("\"expires_in_secs\":900"), "{json}");
    d.record(at(200), fresh_command_id(), data);
    assert!(
        d.state().propagation.is_empty(),
        "the next check replaces it"
    );
}

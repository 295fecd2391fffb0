//! docs/interface.md §2.1's command × status table, one command type at a time, for every
//! status (and "none" for a registration).

mod common;

use common::*;
use email_domain_events::event::CheckTrigger;
use email_domain_events::{
    CommandType, DnsStatus, EventData, ProviderResult, RejectionCode, Status,
};

const NAME: &str = "acme.test";

fn owner_commands() -> [(CommandType, CheckTrigger); 2] {
    [
        (CommandType::DnsConfigured, CheckTrigger::DnsConfigured),
        (CommandType::RefreshStatus, CheckTrigger::RefreshStatus),
    ]
}

// ---- register_domain ------------------------------------------------------------

#[test]
fn registering_a_name_nobody_holds_creates_a_registration_with_a_deadline() {
    let plan = when_registering(tenant_a(), NAME, None).expect("accepted");
    assert_eq!(plan.release, None);
    match plan.registered {
        EventData::DomainRegistered {
            region,
            requested_by,
            deadline_at,
        } => {
            assert_eq!(region.as_deref(), Some("eu-west-1"));
            assert_eq!(requested_by.as_deref(), Some("someone@example.test"));
            assert_eq!(
                deadline_at,
                at(30 * DAY + DEADLINE),
                "deadline = now + VERIFICATION_DEADLINE_SECS"
            );
        }
        other => panic!("expected domain_registered, got {other:?}"),
    }
}

#[test]
fn registering_a_name_the_same_tenant_holds_in_any_live_status_is_already_registered() {
    for status in LIVE {
        let holder = in_status(status, NAME);
        let err = when_registering(tenant_a(), NAME, Some(&holder)).expect_err(status.as_str());
        assert_eq!(
            err.code,
            RejectionCode::AlreadyRegistered,
            "status {}",
            status.as_str()
        );
    }
    let holder = in_failed_unprovisioned(NAME);
    let err = when_registering(tenant_a(), NAME, Some(&holder)).unwrap_err();
    assert_eq!(err.code, RejectionCode::AlreadyRegistered);
}

#[test]
fn registering_again_a_name_the_same_tenant_deleted_is_a_new_registration() {
    let holder = in_deactivated(NAME);
    let plan = when_registering(tenant_a(), NAME, Some(&holder)).expect("accepted");
    assert_eq!(
        plan.release, None,
        "a deactivated registration is not released again"
    );
    assert!(matches!(
        plan.registered,
        EventData::DomainRegistered { .. }
    ));
}

#[test]
fn registering_a_name_another_tenant_holds_alive_is_domain_taken() {
    for status in [
        Status::Created,
        Status::AwaitingDns,
        Status::Verifying,
        Status::Verified,
    ] {
        let holder = in_status(status, NAME);
        let err = when_registering(tenant_b(), NAME, Some(&holder)).expect_err(status.as_str());
        assert_eq!(
            err.code,
            RejectionCode::DomainTaken,
            "status {}",
            status.as_str()
        );
        assert!(
            !err.message.contains(&tenant_a().to_string()),
            "the holder is not named"
        );
    }
}

#[test]
fn registering_a_name_another_tenant_failed_releases_the_failed_registration() {
    let holder = in_failed(NAME);
    let plan = when_registering(tenant_b(), NAME, Some(&holder)).expect("accepted");
    let release = plan.release.expect("the failed registration is released");
    assert_eq!(
        release,
        EventData::DomainReleased {
            to_tenant: tenant_b(),
            cleanup_required: true,
            provider_domain_id: Some("rs-acme.test".into())
        }
    );
    assert!(matches!(
        plan.registered,
        EventData::DomainRegistered { .. }
    ));

    let mut released = holder.clone();
    released.record(at(30 * DAY), fresh_command_id(), release);
    let s = released.state();
    assert_eq!(s.status, Status::Deactivated);
    assert_eq!(s.deactivation_reason.as_deref(), Some("released"));
    assert!(
        s.cleanup_pending,
        "the provider domain must still be removed"
    );
}

#[test]
fn releasing_a_failed_registration_that_never_reached_the_provider_needs_no_cleanup() {
    let holder = in_failed_unprovisioned(NAME);
    let plan = when_registering(tenant_b(), NAME, Some(&holder)).expect("accepted");
    assert_eq!(
        plan.release,
        Some(EventData::DomainReleased {
            to_tenant: tenant_b(),
            cleanup_required: false,
            provider_domain_id: None
        })
    );
}

#[test]
fn registering_a_name_another_tenant_deleted_is_a_new_registration_without_release() {
    let holder = in_deactivated(NAME);
    let plan = when_registering(tenant_b(), NAME, Some(&holder)).expect("accepted");
    assert_eq!(plan.release, None);
}

#[test]
fn register_domain_is_never_decided_by_the_per_domain_decider() {
    let d = in_awaiting_dns(NAME);
    d.when_command(CommandType::RegisterDomain)
        .then_rejected(RejectionCode::InvalidCommand);
}

// ---- dns_configured / refresh_status --------------------------------------------

#[test]
fn an_owner_check_of_a_created_domain_is_remembered_until_it_is_provisioned() {
    for (ty, trigger) in owner_commands() {
        let d = in_created(NAME);
        let data = d.when_command(ty).then_appends();
        assert_eq!(data, EventData::CheckRequested { trigger });

        let d = d.when_command(ty).at(at(2 * MIN)).then();
        assert_eq!(d.status(), Status::Created);
        assert!(d.state().check_requested);

        // Once provisioned, the check is due at once, not at the slow cadence.
        let now = at(3 * MIN);
        match d.when_provider(created(NAME)).at(now).then_appends() {
            EventData::DomainProvisioned {
                next_check_at,
                cleanup_required,
                ..
            } => {
                assert_eq!(next_check_at, Some(now));
                assert!(!cleanup_required);
            }
            other => panic!("expected domain_provisioned, got {other:?}"),
        }
    }
}

#[test]
fn an_owner_check_of_an_awaiting_domain_checks_now_at_the_fast_cadence() {
    for (ty, trigger) in owner_commands() {
        let d = in_awaiting_dns(NAME);
        let now = at(20 * MIN);
        let dns = found_except(&d.state().records, "spf", DnsStatus::Missing, &[]);
        let c = as_checked(d.when_command(ty).at(now).dns(dns.clone()).then_appends());
        assert_eq!(c.trigger, trigger);
        assert_eq!(c.records, dns);
        assert!(!c.all_required_found);
        assert!(!c.request_verification);
        assert!(!c.poll_provider);
        assert_eq!(c.attempt, 0);
        assert_eq!(c.new_deadline_at, None);
        assert_eq!(
            c.provider_domain_id.as_deref(),
            Some("rs-acme.test"),
            "the provider worker needs it"
        );
        assert_fast_cadence(now, c.next_check_at);
    }
}

#[test]
fn an_owner_check_of_a_verifying_domain_checks_now_and_polls_the_provider() {
    for (ty, trigger) in owner_commands() {
        let d = in_verifying(NAME);
        let now = at(12 * MIN);
        let c = as_checked(
            d.when_command(ty)
                .at(now)
                .dns(d.dns_all_found())
                .then_appends(),
        );
        assert_eq!(c.trigger, trigger);
        assert!(c.all_required_found);
        assert!(
            !c.request_verification,
            "verification was requested already"
        );
        assert!(c.poll_provider);
        assert_eq!(c.attempt, 0);
        assert_fast_cadence(now, c.next_check_at);
        let d = d.when_command(ty).at(now).dns(d.dns_all_found()).then();
        assert_eq!(d.status(), Status::Verifying);
    }
}

#[test]
fn an_owner_check_of_a_verified_domain_checks_for_drift_and_keeps_it_verified() {
    for (ty, trigger) in owner_commands() {
        let d = in_verified(NAME);
        let now = at(2 * DAY);
        let c = as_checked(
            d.when_command(ty)
                .at(now)
                .dns(d.dns_all_found())
                .then_appends(),
        );
        assert_eq!(c.trigger, trigger);
        assert!(!c.request_verification);
        assert!(!c.drift_detected && !c.drift_resolved);
        assert_eq!(c.next_check_at, Some(now + policy().monitor_interval));
        assert_eq!(
            d.when_command(ty)
                .at(now)
                .dns(d.dns_all_found())
                .then()
                .status(),
            Status::Verified
        );
    }
}

#[test]
fn an_owner_check_of_a_failed_domain_opens_a_new_verification_window() {
    for (ty, trigger) in owner_commands() {
        let d = in_failed(NAME);
        let now = at(10 * DAY);
        let missing = found_except(&d.state().records, "dkim", DnsStatus::Missing, &[]);
        let c = as_checked(
            d.when_command(ty)
                .at(now)
                .dns(missing.clone())
                .then_appends(),
        );
        assert_eq!(c.trigger, trigger);
        assert_eq!(
            c.new_deadline_at,
            Some(now + policy().verification_deadline)
        );
        assert_eq!(c.attempt, 0);
        assert_fast_cadence(now, c.next_check_at);

        let after = d.when_command(ty).at(now).dns(missing).then();
        let s = after.state();
        assert_eq!(
            s.status,
            Status::AwaitingDns,
            "records still missing: awaiting DNS again"
        );
        assert_eq!(s.deadline_at, Some(now + policy().verification_deadline));
        assert_eq!(s.failure_reason, None);

        let after = d.when_command(ty).at(now).dns(d.dns_all_found()).then();
        assert_eq!(
            after.status(),
            Status::Verifying,
            "records right: verification is requested at once"
        );
    }
}

#[test]
fn an_owner_check_of_a_failed_domain_the_provider_never_created_reopens_the_window_for_provisioning(
) {
    for (ty, _) in owner_commands() {
        let d = in_failed_unprovisioned(NAME);
        let now = at(3 * DAY);
        assert_eq!(
            d.when_command(ty).at(now).then_appends(),
            EventData::WindowReopened {
                deadline_at: now + policy().verification_deadline
            }
        );
        let s = d.when_command(ty).at(now).then().state();
        assert_eq!(s.status, Status::Created);
        assert_eq!(s.failure_reason, None);
    }
}

#[test]
fn an_owner_check_of_a_deleted_domain_is_domain_not_found() {
    for (ty, _) in owner_commands() {
        in_deactivated(NAME)
            .when_command(ty)
            .then_rejected(RejectionCode::DomainNotFound);
    }
}

// ---- delete_domain --------------------------------------------------------------

#[test]
fn deleting_a_live_domain_deactivates_it_and_cleans_up_the_provider_iff_provisioned() {
    for status in LIVE {
        let d = in_status(status, NAME);
        let data = d.when_command(CommandType::DeleteDomain).then_appends();
        let expect_cleanup = status != Status::Created;
        assert_eq!(
            data,
            EventData::DomainDeleted {
                requested_by: Some("owner@acme.test".into()),
                cleanup_required: expect_cleanup,
                provider_domain_id: expect_cleanup.then(|| "rs-acme.test".to_string()),
            },
            "status {}",
            status.as_str()
        );
        let s = d.when_command(CommandType::DeleteDomain).then().state();
        assert_eq!(s.status, Status::Deactivated);
        assert_eq!(s.deactivation_reason.as_deref(), Some("deleted"));
        assert_eq!(s.cleanup_pending, expect_cleanup);
        assert_eq!(
            s.next_check_at, None,
            "a deleted domain is never re-checked"
        );
    }
    let d = in_failed_unprovisioned(NAME);
    assert_eq!(
        d.when_command(CommandType::DeleteDomain).then_appends(),
        EventData::DomainDeleted {
            requested_by: Some("owner@acme.test".into()),
            cleanup_required: false,
            provider_domain_id: None
        }
    );
}

#[test]
fn deleting_a_deleted_domain_is_domain_not_found() {
    in_deactivated(NAME)
        .when_command(CommandType::DeleteDomain)
        .then_rejected(RejectionCode::DomainNotFound);
}

// ---- recheck (the scheduler) ----------------------------------------------------

#[test]
fn a_recheck_of_a_created_domain_before_its_deadline_does_nothing() {
    in_created(NAME)
        .when_command(CommandType::Recheck)
        .at(at(DAY))
        .then_nothing();
}

#[test]
fn a_recheck_of_a_created_domain_at_its_deadline_fails_it() {
    let data = in_created(NAME)
        .when_command(CommandType::Recheck)
        .at(at(DEADLINE))
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
fn a_due_recheck_of_an_awaiting_domain_checks_dns_and_backs_off() {
    let d = in_awaiting_dns(NAME);
    let due = d.state().next_check_at.unwrap();
    let c = as_checked(
        d.when_command(CommandType::Recheck)
            .at(due)
            .dns(d.dns_all_found())
            .then_appends(),
    );
    assert_eq!(c.trigger, CheckTrigger::Scheduled);
    assert_eq!(c.attempt, 1);
    assert!(c.request_verification);
}

#[test]
fn a_due_recheck_of_a_verifying_domain_checks_dns_and_polls_the_provider() {
    let d = in_verifying(NAME);
    let due = d.state().next_check_at.unwrap();
    let c = as_checked(
        d.when_command(CommandType::Recheck)
            .at(due)
            .dns(d.dns_all_found())
            .then_appends(),
    );
    assert_eq!(c.trigger, CheckTrigger::Scheduled);
    assert!(c.poll_provider);
    assert!(!c.request_verification);
}

#[test]
fn a_due_recheck_of_a_verified_domain_monitors_its_records() {
    let d = in_verified(NAME);
    let due = d.state().next_check_at.unwrap();
    let c = as_checked(
        d.when_command(CommandType::Recheck)
            .at(due)
            .dns(d.dns_all_found())
            .then_appends(),
    );
    assert_eq!(c.trigger, CheckTrigger::Scheduled);
    assert_eq!(c.next_check_at, Some(due + policy().monitor_interval));
}

#[test]
fn a_recheck_of_a_failed_or_deleted_domain_does_nothing() {
    in_failed(NAME)
        .when_command(CommandType::Recheck)
        .at(at(20 * DAY))
        .then_nothing();
    in_failed_unprovisioned(NAME)
        .when_command(CommandType::Recheck)
        .at(at(20 * DAY))
        .then_nothing();
    in_deactivated(NAME)
        .when_command(CommandType::Recheck)
        .at(at(20 * DAY))
        .then_nothing();
}

// ---- provider_result: Created ---------------------------------------------------

#[test]
fn the_provider_creating_a_created_domain_provisions_it_awaiting_dns() {
    let d = in_created(NAME);
    let now = at(MIN);
    match d.when_provider(created(NAME)).at(now).then_appends() {
        EventData::DomainProvisioned {
            provider_id,
            provider_domain_id,
            region,
            records,
            next_check_at,
            cleanup_required,
        } => {
            assert_eq!(provider_id, "resend");
            assert_eq!(provider_domain_id, format!("rs-{NAME}"));
            assert_eq!(region.as_deref(), Some("us-east-1"));
            assert_eq!(records, entered_records(NAME));
            assert_fast_cadence(now, next_check_at);
            assert!(!cleanup_required);
        }
        other => panic!("expected domain_provisioned, got {other:?}"),
    }
    let s = d.when_provider(created(NAME)).at(now).then().state();
    assert_eq!(s.status, Status::AwaitingDns);
    assert_eq!(s.provider_domain_id.as_deref(), Some("rs-acme.test"));
}

#[test]
fn the_provider_creating_an_already_provisioned_domain_changes_nothing() {
    for status in [
        Status::AwaitingDns,
        Status::Verifying,
        Status::Verified,
        Status::Failed,
        Status::Deactivated,
    ] {
        let d = in_status(status, NAME);
        assert!(d.state().is_provisioned());
        d.when_provider(created(NAME)).then_nothing();
    }
}

#[test]
fn the_provider_creating_a_domain_deleted_before_it_answered_asks_for_cleanup_and_stays_deactivated(
) {
    let d = in_created(NAME).given(
        at(MIN),
        EventData::DomainDeleted {
            requested_by: None,
            cleanup_required: false,
            provider_domain_id: None,
        },
    );
    match d
        .when_provider(created(NAME))
        .at(at(2 * MIN))
        .then_appends()
    {
        EventData::DomainProvisioned {
            cleanup_required,
            next_check_at,
            ..
        } => {
            assert!(cleanup_required);
            assert_eq!(next_check_at, None);
        }
        other => panic!("expected domain_provisioned, got {other:?}"),
    }
    let s = d
        .when_provider(created(NAME))
        .at(at(2 * MIN))
        .then()
        .state();
    assert_eq!(s.status, Status::Deactivated);
    assert!(s.cleanup_pending);
    assert_eq!(s.next_check_at, None);
}

#[test]
fn the_provider_creating_a_domain_that_already_failed_does_not_bring_it_back_to_life() {
    // The domain failed at its deadline while the provider was still busy; a late
    // create must not reopen the window (only the owner's refresh does that).
    let d = in_created(NAME).given(
        at(DEADLINE),
        EventData::VerificationFailed {
            reason: "not set up in time".into(),
            records: vec![],
            by_operator: false,
        },
    );
    let now = at(DEADLINE + HOUR);
    let after = d.when_provider(created(NAME)).at(now).then();
    let s = after.state();
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.next_check_at, None, "a failed domain has no timer");
    assert!(
        s.is_provisioned(),
        "the provider domain is remembered for the next window"
    );

    // The owner's refresh then opens a new window with a DNS check.
    let c = as_checked(
        after
            .when_command(CommandType::RefreshStatus)
            .at(at(DEADLINE + 2 * HOUR))
            .dns(after.dns_all_found())
            .then_appends(),
    );
    assert_eq!(
        c.new_deadline_at,
        Some(at(DEADLINE + 2 * HOUR) + policy().verification_deadline)
    );
    assert!(c.request_verification);
}

// ---- provider_result: CreateRejected --------------------------------------------

#[test]
fn the_provider_refusing_a_created_domain_fails_it_with_the_providers_words() {
    let d = in_created(NAME);
    let r = ProviderResult::CreateRejected {
        message: "domain is on a blocklist".into(),
    };
    match d.when_provider(r.clone()).then_appends() {
        EventData::ProvisioningFailed { reason } => {
            assert!(reason.contains("domain is on a blocklist"), "{reason}")
        }
        other => panic!("expected provisioning_failed, got {other:?}"),
    }
    let s = d.when_provider(r).then().state();
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.next_check_at, None);
}

#[test]
fn a_provider_refusal_for_a_domain_past_created_changes_nothing() {
    for status in [
        Status::AwaitingDns,
        Status::Verifying,
        Status::Verified,
        Status::Failed,
        Status::Deactivated,
    ] {
        in_status(status, NAME)
            .when_provider(ProviderResult::CreateRejected {
                message: "late".into(),
            })
            .then_nothing();
    }
}

// ---- provider_result: Polled ----------------------------------------------------

#[test]
fn a_provider_poll_of_a_verifying_domain_is_recorded() {
    let d = in_verifying(NAME);
    match d.when_provider(polled("pending")).then_appends() {
        EventData::ProviderPolled {
            provider_status,
            verified,
            activates,
            provider_failed,
            ..
        } => {
            assert_eq!(provider_status.as_str(), "pending");
            assert!(!verified && !activates && !provider_failed);
        }
        other => panic!("expected provider_polled, got {other:?}"),
    }
}

#[test]
fn a_provider_verified_for_an_awaiting_domain_wins_over_lagging_dns() {
    let d = in_awaiting_dns(NAME);
    let after = d.when_provider(polled("verified")).then();
    assert_eq!(after.status(), Status::Verified);
}

#[test]
fn a_provider_poll_of_a_domain_not_awaiting_verification_changes_nothing() {
    for status in [
        Status::Created,
        Status::Verified,
        Status::Failed,
        Status::Deactivated,
    ] {
        for p in ["verified", "failed", "pending"] {
            in_status(status, NAME)
                .when_provider(polled(p))
                .then_nothing();
        }
    }
}

// ---- provider_result: CleanedUp -------------------------------------------------

#[test]
fn the_provider_cleanup_of_a_deleted_domain_is_recorded_once() {
    let d = in_deactivated(NAME);
    assert!(d.state().cleanup_pending);
    assert_eq!(
        d.when_provider(ProviderResult::CleanedUp).then_appends(),
        EventData::ProviderCleanedUp {}
    );
    let after = d.when_provider(ProviderResult::CleanedUp).then();
    assert!(!after.state().cleanup_pending);
    assert_eq!(after.status(), Status::Deactivated);
    after
        .when_provider(ProviderResult::CleanedUp)
        .then_nothing();
}

#[test]
fn a_provider_cleanup_of_a_live_domain_changes_nothing() {
    for status in LIVE {
        in_status(status, NAME)
            .when_provider(ProviderResult::CleanedUp)
            .then_nothing();
    }
}

// ---- fail_domain (operator) -----------------------------------------------------

#[test]
fn an_operator_can_fail_a_live_domain_with_a_reason() {
    for status in LIVE {
        let d = in_status(status, NAME);
        let mut cmd = d.command(CommandType::FailDomain);
        cmd.reason = Some("abuse report #42".into());
        match d.when(cmd.clone()).then_appends() {
            EventData::VerificationFailed {
                reason,
                by_operator,
                ..
            } => {
                assert_eq!(reason, "abuse report #42");
                assert!(by_operator);
            }
            other => panic!(
                "expected verification_failed in {}, got {other:?}",
                status.as_str()
            ),
        }
        let s = d.when(cmd).then().state();
        assert_eq!(s.status, Status::Failed);
        assert_eq!(s.failure_reason.as_deref(), Some("abuse report #42"));
        assert_eq!(s.next_check_at, None);
    }
}

#[test]
fn an_operator_failing_a_deleted_domain_is_domain_not_found() {
    in_deactivated(NAME)
        .when_command(CommandType::FailDomain)
        .then_rejected(RejectionCode::DomainNotFound);
}

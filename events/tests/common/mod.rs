//! A small given-when-then DSL for the domain core.
//!
//! *Given* a domain's events (real [`Event`] envelopes, folded with [`evolve`]),
//! *when* a command arrives (with the DNS check the shell ran, if it had to, and the
//! clock's `now`), *then* this event data, this rejection, or nothing.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use email_domain_events::event::CheckTrigger;
use email_domain_events::records::DnsRecord;
use email_domain_events::state::replay;
use email_domain_events::{
    decide, decide_register, needs_dns_check, Command, CommandId, CommandType, Decision, DnsStatus,
    DomainId, DomainName, DomainState, Event, EventData, EventId, Policy, ProviderResult,
    RegisterPlan, Rejection, RejectionCode, Status, TenantId,
};
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

pub const MIN: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;
/// `VERIFICATION_DEADLINE_SECS` default.
pub const DEADLINE: i64 = 7 * DAY;

/// The start of every story: registration time.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// `secs` after [`t0`].
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

pub fn policy() -> Policy {
    Policy::default()
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh, never-repeated UUID for commands and domain ids.
pub fn fresh_uuid() -> Uuid {
    Uuid::from_u128(
        0x5eed_0000_0000_0000_0000_0000_0000_0000u128
            + u128::from(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
    )
}

pub fn fresh_command_id() -> CommandId {
    CommandId(fresh_uuid())
}

pub fn tenant_a() -> TenantId {
    TenantId(Uuid::from_u128(0xa11ce))
}

pub fn tenant_b() -> TenantId {
    TenantId(Uuid::from_u128(0xb0b))
}

// ---------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------

pub fn record(
    purpose: &str,
    rtype: &str,
    name: &str,
    value: &str,
    priority: Option<u16>,
    required: bool,
) -> DnsRecord {
    DnsRecord {
        purpose: purpose.into(),
        record_type: rtype.into(),
        name: name.into(),
        value: value.into(),
        priority,
        required,
        dns_status: DnsStatus::Pending,
        observed: Vec::new(),
        diagnosis: None,
    }
}

/// What the provider adapter hands the core for `zone`: the sending records, plus an
/// inbound MX at the apex that must never reach the owner.
pub fn provider_records(zone: &str) -> Vec<DnsRecord> {
    vec![
        record(
            "SPF",
            "txt",
            &format!("Send.{zone}."),
            "v=spf1 include:amazonses.com ~all",
            None,
            false,
        ),
        record(
            "return_path",
            "mx",
            &format!("send.{zone}"),
            "feedback-smtp.us-east-1.amazonses.com",
            Some(10),
            false,
        ),
        record(
            "dkim",
            "TXT",
            &format!("resend._domainkey.{zone}"),
            "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC",
            None,
            false,
        ),
        record(
            "receiving",
            "MX",
            zone,
            "inbound-smtp.us-east-1.amazonaws.com",
            Some(10),
            false,
        ),
        record(
            "tracking",
            "CNAME",
            &format!("links.{zone}"),
            "links1.resend-dns.com",
            None,
            false,
        ),
    ]
}

/// The records as `records_to_enter` makes them (what a provisioned domain holds).
pub fn entered_records(zone: &str) -> Vec<DnsRecord> {
    email_domain_events::decide::records_to_enter(zone, &provider_records(zone))
}

/// A DNS check's result: every record with `status`.
pub fn all_with(records: &[DnsRecord], status: DnsStatus) -> Vec<DnsRecord> {
    records
        .iter()
        .map(|r| DnsRecord {
            dns_status: status,
            ..r.clone()
        })
        .collect()
}

pub fn all_found(records: &[DnsRecord]) -> Vec<DnsRecord> {
    all_with(records, DnsStatus::Found)
}

/// Every record found but the one of `purpose`, which has `status` and `observed`.
pub fn found_except(
    records: &[DnsRecord],
    purpose: &str,
    status: DnsStatus,
    observed: &[&str],
) -> Vec<DnsRecord> {
    assert!(
        records.iter().any(|r| r.purpose == purpose),
        "no record of purpose {purpose}"
    );
    records
        .iter()
        .map(|r| {
            if r.purpose == purpose {
                DnsRecord {
                    dns_status: status,
                    observed: observed.iter().map(|s| s.to_string()).collect(),
                    ..r.clone()
                }
            } else {
                DnsRecord {
                    dns_status: DnsStatus::Found,
                    ..r.clone()
                }
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Given
// ---------------------------------------------------------------------------------

/// One domain registration and its log.
#[derive(Debug, Clone)]
pub struct Domain {
    pub tenant: TenantId,
    pub id: DomainId,
    pub name: String,
    pub events: Vec<Event>,
}

impl Domain {
    /// A domain of tenant A with no events yet.
    pub fn named(name: &str) -> Self {
        Domain::of(tenant_a(), name)
    }

    pub fn of(tenant: TenantId, name: &str) -> Self {
        Domain {
            tenant,
            id: DomainId(fresh_uuid()),
            name: name.into(),
            events: Vec::new(),
        }
    }

    /// Appends `data` as the next event, caused by `causation`, at `when`.
    pub fn record(&mut self, when: DateTime<Utc>, causation: CommandId, data: EventData) -> &Event {
        let version = self.events.len() as u64 + 1;
        self.events.push(Event {
            event_id: EventId::for_command(causation, self.id, version),
            tenant_id: self.tenant,
            domain_id: self.id,
            domain: self.name.clone(),
            version,
            occurred_at: when,
            causation_id: causation,
            correlation_id: causation.0,
            schema_version: 1,
            data,
        });
        self.events.last().unwrap()
    }

    /// Given this event (caused by a fresh command id) at `when`.
    pub fn given(mut self, when: DateTime<Utc>, data: EventData) -> Self {
        self.record(when, fresh_command_id(), data);
        self
    }

    /// The state folded from the log with `evolve`.
    pub fn state(&self) -> DomainState {
        replay(&self.events).expect("a log that starts with a registration is a domain")
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    pub fn last(&self) -> &Event {
        self.events.last().expect("some events")
    }

    /// A command about this domain, by its tenant, with a fresh id.
    pub fn command(&self, ty: CommandType) -> Command {
        Command {
            command_type: ty,
            command_id: fresh_command_id(),
            tenant_id: self.tenant,
            domain: self.name.clone(),
            requested_by: Some("owner@acme.test".into()),
            region: None,
            domain_id: Some(self.id),
            reason: None,
            provider_result: None,
            correlation_id: None,
        }
    }

    pub fn provider_command(&self, result: ProviderResult) -> Command {
        Command {
            provider_result: Some(result),
            ..self.command(CommandType::ProviderResult)
        }
    }

    pub fn when(&self, cmd: Command) -> When<'_> {
        When {
            domain: self,
            cmd,
            dns: None,
            now: self.events.last().map_or(t0(), |e| e.occurred_at) + Duration::seconds(1),
            policy: policy(),
        }
    }

    pub fn when_command(&self, ty: CommandType) -> When<'_> {
        self.when(self.command(ty))
    }

    pub fn when_provider(&self, result: ProviderResult) -> When<'_> {
        self.when(self.provider_command(result))
    }

    /// Shorthand: the next DNS check's result (records of this domain, all found).
    pub fn dns_all_found(&self) -> Vec<DnsRecord> {
        all_found(&self.state().records)
    }
}

/// The provider's Created result for `zone`.
pub fn created(zone: &str) -> ProviderResult {
    ProviderResult::Created {
        provider_id: "resend".into(),
        provider_domain_id: format!("rs-{zone}"),
        region: Some("us-east-1".into()),
        records: provider_records(zone),
    }
}

pub fn polled(status: &str) -> ProviderResult {
    ProviderResult::Polled {
        provider_status: status.into(),
        provider_domain_id: None,
        failed_records: Vec::new(),
    }
}

// Canonical histories, one per status. Each is built from the events the decider
// itself would write, and asserts that it reaches the status it names.

pub fn registered_event() -> EventData {
    EventData::DomainRegistered {
        region: Some("us-east-1".into()),
        requested_by: Some("owner@acme.test".into()),
        deadline_at: at(DEADLINE),
    }
}

pub fn provisioned_event(zone: &str) -> EventData {
    EventData::DomainProvisioned {
        provider_id: "resend".into(),
        provider_domain_id: format!("rs-{zone}"),
        region: Some("us-east-1".into()),
        records: entered_records(zone),
        next_check_at: Some(at(MIN + 5 * MIN)),
        cleanup_required: false,
    }
}

pub fn checked_event(
    records: Vec<DnsRecord>,
    trigger: CheckTrigger,
    request_verification: bool,
    poll: bool,
    next: DateTime<Utc>,
    attempt: u32,
) -> EventData {
    let all_required_found = records
        .iter()
        .filter(|r| r.required)
        .all(|r| r.dns_status == DnsStatus::Found);
    // The zone, from the DMARC advice record every provisioned domain holds.
    let zone = records
        .iter()
        .find_map(|r| r.name.strip_prefix("_dmarc."))
        .map(str::to_owned);
    EventData::DnsChecked {
        trigger,
        records,
        all_required_found,
        request_verification,
        poll_provider: poll,
        next_check_at: Some(next),
        new_deadline_at: None,
        attempt,
        drift_detected: false,
        drift_resolved: false,
        propagation: Vec::new(),
        // What the decider writes for a provisioned domain.
        provider_domain_id: zone.map(|z| format!("rs-{z}")),
    }
}

pub fn in_created(name: &str) -> Domain {
    let d = Domain::named(name).given(t0(), registered_event());
    assert_eq!(d.status(), Status::Created);
    d
}

pub fn in_awaiting_dns(name: &str) -> Domain {
    let d = in_created(name).given(at(MIN), provisioned_event(name));
    assert_eq!(d.status(), Status::AwaitingDns);
    d
}

pub fn in_verifying(name: &str) -> Domain {
    let d = in_awaiting_dns(name);
    let records = all_found(&d.state().records);
    let d = d.given(
        at(10 * MIN),
        checked_event(
            records,
            CheckTrigger::DnsConfigured,
            true,
            false,
            at(15 * MIN),
            0,
        ),
    );
    assert_eq!(d.status(), Status::Verifying);
    d
}

pub fn in_verified(name: &str) -> Domain {
    let d = in_verifying(name).given(
        at(15 * MIN),
        EventData::ProviderPolled {
            provider_status: "verified".into(),
            verified: true,
            activates: true,
            provider_failed: false,
            next_check_at: Some(at(15 * MIN + DAY)),
            reason: None,
            failed_records: Vec::new(),
        },
    );
    assert_eq!(d.status(), Status::Verified);
    d
}

/// Provisioned, then failed at the deadline with the DKIM record missing.
pub fn in_failed(name: &str) -> Domain {
    let d = in_awaiting_dns(name);
    let records = found_except(&d.state().records, "dkim", DnsStatus::Missing, &[]);
    let d = d.given(
        at(DEADLINE),
        EventData::VerificationFailed {
            reason: "The domain was not verified before the deadline.".into(),
            records,
            by_operator: false,
        },
    );
    assert_eq!(d.status(), Status::Failed);
    d
}

/// The provider refused it: failed and never provisioned.
pub fn in_failed_unprovisioned(name: &str) -> Domain {
    let d = in_created(name).given(
        at(MIN),
        EventData::ProvisioningFailed {
            reason: "refused".into(),
        },
    );
    assert_eq!(d.status(), Status::Failed);
    assert!(!d.state().is_provisioned());
    d
}

pub fn in_deactivated(name: &str) -> Domain {
    let d = in_awaiting_dns(name).given(
        at(HOUR),
        EventData::DomainDeleted {
            requested_by: None,
            cleanup_required: true,
            provider_domain_id: Some(format!("rs-{name}")),
        },
    );
    assert_eq!(d.status(), Status::Deactivated);
    d
}

/// A domain of tenant A in `status` (the provisioned variant for `failed`).
pub fn in_status(status: Status, name: &str) -> Domain {
    match status {
        Status::Created => in_created(name),
        Status::AwaitingDns => in_awaiting_dns(name),
        Status::Verifying => in_verifying(name),
        Status::Verified => in_verified(name),
        Status::Failed => in_failed(name),
        Status::Deactivated => in_deactivated(name),
    }
}

pub const LIVE: [Status; 5] = [
    Status::Created,
    Status::AwaitingDns,
    Status::Verifying,
    Status::Verified,
    Status::Failed,
];

// ---------------------------------------------------------------------------------
// When / then
// ---------------------------------------------------------------------------------

pub struct When<'a> {
    domain: &'a Domain,
    pub cmd: Command,
    dns: Option<Vec<DnsRecord>>,
    now: DateTime<Utc>,
    policy: Policy,
}

impl<'a> When<'a> {
    /// The DNS check the shell ran for this command.
    pub fn dns(mut self, records: Vec<DnsRecord>) -> Self {
        self.dns = Some(records);
        self
    }

    /// The clock (default: one second after the last event).
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The decision, checking on the way that the shell would have run a DNS check
    /// exactly when one was given.
    pub fn decision(&self) -> Result<Decision, Rejection> {
        let state = self.domain.state();
        let needs = needs_dns_check(&state, &self.cmd, self.now);
        assert_eq!(
            needs,
            self.dns.is_some(),
            "needs_dns_check for {:?} in status {} at {} is {needs}, but the test {} a DNS result",
            self.cmd.command_type,
            state.status.as_str(),
            self.now,
            if self.dns.is_some() {
                "gave"
            } else {
                "gave no"
            },
        );
        decide(&state, &self.cmd, self.dns.clone(), self.now, &self.policy)
    }

    /// Then this event is appended; returns its data.
    pub fn then_appends(&self) -> EventData {
        match self.decision() {
            Ok(Decision::Append(data)) => data,
            other => panic!(
                "expected an event for {:?} in status {}, got {other:?}",
                self.cmd.command_type,
                self.domain.status().as_str()
            ),
        }
    }

    /// Then the command is rejected with `code`.
    pub fn then_rejected(&self, code: RejectionCode) -> Rejection {
        match self.decision() {
            Err(r) => {
                assert_eq!(r.code, code, "rejection {r:?}");
                assert!(!r.message.is_empty());
                r
            }
            other => panic!(
                "expected rejection {code:?} for {:?} in status {}, got {other:?}",
                self.cmd.command_type,
                self.domain.status().as_str()
            ),
        }
    }

    /// Then it is accepted and nothing changes.
    pub fn then_nothing(&self) {
        match self.decision() {
            Ok(Decision::Nothing) => {}
            other => panic!(
                "expected Decision::Nothing for {:?} in status {}, got {other:?}",
                self.cmd.command_type,
                self.domain.status().as_str()
            ),
        }
    }

    /// Then an event is appended: the domain with that event in its log (at `now`,
    /// caused by the command), to continue the story.
    pub fn then(&self) -> Domain {
        let data = self.then_appends();
        let mut next = self.domain.clone();
        next.record(self.now, self.cmd.command_id, data);
        next
    }
}

/// `register_domain` of `name` by `tenant`, with `holder` the registration that holds
/// the name now.
pub fn when_registering(
    tenant: TenantId,
    name: &str,
    holder: Option<&Domain>,
) -> Result<RegisterPlan, Rejection> {
    let cmd = Command {
        command_type: CommandType::RegisterDomain,
        command_id: fresh_command_id(),
        tenant_id: tenant,
        domain: name.into(),
        requested_by: Some("someone@example.test".into()),
        region: Some("eu-west-1".into()),
        domain_id: None,
        reason: None,
        provider_result: None,
        correlation_id: None,
    };
    let holder_state = holder.map(Domain::state);
    decide_register(
        tenant,
        &DomainName::from_trusted(name),
        &cmd,
        holder_state.as_ref(),
        at(30 * DAY),
        &policy(),
    )
}

/// The data of a `dns_checked` event, or a panic naming what it was instead.
pub struct Checked {
    pub trigger: CheckTrigger,
    pub records: Vec<DnsRecord>,
    pub all_required_found: bool,
    pub request_verification: bool,
    pub poll_provider: bool,
    pub next_check_at: Option<DateTime<Utc>>,
    pub new_deadline_at: Option<DateTime<Utc>>,
    pub attempt: u32,
    pub drift_detected: bool,
    pub drift_resolved: bool,
    pub provider_domain_id: Option<String>,
}

pub fn as_checked(data: EventData) -> Checked {
    match data {
        EventData::DnsChecked {
            trigger,
            records,
            all_required_found,
            request_verification,
            poll_provider,
            next_check_at,
            new_deadline_at,
            attempt,
            drift_detected,
            drift_resolved,
            provider_domain_id,
            ..
        } => Checked {
            trigger,
            records,
            all_required_found,
            request_verification,
            poll_provider,
            next_check_at,
            new_deadline_at,
            attempt,
            drift_detected,
            drift_resolved,
            provider_domain_id,
        },
        other => panic!("expected dns_checked, got {other:?}"),
    }
}

/// The fast cadence's first delay bounds (`RECHECK_INITIAL_SECS` ± 10 % jitter).
pub fn assert_fast_cadence(now: DateTime<Utc>, next: Option<DateTime<Utc>>) {
    let next = next.expect("a next check is scheduled");
    let secs = (next - now).num_seconds();
    assert!(
        (270..=330).contains(&secs),
        "next check {secs}s after now; the fast cadence starts at 300s ± 10 %"
    );
}

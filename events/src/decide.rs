//! The decider: given a domain's state, a command and the facts the shell gathered
//! (the time, a DNS check), what happens. Pure; one command appends at most one event.
//!
//! | command | `created` | `awaiting_dns`, `verifying` | `verified` | `failed` | `deactivated` / none |
//! |---|---|---|---|---|---|
//! | register (same tenant) | already_registered | already_registered | already_registered | already_registered | new registration |
//! | dns_configured, refresh | check once provisioned | check now, fast cadence | check now (drift) | new window | domain_not_found |
//! | delete | deleted | deleted | deleted | deleted | domain_not_found |

use crate::command::{Command, CommandType, ProviderResult};
use crate::domain_name::DomainName;
use crate::event::{CheckTrigger, EventData};
use crate::ids::TenantId;
use crate::provider::{FailedRecord, ProviderStatus};
use crate::records::{DnsRecord, DnsStatus};
use crate::schedule::{next_check, Policy};
use crate::state::{DomainState, Status};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Why a command was refused (docs/interface.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    InvalidCommand,
    InvalidDomain,
    ReservedDomain,
    DomainTaken,
    DomainNotFound,
    AlreadyRegistered,
}

impl RejectionCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::InvalidCommand => "invalid_command",
            RejectionCode::InvalidDomain => "invalid_domain",
            RejectionCode::ReservedDomain => "reserved_domain",
            RejectionCode::DomainTaken => "domain_taken",
            RejectionCode::DomainNotFound => "domain_not_found",
            RejectionCode::AlreadyRegistered => "already_registered",
        }
    }
}

impl Rejection {
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(domain: &str) -> Self {
        Rejection::new(
            RejectionCode::DomainNotFound,
            format!("you have no domain `{domain}`; register it first"),
        )
    }
}

impl From<crate::domain_name::NameRejection> for Rejection {
    fn from(e: crate::domain_name::NameRejection) -> Self {
        let code = match e.code() {
            "reserved_domain" => RejectionCode::ReservedDomain,
            _ => RejectionCode::InvalidDomain,
        };
        Rejection::new(code, e.message)
    }
}

/// What the decider wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Append this event to the domain's log.
    Append(EventData),
    /// Accepted, and nothing changes (a stale timer, a result already applied).
    Nothing,
}

/// A `register_domain` may touch two registrations: another tenant's failed one
/// (released) and the new one.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterPlan {
    pub release: Option<EventData>,
    pub registered: EventData,
}

/// Decides a `register_domain` for `name` by `tenant`, given the registration that
/// currently holds the name (if any).
pub fn decide_register(
    tenant: TenantId,
    name: &DomainName,
    cmd: &Command,
    holder: Option<&DomainState>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<RegisterPlan, Rejection> {
    let registered = EventData::DomainRegistered {
        region: cmd.region.clone(),
        requested_by: cmd.requested_by.clone(),
        deadline_at: now + policy.verification_deadline,
    };
    let release = match holder {
        None => None,
        Some(h) if h.status == Status::Deactivated => None,
        Some(h) if h.tenant_id == tenant => {
            return Err(Rejection::new(
                RejectionCode::AlreadyRegistered,
                format!(
                    "you have registered `{name}` already (status {})",
                    h.status.as_str()
                ),
            ))
        }
        Some(h) if h.status == Status::Failed => Some(EventData::DomainReleased {
            to_tenant: tenant,
            cleanup_required: h.is_provisioned(),
            provider_domain_id: h.provider_domain_id.clone(),
        }),
        Some(_) => {
            return Err(Rejection::new(
                RejectionCode::DomainTaken,
                format!("`{name}` is in use by another account; if it is yours, contact support"),
            ))
        }
    };
    Ok(RegisterPlan {
        release,
        registered,
    })
}

/// Whether the shell must run a DNS check before calling [`decide`] for this command.
pub fn needs_dns_check(state: &DomainState, cmd: &Command, now: DateTime<Utc>) -> bool {
    if state.records.is_empty() || !state.is_provisioned() {
        return false;
    }
    match cmd.command_type {
        CommandType::DnsConfigured | CommandType::RefreshStatus => matches!(
            state.status,
            Status::AwaitingDns | Status::Verifying | Status::Verified | Status::Failed
        ),
        CommandType::Recheck => {
            matches!(
                state.status,
                Status::AwaitingDns | Status::Verifying | Status::Verified
            ) && recheck_due(state, now)
        }
        _ => false,
    }
}

/// Timers may fire a little early (clock skew between instances) or late; a trigger
/// for a check that has since been rescheduled further out is stale.
const TIMER_TOLERANCE_SECS: i64 = 2;

fn recheck_due(state: &DomainState, now: DateTime<Utc>) -> bool {
    match (state.status, state.next_check_at) {
        (Status::Created, _) => state
            .deadline_at
            .is_some_and(|d| now + Duration::seconds(TIMER_TOLERANCE_SECS) >= d),
        (_, Some(at)) => now + Duration::seconds(TIMER_TOLERANCE_SECS) >= at,
        _ => false,
    }
}

/// Decides every command but `register_domain` for an existing registration.
/// `dns` is the judged records of a check the shell ran because [`needs_dns_check`]
/// said so.
pub fn decide(
    state: &DomainState,
    cmd: &Command,
    dns: Option<Vec<DnsRecord>>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Decision, Rejection> {
    use CommandType as C;
    use Status as S;
    let live = state.status.is_live();
    match cmd.command_type {
        C::RegisterDomain => Err(Rejection::new(
            RejectionCode::InvalidCommand,
            "register_domain is decided by decide_register",
        )),
        C::DnsConfigured | C::RefreshStatus | C::FailDomain | C::DeleteDomain if !live => {
            Err(Rejection::not_found(&state.domain))
        }
        C::DeleteDomain => Ok(Decision::Append(EventData::DomainDeleted {
            requested_by: cmd.requested_by.clone(),
            cleanup_required: state.is_provisioned(),
            provider_domain_id: state.provider_domain_id.clone(),
        })),
        C::FailDomain => Ok(Decision::Append(EventData::VerificationFailed {
            reason: cmd
                .reason
                .clone()
                .unwrap_or_else(|| "Failed by an operator.".to_string()),
            records: Vec::new(),
            by_operator: true,
        })),
        C::DnsConfigured | C::RefreshStatus => {
            let trigger = if cmd.command_type == C::DnsConfigured {
                CheckTrigger::DnsConfigured
            } else {
                CheckTrigger::RefreshStatus
            };
            match (state.status, dns) {
                (S::Created, _) => Ok(Decision::Append(EventData::CheckRequested { trigger })),
                (S::Failed, _) if !state.is_provisioned() => {
                    Ok(Decision::Append(EventData::WindowReopened {
                        deadline_at: now + policy.verification_deadline,
                    }))
                }
                (_, Some(records)) => Ok(Decision::Append(after_check(
                    state, trigger, records, now, policy,
                ))),
                (_, None) => Err(Rejection::new(
                    RejectionCode::InvalidCommand,
                    "internal: a DNS check was needed and not run",
                )),
            }
        }
        // The shell runs the pre-flight lookups and decides with `preflight::decide`.
        C::Preflight => Ok(Decision::Nothing),
        C::Recheck => {
            if !recheck_due(state, now) {
                return Ok(Decision::Nothing);
            }
            match (state.status, dns) {
                (S::Created, _) => Ok(Decision::Append(EventData::VerificationFailed {
                    reason: format!(
                        "The domain could not be set up with the email provider before the deadline ({}). \
                         Press \"Check again\" to try once more; if it keeps failing, contact support.",
                        state.deadline_at.map(|d| d.to_rfc3339()).unwrap_or_default()
                    ),
                    records: Vec::new(),
                    by_operator: false,
                })),
                (S::AwaitingDns | S::Verifying | S::Verified, Some(records)) => {
                    Ok(Decision::Append(after_check(state, CheckTrigger::Scheduled, records, now, policy)))
                }
                _ => Ok(Decision::Nothing),
            }
        }
        C::ProviderResult => {
            let Some(result) = &cmd.provider_result else {
                return Err(Rejection::new(
                    RejectionCode::InvalidCommand,
                    "provider_result is missing",
                ));
            };
            Ok(decide_provider_result(state, result, now, policy))
        }
    }
}

fn decide_provider_result(
    state: &DomainState,
    result: &ProviderResult,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Decision {
    match result {
        ProviderResult::Created {
            provider_id,
            provider_domain_id,
            region,
            records,
        } => {
            if state.is_provisioned() {
                return Decision::Nothing;
            }
            let deleted = state.status == Status::Deactivated;
            // A failed domain stays failed (only the owner's refresh opens a new window):
            // it keeps the provider domain for that window, but gets no timer.
            let next = if deleted || state.status == Status::Failed {
                None
            } else if state.check_requested {
                Some(now)
            } else {
                Some(next_check(
                    policy,
                    state.domain_id,
                    0,
                    now,
                    state.deadline_at,
                ))
            };
            Decision::Append(EventData::DomainProvisioned {
                provider_id: provider_id.clone(),
                provider_domain_id: provider_domain_id.clone(),
                region: region.clone(),
                records: records_to_enter(&state.domain, records),
                next_check_at: next,
                cleanup_required: deleted,
            })
        }
        ProviderResult::CreateRejected { message } => {
            if state.status != Status::Created {
                return Decision::Nothing;
            }
            Decision::Append(EventData::ProvisioningFailed {
                reason: format!("The email provider refused the domain: {message}"),
            })
        }
        ProviderResult::Polled {
            provider_status,
            provider_domain_id,
            failed_records,
        } => decide_polled(
            state,
            provider_status,
            provider_domain_id.as_deref(),
            failed_records,
            now,
            policy,
        ),
        ProviderResult::CleanedUp => {
            if state.cleanup_pending {
                Decision::Append(EventData::ProviderCleanedUp {})
            } else {
                Decision::Nothing
            }
        }
    }
}

/// What the provider's word on a domain leads to: the rule for each status.
fn decide_polled(
    state: &DomainState,
    status: &ProviderStatus,
    polled_id: Option<&str>,
    failed_records: &[FailedRecord],
    now: DateTime<Utc>,
    policy: &Policy,
) -> Decision {
    if !matches!(state.status, Status::Verifying | Status::AwaitingDns) {
        return Decision::Nothing;
    }
    // A result about a provider domain this registration no longer has (one that
    // vanished and was set up again) is stale.
    if polled_id.is_some() && polled_id != state.provider_domain_id.as_deref() {
        return Decision::Nothing;
    }
    let verifying = state.status == Status::Verifying;
    use ProviderStatus as P;
    let data = match status {
        P::Verified => polled_verified(now, policy),
        // Only a verification in progress is sent back: an answer arriving after the
        // domain went back to awaiting DNS has nothing left to undo.
        P::Failed | P::PartiallyFailed if verifying => {
            polled_records_failed(state, status, failed_records)
        }
        // The provider could not finish checking: ask again at the fast end of the
        // cadence rather than wait for the backed-off check.
        P::TemporaryFailure if verifying => polled_unchanged(
            status,
            Some(next_check(
                policy,
                state.domain_id,
                0,
                now,
                state.deadline_at,
            )),
        ),
        P::NotFound => vanished(state, now, policy),
        P::NotStarted
        | P::Pending
        | P::PartiallyVerified
        | P::Failed
        | P::PartiallyFailed
        | P::TemporaryFailure => polled_unchanged(status, state.next_check_at),
        // A word the core does not know changes nothing: the next check asks again.
        P::Unknown(_) => polled_unchanged(status, state.next_check_at),
    };
    Decision::Append(data)
}

fn polled_verified(now: DateTime<Utc>, policy: &Policy) -> EventData {
    EventData::ProviderPolled {
        provider_status: ProviderStatus::Verified,
        verified: true,
        activates: true,
        provider_failed: false,
        next_check_at: Some(now + policy.monitor_interval),
        reason: None,
        failed_records: Vec::new(),
    }
}

/// The status recorded, the domain as it was (but for the next check).
fn polled_unchanged(status: &ProviderStatus, next_check_at: Option<DateTime<Utc>>) -> EventData {
    EventData::ProviderPolled {
        provider_status: status.clone(),
        verified: false,
        activates: false,
        provider_failed: false,
        next_check_at,
        reason: None,
        failed_records: Vec::new(),
    }
}

/// Back to awaiting DNS, saying which records the provider failed.
fn polled_records_failed(
    state: &DomainState,
    status: &ProviderStatus,
    failed_records: &[FailedRecord],
) -> EventData {
    EventData::ProviderPolled {
        provider_status: status.clone(),
        verified: false,
        activates: false,
        provider_failed: true,
        next_check_at: state.next_check_at,
        reason: Some(provider_failed_reason(status, failed_records)),
        failed_records: failed_records.to_vec(),
    }
}

/// The owner's reason for a verification the provider failed, naming the records it
/// failed when it said which.
pub fn provider_failed_reason(status: &ProviderStatus, failed_records: &[FailedRecord]) -> String {
    let some = if *status == ProviderStatus::PartiallyFailed {
        "some of the DNS records"
    } else {
        "the DNS records"
    };
    if failed_records.is_empty() {
        return format!(
            "The email provider could not verify {some} of this domain. \
             Check the records below at your DNS host; we ask again once they are right."
        );
    }
    let names: Vec<String> = failed_records.iter().map(ToString::to_string).collect();
    format!(
        "The email provider could not verify {}: {}. \
         Check {} at your DNS host; we ask again once DNS is right.",
        if failed_records.len() == 1 {
            "this record"
        } else {
            "these records"
        },
        names.join("; "),
        if failed_records.len() == 1 {
            "it"
        } else {
            "them"
        },
    )
}

/// The provider no longer has the domain: set it up again, in a new window, since the
/// owner has new records to enter. (The alternative, failing the domain, would only
/// make the owner press "Check again" to reach the same re-create.)
fn vanished(state: &DomainState, now: DateTime<Utc>, policy: &Policy) -> EventData {
    EventData::ProviderDomainVanished {
        provider_domain_id: state.provider_domain_id.clone().unwrap_or_default(),
        region: state.region.clone(),
        reason: "The email provider no longer has this domain (it was removed there), so we are \
                 setting it up again. Its DNS records change: once the new records appear here, \
                 enter them at your DNS host (the DKIM value is new) and press \
                 \u{201c}I've added the records\u{201d}."
            .into(),
        deadline_at: now + policy.verification_deadline,
    }
}

fn all_required_found(records: &[DnsRecord]) -> bool {
    records
        .iter()
        .filter(|r| r.required)
        .all(|r| r.dns_status == DnsStatus::Found)
}

/// A required record is definitely wrong (not merely unreadable): drift, or a reason
/// to fail at the deadline.
fn required_definitely_wrong(records: &[DnsRecord]) -> bool {
    records
        .iter()
        .any(|r| r.required && matches!(r.dns_status, DnsStatus::Missing | DnsStatus::Mismatch))
}

/// What a DNS check leads to, in every state that checks.
fn after_check(
    state: &DomainState,
    trigger: CheckTrigger,
    records: Vec<DnsRecord>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> EventData {
    let owner_asked = trigger != CheckTrigger::Scheduled;
    let found = all_required_found(&records);
    let attempt = if owner_asked {
        0
    } else {
        state.attempt.saturating_add(1)
    };
    let mut new_deadline_at = None;
    let mut deadline = state.deadline_at;
    if state.status == Status::Failed {
        // A failed domain checked again by its owner: a new verification window.
        let d = now + policy.verification_deadline;
        new_deadline_at = Some(d);
        deadline = Some(d);
    }
    if state.status == Status::Verified {
        let wrong = required_definitely_wrong(&records);
        let drift_detected = wrong && state.drift_since.is_none();
        let drift_resolved = found && state.drift_since.is_some();
        if wrong {
            let since = state.drift_since.unwrap_or(now);
            let drift_deadline = since + policy.verification_deadline;
            if now >= drift_deadline {
                return EventData::VerificationFailed {
                    reason: failure_reason(
                        &records,
                        "The DNS records of this verified domain changed and were not restored in time.",
                    ),
                    records,
                    by_operator: false,
                };
            }
            let attempt = if drift_detected { 0 } else { attempt };
            return EventData::DnsChecked {
                trigger,
                all_required_found: found,
                request_verification: false,
                poll_provider: false,
                next_check_at: Some(next_check(
                    policy,
                    state.domain_id,
                    attempt,
                    now,
                    Some(drift_deadline),
                )),
                new_deadline_at: None,
                attempt,
                drift_detected,
                drift_resolved: false,
                propagation: Vec::new(),
                provider_domain_id: state.provider_domain_id.clone(),
                records,
            };
        }
        // A drift not yet over (a required record unreadable) keeps the fast cadence,
        // never past the end of its window.
        let (next_check_at, attempt) = match state.drift_since {
            Some(since) if !found => (
                next_check(
                    policy,
                    state.domain_id,
                    attempt,
                    now,
                    Some(since + policy.verification_deadline),
                ),
                attempt,
            ),
            _ => (now + policy.monitor_interval, 0),
        };
        return EventData::DnsChecked {
            trigger,
            all_required_found: found,
            request_verification: false,
            poll_provider: false,
            next_check_at: Some(next_check_at),
            new_deadline_at: None,
            attempt,
            drift_detected: false,
            drift_resolved,
            propagation: Vec::new(),
            provider_domain_id: state.provider_domain_id.clone(),
            records,
        };
    }
    let past_deadline = deadline.is_some_and(|d| now >= d);
    if past_deadline && new_deadline_at.is_none() {
        return EventData::VerificationFailed {
            reason: failure_reason(&records, "The domain was not verified before the deadline."),
            records,
            by_operator: false,
        };
    }
    let verifying = state.status == Status::Verifying;
    let request_verification = found && !verifying;
    EventData::DnsChecked {
        trigger,
        all_required_found: found,
        request_verification,
        poll_provider: verifying,
        next_check_at: Some(next_check(policy, state.domain_id, attempt, now, deadline)),
        new_deadline_at,
        attempt,
        drift_detected: false,
        drift_resolved: false,
        propagation: Vec::new(),
        provider_domain_id: state.provider_domain_id.clone(),
        records,
    }
}

/// A reason a person can act on: what was still missing or wrong, and what was seen.
pub fn failure_reason(records: &[DnsRecord], headline: &str) -> String {
    let mut out = String::from(headline);
    let problems: Vec<String> = records
        .iter()
        .filter(|r| r.required && r.dns_status != DnsStatus::Found)
        .map(|r| {
            let seen = if r.observed.is_empty() {
                "nothing was found there".to_string()
            } else {
                format!("found {}", r.observed.join(" | "))
            };
            let why = r
                .diagnosis
                .as_ref()
                .map(|d| format!(" ({})", d.message))
                .unwrap_or_default();
            format!(
                "{} record at {} should be `{}`: {} ({}){}",
                r.record_type,
                r.name,
                r.value,
                r.dns_status_word(),
                seen,
                why
            )
        })
        .collect();
    if problems.is_empty() {
        out.push_str(" All required DNS records were found, but the email provider did not confirm the domain.");
    } else {
        out.push_str(" Still to fix: ");
        out.push_str(&problems.join("; "));
        out.push('.');
    }
    out
}

impl DnsRecord {
    fn dns_status_word(&self) -> &'static str {
        match self.dns_status {
            DnsStatus::Pending => "not checked yet",
            DnsStatus::Found => "found",
            DnsStatus::Missing => "missing",
            DnsStatus::Mismatch => "a different value is there",
            DnsStatus::LookupFailed => "the DNS lookup failed",
        }
    }
}

/// The purposes verification waits for: the provider's sending records.
pub const REQUIRED_PURPOSES: &[&str] = &["spf", "dkim", "return_path"];

/// The records the owner is told to enter, from what the provider asked for: full
/// names, `required` flags, never an MX at the registered domain's apex (it would take
/// the owner's inbound mail), and a DMARC record as advice (not required).
pub fn records_to_enter(zone: &str, provider_records: &[DnsRecord]) -> Vec<DnsRecord> {
    let mut out: Vec<DnsRecord> = provider_records
        .iter()
        .map(|r| (r, full_name(zone, &r.name)))
        .filter(|(r, name)| {
            !(r.record_type.eq_ignore_ascii_case("MX") && name.eq_ignore_ascii_case(zone))
        })
        .map(|(r, name)| DnsRecord {
            purpose: r.purpose.to_ascii_lowercase(),
            record_type: r.record_type.to_ascii_uppercase(),
            name,
            value: r.value.clone(),
            priority: r.priority,
            required: REQUIRED_PURPOSES.contains(&r.purpose.to_ascii_lowercase().as_str()),
            dns_status: DnsStatus::Pending,
            observed: Vec::new(),
            diagnosis: None,
        })
        .collect();
    if !out.iter().any(|r| r.purpose == "dmarc") {
        out.push(DnsRecord {
            purpose: "dmarc".into(),
            record_type: "TXT".into(),
            name: format!("_dmarc.{zone}"),
            value: "v=DMARC1; p=none;".into(),
            priority: None,
            required: false,
            dns_status: DnsStatus::Pending,
            observed: Vec::new(),
            diagnosis: None,
        });
    }
    out
}

/// A record name as a full name: lower case, no trailing dot, a name given relative to
/// the zone (`send`, `@`, empty) qualified with it.
fn full_name(zone: &str, name: &str) -> String {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name == "@" {
        zone
    } else if name == zone || name.ends_with(&format!(".{zone}")) {
        name
    } else {
        format!("{name}.{zone}")
    }
}

//! A domain registration's state, rebuilt from its events by [`evolve`].

use crate::event::{Event, EventData};
use crate::ids::{CommandId, DomainId, TenantId};
use crate::records::DnsRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The statuses of docs/interface.md §3.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    AwaitingDns,
    Verifying,
    Verified,
    Failed,
    Deactivated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::AwaitingDns => "awaiting_dns",
            Status::Verifying => "verifying",
            Status::Verified => "verified",
            Status::Failed => "failed",
            Status::Deactivated => "deactivated",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "created" => Status::Created,
            "awaiting_dns" => Status::AwaitingDns,
            "verifying" => Status::Verifying,
            "verified" => Status::Verified,
            "failed" => Status::Failed,
            "deactivated" => Status::Deactivated,
            _ => return None,
        })
    }

    pub fn is_live(self) -> bool {
        self != Status::Deactivated
    }

    pub const ALL: [Status; 6] = [
        Status::Created,
        Status::AwaitingDns,
        Status::Verifying,
        Status::Verified,
        Status::Failed,
        Status::Deactivated,
    ];
}

/// How many recent causation ids a state remembers, to recognise a command that is
/// delivered again after its event was appended but before it was acknowledged.
pub const RECENT_CAUSATIONS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainState {
    pub domain_id: DomainId,
    pub tenant_id: TenantId,
    pub domain: String,
    pub status: Status,
    pub version: u64,
    pub region: Option<String>,
    pub requested_by: Option<String>,
    pub provider_id: Option<String>,
    pub provider_domain_id: Option<String>,
    pub provider_status: Option<String>,
    pub records: Vec<DnsRecord>,
    pub failure_reason: Option<String>,
    pub deactivation_reason: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub dns_last_checked_at: Option<DateTime<Utc>>,
    pub next_check_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Re-check attempts since the last owner's command (drives the backoff).
    pub attempt: u32,
    /// The owner asked for a check before the provider answered.
    pub check_requested: bool,
    /// A verified domain's required records went missing at this time.
    pub drift_since: Option<DateTime<Utc>>,
    /// The provider domain must still be deleted.
    pub cleanup_pending: bool,
    /// Pre-flight warnings (see `preflight`).
    #[serde(default)]
    pub preflight: Vec<crate::preflight::Warning>,
    /// From the last check: records the authority serves but resolvers still deny.
    #[serde(default)]
    pub propagation: Vec<crate::records::Propagation>,
    pub recent_causations: VecDeque<CommandId>,
}

impl DomainState {
    pub fn has_seen(&self, command: CommandId) -> bool {
        self.recent_causations.contains(&command)
    }

    pub fn is_provisioned(&self) -> bool {
        self.provider_domain_id.is_some()
    }
}

/// Applies one event. Events must come in version order; an event at or below the
/// state's version was applied already and changes nothing (so a redelivered event
/// can never be applied twice).
pub fn evolve(state: Option<DomainState>, event: &Event) -> Option<DomainState> {
    let mut s = match state {
        Some(s) if event.version <= s.version => return Some(s),
        Some(s) => s,
        None => match &event.data {
            EventData::DomainRegistered { .. } => DomainState {
                domain_id: event.domain_id,
                tenant_id: event.tenant_id,
                domain: event.domain.clone(),
                status: Status::Created,
                version: 0,
                region: None,
                requested_by: None,
                provider_id: None,
                provider_domain_id: None,
                provider_status: None,
                records: Vec::new(),
                failure_reason: None,
                deactivation_reason: None,
                verified_at: None,
                dns_last_checked_at: None,
                next_check_at: None,
                deadline_at: None,
                created_at: event.occurred_at,
                updated_at: event.occurred_at,
                attempt: 0,
                check_requested: false,
                drift_since: None,
                cleanup_pending: false,
                preflight: Vec::new(),
                propagation: Vec::new(),
                recent_causations: VecDeque::new(),
            },
            // A log that does not start with a registration is not a domain.
            _ => return None,
        },
    };
    s.version = event.version;
    s.updated_at = event.occurred_at;
    if s.recent_causations.len() == RECENT_CAUSATIONS {
        s.recent_causations.pop_front();
    }
    s.recent_causations.push_back(event.causation_id);

    match &event.data {
        EventData::DomainRegistered {
            region,
            requested_by,
            deadline_at,
        } => {
            s.region = region.clone();
            s.requested_by = requested_by.clone();
            s.deadline_at = Some(*deadline_at);
        }
        EventData::CheckRequested { .. } => s.check_requested = true,
        EventData::PreflightChecked { warnings } => s.preflight = warnings.clone(),
        EventData::DomainProvisioned {
            provider_id,
            provider_domain_id,
            region,
            records,
            next_check_at,
            cleanup_required,
        } => {
            s.provider_id = Some(provider_id.clone());
            s.provider_domain_id = Some(provider_domain_id.clone());
            if region.is_some() {
                s.region = region.clone();
            }
            s.records = records.clone();
            if *cleanup_required {
                s.cleanup_pending = true;
            } else if s.status == Status::Created {
                // A late create for a domain that failed meanwhile does not revive it.
                s.status = Status::AwaitingDns;
                s.next_check_at = *next_check_at;
                s.check_requested = false;
                s.attempt = 0;
            }
        }
        EventData::ProvisioningFailed { reason } => {
            s.status = Status::Failed;
            s.failure_reason = Some(reason.clone());
            s.next_check_at = None;
        }
        EventData::DnsChecked {
            records,
            request_verification,
            next_check_at,
            new_deadline_at,
            attempt,
            drift_detected,
            drift_resolved,
            propagation,
            ..
        } => {
            s.records = records.clone();
            s.propagation = propagation.clone();
            s.dns_last_checked_at = Some(event.occurred_at);
            s.next_check_at = *next_check_at;
            s.attempt = *attempt;
            if let Some(d) = new_deadline_at {
                s.deadline_at = Some(*d);
                s.failure_reason = None;
                if s.status == Status::Failed {
                    s.status = Status::AwaitingDns;
                }
            }
            if *request_verification {
                s.status = Status::Verifying;
                // What the provider failed last time is being checked again.
                s.failure_reason = None;
            }
            if *drift_detected {
                s.drift_since = Some(event.occurred_at);
            }
            if *drift_resolved {
                s.drift_since = None;
            }
        }
        EventData::ProviderPolled {
            provider_status,
            verified,
            provider_failed,
            next_check_at,
            reason,
            ..
        } => {
            s.provider_status = Some(provider_status.to_string());
            s.next_check_at = *next_check_at;
            if *verified {
                if s.status != Status::Verified {
                    s.verified_at = Some(event.occurred_at);
                }
                s.status = Status::Verified;
                s.attempt = 0;
                s.failure_reason = None;
            } else if *provider_failed {
                s.status = Status::AwaitingDns;
                s.failure_reason = reason.clone();
            }
        }
        EventData::ProviderDomainVanished {
            reason,
            deadline_at,
            ..
        } => {
            // Nothing of the old provider domain is left: its id, its records (the new
            // domain gets a new DKIM key) and the checks of them.
            s.status = Status::Created;
            s.provider_id = None;
            s.provider_domain_id = None;
            s.provider_status = Some(crate::ProviderStatus::NotFound.to_string());
            s.records = Vec::new();
            s.propagation = Vec::new();
            s.failure_reason = Some(reason.clone());
            s.deadline_at = Some(*deadline_at);
            s.next_check_at = None;
            s.attempt = 0;
            s.check_requested = false;
            s.drift_since = None;
        }
        EventData::VerificationFailed {
            reason, records, ..
        } => {
            s.status = Status::Failed;
            s.failure_reason = Some(reason.clone());
            if !records.is_empty() {
                s.records = records.clone();
            }
            s.next_check_at = None;
            s.drift_since = None;
        }
        EventData::WindowReopened { deadline_at } => {
            s.status = Status::Created;
            s.deadline_at = Some(*deadline_at);
            s.failure_reason = None;
        }
        EventData::DomainDeleted {
            cleanup_required, ..
        } => {
            s.status = Status::Deactivated;
            s.deactivation_reason = Some("deleted".into());
            s.cleanup_pending = *cleanup_required;
            s.next_check_at = None;
        }
        EventData::DomainReleased {
            cleanup_required, ..
        } => {
            s.status = Status::Deactivated;
            s.deactivation_reason = Some("released".into());
            s.cleanup_pending = *cleanup_required;
            s.next_check_at = None;
        }
        EventData::ProviderCleanedUp {} => s.cleanup_pending = false,
    }
    Some(s)
}

/// Folds a whole history.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<DomainState> {
    events.into_iter().fold(None, evolve)
}

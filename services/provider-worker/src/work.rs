//! Which events need the provider, as work items.

use email_domain_events::event::{CheckTrigger, Event, EventData};
use email_domain_events::ids::derive;
use email_domain_events::{
    DnsRecord, DnsStatus, DomainId, FailedRecord, ProviderResult, ProviderStatus, TenantId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Create,
    Verify,
    Poll,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    pub work_id: String,
    pub kind: WorkKind,
    pub tenant_id: TenantId,
    pub domain_id: DomainId,
    pub domain: String,
    pub region: Option<String>,
    pub provider_domain_id: Option<String>,
    /// A person is waiting: goes before background work.
    pub interactive: bool,
    pub correlation_id: Option<uuid::Uuid>,
    /// When the event that asked for this work happened: orders the creates of
    /// successive registrations of one name (see `name_claims`). Absent in items
    /// queued before it existed.
    #[serde(default)]
    pub requested_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl WorkItem {
    pub fn subject(&self) -> &'static str {
        if self.interactive {
            runtime::streams::PROVIDER_WORK_INTERACTIVE
        } else if self.kind == WorkKind::Poll {
            runtime::streams::PROVIDER_WORK_POLL
        } else {
            runtime::streams::PROVIDER_WORK_BACKGROUND
        }
    }
}

/// The provider work an event asks for. The provider domain id is not in every
/// event, so events that need it carry it or the item is looked up by name.
pub fn work_for(event: &Event) -> Option<WorkItem> {
    let item =
        |kind, region: Option<String>, provider_domain_id: Option<String>, interactive| WorkItem {
            work_id: derive(event.event_id.0, "provider-work").to_string(),
            kind,
            tenant_id: event.tenant_id,
            domain_id: event.domain_id,
            domain: event.domain.clone(),
            region,
            provider_domain_id,
            interactive,
            correlation_id: Some(event.correlation_id),
            requested_at: Some(event.occurred_at),
        };
    match &event.data {
        EventData::DomainRegistered { region, .. } => {
            Some(item(WorkKind::Create, region.clone(), None, true))
        }
        EventData::WindowReopened { .. } => Some(item(WorkKind::Create, None, None, true)),
        // Set up again at the provider, by the same registration: its name claim is
        // still held (the vanished domain was never cleaned up), so the create goes ahead.
        EventData::ProviderDomainVanished { region, .. } => {
            Some(item(WorkKind::Create, region.clone(), None, true))
        }
        EventData::DomainProvisioned {
            cleanup_required: true,
            provider_domain_id,
            ..
        } => Some(item(
            WorkKind::Delete,
            None,
            Some(provider_domain_id.clone()),
            true,
        )),
        EventData::DnsChecked {
            request_verification,
            poll_provider,
            trigger,
            provider_domain_id,
            ..
        } => {
            let interactive = *trigger != CheckTrigger::Scheduled;
            if *request_verification {
                Some(item(
                    WorkKind::Verify,
                    None,
                    provider_domain_id.clone(),
                    interactive,
                ))
            } else if *poll_provider {
                Some(item(
                    WorkKind::Poll,
                    None,
                    provider_domain_id.clone(),
                    interactive,
                ))
            } else {
                None
            }
        }
        EventData::DomainDeleted {
            cleanup_required: true,
            provider_domain_id,
            ..
        }
        | EventData::DomainReleased {
            cleanup_required: true,
            provider_domain_id,
            ..
        } => Some(item(
            WorkKind::Delete,
            None,
            provider_domain_id.clone(),
            true,
        )),
        _ => None,
    }
}

/// The pre-flight command a freshly provisioned domain gets (see `preflight`).
pub fn preflight_for(event: &Event) -> Option<email_domain_events::Command> {
    match &event.data {
        EventData::DomainProvisioned {
            cleanup_required: false,
            ..
        } => Some(email_domain_events::Command {
            command_type: email_domain_events::CommandType::Preflight,
            command_id: email_domain_events::CommandId(derive(event.event_id.0, "preflight")),
            tenant_id: event.tenant_id,
            domain: event.domain.clone(),
            requested_by: Some("provider-worker".into()),
            region: None,
            domain_id: Some(event.domain_id),
            reason: None,
            provider_result: None,
            correlation_id: Some(event.correlation_id),
        }),
        _ => None,
    }
}

pub fn to_dns_record(r: provider::ProviderRecord) -> DnsRecord {
    DnsRecord {
        purpose: r.purpose,
        record_type: r.record_type,
        name: r.name,
        value: r.value,
        priority: r.priority,
        required: false,
        dns_status: DnsStatus::Pending,
        observed: Vec::new(),
        diagnosis: None,
    }
}

/// A single domain's answer as a poll result: its status, and the records it marked
/// failed.
pub fn polled(d: &provider::ProviderDomain) -> ProviderResult {
    let failed_records = d
        .records
        .iter()
        .filter(|r| {
            r.status
                .as_deref()
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("failed"))
        })
        .map(|r| FailedRecord {
            record_type: r.record_type.clone(),
            name: r.name.clone(),
        })
        .collect();
    ProviderResult::Polled {
        provider_status: ProviderStatus::from_raw(d.status.as_str()),
        provider_domain_id: Some(d.provider_domain_id.clone()),
        failed_records,
    }
}

/// A status read from a list page (no records) as a poll result.
pub fn listed(
    provider_domain_id: Option<&str>,
    status: &provider::ProviderStatus,
) -> ProviderResult {
    ProviderResult::Polled {
        provider_status: ProviderStatus::from_raw(status.as_str()),
        provider_domain_id: provider_domain_id.map(str::to_owned),
        failed_records: Vec::new(),
    }
}

/// The provider answered 404 for this domain: it is gone.
pub fn vanished(provider_domain_id: &str) -> ProviderResult {
    ProviderResult::Polled {
        provider_status: ProviderStatus::NotFound,
        provider_domain_id: Some(provider_domain_id.to_owned()),
        failed_records: Vec::new(),
    }
}

/// Whether a list page's status is all a poll needs. A partially failed domain needs
/// its own answer, whose records name what failed.
pub fn list_status_is_enough(status: &provider::ProviderStatus) -> bool {
    !matches!(status, provider::ProviderStatus::PartiallyFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, status: Option<&str>) -> provider::ProviderRecord {
        provider::ProviderRecord {
            purpose: "dkim".into(),
            record_type: "TXT".into(),
            name: name.into(),
            value: "p=KEY".into(),
            priority: None,
            status: status.map(str::to_owned),
        }
    }

    #[test]
    fn a_polled_answer_names_only_the_records_the_provider_marked_failed() {
        let d = provider::ProviderDomain {
            provider_domain_id: "pd-1".into(),
            name: "acme.test".into(),
            status: provider::ProviderStatus::PartiallyFailed,
            region: None,
            records: vec![
                record("resend._domainkey.acme.test", Some("Failed")),
                record("send.acme.test", Some("verified")),
                record("other.acme.test", None),
            ],
        };
        assert_eq!(
            polled(&d),
            ProviderResult::Polled {
                provider_status: ProviderStatus::PartiallyFailed,
                provider_domain_id: Some("pd-1".into()),
                failed_records: vec![FailedRecord {
                    record_type: "TXT".into(),
                    name: "resend._domainkey.acme.test".into(),
                }],
            }
        );
    }

    #[test]
    fn only_a_partially_failed_status_in_a_list_needs_the_domains_own_answer() {
        assert!(!list_status_is_enough(
            &provider::ProviderStatus::PartiallyFailed
        ));
        for s in ["failed", "verified", "pending", "temporary_failure", "odd"] {
            assert!(
                list_status_is_enough(&provider::ProviderStatus::from_raw(s)),
                "{s}"
            );
        }
    }
}

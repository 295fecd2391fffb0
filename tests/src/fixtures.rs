//! Realistic event histories for benchmarks and replay tests.

use chrono::{DateTime, Duration, Utc};
use email_domain_events::event::{CheckTrigger, Event, EventData, SCHEMA_VERSION};
use email_domain_events::{CommandId, DnsRecord, DnsStatus, DomainId, EventId, TenantId};
use uuid::Uuid;

fn records(name: &str, status: DnsStatus) -> Vec<DnsRecord> {
    let r =
        |purpose: &str, t: &str, n: String, v: &str, p: Option<u16>, required: bool| DnsRecord {
            purpose: purpose.into(),
            record_type: t.into(),
            name: n,
            value: v.into(),
            priority: p,
            required,
            dns_status: status,
            observed: Vec::new(),
            diagnosis: None,
        };
    vec![
        r(
            "return_path",
            "MX",
            format!("send.{name}"),
            "feedback-smtp.us-east-1.amazonses.com",
            Some(10),
            true,
        ),
        r(
            "spf",
            "TXT",
            format!("send.{name}"),
            "v=spf1 include:amazonses.com ~all",
            None,
            true,
        ),
        r(
            "dkim",
            "TXT",
            format!("resend._domainkey.{name}"),
            &format!(
                "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ{}",
                "A".repeat(180)
            ),
            None,
            true,
        ),
        r(
            "dmarc",
            "TXT",
            format!("_dmarc.{name}"),
            "v=DMARC1; p=none;",
            None,
            false,
        ),
    ]
}

/// `n` events (n ≥ 3) of one domain: registered, provisioned, checks, verified.
pub fn domain_history(tenant: TenantId, name: &str, n: u64, start: DateTime<Utc>) -> Vec<Event> {
    let id = DomainId(Uuid::new_v4());
    (1..=n)
        .map(|v| {
            let data = match v {
                1 => EventData::DomainRegistered {
                    region: None,
                    requested_by: Some("bench".into()),
                    deadline_at: start + Duration::days(7),
                },
                2 => EventData::DomainProvisioned {
                    provider_id: "resend".into(),
                    provider_domain_id: format!("pd-{id}"),
                    region: Some("us-east-1".into()),
                    records: records(name, DnsStatus::Pending),
                    next_check_at: Some(start + Duration::seconds(300)),
                    cleanup_required: false,
                },
                v if v == n => EventData::ProviderPolled {
                    provider_status: "verified".into(),
                    verified: true,
                    activates: true,
                    provider_failed: false,
                    next_check_at: Some(start + Duration::days(1)),
                    reason: None,
                    failed_records: Vec::new(),
                },
                v => EventData::DnsChecked {
                    trigger: CheckTrigger::Scheduled,
                    records: records(
                        name,
                        if v == n - 1 {
                            DnsStatus::Found
                        } else {
                            DnsStatus::Missing
                        },
                    ),
                    all_required_found: v == n - 1,
                    request_verification: v == n - 1,
                    poll_provider: false,
                    next_check_at: Some(start + Duration::seconds(300 * v as i64)),
                    new_deadline_at: None,
                    attempt: v as u32,
                    drift_detected: false,
                    drift_resolved: false,
                    propagation: Vec::new(),
                    provider_domain_id: Some(format!("pd-{id}")),
                },
            };
            let causation = CommandId(Uuid::new_v4());
            Event {
                event_id: EventId::for_command(causation, id, v),
                tenant_id: tenant,
                domain_id: id,
                domain: name.to_string(),
                version: v,
                occurred_at: start + Duration::seconds(60 * v as i64),
                causation_id: causation,
                correlation_id: causation.0,
                schema_version: SCHEMA_VERSION,
                data,
            }
        })
        .collect()
}

//! Analytics CloudEvents (docs/interface.md §2.5), derived from stored events. Each source
//! event yields the same CloudEvents, with the same ids, every time.

use crate::event::{Event, EventData};
use crate::ids::derive;
use serde_json::{json, Value};

/// The analytics names one event produces, in order.
pub fn names(event: &Event) -> Vec<&'static str> {
    match &event.data {
        EventData::DomainRegistered { .. } => vec!["registered"],
        EventData::DomainProvisioned {
            cleanup_required: false,
            ..
        } => vec!["provisioned"],
        EventData::DomainProvisioned { .. } => vec![],
        EventData::CheckRequested { .. } | EventData::PreflightChecked { .. } => vec![],
        EventData::ProvisioningFailed { .. } => vec!["failed"],
        EventData::DnsChecked {
            drift_detected,
            drift_resolved,
            ..
        } => {
            let mut v = vec!["dns_checked"];
            if *drift_detected {
                v.push("dns_drift");
            }
            if *drift_resolved {
                v.push("dns_restored");
            }
            v
        }
        EventData::ProviderPolled {
            verified: true,
            activates: true,
            ..
        } => vec!["verified", "activated"],
        EventData::ProviderPolled { verified: true, .. } => vec!["verified"],
        EventData::ProviderPolled { .. } => vec![],
        EventData::VerificationFailed { .. } => vec!["failed"],
        EventData::WindowReopened { .. } | EventData::ProviderDomainVanished { .. } => vec![],
        EventData::DomainDeleted { .. } => vec!["deleted"],
        EventData::DomainReleased { .. } => vec!["released"],
        EventData::ProviderCleanedUp {} => vec![],
    }
}

/// The CloudEvent id for analytics `name` of `event`: the same on every emission.
pub fn cloud_event_id(event: &Event, name: &str) -> String {
    derive(event.event_id.0, name).to_string()
}

/// The CloudEvent (structured JSON mode) for analytics `name` of `event`.
pub fn cloud_event(event: &Event, name: &str) -> Value {
    let mut data = json!({
        "tenant_id": event.tenant_id,
        "domain_id": event.domain_id,
        "domain": event.domain,
        "event_id": event.event_id,
        "event_type": event.data.type_name(),
        "version": event.version,
    });
    let extra = match &event.data {
        EventData::DnsChecked {
            records,
            all_required_found,
            trigger,
            ..
        } => json!({
            "trigger": trigger,
            "all_required_found": all_required_found,
            "records": records.iter().map(|r| json!({"purpose": r.purpose, "type": r.record_type, "name": r.name, "dns_status": r.dns_status, "diagnosis": r.diagnosis.as_ref().map(|d| d.code)})).collect::<Vec<_>>(),
        }),
        EventData::VerificationFailed {
            reason,
            by_operator,
            ..
        } => json!({"reason": reason, "by_operator": by_operator}),
        EventData::ProvisioningFailed { reason } => json!({"reason": reason}),
        EventData::DomainRegistered { region, .. } => json!({"region": region}),
        _ => json!({}),
    };
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    json!({
        "specversion": "1.0",
        "id": cloud_event_id(event, name),
        "source": "/email-domains",
        "type": format!("email_domain.{name}"),
        "subject": event.domain_id,
        "time": event.occurred_at,
        "datacontenttype": "application/json",
        "tenantid": event.tenant_id,
        "data": data,
    })
}

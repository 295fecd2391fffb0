//! What the page and the API show: a projection row as the domain owner reads it,
//! the timeline from the event log, and the CSV / zone-file downloads.
//!
//! The owner never sees the provider's name: free text (failure reasons, diagnosis
//! messages, outcome messages) goes through [`scrub`]. Records are shown verbatim,
//! because the owner must enter them exactly.

use chrono::{DateTime, Utc};
use email_domain_events::event::{CheckTrigger, Event, EventData};
use email_domain_events::records::DnsRecord;
use email_domain_events::{FailedRecord, ProviderStatus};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Replaces the provider's name in prose with a neutral phrase.
pub fn scrub(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = lower[i..].find("resend") {
        out.push_str(&text[i..i + pos]);
        out.push_str("the email provider");
        i += pos + "resend".len();
    }
    out.push_str(&text[i..]);
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    pub purpose: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// As the owner's DNS host wants it: relative to the zone (`send`, `@` for the apex).
    pub host: String,
    /// The full name.
    pub name: String,
    pub value: String,
    pub priority: Option<u16>,
    pub required: bool,
    pub dns_status: String,
    pub dns_status_label: String,
    pub observed: Vec<String>,
    pub diagnosis: Option<DiagnosisView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiagnosisView {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    pub id: Uuid,
    pub domain: String,
    /// The projection's status (`created`, `awaiting_dns`, `verifying`, `verified`, `failed`, `deactivated`).
    pub status: String,
    /// The owner-facing badge: `waiting_for_dns`, `verifying`, `verified`, `failed`, `removed`.
    pub badge: String,
    pub badge_label: String,
    /// What happens next, in plain words.
    pub next_step: String,
    pub next_check_at: Option<String>,
    pub last_checked_at: Option<String>,
    pub verified_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub failure_reason: Option<String>,
    /// Things to know: what will get in the way (pre-flight), and records public DNS
    /// resolvers will only see after their negative cache expires.
    pub notes: Vec<String>,
    pub records: Vec<RecordView>,
}

/// The name relative to the zone, as DNS hosts ask for it.
pub fn relative_host(name: &str, zone: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    if name == zone {
        "@".into()
    } else if let Some(prefix) = name.strip_suffix(&format!(".{zone}")) {
        prefix.to_string()
    } else {
        name
    }
}

fn time(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub fn dns_status_label(s: &str) -> &'static str {
    match s {
        "found" => "Found",
        "missing" => "Not found yet",
        "mismatch" => "Needs a fix",
        "lookup_failed" => "Could not check",
        _ => "Not checked yet",
    }
}

pub fn badge(status: &str) -> (&'static str, &'static str) {
    match status {
        "created" | "awaiting_dns" => ("waiting_for_dns", "Waiting for DNS"),
        "verifying" => ("verifying", "Verifying"),
        "verified" => ("verified", "Verified"),
        "failed" => ("failed", "Failed"),
        _ => ("removed", "Removed"),
    }
}

fn next_step(status: &str, records: &[RecordView], next_check: Option<&str>) -> String {
    // The time itself is `next_check_at`; the page shows it in the reader's time zone.
    let when = if next_check.is_some() {
        " We also check automatically (next check below)."
    } else {
        ""
    };
    match status {
        "created" => "We are preparing the DNS records for this domain; they appear here in a few seconds.".into(),
        "awaiting_dns" => {
            let missing = records.iter().filter(|r| r.required && r.dns_status != "found").count();
            if missing == 0 {
                format!("Add the records below at your DNS host, then press \u{201c}I've added the records\u{201d}.{when}")
            } else {
                format!(
                    "Add the records below at your DNS host ({missing} required record{} not found yet), then press \u{201c}I've added the records\u{201d}.{when}",
                    if missing == 1 { " is" } else { "s are" }
                )
            }
        }
        "verifying" => format!("Your records are in place; verification is in progress.{when}"),
        "verified" => format!("This domain is verified and can send email. We keep checking that the records stay in place.{when}"),
        "failed" => "Verification did not finish in time. Fix the records marked below, then press \u{201c}Check again\u{201d} to start a new verification window.".into(),
        _ => "This domain was removed and no longer sends email.".into(),
    }
}

/// A row of `email_domains` (as `to_jsonb`) for the owner.
pub fn domain_view(row: &Value) -> Option<DomainView> {
    let id = row["id"].as_str().and_then(|s| Uuid::parse_str(s).ok())?;
    let domain = row["domain_name"].as_str()?.to_string();
    let status = row["status"].as_str().unwrap_or("created").to_string();
    let records: Vec<DnsRecord> =
        serde_json::from_value(row["dns_records"].clone()).unwrap_or_default();
    let records: Vec<RecordView> = records
        .into_iter()
        .map(|r| {
            let dns_status = serde_json::to_value(r.dns_status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or("pending".into());
            RecordView {
                host: relative_host(&r.name, &domain),
                dns_status_label: dns_status_label(&dns_status).into(),
                dns_status,
                purpose: r.purpose,
                record_type: r.record_type,
                name: r.name,
                value: r.value,
                priority: r.priority,
                required: r.required,
                observed: r.observed,
                diagnosis: r.diagnosis.map(|d| DiagnosisView {
                    code: serde_json::to_value(d.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    message: scrub(&d.message),
                }),
            }
        })
        .collect();
    let next_check_at = if matches!(status.as_str(), "deactivated" | "failed") {
        None
    } else {
        time(&row["next_check_at"])
    };
    let (b, label) = badge(&status);
    let notes = notes(&row["metadata"], &domain);
    Some(DomainView {
        id,
        next_step: next_step(&status, &records, next_check_at.as_deref()),
        badge: b.into(),
        badge_label: label.into(),
        domain,
        next_check_at,
        last_checked_at: time(&row["dns_last_checked_at"]),
        verified_at: time(&row["verified_at"]),
        created_at: time(&row["created_at"]),
        updated_at: time(&row["updated_at"]),
        failure_reason: row["failure_reason"].as_str().map(scrub),
        notes,
        records,
        status,
    })
}

/// The row's pre-flight warnings and negative-cache waits, in plain words.
fn notes(metadata: &Value, zone: &str) -> Vec<String> {
    let mut out: Vec<String> = metadata["preflight_warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["message"].as_str().map(scrub))
        .collect();
    for p in metadata["dns_propagation"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        let host = relative_host(name, zone);
        let when = match p["expires_in_secs"].as_u64() {
            Some(s) if s >= 120 => format!("in about {} minutes", s.div_ceil(60)),
            Some(s) => format!("in about {s} seconds"),
            None => "soon".to_string(),
        };
        out.push(format!(
            "Your DNS host already serves the record at `{host}`; public DNS resolvers that looked before it \
             existed will see it {when} (they remember the earlier \"no such record\" until then)."
        ));
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: String,
    /// `registered`, `records_ready`, `preflight_checked`, `check_requested`, `dns_checked`,
    /// `provider_polled`, `set_up_again`, `verified`, `failed`, `removed`.
    pub kind: String,
    pub title: String,
    pub detail: Option<String>,
}

fn trigger_words(t: CheckTrigger) -> &'static str {
    match t {
        CheckTrigger::DnsConfigured => "after you said the records were added",
        CheckTrigger::RefreshStatus => "on request",
        CheckTrigger::Scheduled => "automatic",
    }
}

/// The checks and milestones of a domain, from its events (oldest first).
pub fn timeline(events: &[Event]) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    for e in events {
        let at = e
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let entry = |kind: &str, title: String, detail: Option<String>| TimelineEntry {
            at: at.clone(),
            kind: kind.into(),
            title,
            detail,
        };
        match &e.data {
            EventData::DomainRegistered { .. } => {
                out.push(entry("registered", "Domain added".into(), None))
            }
            EventData::DomainProvisioned { records, .. } => out.push(entry(
                "records_ready",
                "DNS records ready".into(),
                Some(format!(
                    "{} record{} to add",
                    records.len(),
                    if records.len() == 1 { "" } else { "s" }
                )),
            )),
            EventData::CheckRequested { .. } => out.push(entry(
                "check_requested",
                "Check requested".into(),
                Some("runs as soon as the records are ready".into()),
            )),
            EventData::DnsChecked {
                trigger, records, ..
            } => {
                let required: Vec<_> = records.iter().filter(|r| r.required).collect();
                let found = required
                    .iter()
                    .filter(|r| r.dns_status == email_domain_events::DnsStatus::Found)
                    .count();
                out.push(entry(
                    "dns_checked",
                    format!("DNS checked ({})", trigger_words(*trigger)),
                    Some(format!(
                        "{found} of {} required records found",
                        required.len()
                    )),
                ))
            }
            EventData::ProviderPolled {
                provider_status,
                verified,
                provider_failed,
                failed_records,
                ..
            } => {
                if *verified {
                    out.push(entry(
                        "verified",
                        "Verified".into(),
                        Some("the domain can send email".into()),
                    ))
                } else if *provider_failed {
                    out.push(entry(
                        "provider_polled",
                        "Verification not confirmed yet".into(),
                        Some(records_failed_words(failed_records)),
                    ))
                } else if *provider_status == ProviderStatus::TemporaryFailure {
                    out.push(entry(
                        "provider_polled",
                        "The email provider could not finish its check".into(),
                        Some("we ask it again in a few minutes".into()),
                    ))
                } else {
                    out.push(entry(
                        "provider_polled",
                        "Verification status checked".into(),
                        Some(format!("status: {}", scrub(provider_status.as_str()))),
                    ))
                }
            }
            EventData::ProviderDomainVanished { .. } => out.push(entry(
                "set_up_again",
                "Setting the domain up again".into(),
                Some(
                    "the email provider no longer had this domain, so it is being set up again; \
                     its DNS records change, so enter the new ones when they appear"
                        .into(),
                ),
            )),
            EventData::VerificationFailed { reason, .. } => out.push(entry(
                "failed",
                "Verification failed".into(),
                Some(scrub(reason)),
            )),
            EventData::ProvisioningFailed { reason } => out.push(entry(
                "failed",
                "Could not set up the domain".into(),
                Some(scrub(reason)),
            )),
            EventData::WindowReopened { .. } => out.push(entry(
                "check_requested",
                "New verification window".into(),
                None,
            )),
            EventData::DomainDeleted { .. } => {
                out.push(entry("removed", "Domain removed".into(), None))
            }
            EventData::DomainReleased { .. } => {
                out.push(entry("removed", "Domain released".into(), None))
            }
            EventData::ProviderCleanedUp {} => {}
            EventData::PreflightChecked { warnings } => out.push(entry(
                "preflight_checked",
                "Looked ahead for DNS problems".into(),
                Some(if warnings.is_empty() {
                    "nothing found that would get in the way".into()
                } else {
                    warnings
                        .iter()
                        .map(|w| scrub(&w.message))
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            )),
        }
    }
    out
}

/// What the provider failed. Record names are shown as they are (never through
/// [`scrub`]: a name such as `resend._domainkey` must reach the owner intact).
fn records_failed_words(failed: &[FailedRecord]) -> String {
    if failed.is_empty() {
        return "we check again once DNS is right".into();
    }
    let names: Vec<String> = failed.iter().map(ToString::to_string).collect();
    format!(
        "the email provider could not verify {}; we check again once DNS is right",
        names.join("; ")
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The records as CSV (one header line, one line per record).
pub fn csv(view: &DomainView) -> String {
    let mut out = String::from("type,host,name,value,priority,purpose,required,dns_status\r\n");
    for r in &view.records {
        let row = [
            r.record_type.clone(),
            r.host.clone(),
            r.name.clone(),
            r.value.clone(),
            r.priority.map(|p| p.to_string()).unwrap_or_default(),
            r.purpose.clone(),
            r.required.to_string(),
            r.dns_status.clone(),
        ];
        out.push_str(
            &row.iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push_str("\r\n");
    }
    out
}

fn fqdn(s: &str) -> String {
    format!("{}.", s.trim_end_matches('.'))
}

/// A TXT value as BIND character-strings: quoted, escaped, at most 255 bytes each.
pub fn txt_strings(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let mut end = (start + 255).min(bytes.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        parts.push(&value[start..end]);
        start = end;
    }
    if parts.is_empty() {
        parts.push("");
    }
    parts
        .iter()
        .map(|p| format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The records as a BIND zone-file fragment with absolute names.
pub fn zone_file(view: &DomainView, generated_at: DateTime<Utc>) -> String {
    let mut out = format!(
        "; DNS records for {} (email sending)\n; generated {}\n$ORIGIN {}\n$TTL 3600\n",
        view.domain,
        generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        fqdn(&view.domain)
    );
    for r in &view.records {
        let rdata = match r.record_type.as_str() {
            "TXT" => txt_strings(&r.value),
            "MX" => format!("{} {}", r.priority.unwrap_or(10), fqdn(&r.value)),
            "CNAME" | "NS" | "PTR" => fqdn(&r.value),
            _ => r.value.clone(),
        };
        let note = if r.required { "required" } else { "optional" };
        out.push_str(&format!(
            "; {} ({note})\n{}\t3600\tIN\t{}\t{}\n",
            r.purpose,
            fqdn(&r.name),
            r.record_type,
            rdata
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_relative_to_the_zone() {
        assert_eq!(relative_host("send.acme.com", "acme.com"), "send");
        assert_eq!(relative_host("acme.com.", "acme.com"), "@");
        assert_eq!(
            relative_host("x._domainkey.acme.com", "ACME.com"),
            "x._domainkey"
        );
        assert_eq!(relative_host("other.org", "acme.com"), "other.org");
    }

    #[test]
    fn scrub_replaces_the_provider_name_in_any_case() {
        assert_eq!(
            scrub("Resend said no; RESEND again"),
            "the email provider said no; the email provider again"
        );
    }

    fn event(data: EventData) -> Event {
        let id = Uuid::from_u128(1);
        Event {
            event_id: email_domain_events::EventId(id),
            tenant_id: email_domain_events::TenantId(id),
            domain_id: email_domain_events::DomainId(id),
            domain: "acme.test".into(),
            version: 5,
            occurred_at: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            causation_id: email_domain_events::CommandId(id),
            correlation_id: id,
            schema_version: 1,
            data,
        }
    }

    fn polled(status: &str, provider_failed: bool, failed: Vec<FailedRecord>) -> Event {
        event(EventData::ProviderPolled {
            provider_status: status.into(),
            verified: false,
            activates: false,
            provider_failed,
            next_check_at: None,
            reason: None,
            failed_records: failed,
        })
    }

    #[test]
    fn the_timeline_names_the_records_the_provider_failed_exactly_as_they_are() {
        let failed = vec![FailedRecord {
            record_type: "TXT".into(),
            name: "resend._domainkey.acme.test".into(),
        }];
        let entries = timeline(&[polled("partially_failed", true, failed)]);
        let detail = entries[0].detail.as_deref().unwrap();
        assert!(
            detail.contains("TXT record at resend._domainkey.acme.test"),
            "{detail}"
        );
        assert_eq!(entries[0].kind, "provider_polled");
    }

    #[test]
    fn the_timeline_tells_a_temporary_failure_and_a_vanished_domain_in_plain_words() {
        let entries = timeline(&[
            polled("temporary_failure", false, vec![]),
            event(EventData::ProviderDomainVanished {
                provider_domain_id: "pd-1".into(),
                region: None,
                reason: "gone".into(),
                deadline_at: DateTime::from_timestamp(1_767_830_400, 0).unwrap(),
            }),
        ]);
        assert_eq!(
            entries[0].title,
            "The email provider could not finish its check"
        );
        assert_eq!(entries[1].kind, "set_up_again");
        let detail = entries[1].detail.as_deref().unwrap();
        assert!(detail.contains("enter the new ones"), "{detail}");
        for e in &entries {
            let text = format!("{} {}", e.title, e.detail.as_deref().unwrap_or(""));
            assert!(!text.to_ascii_lowercase().contains("resend"), "{text}");
        }
    }

    #[test]
    fn long_txt_values_are_split_at_255() {
        let v = "p=".to_string() + &"A".repeat(400);
        let s = txt_strings(&v);
        assert_eq!(s.matches('"').count(), 4);
        assert_eq!(s.replace("\" \"", "").trim_matches('"'), v);
    }
}

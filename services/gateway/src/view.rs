//! What the page and the API show: a projection row as the domain owner reads it,
//! the timeline from the event log, and the CSV / zone-file downloads.
//!
//! The owner never sees the provider's name, and every name is shown exactly (the
//! owner must enter it): how each kind of text is kept so is in [`crate::prose`].

use crate::prose::{self, Keep};
use chrono::{DateTime, Utc};
use email_domain_events::event::{CheckTrigger, Event, EventData};
use email_domain_events::records::{Diagnosis, DnsRecord};
use email_domain_events::{FailedRecord, ProviderStatus};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// The Unicode form of a domain kept in ASCII (`xn--bcher-shop-9db.test` →
/// `bücher-shop.test`), as its owner typed and reads it; the name itself when it has
/// no other form (or none that decodes).
pub fn unicode_domain(ascii: &str) -> String {
    match idna::domain_to_unicode(ascii) {
        (unicode, Ok(())) => unicode,
        (_, Err(_)) => ascii.to_string(),
    }
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

/// A diagnosis as the owner reads it: the core's message as written (it never names
/// the provider, and the names in it are exact), with the record, the host to edit
/// and what was seen as fields of their own.
#[derive(Debug, Clone, Serialize)]
pub struct DiagnosisView {
    pub code: String,
    pub message: String,
    /// The full name of the record the message is about.
    pub record: String,
    /// The host name the message tells the owner to enter or edit at the DNS host.
    pub host: String,
    /// What the check saw there.
    pub observed: Vec<String>,
}

impl DiagnosisView {
    /// `d` of the record `r` shown at `host`. A diagnosis written before it carried
    /// its record, host and observations takes them from the record.
    fn of(d: Diagnosis, r: &DnsRecord, host: &str) -> Self {
        let or = |field: String, fallback: &str| {
            if field.is_empty() {
                fallback.to_string()
            } else {
                field
            }
        };
        DiagnosisView {
            code: serde_json::to_value(d.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            message: d.message,
            record: or(d.record, &r.name),
            host: or(d.host, host),
            observed: if d.observed.is_empty() {
                r.observed.clone()
            } else {
                d.observed
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    pub id: Uuid,
    /// The name in DNS (ASCII; `xn--…` for an internationalised domain).
    pub domain: String,
    /// The name as its owner reads it: Unicode for an internationalised domain
    /// (`bücher-shop.test`), else the same as `domain`.
    pub domain_unicode: String,
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
    let stored: Vec<DnsRecord> =
        serde_json::from_value(row["dns_records"].clone()).unwrap_or_default();
    // The failure reason quotes these names and values: they are kept exactly.
    let keep = Keep::new().domain(&domain).records(&domain, &stored);
    let records: Vec<RecordView> = stored
        .into_iter()
        .map(|r| record_view(r, &domain))
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
        domain_unicode: unicode_domain(&domain),
        domain,
        next_check_at,
        last_checked_at: time(&row["dns_last_checked_at"]),
        verified_at: time(&row["verified_at"]),
        created_at: time(&row["created_at"]),
        updated_at: time(&row["updated_at"]),
        failure_reason: row["failure_reason"]
            .as_str()
            .map(|r| prose::without_provider(r, &keep)),
        notes,
        records,
        status,
    })
}

/// One stored record as the owner reads it.
fn record_view(r: DnsRecord, zone: &str) -> RecordView {
    let dns_status = serde_json::to_value(r.dns_status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or("pending".into());
    let host = relative_host(&r.name, zone);
    let diagnosis = r.diagnosis.clone().map(|d| DiagnosisView::of(d, &r, &host));
    RecordView {
        host,
        dns_status_label: dns_status_label(&dns_status).into(),
        dns_status,
        purpose: r.purpose,
        record_type: r.record_type,
        name: r.name,
        value: r.value,
        priority: r.priority,
        required: r.required,
        observed: r.observed,
        diagnosis,
    }
}

/// The row's pre-flight warnings (the core's words, shown as written: see
/// [`crate::prose`]) and negative-cache waits, in plain words.
fn notes(metadata: &Value, zone: &str) -> Vec<String> {
    let mut out: Vec<String> = metadata["preflight_warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["message"].as_str().map(str::to_string))
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

/// Every name of a domain's history that a reason may quote: the domain and every
/// record any event carried.
fn history_names(events: &[Event]) -> Keep {
    let mut keep = Keep::new();
    for e in events {
        keep = keep.domain(&e.domain);
        let records = match &e.data {
            EventData::DomainProvisioned { records, .. }
            | EventData::DnsChecked { records, .. }
            | EventData::VerificationFailed { records, .. } => records.as_slice(),
            _ => &[],
        };
        keep = keep.records(&e.domain, records);
    }
    keep
}

/// The checks and milestones of a domain, from its events (oldest first).
pub fn timeline(events: &[Event]) -> Vec<TimelineEntry> {
    let keep = history_names(events);
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
                        Some(prose::provider_status_words(provider_status.as_str()).to_string()),
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
                Some(prose::without_provider(reason, &keep)),
            )),
            EventData::ProvisioningFailed { reason } => out.push(entry(
                "failed",
                "Could not set up the domain".into(),
                Some(prose::without_provider(reason, &keep)),
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
                        .map(|w| w.message.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            )),
        }
    }
    out
}

/// What the provider failed. Record names are shown as they are (never through a
/// text filter: a name such as `resend._domainkey` must reach the owner intact).
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

/// What a spreadsheet reads as the start of a formula (or of a control) in a cell.
const FORMULA_STARTS: &[char] = &['=', '+', '-', '@', '\t', '\r'];

/// A cell's text that a spreadsheet would run as a formula, made plain text by a
/// leading `'` (the spreadsheet shows the rest as written); other text as it is.
fn neutralised_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(FORMULA_STARTS) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// One CSV field (RFC 4180): neutralised, then quoted when it holds a separator.
fn csv_field(s: &str) -> String {
    let s = neutralised_cell(s);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
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

/// `\DDD`, the master-file escape of one byte (RFC 1035 §5.1).
fn byte_escape(out: &mut String, b: u8) {
    out.push_str(&format!("\\{b:03}"));
}

/// Text as one master-file field (RFC 1035 §5.1): every byte that is not printable
/// ASCII, or that the format reads as syntax (white space, `;` `(` `)` `"` `\`, and
/// `@` `$` at the start of a line), escaped as `\DDD`; so no value can end the line,
/// start a comment, a directive or another field.
fn zone_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'!'..=b'~' if !b";()\"\\@$".contains(&b) => out.push(b as char),
            _ => byte_escape(&mut out, b),
        }
    }
    out
}

/// A name as an absolute master-file name.
fn zone_name(s: &str) -> String {
    zone_field(&fqdn(s))
}

/// Text in a `;` comment: control characters (which would end the comment and start
/// a record) escaped as `\DDD`.
fn zone_comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            c.encode_utf8(&mut [0; 4])
                .bytes()
                .for_each(|b| byte_escape(&mut out, b));
        } else {
            out.push(c);
        }
    }
    out
}

/// One BIND character-string: quoted, `"` and `\` escaped with `\`, every byte that
/// is not printable ASCII as `\DDD`.
fn txt_string(part: &str) -> String {
    let mut out = String::from("\"");
    for &b in part.as_bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b' '..=b'~' => out.push(b as char),
            _ => byte_escape(&mut out, b),
        }
    }
    out.push('"');
    out
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
        .map(|p| txt_string(p))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A record's data in master-file form, every part escaped.
fn zone_rdata(r: &RecordView) -> String {
    match r.record_type.as_str() {
        "TXT" => txt_strings(&r.value),
        "MX" => format!("{} {}", r.priority.unwrap_or(10), zone_name(&r.value)),
        "CNAME" | "NS" | "PTR" => zone_name(&r.value),
        _ => r
            .value
            .split_ascii_whitespace()
            .map(zone_field)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The records as a BIND zone-file fragment with absolute names.
pub fn zone_file(view: &DomainView, generated_at: DateTime<Utc>) -> String {
    let mut out = format!(
        "; DNS records for {} (email sending)\n; generated {}\n$ORIGIN {}\n$TTL 3600\n",
        zone_comment(&view.domain),
        generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        zone_name(&view.domain)
    );
    for r in &view.records {
        let note = if r.required { "required" } else { "optional" };
        out.push_str(&format!(
            "; {} ({note})\n{}\t3600\tIN\t{}\t{}\n",
            zone_comment(&r.purpose),
            zone_name(&r.name),
            zone_field(&r.record_type),
            zone_rdata(r)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use email_domain_events::records::{
        DnsObservation, DnsQuestion, DnsStatus, LookupAnswer, ObservedRecord,
    };
    use email_domain_events::{CommandId, DomainId, EventId, TenantId};
    use serde_json::json;

    const DOMAIN: &str = "weresend.test";
    const DKIM: &str = "resend._domainkey.weresend.test";
    /// A DKIM value as long as the provider's: one unbroken token of 394 characters.
    fn dkim_value() -> String {
        format!(
            "p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA{}",
            "x".repeat(348)
        )
    }

    /// The DKIM record of `weresend.test`, judged by the core against a CNAME at its
    /// name where a TXT record is expected.
    fn dkim_behind_a_cname() -> DnsRecord {
        let expected = DnsRecord {
            purpose: "dkim".into(),
            record_type: "TXT".into(),
            name: DKIM.into(),
            value: dkim_value(),
            priority: None,
            required: true,
            dns_status: DnsStatus::Pending,
            observed: vec![],
            diagnosis: None,
        };
        let cname = ObservedRecord {
            name: DKIM.into(),
            record_type: "CNAME".into(),
            value: "dkim.mail-host.test".into(),
            txt_strings: vec![],
            priority: None,
            ttl: Some(300),
        };
        let obs = DnsObservation {
            answers: vec![(
                DnsQuestion {
                    name: DKIM.into(),
                    record_type: "TXT".into(),
                },
                LookupAnswer::Records {
                    records: vec![cname],
                },
            )],
        };
        let judged = email_domain_events::verdict::judge(DOMAIN, &[expected], &obs);
        judged.into_iter().next().unwrap()
    }

    fn row(records: &[DnsRecord], failure_reason: &str) -> Value {
        json!({
            "id": Uuid::nil(),
            "domain_name": DOMAIN,
            "status": "failed",
            "dns_records": records,
            "failure_reason": failure_reason,
            "metadata": {},
        })
    }

    /// Every `…_domainkey…` host name a text mentions.
    fn dkim_hosts(text: &str) -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .filter(|w| w.contains("_domainkey"))
            .map(|w| w.trim_end_matches('.').to_string())
            .collect()
    }

    /// `text` with every name the owner must see exactly taken out, lower case: what
    /// is left is prose.
    fn prose_of(text: &str, names: &[&str]) -> String {
        let mut names = names.to_vec();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        names
            .iter()
            .fold(text.to_string(), |t, n| t.replace(n, ""))
            .to_ascii_lowercase()
    }

    #[test]
    fn a_dkim_diagnosis_names_the_exact_host_behind_a_cname() {
        let v = domain_view(&row(&[dkim_behind_a_cname()], "")).unwrap();
        let r = &v.records[0];
        let d = r.diagnosis.as_ref().expect("a diagnosis");
        assert_eq!(d.code, "wrong_type");
        assert_eq!(r.host, "resend._domainkey");
        assert_eq!(d.host, r.host);
        assert_eq!(d.record, DKIM);
        assert_eq!(d.observed, vec!["CNAME dkim.mail-host.test".to_string()]);
        assert!(
            d.message.contains("`resend._domainkey`"),
            "the host to delete: {}",
            d.message
        );
        let hosts = dkim_hosts(&d.message);
        assert!(!hosts.is_empty(), "{}", d.message);
        for h in hosts {
            assert!(h == r.host || h == r.name, "{h} in: {}", d.message);
        }
        assert!(
            !prose_of(&d.message, &[&r.name, &r.host, &r.value]).contains("resend"),
            "{}",
            d.message
        );
    }

    #[test]
    fn a_failure_reason_keeps_a_domain_with_the_providers_letters_intact() {
        let reason = "The email provider refused the domain: Resend does not accept weresend.test \
                      (resend._domainkey.weresend.test is taken).";
        let v = domain_view(&row(&[dkim_behind_a_cname()], reason)).unwrap();
        let shown = v.failure_reason.expect("a reason");
        assert_eq!(
            shown,
            "The email provider refused the domain: the email provider does not accept weresend.test \
             (resend._domainkey.weresend.test is taken)."
        );
        assert!(
            !prose_of(&shown, &[DKIM, DOMAIN]).contains("resend"),
            "{shown}"
        );
    }

    #[test]
    fn a_failure_reason_quoting_a_diagnosis_keeps_its_hosts() {
        let dkim = dkim_behind_a_cname();
        let reason = email_domain_events::decide::failure_reason(
            std::slice::from_ref(&dkim),
            "The domain was not verified before the deadline.",
        );
        let v = domain_view(&row(&[dkim], &reason)).unwrap();
        let shown = v.failure_reason.expect("a reason");
        assert_eq!(shown, reason, "the core's words are shown as written");
        assert!(shown.contains("`resend._domainkey`"), "{shown}");
    }

    #[test]
    fn an_internationalised_domain_is_shown_in_unicode_beside_its_ascii_form() {
        let mut r = row(&[], "");
        r["domain_name"] = json!("xn--bcher-shop-9db.test");
        let v = domain_view(&r).unwrap();
        assert_eq!(v.domain, "xn--bcher-shop-9db.test");
        assert_eq!(v.domain_unicode, "bücher-shop.test");
        let plain = domain_view(&row(&[], "")).unwrap();
        assert_eq!(plain.domain_unicode, plain.domain);
    }

    fn event(data: EventData) -> Event {
        Event {
            event_id: EventId(Uuid::nil()),
            tenant_id: TenantId(Uuid::nil()),
            domain_id: DomainId(Uuid::nil()),
            domain: DOMAIN.into(),
            version: 1,
            occurred_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            causation_id: CommandId(Uuid::nil()),
            correlation_id: Uuid::nil(),
            schema_version: 1,
            data,
        }
    }

    #[test]
    fn the_timeline_keeps_names_and_never_shows_the_providers_words() {
        let entries = timeline(&[
            event(EventData::ProvisioningFailed {
                reason: "The email provider refused the domain: Resend blocked weresend.test."
                    .into(),
            }),
            event(EventData::ProviderPolled {
                provider_status: "resend_review".into(),
                verified: false,
                activates: false,
                provider_failed: false,
                next_check_at: None,
                reason: None,
                failed_records: Vec::new(),
            }),
        ]);
        let details: Vec<&str> = entries.iter().filter_map(|e| e.detail.as_deref()).collect();
        assert_eq!(
            details[0],
            "The email provider refused the domain: the email provider blocked weresend.test."
        );
        assert_eq!(details[1], "verification in progress");
    }

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

    fn record(purpose: &str, rtype: &str, name: &str, value: &str) -> DnsRecord {
        DnsRecord {
            purpose: purpose.into(),
            record_type: rtype.into(),
            name: name.into(),
            value: value.into(),
            priority: Some(10),
            required: true,
            dns_status: DnsStatus::Pending,
            observed: vec![],
            diagnosis: None,
        }
    }

    #[test]
    fn a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_plain_text() {
        for (cell, written) in [
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
            ),
            ("v=spf1 include:x -all", "v=spf1 include:x -all"),
            ("a,b", "\"a,b\""),
            ("", ""),
        ] {
            assert_eq!(csv_field(cell), written, "{cell:?}");
        }
        let hostile = record("=cmd|' /C calc'!A0", "TXT", "@evil.weresend.test", "-2+3");
        let csv = csv(&domain_view(&row(&[hostile], "")).unwrap());
        let line = csv.lines().nth(1).unwrap();
        assert_eq!(
            line,
            "TXT,'@evil,'@evil.weresend.test,'-2+3,10,'=cmd|' /C calc'!A0,true,pending"
        );
    }

    /// The master-file lines of `zone` that are not comments or directives.
    fn zone_records(zone: &str) -> Vec<&str> {
        zone.lines()
            .filter(|l| {
                !l.starts_with(';') && !l.starts_with("$ORIGIN ") && !l.starts_with("$TTL ")
            })
            .collect()
    }

    #[test]
    fn zone_file_fields_cannot_leave_their_field_or_line() {
        let records = [
            record(
                "dkim\n$INCLUDE /etc/passwd",
                "CNAME",
                "a.weresend.test\nevil 3600 IN A 1.2.3.4",
                "b (.weresend.test;x",
            ),
            record(
                "spf",
                "TXT",
                "send.weresend.test",
                "v=spf1 \"x\" \\ -all\n@ IN A 1.2.3.4 ünï",
            ),
            record(
                "mx",
                "MX",
                "send.weresend.test",
                "feedback smtp.test\r\n$TTL 1",
            ),
            record(
                "odd",
                "SRV",
                "$x.weresend.test",
                "10 5 5060 sip.test\n@ IN A 1.2.3.4",
            ),
        ];
        let zone = zone_file(&domain_view(&row(&records, "")).unwrap(), Utc::now());
        let lines = zone_records(&zone);
        assert_eq!(lines.len(), records.len(), "{zone}");
        for l in &lines {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(fields.len(), 5, "{l:?}");
            assert!(!fields[0].contains([' ', ';', '(', ')', '"']), "{l:?}");
            assert!(l.is_ascii(), "{l:?}");
        }
        assert_eq!(lines[0], "a.weresend.test\\010evil\\0323600\\032IN\\032A\\0321.2.3.4.\t3600\tIN\tCNAME\tb\\032\\040.weresend.test\\059x.");
        assert_eq!(
            lines[1],
            "send.weresend.test.\t3600\tIN\tTXT\t\"v=spf1 \\\"x\\\" \\\\ -all\\010@ IN A 1.2.3.4 \\195\\188n\\195\\175\""
        );
        assert_eq!(
            lines[2],
            "send.weresend.test.\t3600\tIN\tMX\t10 feedback\\032smtp.test\\013\\010\\036TTL\\0321."
        );
        assert_eq!(
            lines[3],
            "\\036x.weresend.test.\t3600\tIN\tSRV\t10 5 5060 sip.test \\064 IN A 1.2.3.4"
        );
        assert!(
            zone.contains("; dkim\\010$INCLUDE /etc/passwd (required)\n"),
            "{zone}"
        );
    }

    #[test]
    fn long_txt_values_are_split_at_255() {
        let v = "p=".to_string() + &"A".repeat(400);
        let s = txt_strings(&v);
        assert_eq!(s.matches('"').count(), 4);
        assert_eq!(s.replace("\" \"", "").trim_matches('"'), v);
    }
}

//! `domainctl dns-check` (docs/interface.md §5): check the records of a JSON file.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use email_domain_events::records::{DnsRecord, DnsStatus};
use serde::Deserialize;

use crate::{norm, DnsChecker, DnsConfig};

/// One record of the input file: `{type, name, value, priority?, purpose?}`.
#[derive(Debug, Clone, Deserialize)]
pub struct InputRecord {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub priority: Option<u16>,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub required: Option<bool>,
}

/// `v=spf1` TXT → spf, `_domainkey` TXT → dkim, `_dmarc` TXT → dmarc, MX →
/// return_path, CNAME → tracking; anything else → the type in lower case.
pub fn infer_purpose(record_type: &str, name: &str, value: &str) -> String {
    let t = record_type.to_ascii_uppercase();
    let name = norm(name);
    let v = value
        .trim()
        .trim_matches('"')
        .trim_start()
        .to_ascii_lowercase();
    match t.as_str() {
        "TXT" if v == "v=spf1" || v.starts_with("v=spf1 ") => "spf".into(),
        "TXT" if name.contains("._domainkey.") || name.starts_with("_domainkey.") => "dkim".into(),
        "TXT" if name.starts_with("_dmarc.") => "dmarc".into(),
        "MX" => "return_path".into(),
        "CNAME" => "tracking".into(),
        _ => t.to_ascii_lowercase(),
    }
}

fn to_record(domain: &str, r: InputRecord) -> DnsRecord {
    let mut name = norm(&r.name);
    // a bare host (`send`, `@`) is taken relative to the domain
    if name == "@" || name.is_empty() {
        name = domain.to_string();
    } else if name != domain && !name.ends_with(&format!(".{domain}")) && !name.contains('.') {
        name = format!("{name}.{domain}");
    }
    let purpose = r
        .purpose
        .unwrap_or_else(|| infer_purpose(&r.record_type, &name, &r.value));
    let required = r
        .required
        .unwrap_or(matches!(purpose.as_str(), "spf" | "dkim" | "return_path"));
    DnsRecord {
        purpose,
        record_type: r.record_type.to_ascii_uppercase(),
        name,
        value: r.value,
        priority: r.priority,
        required,
        dns_status: DnsStatus::Pending,
        observed: Vec::new(),
        diagnosis: None,
    }
}

fn status_word(s: DnsStatus) -> &'static str {
    match s {
        DnsStatus::Pending => "pending",
        DnsStatus::Found => "found",
        DnsStatus::Missing => "missing",
        DnsStatus::Mismatch => "mismatch",
        DnsStatus::LookupFailed => "lookup_failed",
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// docs/interface.md §5 `domainctl dns-check --domain D --records FILE [--nameserver IP:PORT] [--json]`:
/// the records with their verdicts, as a JSON array in the §3 record form
/// (`json`), or a table a person can read. `nameserver` overrides
/// `DNS_NAMESERVERS`. An error only when the check could not run.
pub async fn run_dns_check_cli(
    domain: &str,
    records_file: &Path,
    nameserver: Option<SocketAddr>,
    json: bool,
) -> anyhow::Result<String> {
    let domain = norm(domain);
    anyhow::ensure!(domain.contains('.'), "`{domain}` is not a domain name");
    let text = std::fs::read_to_string(records_file)
        .with_context(|| format!("cannot read the records file {}", records_file.display()))?;
    let input: Vec<InputRecord> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} must be a JSON array of {{\"type\", \"name\", \"value\", \"priority\"?, \"purpose\"?}}",
            records_file.display()
        )
    })?;
    let expected: Vec<DnsRecord> = input.into_iter().map(|r| to_record(&domain, r)).collect();
    let cfg = match nameserver {
        Some(ns) => DnsConfig::only(vec![ns]),
        None => DnsConfig::from_env()?,
    };
    let checker = DnsChecker::new(cfg)?;
    let report = checker.check_report(&domain, &expected).await;
    if json {
        return Ok(serde_json::to_string_pretty(&report.records)?);
    }
    let mut out = String::new();
    let found = report
        .records
        .iter()
        .filter(|r| r.dns_status == DnsStatus::Found)
        .count();
    out.push_str(&format!(
        "DNS check of {domain}: {found} of {} records found\n\n",
        report.records.len()
    ));
    out.push_str(&format!(
        "{:<14} {:<12} {:<6} {:<40} {}\n",
        "STATUS", "PURPOSE", "TYPE", "NAME", "VALUE"
    ));
    for r in &report.records {
        let value = match r.priority {
            Some(p) => format!("{p} {}", r.value),
            None => r.value.clone(),
        };
        out.push_str(&format!(
            "{:<14} {:<12} {:<6} {:<40} {}\n",
            status_word(r.dns_status),
            r.purpose,
            r.record_type,
            r.name,
            cut(&value, 60)
        ));
        for o in &r.observed {
            out.push_str(&format!("{:<14} seen: {}\n", "", cut(o, 100)));
        }
        if let Some(d) = &r.diagnosis {
            let code = serde_json::to_value(d.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!("{:<14} {code}: {}\n", "", d.message));
        }
    }
    for n in &report.negative_cache {
        out.push_str(&format!(
            "\nnote: {} {} is served by the domain's nameservers, but the system resolver still answers {}{}.\n",
            n.name,
            n.record_type,
            n.resolver_answer,
            n.expires_in_secs.map(|s| format!(" for up to {s} more seconds (negative cache)")).unwrap_or_default()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_is_inferred() {
        assert_eq!(
            infer_purpose("TXT", "send.acme.com", "\"v=spf1 include:x ~all\""),
            "spf"
        );
        assert_eq!(
            infer_purpose("txt", "resend._domainkey.acme.com", "p=abc"),
            "dkim"
        );
        assert_eq!(
            infer_purpose("TXT", "_dmarc.acme.com.", "v=DMARC1; p=none"),
            "dmarc"
        );
        assert_eq!(
            infer_purpose("MX", "send.acme.com", "feedback-smtp.x"),
            "return_path"
        );
        assert_eq!(infer_purpose("CNAME", "links.acme.com", "t.x"), "tracking");
        assert_eq!(
            infer_purpose("TXT", "acme.com", "google-site-verification=1"),
            "txt"
        );
    }

    #[test]
    fn names_are_normalised() {
        let r = to_record(
            "acme.com",
            InputRecord {
                record_type: "txt".into(),
                name: "SEND.Acme.com.".into(),
                value: "v=spf1 -all".into(),
                priority: None,
                purpose: None,
                required: None,
            },
        );
        assert_eq!(
            (r.name.as_str(), r.record_type.as_str(), r.required),
            ("send.acme.com", "TXT", true)
        );
        let r = to_record(
            "acme.com",
            InputRecord {
                record_type: "TXT".into(),
                name: "_dmarc".into(),
                value: "v=DMARC1; p=none".into(),
                priority: None,
                purpose: None,
                required: None,
            },
        );
        assert_eq!(
            (r.name.as_str(), r.purpose.as_str(), r.required),
            ("_dmarc.acme.com", "dmarc", false)
        );
    }

    #[test]
    fn nameservers_parse() {
        assert_eq!(
            crate::parse_nameserver(" 127.0.0.1:5354").unwrap().port(),
            5354
        );
        assert_eq!(crate::parse_nameserver("10.0.0.1").unwrap().port(), 53);
        assert_eq!(crate::parse_nameserver("[::1]:53").unwrap().port(), 53);
        assert!(crate::parse_nameserver("dns.example:53").is_err());
    }
}

//! What a check keeps of what a tenant's DNS served, and how it may be shown.
//!
//! A tenant controls its domain's nameservers, so an authoritative server of its
//! own can answer each question with the largest answer DNS allows (almost 64 KiB
//! of TXT strings, full of control characters). The verdict
//! ([`email_domain_events::verdict::judge`]) and the pre-flight read those exact
//! bytes: a record with a control character in it is judged on its real bytes.
//! What they produce to be *kept and shown* (observed values, the diagnosis
//! messages that quote them, pre-flight warnings) goes into the check's event and
//! onto owners' pages and operators' terminals. Before it leaves this adapter, every
//! such text passes [`shown`] here, once:
//! - control characters are escaped ([`escape_controls`]);
//! - an observed value keeps at most [`MAX_OBSERVED_VALUE_BYTES`], a record at most
//!   [`MAX_OBSERVED_VALUES`] observed values, a message at most
//!   [`MAX_MESSAGE_BYTES`]; what is cut is said (`… [N bytes in all]`,
//!   `… and N more not shown`).
//!
//! So a check's event stays far below a server's max payload whatever the DNS
//! serves, and nothing a tenant publishes is written raw to a page or a terminal.

use email_domain_events::preflight::Warning;
use email_domain_events::records::{Diagnosis, DnsRecord};

/// Observed values kept per record (and per diagnosis); the others are counted in a
/// last entry `… and N more not shown`.
pub const MAX_OBSERVED_VALUES: usize = 8;
/// Bytes kept of one observed value, escaped (a 4096-bit DKIM key record fits).
pub const MAX_OBSERVED_VALUE_BYTES: usize = 1024;
/// Bytes kept of a diagnosis message or a pre-flight warning, escaped.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Characters that move the cursor, rewrite a terminal or reorder text: the C0 and
/// C1 controls, DEL (all of `char::is_control`), the line and paragraph separators
/// and the bidirectional formatting characters.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// One character as it may be shown: itself, or `\u{1b}` for an unsafe one.
fn escaped(c: char) -> Option<String> {
    is_unsafe(c).then(|| format!("\\u{{{:x}}}", c as u32))
}

/// `s` with every control character (and bidi or line-separator formatting
/// character) written as `\u{..}`: safe on a terminal and a page. Everything else
/// is kept as it is, backslashes included. The one escaping function: the check's
/// kept texts and `domainctl`'s output both use it.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match escaped(c) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// `s` escaped ([`escape_controls`]) and, when that is longer than `max_bytes`, cut
/// at a character (never inside an escape) with a note of the original size.
pub fn shown(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    for c in s.chars() {
        let e = escaped(c);
        let len = e.as_ref().map_or(c.len_utf8(), String::len);
        if out.len() + len > max_bytes {
            out.push_str(&format!("… [{} bytes in all]", s.len()));
            return out;
        }
        match e {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    out
}

/// The observed values to keep: the first [`MAX_OBSERVED_VALUES`], each
/// [`shown`], and a note of how many more were seen.
pub fn kept_values(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = values
        .iter()
        .take(MAX_OBSERVED_VALUES)
        .map(|v| shown(v, MAX_OBSERVED_VALUE_BYTES))
        .collect();
    if values.len() > MAX_OBSERVED_VALUES {
        out.push(format!(
            "… and {} more not shown",
            values.len() - MAX_OBSERVED_VALUES
        ));
    }
    out
}

fn kept_diagnosis(d: Diagnosis) -> Diagnosis {
    Diagnosis {
        message: shown(&d.message, MAX_MESSAGE_BYTES),
        observed: kept_values(&d.observed),
        ..d
    }
}

/// A judged record as it is kept: its observed values and diagnosis bounded and
/// escaped (the rest is the expected record, not the DNS's).
pub fn kept_record(r: DnsRecord) -> DnsRecord {
    DnsRecord {
        observed: kept_values(&r.observed),
        diagnosis: r.diagnosis.map(kept_diagnosis),
        ..r
    }
}

/// A pre-flight warning as it is kept (its message may quote a served record).
pub fn kept_warning(w: Warning) -> Warning {
    Warning {
        message: shown(&w.message, MAX_MESSAGE_BYTES),
        ..w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use email_domain_events::records::{DiagnosisCode, DnsStatus};

    fn record(observed: Vec<String>, message: &str) -> DnsRecord {
        DnsRecord {
            purpose: "spf".into(),
            record_type: "TXT".into(),
            name: "send.acme.com".into(),
            value: "v=spf1 include:amazonses.com ~all".into(),
            priority: None,
            required: true,
            dns_status: DnsStatus::Mismatch,
            observed: observed.clone(),
            diagnosis: Some(Diagnosis {
                code: DiagnosisCode::ValueMismatch,
                message: message.into(),
                record: "send.acme.com".into(),
                host: "send".into(),
                observed,
            }),
        }
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        let raw = "v=spf1\u{1b}[2J +all\r\n\0\u{7f}\u{9b}\u{202e}é \\ `x`\t";
        assert_eq!(
            escape_controls(raw),
            "v=spf1\\u{1b}[2J +all\\u{d}\\u{a}\\u{0}\\u{7f}\\u{9b}\\u{202e}é \\ `x`\\u{9}"
        );
        assert_eq!(escape_controls("v=spf1 -all"), "v=spf1 -all");
    }

    #[test]
    fn a_long_value_is_cut_at_a_character_with_a_note_of_its_size() {
        let raw = format!("{}\u{1b}", "é".repeat(600));
        let s = shown(&raw, MAX_OBSERVED_VALUE_BYTES);
        assert!(s.starts_with(&"é".repeat(512)), "{s}");
        assert!(s.ends_with("… [1201 bytes in all]"), "{s}");
        assert!(s.len() <= MAX_OBSERVED_VALUE_BYTES + 32);
        // an escape is never cut in half
        let s = shown(&"\u{1b}".repeat(300), 20);
        assert!(s.starts_with("\\u{1b}\\u{1b}\\u{1b}…"), "{s}");
        // a value within the cap is only escaped
        assert_eq!(shown("p=abc\n", 100), "p=abc\\u{a}");
    }

    #[test]
    fn at_most_the_cap_of_observed_values_is_kept_and_the_rest_counted() {
        let values: Vec<String> = (0..5000).map(|i| format!("v{i}\u{7}")).collect();
        let kept = kept_values(&values);
        assert_eq!(kept.len(), MAX_OBSERVED_VALUES + 1);
        assert_eq!(kept[0], "v0\\u{7}");
        assert_eq!(
            kept.last().unwrap(),
            &format!("… and {} more not shown", 5000 - MAX_OBSERVED_VALUES)
        );
        let few = vec!["a".to_string(), "b".to_string()];
        assert_eq!(kept_values(&few), few);
    }

    #[test]
    fn a_kept_record_is_bounded_whatever_it_observed() {
        // given a record judged against 5000 values of 60 KB each
        let huge = "\u{1b}[31m".repeat(12_000);
        let r = record(vec![huge.clone(); 5000], &format!("It is `{huge}`."));
        // when it is kept
        let k = kept_record(r);
        // then it is small, escaped, and still says what it is
        let json = serde_json::to_string(&k).unwrap();
        let bound = 2 * (MAX_OBSERVED_VALUES + 1) * (MAX_OBSERVED_VALUE_BYTES + 64)
            + MAX_MESSAGE_BYTES
            + 1024;
        assert!(json.len() < bound, "{} bytes", json.len());
        assert!(!json.contains('\u{1b}'));
        assert_eq!(k.dns_status, DnsStatus::Mismatch);
        assert_eq!(
            k.diagnosis.as_ref().unwrap().code,
            DiagnosisCode::ValueMismatch
        );
        assert_eq!(k.diagnosis.unwrap().observed, k.observed);
    }

    #[test]
    fn a_warning_quoting_a_served_record_is_bounded_and_escaped() {
        let w = Warning {
            code: "existing_spf".into(),
            message: format!(
                "already has an SPF record (`v=spf1 {}`)",
                "\u{7}".repeat(70_000)
            ),
        };
        let k = kept_warning(w);
        assert_eq!(k.code, "existing_spf");
        assert!(k.message.len() <= MAX_MESSAGE_BYTES + 32);
        assert!(!k.message.contains('\u{7}'));
    }
}

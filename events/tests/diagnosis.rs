//! A diagnosis carries, besides its words, the record it is about, the host to edit
//! and what was seen, so that no reader has to find names in the message (the
//! gateway shows messages without any text filter over names).

use email_domain_events::records::{
    Diagnosis, DiagnosisCode, DnsObservation, DnsQuestion, DnsRecord, DnsStatus, LookupAnswer,
    ObservedRecord,
};
use email_domain_events::verdict::judge;

const DKIM: &str = "resend._domainkey.weresend.test";

fn dkim_expected(zone_name: &str) -> DnsRecord {
    DnsRecord {
        purpose: "dkim".into(),
        record_type: "TXT".into(),
        name: zone_name.into(),
        value: format!("p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A{}", "Q".repeat(360)),
        priority: None,
        required: true,
        dns_status: DnsStatus::Pending,
        observed: vec![],
        diagnosis: None,
    }
}

/// DNS answers the TXT question at `name` with only a CNAME to `target`.
fn cname_at(name: &str, target: &str) -> DnsObservation {
    DnsObservation {
        answers: vec![(
            DnsQuestion {
                name: name.into(),
                record_type: "TXT".into(),
            },
            LookupAnswer::Records {
                records: vec![ObservedRecord {
                    name: name.into(),
                    record_type: "CNAME".into(),
                    value: format!("{target}."),
                    txt_strings: vec![],
                    priority: None,
                    ttl: Some(300),
                }],
            },
        )],
    }
}

#[test]
fn a_cname_where_the_dkim_key_belongs_names_the_record_and_its_exact_host() {
    let out = judge(
        "weresend.test",
        &[dkim_expected(DKIM)],
        &cname_at(DKIM, "dkim.mail-host.test"),
    );
    let d = out[0].diagnosis.as_ref().expect("a diagnosis");
    assert_eq!(d.code, DiagnosisCode::WrongType);
    assert_eq!(d.record, DKIM);
    assert_eq!(d.host, "resend._domainkey");
    assert_eq!(d.observed, vec!["CNAME dkim.mail-host.test".to_string()]);
    assert_eq!(d.observed, out[0].observed);
    assert!(
        d.message
            .contains("Delete the CNAME record for `resend._domainkey`"),
        "{}",
        d.message
    );
}

#[test]
fn the_host_of_a_subdomains_record_is_relative_to_the_registrable_domain() {
    let name = "resend._domainkey.mail.acme.com";
    let out = judge(
        "mail.acme.com",
        &[dkim_expected(name)],
        &cname_at(name, "dkim.mail-host.test"),
    );
    let d = out[0].diagnosis.as_ref().expect("a diagnosis");
    assert_eq!(d.record, name);
    // as the message says it: the DNS host's zone is usually the registrable domain
    assert_eq!(d.host, "resend._domainkey.mail");
    assert!(
        d.message.contains(&format!("`{}`", d.host)),
        "{}",
        d.message
    );
}

#[test]
fn a_diagnosis_stored_before_it_carried_its_record_reads_and_writes_back_the_same() {
    let stored =
        r#"{"code":"value_mismatch","message":"`x._domainkey.acme.test` holds another key"}"#;
    let d: Diagnosis = serde_json::from_str(stored).unwrap();
    assert_eq!(d.code, DiagnosisCode::ValueMismatch);
    assert!(d.record.is_empty() && d.host.is_empty() && d.observed.is_empty());
    assert_eq!(serde_json::to_string(&d).unwrap(), stored);
}

#[test]
fn a_diagnosis_with_its_record_round_trips() {
    let out = judge(
        "weresend.test",
        &[dkim_expected(DKIM)],
        &cname_at(DKIM, "dkim.mail-host.test"),
    );
    let d = out[0].diagnosis.clone().unwrap();
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["record"], DKIM);
    assert_eq!(json["host"], "resend._domainkey");
    assert_eq!(serde_json::from_value::<Diagnosis>(json).unwrap(), d);
}

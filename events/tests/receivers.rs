//! DNS verdicts against what receiving mail servers do with the bytes published
//! (the rules of `acceptance.rs`): *given* the TXT records a name serves (each as its
//! character-strings), *when* the provider's record is checked, *then* it is `found`
//! only if receivers would use what is published, and otherwise a `mismatch` whose
//! message names the fault and the exact value to enter.

use email_domain_events::records::{
    DiagnosisCode, DnsObservation, DnsRecord, DnsStatus, LookupAnswer, ObservedRecord,
};
use email_domain_events::verdict::{judge, plan};

const ZONE: &str = "acme.com";
const SPF: &str = "v=spf1 include:amazonses.com ~all";
/// Valid base64 (264 characters).
const KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDLxKqJ7k9kVp0xL3Wn2QeX8vHb0Y4mTtR5sJ1aFhQ9gUo3EwXyZ7nC6iP2dLkAbCdEfGhIjKlMnOpQrStUvWxYz01234567AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQIDAQAB";

// ---- given ----------------------------------------------------------------------

fn expected(purpose: &str, name: &str, value: &str) -> DnsRecord {
    DnsRecord {
        purpose: purpose.into(),
        record_type: "TXT".into(),
        name: name.into(),
        value: value.into(),
        priority: None,
        required: true,
        dns_status: DnsStatus::Pending,
        observed: vec![],
        diagnosis: None,
    }
}

fn spf() -> DnsRecord {
    expected("spf", "send.acme.com", SPF)
}

fn dkim() -> DnsRecord {
    expected("dkim", "resend._domainkey.acme.com", &format!("p={KEY}"))
}

fn dmarc() -> DnsRecord {
    expected("dmarc", "_dmarc.acme.com", "v=DMARC1; p=none;")
}

// ---- when -----------------------------------------------------------------------

/// `record` checked while its name serves `served` (each TXT record as its strings)
/// and every other planned question is NXDOMAIN.
fn checked(record: DnsRecord, served: &[&[&str]]) -> DnsRecord {
    let records: Vec<ObservedRecord> = served
        .iter()
        .map(|strings| ObservedRecord {
            name: record.name.clone(),
            record_type: "TXT".into(),
            value: strings.concat(),
            txt_strings: strings.iter().map(|s| s.to_string()).collect(),
            priority: None,
            ttl: Some(300),
        })
        .collect();
    let questions = plan(ZONE, std::slice::from_ref(&record));
    let mut obs = DnsObservation::default();
    for q in questions {
        let answer = if q.name == record.name && q.record_type == "TXT" {
            LookupAnswer::Records {
                records: records.clone(),
            }
        } else {
            LookupAnswer::NxDomain {
                negative_ttl: Some(300),
            }
        };
        obs.answers.push((q, answer));
    }
    judge(ZONE, &[record], &obs).remove(0)
}

// ---- then -----------------------------------------------------------------------

fn then_found(r: &DnsRecord) {
    assert_eq!(r.dns_status, DnsStatus::Found, "{r:#?}");
    assert_eq!(r.diagnosis, None);
}

/// A mismatch with `code` whose message contains every one of `says`.
fn then_mismatch(r: &DnsRecord, code: DiagnosisCode, says: &[&str]) {
    assert_eq!(r.dns_status, DnsStatus::Mismatch, "{r:#?}");
    let d = r.diagnosis.as_ref().expect("a diagnosis");
    assert_eq!(d.code, code, "{}", d.message);
    for s in says {
        assert!(d.message.contains(s), "missing {s:?} in: {}", d.message);
    }
}

/// The value the message tells the owner to enter.
fn fix(r: &DnsRecord) -> String {
    let m = &r.diagnosis.as_ref().expect("a diagnosis").message;
    let (_, tail) = m.rsplit_once("Change it to `").expect("a value to enter");
    tail.trim_end_matches("`.").to_string()
}

// ---- TXT strings (RFC 1035, RFC 7208 §3.3, RFC 6376 §3.6.2.2) ----------------------

#[test]
fn quotes_the_dns_host_stored_as_text_are_a_mismatch_that_says_to_remove_them() {
    let r = checked(spf(), &[&["\"v=spf1 include:amazonses.com ~all\""]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["quote characters"]);
    assert_eq!(fix(&r), SPF);
    assert_eq!(r.observed, vec![format!("\"{SPF}\"")], "shown as served");

    let r = checked(dkim(), &[&[&format!("\"v=DKIM1; k=rsa; p={KEY}\"")]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["quote characters"]);
    assert_eq!(fix(&r), format!("v=DKIM1; k=rsa; p={KEY}"));

    let r = checked(dmarc(), &[&["\"v=DMARC1; p=none;\""]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["quote characters"]);
}

#[test]
fn a_value_typed_as_two_quoted_strings_into_one_field_is_a_mismatch() {
    let r = checked(spf(), &[&["\"v=spf1 include:amazon\" \"ses.com ~all\""]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["quote characters"]);
    assert_eq!(fix(&r), SPF);
}

#[test]
fn a_key_split_across_strings_or_with_a_space_inside_a_string_is_found() {
    let full = format!("v=DKIM1; k=rsa; p={KEY}");
    then_found(&checked(dkim(), &[&[&full[..255], &full[255..]]]));
    // folding white space inside the base64 is allowed
    let spaced = format!("v=DKIM1; p={} {}", &KEY[..120], &KEY[120..]);
    then_found(&checked(dkim(), &[&[&spaced]]));
}

#[test]
fn spf_split_across_strings_without_a_space_is_joined_as_receivers_join_it() {
    // receivers read `include:amazonses.com~all`: not the provider's include
    let r = checked(spf(), &[&["v=spf1 include:amazonses.com", "~all"]]);
    then_mismatch(
        &r,
        DiagnosisCode::ValueMismatch,
        &["join without a space", "`v=spf1 include:amazonses.com~all`"],
    );
    assert_eq!(fix(&r), SPF);
}

// ---- SPF (RFC 7208) ---------------------------------------------------------------

#[test]
fn spf_that_does_not_begin_with_v_spf1_and_a_space_is_a_mismatch() {
    for (published, says) in [
        (" v=spf1 include:amazonses.com ~all", "begins with a space"),
        ("v=spf1\tinclude:amazonses.com ~all", "followed by a tab"),
    ] {
        let r = checked(spf(), &[&[published]]);
        then_mismatch(&r, DiagnosisCode::ValueMismatch, &[says]);
        assert_eq!(fix(&r), SPF, "{published:?}");
    }
}

#[test]
fn spf_terms_separated_by_a_tab_or_a_non_breaking_space_are_a_mismatch() {
    for published in [
        "v=spf1 include:amazonses.com\t~all",
        "v=spf1 include:amazonses.com\u{a0}~all",
    ] {
        let r = checked(spf(), &[&[published]]);
        then_mismatch(&r, DiagnosisCode::ValueMismatch, &["plain spaces"]);
        assert_eq!(fix(&r), SPF, "{published:?}");
    }
}

#[test]
fn spf_with_the_include_but_also_a_broken_term_is_a_mismatch_not_found() {
    for (published, says) in [
        (
            "v=spf1 include:amazonses.com inclde:mailgun.org ~all",
            "`inclde` is not an SPF mechanism",
        ),
        (
            "v=spf1 ip4:192.0.2.300 include:amazonses.com ~all",
            "not an IPv4 address",
        ),
        (
            "v=spf1 include:amazonses.com include:mailgun.org, ~all",
            "`mailgun.org,` is not a domain name",
        ),
    ] {
        let r = checked(spf(), &[&[published]]);
        then_mismatch(&r, DiagnosisCode::ValueMismatch, &[says, "permerror"]);
    }
}

#[test]
fn spf_with_redirect_twice_is_a_mismatch() {
    let published = "v=spf1 include:amazonses.com redirect=a.acme.com redirect=b.acme.com";
    let r = checked(spf(), &[&[published]]);
    then_mismatch(
        &r,
        DiagnosisCode::ValueMismatch,
        &["`redirect=` more than once"],
    );
}

#[test]
fn spf_over_ten_lookups_is_a_mismatch_even_with_the_include() {
    let others: String = (0..10).map(|i| format!(" include:s{i}.acme.com")).collect();
    let published = format!("v=spf1 include:amazonses.com{others} ~all");
    let r = checked(spf(), &[&[&published]]);
    then_mismatch(
        &r,
        DiagnosisCode::ValueMismatch,
        &["11 terms", "limit of 10"],
    );
}

// ---- DKIM (RFC 6376) --------------------------------------------------------------

#[test]
fn a_dkim_key_whose_version_is_lower_case_is_a_mismatch() {
    let r = checked(dkim(), &[&[&format!("v=dkim1; k=rsa; p={KEY}")]]);
    then_mismatch(
        &r,
        DiagnosisCode::ValueMismatch,
        &["`v=dkim1`", "exactly `v=DKIM1`"],
    );
    assert_eq!(fix(&r), format!("v=DKIM1; k=rsa; p={KEY}"));
}

#[test]
fn a_dkim_key_whose_version_is_not_the_first_tag_is_a_mismatch() {
    let r = checked(dkim(), &[&[&format!("k=rsa; v=DKIM1; p={KEY}")]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["not its first tag"]);
    assert_eq!(fix(&r), format!("v=DKIM1; k=rsa; p={KEY}"));
}

#[test]
fn a_dkim_key_tagged_with_a_capital_p_is_a_mismatch_because_tag_names_are_case_sensitive() {
    let r = checked(dkim(), &[&[&format!("v=DKIM1; P={KEY}")]]);
    then_mismatch(
        &r,
        DiagnosisCode::ValueMismatch,
        &["`P=`", "case-sensitive"],
    );
    assert_eq!(fix(&r), format!("v=DKIM1; p={KEY}"));
}

#[test]
fn a_capital_tag_other_than_the_key_is_ignored_as_receivers_ignore_unknown_tags() {
    then_found(&checked(dkim(), &[&[&format!("K=RSA; p={KEY}")]]));
}

#[test]
fn a_dkim_key_type_in_capitals_is_a_mismatch() {
    let r = checked(dkim(), &[&[&format!("v=DKIM1; k=RSA; p={KEY}")]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["`k=RSA`"]);
    assert_eq!(fix(&r), format!("v=DKIM1; k=rsa; p={KEY}"));
}

#[test]
fn a_dkim_key_with_an_empty_tag_is_a_mismatch() {
    let r = checked(dkim(), &[&[&format!("v=DKIM1;; p={KEY}")]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["empty tag"]);
    assert_eq!(fix(&r), format!("v=DKIM1; p={KEY}"));
}

#[test]
fn a_dkim_key_with_a_tag_twice_is_a_mismatch() {
    let r = checked(dkim(), &[&[&format!("v=DKIM1; p={KEY}; p={KEY}")]]);
    assert_eq!(r.dns_status, DnsStatus::Mismatch, "{r:#?}");
    // (a repeated tag is also no tag list to the meaning comparison, which had
    // already made this a mismatch)
}

#[test]
fn a_non_breaking_space_pasted_into_the_key_is_a_mismatch() {
    let pasted = format!("v=DKIM1; p={}\u{a0}{}", &KEY[..120], &KEY[120..]);
    let r = checked(dkim(), &[&[&pasted]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["non-breaking space"]);
    assert_eq!(
        fix(&r),
        format!("v=DKIM1; p={} {}", &KEY[..120], &KEY[120..])
    );
}

#[test]
fn an_equivalent_second_dkim_key_record_is_a_duplicate() {
    let r = checked(
        dkim(),
        &[&[&format!("p={KEY}")], &[&format!("v=DKIM1; p={KEY}")]],
    );
    then_mismatch(
        &r,
        DiagnosisCode::DuplicateRecords,
        &["Delete the other record"],
    );
}

// ---- DMARC (RFC 7489) -------------------------------------------------------------

#[test]
fn a_dmarc_record_that_does_not_start_with_v_dmarc1_is_a_mismatch() {
    let r = checked(dmarc(), &[&["p=none; v=DMARC1"]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["not its first tag"]);
    assert_eq!(fix(&r), "v=DMARC1; p=none");
}

#[test]
fn a_dmarc_version_in_another_case_is_a_mismatch() {
    for published in ["v=dmarc1; p=none", "V=DMARC1; p=none"] {
        let r = checked(dmarc(), &[&[published]]);
        then_mismatch(&r, DiagnosisCode::ValueMismatch, &["written exactly"]);
        assert_eq!(fix(&r), "v=DMARC1; p=none");
    }
    // other tag names and keyword values may be in any case
    then_found(&checked(dmarc(), &[&["v=DMARC1; P=None"]]));
}

#[test]
fn dmarc_tags_separated_by_commas_are_a_mismatch_that_says_so() {
    let r = checked(dmarc(), &[&["v=DMARC1, p=none"]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["separated by `,`"]);
    assert_eq!(fix(&r), "v=DMARC1; p=none");
}

#[test]
fn a_dmarc_policy_receivers_do_not_know_is_a_mismatch() {
    for (published, says) in [
        ("v=DMARC1; p=monitor", "`p=monitor`"),
        ("v=DMARC1; p=none; sp=rejected", "`sp=rejected`"),
    ] {
        let r = checked(dmarc(), &[&[published]]);
        then_mismatch(&r, DiagnosisCode::ValueMismatch, &[says, "no DMARC policy"]);
        assert_eq!(
            fix(&r),
            "v=DMARC1; p=none;",
            "the expected value: {published}"
        );
    }
}

#[test]
fn a_dmarc_record_without_a_policy_is_a_mismatch_even_with_a_report_address() {
    // RFC 7489 §6.6.3 lets receivers treat it as p=none when rua is valid; we do not
    // count on that SHOULD
    let r = checked(dmarc(), &[&["v=DMARC1; rua=mailto:d@acme.com"]]);
    assert_eq!(r.dns_status, DnsStatus::Mismatch, "{r:#?}");
}

#[test]
fn dmarc_tag_values_outside_their_syntax_are_a_mismatch() {
    for published in [
        "v=DMARC1; p=none; pct=150",
        "v=DMARC1; p=none; adkim=strict",
    ] {
        let r = checked(dmarc(), &[&[published]]);
        then_mismatch(&r, DiagnosisCode::ValueMismatch, &["not a valid value"]);
    }
}

#[test]
fn a_stricter_dmarc_policy_published_out_of_order_keeps_its_policy_in_the_fix() {
    let r = checked(dmarc(), &[&["p=reject; rua=mailto:d@acme.com; v=DMARC1"]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["not its first tag"]);
    assert_eq!(fix(&r), "v=DMARC1; p=reject; rua=mailto:d@acme.com");
}

#[test]
fn two_dmarc_records_are_a_duplicate_even_when_both_are_good_enough() {
    let r = checked(dmarc(), &[&["v=DMARC1; p=none"], &["v=DMARC1; p=reject"]]);
    then_mismatch(
        &r,
        DiagnosisCode::DuplicateRecords,
        &["2 DMARC records", "no DMARC policy at all"],
    );
}

#[test]
fn a_second_record_that_only_some_receivers_take_for_dmarc_is_a_duplicate_too() {
    // the RFC has receivers discard `v=dmarc1; p=monitor`, but OpenDMARC takes the
    // first TXT record that mentions `v=DMARC`, and this one has no valid policy
    let r = checked(dmarc(), &[&["v=dmarc1; p=monitor"], &["v=DMARC1; p=none"]]);
    then_mismatch(
        &r,
        DiagnosisCode::DuplicateRecords,
        &["2 DMARC records", "keep `v=DMARC1; p=none`"],
    );
}

#[test]
fn another_txt_record_at_dmarc_that_is_no_dmarc_record_is_a_duplicate_as_before() {
    let r = checked(
        dmarc(),
        &[&["v=DMARC1; p=none"], &["google-site-verification=abc"]],
    );
    then_mismatch(
        &r,
        DiagnosisCode::DuplicateRecords,
        &["google-site-verification"],
    );
}

#[test]
fn a_dmarc_record_with_an_empty_tag_is_a_mismatch() {
    let r = checked(dmarc(), &[&["v=DMARC1;; p=none"]]);
    then_mismatch(&r, DiagnosisCode::ValueMismatch, &["empty tag"]);
    assert_eq!(fix(&r), "v=DMARC1; p=none");
}

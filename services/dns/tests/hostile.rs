//! The checker against a tenant's own DNS, which the tenant writes: a delegation
//! naming addresses inside our network, and an authoritative server answering
//! with the largest answers DNS allows.

use std::net::SocketAddr;
use std::time::Duration;

use dns_check::{kept, DnsChecker, DnsConfig};
use email_domain_events::records::{DnsRecord, DnsStatus};
use testdns::TestDns;

const SPF: &str = "v=spf1 include:amazonses.com ~all";

/// A "system resolver" on 127.0.0.1 that knows `acme.test` is delegated to
/// `ns1.acme.test` at `authority`, and an authoritative server there that serves
/// the SPF record. Returns (resolver, authority).
async fn delegated_to(authority: &str) -> (TestDns, TestDns) {
    let resolver = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    resolver.add_zone("acme.test", 60);
    resolver.add("acme.test", "NS", "ns1.acme.test", None, 300);
    resolver.add("ns1.acme.test", "A", authority, None, 300);
    let auth = TestDns::start(SocketAddr::new(authority.parse().unwrap(), 0))
        .await
        .unwrap();
    auth.add_zone("acme.test", 60);
    auth.add("send.acme.test", "TXT", SPF, None, 300);
    (resolver, auth)
}

fn system_cfg(resolver: &TestDns, port: u16) -> DnsConfig {
    DnsConfig {
        nameservers: None,
        system_resolvers: Some(vec![resolver.addr()]),
        authoritative: true,
        authoritative_port: port,
        timeout: Duration::from_millis(300),
        attempts: 1,
        ..DnsConfig::default()
    }
}

/// The one record the loopback tests look for.
fn spf_of_acme() -> [DnsRecord; 1] {
    [DnsRecord::required(
        "spf",
        "TXT",
        "send.acme.test",
        SPF,
        None,
    )]
}

#[tokio::test]
async fn a_delegation_to_a_loopback_address_is_not_asked() {
    let (resolver, auth) = delegated_to("127.0.0.2").await;
    let checker = DnsChecker::new(system_cfg(&resolver, auth.addr().port())).unwrap();
    let expected = spf_of_acme();

    let report = checker.check_report("acme.test", &expected).await;

    assert_eq!(auth.queries(), 0, "the loopback 'authority' was probed");
    assert!(report.authoritative_servers.is_empty(), "{report:?}");
    // the configured (system) resolver answers alone, and it has no such record
    assert_eq!(report.records[0].dns_status, DnsStatus::Missing);
    assert!(resolver.queries() > 0);
}

#[tokio::test]
async fn a_test_that_runs_its_authorities_on_loopback_may_still_ask_them() {
    let (resolver, auth) = delegated_to("127.0.0.2").await;
    let cfg = DnsConfig {
        non_global_authorities: true,
        ..system_cfg(&resolver, auth.addr().port())
    };
    let checker = DnsChecker::new(cfg).unwrap();
    let expected = spf_of_acme();

    let report = checker.check_report("acme.test", &expected).await;

    assert!(auth.queries() > 0);
    assert_eq!(report.authoritative_servers, vec![auth.addr()]);
    assert_eq!(report.records[0].dns_status, DnsStatus::Found, "{report:?}");
}

#[tokio::test]
async fn configured_nameservers_on_loopback_are_asked() {
    // DNS_NAMESERVERS is the operator's choice: loopback there is fine
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    dns.add_zone("acme.test", 60);
    dns.add("send.acme.test", "TXT", SPF, None, 300);
    let checker = DnsChecker::new(DnsConfig {
        timeout: Duration::from_millis(300),
        ..DnsConfig::only(vec![dns.addr()])
    })
    .unwrap();
    let expected = spf_of_acme();

    let report = checker.check_report("acme.test", &expected).await;

    assert_eq!(report.records[0].dns_status, DnsStatus::Found, "{report:?}");
}

// ---------------------------------------------------------------------------
// what a tenant's DNS can put into a check's event

/// The records a provider asks for, at `zone`.
fn expected(zone: &str) -> Vec<DnsRecord> {
    vec![
        DnsRecord::required("spf", "TXT", &format!("send.{zone}"), SPF, None),
        DnsRecord::required(
            "return_path",
            "MX",
            &format!("send.{zone}"),
            "feedback-smtp.us-east-1.amazonses.com",
            Some(10),
        ),
        DnsRecord::required(
            "dkim",
            "TXT",
            &format!("resend._domainkey.{zone}"),
            "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCA",
            None,
        ),
        DnsRecord::required(
            "dmarc",
            "TXT",
            &format!("_dmarc.{zone}"),
            "v=DMARC1; p=none",
            None,
        ),
        DnsRecord::required(
            "tracking",
            "CNAME",
            &format!("links.{zone}"),
            "track.provider.test",
            None,
        ),
    ]
}

/// Every text of `r` that came from the DNS (observed values, the diagnosis).
fn texts(r: &DnsRecord) -> Vec<&str> {
    let mut out: Vec<&str> = r.observed.iter().map(String::as_str).collect();
    if let Some(d) = &r.diagnosis {
        out.push(&d.message);
        out.extend(d.observed.iter().map(String::as_str));
    }
    out
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)
}

#[tokio::test]
async fn a_hostile_authority_serving_the_largest_answers_leaves_a_small_escaped_check() {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    dns.add_hostile_zone("evil.test");
    let checker = DnsChecker::new(DnsConfig {
        timeout: Duration::from_secs(3),
        ..DnsConfig::only(vec![dns.addr()])
    })
    .unwrap();
    // the hostile server really serves almost 64 KiB per question
    let raw = checker
        .observe(&[email_domain_events::records::DnsQuestion {
            name: "send.evil.test".into(),
            record_type: "TXT".into(),
        }])
        .await;
    let served = serde_json::to_string(&raw).unwrap().len();
    assert!(served > 60_000, "only {served} bytes served");

    let report = checker
        .check_report("evil.test", &expected("evil.test"))
        .await;

    let stored = serde_json::to_string(&report.records).unwrap();
    // a few KB per record, whatever the DNS serves: far below a server's max payload
    // (1 MiB by default), so the check's event is always stored
    let per_record = 2 * (kept::MAX_OBSERVED_VALUES + 1) * 2 * kept::MAX_OBSERVED_VALUE_BYTES
        + 2 * kept::MAX_MESSAGE_BYTES
        + 1024;
    assert!(
        stored.len() < report.records.len() * per_record,
        "{} bytes kept for {} records",
        stored.len(),
        report.records.len()
    );
    assert!(stored.len() < 256 * 1024, "{} bytes", stored.len());
    for r in &report.records {
        assert_ne!(r.dns_status, DnsStatus::Found, "{}", r.name);
        assert!(r.observed.len() <= kept::MAX_OBSERVED_VALUES + 1);
        for t in texts(r) {
            assert!(!t.chars().any(is_unsafe), "{}: {t:?}", r.name);
        }
    }
    // the TXT floods were seen in full, and the record says there was more
    let dkim = &report.records[2];
    assert_eq!(
        dkim.observed.len(),
        kept::MAX_OBSERVED_VALUES + 1,
        "{dkim:?}"
    );
    assert!(dkim.observed.last().unwrap().ends_with("more not shown"));
    assert!(
        dkim.observed[0].contains("bytes in all]"),
        "{}",
        dkim.observed[0]
    );
    assert!(
        dkim.observed[0].contains("\\u{1b}[2J"),
        "{}",
        dkim.observed[0]
    );
}

#[tokio::test]
async fn a_record_with_control_characters_is_judged_on_its_bytes_and_kept_escaped() {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    dns.add_zone("acme.test", 60);
    // the right SPF record with an escape sequence hidden in it: a mismatch
    let hidden = "v=spf1 include:amazonses.com\u{1b}[8m ~all";
    dns.add("send.acme.test", "TXT", hidden, None, 300);
    // a DKIM key folded with a tab (folding white space receivers accept): found,
    // because the real bytes are judged, not the escaped copy
    dns.add(
        "resend._domainkey.acme.test",
        "TXT",
        "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCA\t",
        None,
        300,
    );
    let checker = DnsChecker::new(DnsConfig {
        timeout: Duration::from_millis(500),
        ..DnsConfig::only(vec![dns.addr()])
    })
    .unwrap();
    let all = expected("acme.test");
    let wanted = [all[0].clone(), all[2].clone()];

    let report = checker.check_report("acme.test", &wanted).await;

    let spf = &report.records[0];
    assert_eq!(spf.dns_status, DnsStatus::Mismatch, "{spf:?}");
    assert_eq!(
        spf.observed,
        vec!["v=spf1 include:amazonses.com\\u{1b}[8m ~all".to_string()]
    );
    let message = &spf.diagnosis.as_ref().unwrap().message;
    assert!(message.contains("\\u{1b}[8m"), "{message}");
    assert!(!message.contains('\u{1b}'), "{message}");
    let dkim = &report.records[1];
    assert_eq!(dkim.dns_status, DnsStatus::Found, "{dkim:?}");
    assert_eq!(
        dkim.observed,
        vec!["p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCA\\u{9}".to_string()]
    );
}

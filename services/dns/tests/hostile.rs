//! The checker against a tenant's own DNS, which the tenant writes: a delegation
//! naming addresses inside our network, and an authoritative server answering
//! with the largest answers DNS allows.

use std::net::SocketAddr;
use std::time::Duration;

use dns_check::{DnsChecker, DnsConfig};
use email_domain_events::records::{DnsRecord, DnsStatus};
use testdns::TestDns;

const SPF: &str = "v=spf1 include:amazonses.com ~all";

fn rec(purpose: &str, t: &str, name: &str, value: &str, priority: Option<u16>) -> DnsRecord {
    DnsRecord {
        purpose: purpose.into(),
        record_type: t.into(),
        name: name.into(),
        value: value.into(),
        priority,
        required: true,
        dns_status: DnsStatus::Pending,
        observed: vec![],
        diagnosis: None,
    }
}

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

#[tokio::test]
async fn a_delegation_to_a_loopback_address_is_not_asked() {
    let (resolver, auth) = delegated_to("127.0.0.2").await;
    let checker = DnsChecker::new(system_cfg(&resolver, auth.addr().port())).unwrap();
    let expected = [rec("spf", "TXT", "send.acme.test", SPF, None)];

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
    let expected = [rec("spf", "TXT", "send.acme.test", SPF, None)];

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
    let expected = [rec("spf", "TXT", "send.acme.test", SPF, None)];

    let report = checker.check_report("acme.test", &expected).await;

    assert_eq!(report.records[0].dns_status, DnsStatus::Found, "{report:?}");
}

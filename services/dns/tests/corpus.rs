//! The DNS adapter against real DNS servers on loopback (TestDns): every
//! diagnosis code, the comparison rules, the failure modes, NXDOMAIN vs NODATA,
//! TCP fallback, CNAME chains, wildcards, concurrency and the authoritative path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dns_check::{run_dns_check_cli, DnsChecker, DnsConfig};
use email_domain_events::records::{
    DiagnosisCode, DnsQuestion, DnsRecord, DnsStatus, LookupAnswer, LookupError,
};
use testdns::{Fault, TestDns};

const SPF: &str = "v=spf1 include:amazonses.com ~all";
const MXHOST: &str = "feedback-smtp.us-east-1.amazonses.com";

fn key(len: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|i| alphabet[(i * 7 + i / 3) % 64] as char)
        .collect()
}

fn cfg(servers: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig {
        timeout: Duration::from_millis(300),
        attempts: 2,
        ..DnsConfig::only(servers)
    }
}

async fn server() -> TestDns {
    let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    dns.add_zone("acme.test", 300);
    dns
}

fn q(name: &str, t: &str) -> DnsQuestion {
    DnsQuestion {
        name: name.into(),
        record_type: t.into(),
    }
}

fn code(r: &DnsRecord) -> Option<DiagnosisCode> {
    r.diagnosis.as_ref().map(|d| d.code)
}

#[tokio::test]
async fn corpus_covers_every_code_and_rule() {
    let dns = server().await;
    let provider = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    provider.add_zone("provider.test", 60);
    let long_key = key(400);

    // found
    dns.add("send.acme.test", "TXT", SPF, None, 300);
    dns.add(
        "send.acme.test",
        "TXT",
        "google-site-verification=abc123",
        None,
        300,
    );
    dns.add("send.acme.test", "MX", MXHOST, Some(10), 300);
    dns.add(
        "resend._domainkey.acme.test",
        "TXT",
        &format!("v=DKIM1; k=rsa; p={long_key}"),
        None,
        300,
    );
    dns.add(
        "_dmarc.acme.test",
        "TXT",
        "v=DMARC1; rua=mailto:d@acme.test; P=None",
        None,
        300,
    );
    dns.add(
        "merged.acme.test",
        "TXT",
        "v=spf1 include:_spf.google.com INCLUDE:amazonses.com -all",
        None,
        300,
    );
    dns.add_txt_strings(
        "split.acme.test",
        &["v=spf1 include:amazon", "ses.com ~all"],
    );
    dns.add("*.wild.acme.test", "TXT", SPF, None, 300);
    dns.add(
        "k4._domainkey.acme.test",
        "CNAME",
        "k4.keys.acme.test",
        None,
        300,
    );
    dns.add(
        "k4.keys.acme.test",
        "TXT",
        &format!("p={long_key}"),
        None,
        300,
    );
    // a CNAME to a zone the first server does not serve: the adapter follows it
    dns.add(
        "k5._domainkey.acme.test",
        "CNAME",
        "k5.provider.test",
        None,
        300,
    );
    provider.add(
        "k5.provider.test",
        "TXT",
        &format!("p={long_key};"),
        None,
        300,
    );
    dns.add("t1.acme.test", "CNAME", "t1hop.acme.test", None, 300);
    dns.add("t1hop.acme.test", "CNAME", "track.provider.test", None, 300);
    // problems
    dns.add("s2.acme.test.acme.test", "TXT", SPF, None, 300);
    dns.add("acme.test", "TXT", &format!("p={}", key(100)), None, 300);
    dns.add("bounce.acme.test", "TXT", SPF, None, 300);
    dns.add(
        "bounce.acme.test",
        "TXT",
        "v=spf1 include:mailgun.org ~all",
        None,
        300,
    );
    dns.add(
        "k3._domainkey.acme.test",
        "TXT",
        &format!("p={}", key(92)),
        None,
        300,
    );
    dns.add("k3._domainkey.acme.test", "TXT", "p=OLDKEY", None, 300);
    // published so that receivers ignore them, though equal by meaning
    dns.add_txt_strings(
        "quoted.acme.test",
        &["\"v=spf1 include:amazon", "ses.com ~all\""],
    );
    dns.add(
        "_dmarc.lower.acme.test",
        "TXT",
        "v=dmarc1; p=none",
        None,
        300,
    );
    dns.add(
        "k6._domainkey.acme.test",
        "TXT",
        &format!("v=DKIM1; P={long_key}"),
        None,
        300,
    );
    dns.add("links.acme.test", "A", "104.16.1.1", None, 300);
    dns.add(
        "mail2.acme.test",
        "CNAME",
        "elsewhere.other.test",
        None,
        300,
    );
    dns.add("rp.acme.test", "MX", MXHOST, Some(20), 300);
    dns.add("sf.acme.test", "TXT", SPF, None, 300);
    dns.fail("sf.acme.test", Fault::ServFail);
    dns.fail("rf.acme.test", Fault::Refused);
    dns.fail("to.acme.test", Fault::Drop);

    let expected = vec![
        DnsRecord::required("spf", "TXT", "send.acme.test", SPF, None), // 0 found
        DnsRecord::required("return_path", "MX", "send.acme.test", MXHOST, Some(10)), // 1 found
        DnsRecord::required(
            "dkim",
            "TXT",
            "resend._domainkey.acme.test",
            &format!("p={long_key}"),
            None,
        ), // 2 found (split)
        DnsRecord::required(
            "dmarc",
            "TXT",
            "_dmarc.acme.test",
            "v=DMARC1; p=none;",
            None,
        ), // 3 found (tag order, tag name case)
        DnsRecord::required("spf", "TXT", "merged.acme.test", SPF, None), // 4 found (merged)
        DnsRecord::required("spf", "TXT", "split.acme.test", SPF, None), // 5 found (split strings)
        DnsRecord::required("spf", "TXT", "x.wild.acme.test", SPF, None), // 6 found (wildcard)
        DnsRecord::required(
            "dkim",
            "TXT",
            "k4._domainkey.acme.test",
            &format!("v=DKIM1; p={long_key}"),
            None,
        ), // 7 found via CNAME
        DnsRecord::required(
            "dkim",
            "TXT",
            "k5._domainkey.acme.test",
            &format!("p={long_key}"),
            None,
        ), // 8 found via followed CNAME
        DnsRecord::required(
            "tracking",
            "CNAME",
            "t1.acme.test",
            "track.provider.test",
            None,
        ), // 9 found (chain)
        DnsRecord::required("spf", "TXT", "s2.acme.test", SPF, None),   // 10 appended
        DnsRecord::required(
            "dkim",
            "TXT",
            "k2._domainkey.acme.test",
            &format!("p={}", key(100)),
            None,
        ), // 11 wrong_name (apex)
        DnsRecord::required("spf", "TXT", "bounce.acme.test", SPF, None), // 12 multiple spf
        DnsRecord::required(
            "dkim",
            "TXT",
            "k3._domainkey.acme.test",
            &format!("p={}", key(92)),
            None,
        ), // 13 duplicate
        DnsRecord::required(
            "tracking",
            "CNAME",
            "links.acme.test",
            "track.provider.test",
            None,
        ), // 14 proxied
        DnsRecord::required("spf", "TXT", "mail2.acme.test", SPF, None), // 15 wrong_type
        DnsRecord::required("return_path", "MX", "rp.acme.test", MXHOST, Some(10)), // 16 value_mismatch
        DnsRecord::required("spf", "TXT", "miss.acme.test", SPF, None),             // 17 missing
        DnsRecord::required("spf", "TXT", "sf.acme.test", SPF, None),               // 18 servfail
        DnsRecord::required("spf", "TXT", "rf.acme.test", SPF, None),               // 19 refused
        DnsRecord::required("spf", "TXT", "to.acme.test", SPF, None),               // 20 timeout
        DnsRecord::required("spf", "TXT", "quoted.acme.test", SPF, None), // 21 quotes served as text
        DnsRecord::required(
            "dmarc",
            "TXT",
            "_dmarc.lower.acme.test",
            "v=DMARC1; p=none;",
            None,
        ), // 22 DMARC version in lower case
        DnsRecord::required(
            "dkim",
            "TXT",
            "k6._domainkey.acme.test",
            &format!("p={long_key}"),
            None,
        ), // 23 DKIM key tagged `P=`
    ];
    let checker = DnsChecker::new(cfg(vec![dns.addr(), provider.addr()])).unwrap();
    let out = checker.check("ACME.test.", &expected).await;
    assert_eq!(out.len(), expected.len());
    let show = |i: usize| format!("#{i} {:?}", out[i]);
    for (i, r) in out.iter().enumerate().take(10) {
        assert_eq!(r.dns_status, DnsStatus::Found, "{}", show(i));
        assert_eq!(r.diagnosis, None, "{}", show(i));
    }
    assert_eq!(
        out[0].observed.len(),
        2,
        "both TXT at the name are shown: {}",
        show(0)
    );
    assert_eq!(out[1].observed, vec![format!("10 {MXHOST}")]);
    assert_eq!(
        out[9].observed,
        vec!["t1hop.acme.test", "track.provider.test"]
    );
    let want = [
        (10, DiagnosisCode::AppendedDomain, DnsStatus::Missing),
        (11, DiagnosisCode::WrongName, DnsStatus::Missing),
        (12, DiagnosisCode::MultipleSpfRecords, DnsStatus::Mismatch),
        (13, DiagnosisCode::DuplicateRecords, DnsStatus::Mismatch),
        (14, DiagnosisCode::ProxiedOrFlattened, DnsStatus::Mismatch),
        (15, DiagnosisCode::WrongType, DnsStatus::Mismatch),
        (16, DiagnosisCode::ValueMismatch, DnsStatus::Mismatch),
        (18, DiagnosisCode::LookupFailed, DnsStatus::LookupFailed),
        (19, DiagnosisCode::LookupFailed, DnsStatus::LookupFailed),
        (20, DiagnosisCode::LookupFailed, DnsStatus::LookupFailed),
        (21, DiagnosisCode::ValueMismatch, DnsStatus::Mismatch),
        (22, DiagnosisCode::ValueMismatch, DnsStatus::Mismatch),
        (23, DiagnosisCode::ValueMismatch, DnsStatus::Mismatch),
    ];
    for (i, c, s) in want {
        assert_eq!(code(&out[i]), Some(c), "{}", show(i));
        assert_eq!(out[i].dns_status, s, "{}", show(i));
    }
    assert_eq!(out[17].dns_status, DnsStatus::Missing);
    assert_eq!(out[17].diagnosis, None);
    let msg = &out[10].diagnosis.as_ref().unwrap().message;
    assert!(
        msg.contains("Enter `s2` as the host name, not `s2.acme.test`"),
        "{msg}"
    );
    assert!(out[18]
        .diagnosis
        .as_ref()
        .unwrap()
        .message
        .contains("SERVFAIL"));
    assert!(out[19]
        .diagnosis
        .as_ref()
        .unwrap()
        .message
        .contains("refused"));
    // (#20: the first server drops the query, the second refuses it as outside its
    // zones: the error code is the more telling failure)
    for (i, says) in [
        (21, "quote characters"),
        (22, "exactly `v=DMARC1`"),
        (23, "`P=`"),
    ] {
        let msg = &out[i].diagnosis.as_ref().unwrap().message;
        assert!(msg.contains(says), "{}: {msg}", show(i));
    }
    let alone = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    let out = alone.check("acme.test", &expected[20..21]).await;
    assert_eq!(out[0].dns_status, DnsStatus::LookupFailed);
    assert!(
        out[0]
            .diagnosis
            .as_ref()
            .unwrap()
            .message
            .contains("did not answer in time"),
        "{:?}",
        out[0]
    );
}

#[tokio::test]
async fn nxdomain_nodata_and_failures_are_told_apart() {
    let dns = server().await;
    dns.add("send.acme.test", "TXT", SPF, None, 300);
    dns.add("k1._domainkey.acme.test", "TXT", "p=abc", None, 300);
    dns.fail("sf.acme.test", Fault::ServFail);
    dns.fail("rf.acme.test", Fault::Refused);
    dns.fail("to.acme.test", Fault::Drop);
    let checker = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    let qs = [
        q("nothing.acme.test", "TXT"),
        q("send.acme.test", "MX"),
        q("_domainkey.acme.test", "TXT"),
        q("sf.acme.test", "TXT"),
        q("rf.acme.test", "TXT"),
        q("to.acme.test", "TXT"),
        q("outside.example", "TXT"),
    ];
    let t0 = Instant::now();
    let obs = checker.observe(&qs).await;
    let took = t0.elapsed();
    assert_eq!(
        obs.answer("nothing.acme.test", "TXT"),
        Some(&LookupAnswer::NxDomain {
            negative_ttl: Some(300)
        })
    );
    assert_eq!(
        obs.answer("send.acme.test", "MX"),
        Some(&LookupAnswer::NoData {
            negative_ttl: Some(300)
        })
    );
    // an empty non-terminal exists: NODATA, not NXDOMAIN
    assert_eq!(
        obs.answer("_domainkey.acme.test", "TXT"),
        Some(&LookupAnswer::NoData {
            negative_ttl: Some(300)
        })
    );
    let err = |n: &str| match obs.answer(n, "TXT") {
        Some(LookupAnswer::Failed { error, .. }) => *error,
        other => panic!("{n}: {other:?}"),
    };
    assert_eq!(err("sf.acme.test"), LookupError::ServFail);
    assert_eq!(err("rf.acme.test"), LookupError::Refused);
    assert_eq!(err("to.acme.test"), LookupError::Timeout);
    assert_eq!(err("outside.example"), LookupError::Refused);
    // 2 attempts of 300 ms, concurrently with the rest
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(took >= Duration::from_millis(600), "{took:?}");

    dns.heal("sf.acme.test");
    let obs = checker.observe(&[q("sf.acme.test", "TXT")]).await;
    assert!(matches!(
        obs.answer("sf.acme.test", "TXT"),
        Some(LookupAnswer::NxDomain { .. })
    ));
}

#[tokio::test]
async fn long_dkim_is_served_split_and_compared_whole() {
    let dns = server().await;
    let k = key(700);
    dns.add(
        "s1._domainkey.acme.test",
        "TXT",
        &format!("v=DKIM1; p={k}"),
        None,
        300,
    );
    let checker = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    let obs = checker
        .observe(&[q("s1._domainkey.acme.test", "TXT")])
        .await;
    let Some(LookupAnswer::Records { records }) = obs.answer("s1._domainkey.acme.test", "TXT")
    else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].txt_strings.len(), 3);
    assert!(records[0].txt_strings.iter().all(|s| s.len() <= 255));
    assert_eq!(records[0].value, format!("v=DKIM1; p={k}"));
    let out = checker
        .check(
            "acme.test",
            &[DnsRecord::required(
                "dkim",
                "TXT",
                "s1._domainkey.acme.test",
                &format!("p={k}"),
                None,
            )],
        )
        .await;
    assert_eq!(out[0].dns_status, DnsStatus::Found);
    // truncated at 255 by the DNS host
    dns.clear();
    dns.add(
        "s1._domainkey.acme.test",
        "TXT",
        &format!("v=DKIM1; p={k}")[..255],
        None,
        300,
    );
    let out = checker
        .check(
            "acme.test",
            &[DnsRecord::required(
                "dkim",
                "TXT",
                "s1._domainkey.acme.test",
                &format!("p={k}"),
                None,
            )],
        )
        .await;
    assert_eq!(code(&out[0]), Some(DiagnosisCode::ValueMismatch));
    assert!(out[0]
        .diagnosis
        .as_ref()
        .unwrap()
        .message
        .contains("cut off"));
}

#[tokio::test]
async fn an_answer_too_large_for_udp_is_fetched_over_tcp() {
    let dns = server().await;
    for i in 0..8 {
        dns.add(
            "big.acme.test",
            "TXT",
            &format!("token-{i}={}", key(250)),
            None,
            300,
        );
    }
    let checker = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    let before = dns.queries();
    let obs = checker.observe(&[q("big.acme.test", "TXT")]).await;
    let Some(LookupAnswer::Records { records }) = obs.answer("big.acme.test", "TXT") else {
        panic!("{obs:?}")
    };
    assert_eq!(records.len(), 8);
    assert_eq!(
        dns.queries() - before,
        2,
        "one UDP query answered with TC, one TCP query"
    );
}

#[tokio::test]
async fn cname_chains_are_shown_and_followed() {
    let dns = server().await;
    dns.add("a.acme.test", "CNAME", "b.acme.test", None, 300);
    dns.add("b.acme.test", "CNAME", "c.acme.test", None, 300);
    dns.add("c.acme.test", "TXT", SPF, None, 300);
    dns.add("dangling.acme.test", "CNAME", "gone.acme.test", None, 300);
    let checker = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    let obs = checker
        .observe(&[q("a.acme.test", "TXT"), q("dangling.acme.test", "TXT")])
        .await;
    let Some(LookupAnswer::Records { records }) = obs.answer("a.acme.test", "TXT") else {
        panic!()
    };
    let kinds: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.name.clone(), r.record_type.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("a.acme.test".into(), "CNAME".into()),
            ("b.acme.test".into(), "CNAME".into()),
            ("c.acme.test".into(), "TXT".into())
        ]
    );
    // NXDOMAIN at the end of a chain still shows the chain
    let Some(LookupAnswer::Records { records }) = obs.answer("dangling.acme.test", "TXT") else {
        panic!()
    };
    assert_eq!(records.len(), 1);
    let out = checker
        .check(
            "acme.test",
            &[
                DnsRecord::required("spf", "TXT", "a.acme.test", SPF, None),
                DnsRecord::required("spf", "TXT", "dangling.acme.test", SPF, None),
            ],
        )
        .await;
    assert_eq!(out[0].dns_status, DnsStatus::Found);
    assert_eq!(out[0].observed[0], "CNAME b.acme.test");
    assert_eq!(code(&out[1]), Some(DiagnosisCode::WrongType));
}

#[tokio::test]
async fn wildcards_answer_but_not_under_an_empty_non_terminal() {
    let dns = server().await;
    dns.add("*.acme.test", "TXT", "v=DMARC1; p=none", None, 300);
    dns.add("other._domainkey.acme.test", "TXT", "p=x", None, 300);
    dns.add("*.acme.test", "TXT", &format!("p={}", key(80)), None, 300);
    let checker = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    // the wildcard answers for _dmarc.acme.test: the name's own record
    let out = checker
        .check(
            "acme.test",
            &[
                DnsRecord::required("dmarc", "TXT", "_dmarc.acme.test", "v=DMARC1; p=none", None),
                DnsRecord::required(
                    "dkim",
                    "TXT",
                    "s1._domainkey.acme.test",
                    &format!("p={}", key(80)),
                    None,
                ),
            ],
        )
        .await;
    // the wildcard answers with two TXT records; at a _dmarc name every TXT is of
    // the DMARC kind, so the second one is a conflicting duplicate
    assert_eq!(
        code(&out[0]),
        Some(DiagnosisCode::DuplicateRecords),
        "{:?}",
        out[0]
    );
    // _domainkey.acme.test exists (other._domainkey), so *.acme.test does not
    // cover s1._domainkey.acme.test: the key sits at the wildcard, a wrong name
    assert_eq!(
        code(&out[1]),
        Some(DiagnosisCode::WrongName),
        "{:?}",
        out[1]
    );
    assert_eq!(out[1].dns_status, DnsStatus::Missing);
}

#[tokio::test]
async fn four_records_are_checked_concurrently() {
    let dns = server().await;
    dns.add("send.acme.test", "TXT", SPF, None, 300);
    dns.add("send.acme.test", "MX", MXHOST, Some(10), 300);
    dns.add(
        "resend._domainkey.acme.test",
        "TXT",
        &format!("p={}", key(300)),
        None,
        300,
    );
    dns.add("_dmarc.acme.test", "TXT", "v=DMARC1; p=none", None, 300);
    let delay = Duration::from_millis(400);
    dns.set_delay(Some(delay));
    let checker = DnsChecker::new(DnsConfig {
        timeout: Duration::from_secs(2),
        ..cfg(vec![dns.addr()])
    })
    .unwrap();
    let expected = [
        DnsRecord::required("spf", "TXT", "send.acme.test", SPF, None),
        DnsRecord::required("return_path", "MX", "send.acme.test", MXHOST, Some(10)),
        DnsRecord::required(
            "dkim",
            "TXT",
            "resend._domainkey.acme.test",
            &format!("p={}", key(300)),
            None,
        ),
        DnsRecord::required(
            "dmarc",
            "TXT",
            "_dmarc.acme.test",
            "v=DMARC1; p=none;",
            None,
        ),
    ];
    let before = dns.queries();
    let t0 = Instant::now();
    let out = checker.check("acme.test", &expected).await;
    let took = t0.elapsed();
    let asked = dns.queries() - before;
    assert!(
        out.iter().all(|r| r.dns_status == DnsStatus::Found),
        "{out:?}"
    );
    // every answer takes 400 ms: one after the other, the 4 records alone would
    // take 1.6 s (and the whole plan asks many more questions)
    assert!(asked >= 10, "{asked} questions");
    assert!(took < delay * 3, "{took:?} for {asked} questions");
}

#[tokio::test]
async fn the_authority_decides_and_the_resolvers_negative_cache_is_reported() {
    // the "system resolver": knows where the zone's nameservers are, and still
    // has the old state of the zone (NXDOMAIN, negative TTL 900)
    let resolver = TestDns::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    resolver.add_zone("acme.test", 900);
    resolver.add("acme.test", "NS", "ns1.acme.test", None, 300);
    resolver.add("acme.test", "NS", "ns2.acme.test", None, 300);
    resolver.add("ns1.acme.test", "A", "127.0.0.2", None, 300);
    resolver.add("ns2.acme.test", "A", "127.0.0.3", None, 300);
    // the authoritative servers on 127.0.0.2 and 127.0.0.3, one port
    let auth1 = TestDns::start("127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    let port = auth1.addr().port();
    let auth2 = match TestDns::start(SocketAddr::new("127.0.0.3".parse().unwrap(), port)).await {
        Ok(a) => a,
        Err(e) => panic!("127.0.0.3:{port}: {e}"),
    };
    for a in [&auth1, &auth2] {
        a.add_zone("acme.test", 900);
        a.add("send.acme.test", "TXT", SPF, None, 300);
    }
    auth1.fail("send.acme.test", Fault::Drop); // the first authority is down for it
    let cfg = DnsConfig {
        nameservers: None,
        system_resolvers: Some(vec![resolver.addr()]),
        authoritative: true,
        authoritative_port: port,
        timeout: Duration::from_millis(300),
        attempts: 1,
        // the authorities run on loopback
        non_global_authorities: true,
    };
    let checker = DnsChecker::new(cfg).unwrap();
    let expected = [
        DnsRecord::required("spf", "TXT", "send.acme.test", SPF, None),
        DnsRecord::required("dmarc", "TXT", "_dmarc.acme.test", "v=DMARC1; p=none", None),
    ];
    let report = checker.check_report("acme.test", &expected).await;
    assert_eq!(report.records[0].dns_status, DnsStatus::Found, "{report:?}");
    assert_eq!(report.records[1].dns_status, DnsStatus::Missing);
    assert_eq!(report.authoritative_servers.len(), 2);
    assert_eq!(report.negative_cache.len(), 1, "{report:?}");
    assert_eq!(report.negative_cache[0].name, "send.acme.test");
    assert_eq!(report.negative_cache[0].resolver_answer, "nx_domain");
    assert_eq!(report.negative_cache[0].expires_in_secs, Some(900));
    assert!(auth2.queries() > 0);

    // no authority answers: the system resolver's answer is used
    auth2.fail("send.acme.test", Fault::ServFail);
    resolver.add("send.acme.test", "TXT", SPF, None, 300);
    let report = checker.check_report("acme.test", &expected[..1]).await;
    assert_eq!(report.records[0].dns_status, DnsStatus::Found, "{report:?}");
    assert!(report.negative_cache.is_empty());

    // without NS records for the zone: the resolver alone
    resolver.remove("acme.test", Some("NS"));
    let report = checker.check_report("acme.test", &expected[..1]).await;
    assert!(report.authoritative_servers.is_empty());
    assert_eq!(report.records[0].dns_status, DnsStatus::Found);
}

#[tokio::test]
async fn dns_check_cli_prints_json_and_a_table() {
    let dns = server().await;
    dns.add("send.acme.test", "TXT", SPF, None, 300);
    dns.add("send.acme.test.acme.test", "MX", MXHOST, Some(10), 300);
    let dir = std::env::temp_dir().join(format!("dns-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("records.json");
    std::fs::write(
        &file,
        format!(
            r#"[{{"type":"TXT","name":"send.acme.test","value":"{SPF}"}},
               {{"type":"MX","name":"send.acme.test","value":"{MXHOST}","priority":10}},
               {{"type":"TXT","name":"_dmarc.acme.test","value":"v=DMARC1; p=none;","purpose":"dmarc"}}]"#
        ),
    )
    .unwrap();
    let out = run_dns_check_cli("ACME.test.", &file, Some(dns.addr()), true)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["purpose"], "spf");
    assert_eq!(arr[0]["dns_status"], "found");
    assert_eq!(arr[0]["required"], true);
    assert_eq!(arr[1]["purpose"], "return_path");
    assert_eq!(arr[1]["dns_status"], "missing");
    assert_eq!(arr[1]["diagnosis"]["code"], "appended_domain");
    assert_eq!(arr[2]["purpose"], "dmarc");
    assert_eq!(arr[2]["required"], false);
    for k in ["type", "name", "value", "priority", "observed"] {
        assert!(arr[0].get(k).is_some(), "{k}");
    }
    let table = run_dns_check_cli("acme.test", &file, Some(dns.addr()), false)
        .await
        .unwrap();
    assert!(table.contains("1 of 3 records found"), "{table}");
    assert!(table.contains("appended_domain"), "{table}");
    assert!(
        run_dns_check_cli("acme.test", &dir.join("nope.json"), Some(dns.addr()), true)
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that REFUSES a question is not asked it again in the next round (its
/// policy will not change in a millisecond); one that SERVFAILs is.
#[tokio::test]
async fn a_refusing_server_is_asked_once_a_failing_one_again() {
    let dns = server().await;
    dns.fail("rf.acme.test", Fault::Refused);
    dns.fail("sf.acme.test", Fault::ServFail);
    let checker = DnsChecker::new(cfg(vec![dns.addr()])).unwrap();
    assert_eq!(checker.config().attempts, 2);
    for (name, error, asked) in [
        ("rf.acme.test", LookupError::Refused, 1),
        ("outside.example", LookupError::Refused, 1),
        ("sf.acme.test", LookupError::ServFail, 2),
    ] {
        let before = dns.queries();
        let obs = checker.observe(&[q(name, "TXT")]).await;
        match obs.answer(name, "TXT") {
            Some(LookupAnswer::Failed { error: e, .. }) => assert_eq!(*e, error, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(dns.queries() - before, asked, "{name}");
    }
}

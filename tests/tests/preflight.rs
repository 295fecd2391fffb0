//! Pre-flight after registration: what will bite the owner later is in the row's
//! metadata, without delaying the outcome.

use email_domain_events::outcome::Verdict;
use system_tests::Stack;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_cname_and_an_apex_spf_over_the_lookup_limit_are_warned_about() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    stack.dns.add_zone("pre.test", 60);
    stack
        .dns
        .add("send.pre.test", "CNAME", "elsewhere.pre.test", None, 60);
    stack
        .dns
        .add("elsewhere.pre.test", "A", "192.0.2.1", None, 60);
    stack.dns.add(
        "pre.test",
        "TXT",
        "v=spf1 include:a.pre.test include:b.pre.test mx a ptr exists:x.pre.test ~all",
        None,
        60,
    );
    stack.dns.add(
        "a.pre.test",
        "TXT",
        "v=spf1 a mx include:c.pre.test ~all",
        None,
        60,
    );
    stack
        .dns
        .add("b.pre.test", "TXT", "v=spf1 mx ~all", None, 60);
    stack
        .dns
        .add("c.pre.test", "TXT", "v=spf1 a ~all", None, 60);
    let started = std::time::Instant::now();
    let out = stack.send("register_domain", tenant, "pre.test").await;
    assert_eq!(out.outcome, Verdict::Accepted);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the outcome does not wait for the pre-flight"
    );
    let row = stack
        .wait_row(tenant, "pre.test", "pre-flight warnings", |r| {
            r["metadata"]["preflight_warnings"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
        })
        .await;
    let warnings = row["metadata"]["preflight_warnings"].as_array().unwrap();
    let codes: Vec<&str> = warnings
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"blocking_cname"), "{codes:?}");
    assert!(codes.contains(&"spf_lookup_limit"), "{codes:?}");
    let spf = warnings
        .iter()
        .find(|w| w["code"] == "spf_lookup_limit")
        .unwrap();
    // apex: 2 includes + mx + a + ptr + exists = 6; a.pre.test: a mx include = 3, c: a = 1; b: mx = 1 → 11,
    // plus the provider's include (1) = 12.
    assert!(
        spf["message"].as_str().unwrap().contains("11 DNS lookups"),
        "{spf}"
    );

    // A clean domain gets the pre-flight too, with no warnings.
    stack.dns.add_zone("clean.test", 60);
    stack.dns.add("clean.test", "NS", "ns.clean.test", None, 60);
    assert_eq!(
        stack
            .send("register_domain", tenant, "clean.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack
        .wait_status(tenant, "clean.test", "awaiting_dns")
        .await;
    let ran = loop {
        let events = stack.events().await;
        if let Some(e) = events
            .iter()
            .find(|e| e.domain == "clean.test" && e.data.type_name() == "preflight_checked")
        {
            break e.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    match ran.data {
        email_domain_events::EventData::PreflightChecked { warnings } => {
            assert!(warnings.is_empty(), "{warnings:?}")
        }
        _ => unreachable!(),
    }
    stack.shutdown().await;
}

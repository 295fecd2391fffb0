//! Failures that trying again cannot change end with a reason instead of a retry
//! loop that never stops (`runtime::retry` decides which those are).

use email_domain_events::outcome::Verdict;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use system_tests::{NatsOptions, Stack, StackOptions};
use uuid::Uuid;

/// Every dead letter stored so far.
async fn dead_letters(stack: &Stack) -> Vec<Value> {
    let stream = stack
        .js
        .get_stream("EMAIL_DOMAIN_DEAD_LETTERS")
        .await
        .unwrap();
    let mut letters = Vec::new();
    let mut seq = 1;
    while let Ok(m) = stream
        .direct_get_next_for_subject("email_domains.dead_letters.>", Some(seq))
        .await
    {
        letters.push(serde_json::from_slice(&m.payload).unwrap());
        seq = m.sequence + 1;
    }
    letters
}

/// Waits (with a deadline) until every command was acknowledged: the work-queue
/// stream is empty. A command retried forever never is.
async fn wait_commands_done(stack: &Stack) {
    let mut commands = stack.js.get_stream("EMAIL_DOMAIN_COMMANDS").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = commands.info().await.unwrap().state.messages;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} commands still held after 30 s (retried forever?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `domain`, waits until it awaits DNS and its pre-flight is done, then
/// serves `records` TXT records of `strings` character-strings of 250 bytes (a
/// terminal escape in each) at its DKIM and DMARC names. Returns the tenant.
async fn a_domain_whose_dns_serves_huge_txt(
    stack: &Stack,
    domain: &str,
    records: usize,
    strings: usize,
) -> Uuid {
    let tenant = Uuid::new_v4();
    let out = stack.send("register_domain", tenant, domain).await;
    assert_eq!(out.outcome, Verdict::Accepted, "{out:?}");
    let row = stack.wait_status(tenant, domain, "awaiting_dns").await;
    // The pre-flight (which reads DNS too) is done before the records appear.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stack
        .events()
        .await
        .iter()
        .any(|e| e.domain == domain && e.data.type_name() == "preflight_checked")
    {
        assert!(Instant::now() < deadline, "no pre-flight within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_commands_done(stack).await;

    stack.dns.add_zone(domain, 60);
    let big = format!("\u{1b}[2J{}", "v".repeat(243));
    for purpose in ["dkim", "dmarc"] {
        let name = row["dns_records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["purpose"] == purpose)
            .and_then(|r| r["name"].as_str())
            .unwrap_or_else(|| panic!("a {purpose} record"))
            .to_string();
        for i in 0..records {
            let first = format!("{i:03}{big}");
            let mut value = vec![first.as_str()];
            value.extend(std::iter::repeat_n(big.as_str(), strings - 1));
            stack.dns.add_txt_strings(&name, &value);
        }
    }
    tenant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_that_saw_100_kb_of_txt_records_is_stored_with_its_observed_values_capped() {
    // 64 KiB: every command, outcome and ordinary event fits. A DNS check that saw
    // 100 KB of TXT records did not, before what a check keeps was capped
    // (dns_check::kept): now it is stored, bounded and escaped.
    let stack = Stack::start_with(StackOptions {
        nats: NatsOptions {
            max_payload: Some(64 * 1024),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let domain = "huge-txt.test";
    let tenant = a_domain_whose_dns_serves_huge_txt(&stack, domain, 200, 1).await;

    let out = stack.send("dns_configured", tenant, domain).await;
    assert_eq!(out.outcome, Verdict::Accepted, "{out:?}");
    wait_commands_done(&stack).await;

    let events = stack.events().await;
    let checked = events
        .iter()
        .rev()
        .find(|e| e.domain == domain && e.data.type_name() == "dns_checked")
        .expect("a dns_checked event");
    let email_domain_events::event::EventData::DnsChecked { records, .. } = &checked.data else {
        unreachable!()
    };
    for purpose in ["dkim", "dmarc"] {
        let r = records.iter().find(|r| r.purpose == purpose).unwrap();
        assert_eq!(
            r.observed.len(),
            dns_check::kept::MAX_OBSERVED_VALUES + 1,
            "{r:?}"
        );
        assert_eq!(
            r.observed.last().unwrap(),
            &format!(
                "… and {} more not shown",
                200 - dns_check::kept::MAX_OBSERVED_VALUES
            )
        );
        assert!(r.observed[0].contains("\\u{1b}[2J"), "{}", r.observed[0]);
        let message = &r.diagnosis.as_ref().expect("a diagnosis").message;
        assert!(message.len() <= dns_check::kept::MAX_MESSAGE_BYTES + 32);
        assert!(!message.contains('\u{1b}'));
    }
    assert!(dead_letters(&stack)
        .await
        .iter()
        .all(|l| l["reason"] != "unprocessable"));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_whose_event_the_server_can_never_take_is_answered_and_dead_lettered_once_not_retried(
) {
    // 16 KiB: every command, outcome and ordinary event fits; a DNS check that saw
    // TXT records of 1 KB does not, even with what it keeps capped (per record 8
    // values of 1 KB, twice, and a message of 4 KB).
    let stack = Stack::start_with(StackOptions {
        nats: NatsOptions {
            max_payload: Some(16 * 1024),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let domain = "huge-txt.test";
    let tenant = a_domain_whose_dns_serves_huge_txt(&stack, domain, 50, 4).await;

    let id = Uuid::new_v4();
    let body = json!({"command_id": id, "tenant_id": tenant, "domain": domain});
    let out = stack.send_body("dns_configured", &body).await;
    assert_eq!(out.outcome, Verdict::Rejected, "{out:?}");
    let reason = out.reason.expect("a reason");
    assert_eq!(reason.code, "invalid_command");
    assert!(
        reason.message.contains("could not be handled"),
        "{}",
        reason.message
    );
    wait_commands_done(&stack).await;

    let letters: Vec<Value> = dead_letters(&stack)
        .await
        .into_iter()
        .filter(|l| l["reason"] == "unprocessable")
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l["subject"], "email_domains.commands.dns_configured");
    assert_eq!(l["body_truncated"], false);
    assert!(
        l["error"].as_str().unwrap().contains("cannot be stored"),
        "{}",
        l["error"]
    );
    assert!(
        runtime::ops::render().contains(r#"email_domains_given_up_total{operation="command"} 1"#),
        "the give-up is counted"
    );
    // The domain is untouched and still takes commands.
    let row = stack.wait_status(tenant, domain, "awaiting_dns").await;
    assert_eq!(row["status"], "awaiting_dns");
    stack.shutdown().await;
}

//! Command handling through the contract: idempotence, ordering, ownership across
//! tenants, validation, dead letters.

use email_domain_events::outcome::Verdict;
use email_domain_events::EventData;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

fn code(o: &email_domain_events::outcome::Outcome) -> &str {
    o.reason.as_ref().map(|r| r.code.as_str()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_command_id_three_times_with_different_msg_ids_has_one_effect_and_the_same_outcome(
) {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let id = Uuid::new_v4();
    let body = json!({"command_id": id, "tenant_id": tenant, "domain": "once.test"});
    let mut sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{id}"))
        .await
        .unwrap();
    for _ in 0..3 {
        // Distinct Nats-Msg-Id headers: JetStream's dedup cannot hide a missing check.
        stack
            .publish("register_domain", &body, Some(&Uuid::new_v4().to_string()))
            .await;
    }
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("outcome")
            .unwrap();
        outcomes.push(m.payload.to_vec());
    }
    assert!(
        outcomes.windows(2).all(|w| w[0] == w[1]),
        "the same outcome each time"
    );
    let first: email_domain_events::outcome::Outcome =
        serde_json::from_slice(&outcomes[0]).unwrap();
    assert_eq!(first.outcome, Verdict::Accepted);
    stack.wait_status(tenant, "once.test", "awaiting_dns").await;
    let events = stack.events().await;
    let registered = events
        .iter()
        .filter(|e| matches!(e.data, EventData::DomainRegistered { .. }))
        .count();
    assert_eq!(registered, 1, "one effect");
    assert_eq!(stack.domains(tenant).await.len(), 1);

    // Much later (after the dedup window a publisher cannot rely on), still no second effect.
    let dns_id = Uuid::new_v4();
    let dns_body = json!({"command_id": dns_id, "tenant_id": tenant, "domain": "once.test"});
    let a = stack.send_body("dns_configured", &dns_body).await;
    // A repeat with the same Nats-Msg-Id inside JetStream's window is dropped by JetStream
    // itself; a publisher that repeats later (or with another header) gets the same outcome.
    let mut sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{dns_id}"))
        .await
        .unwrap();
    stack
        .publish("dns_configured", &dns_body, Some("a-later-retry"))
        .await;
    let b = stack.next_outcome(&mut sub, &dns_id.to_string()).await;
    assert_eq!(a, b);
    let checks = stack
        .events()
        .await
        .iter()
        .filter(|e| e.causation_id.0 == dns_id)
        .count();
    assert_eq!(checks, 1);
    stack.shutdown().await;
}

/// Waits for the first dead letter of `reason`.
async fn dead_letter(stack: &Stack, reason: &str) -> serde_json::Value {
    let stream = stack
        .js
        .get_stream("EMAIL_DOMAIN_DEAD_LETTERS")
        .await
        .unwrap();
    let subject = format!("email_domains.dead_letters.{reason}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(m) = stream.direct_get_next_for_subject(&subject, None).await {
            return serde_json::from_slice(&m.payload).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter {reason} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_id_another_tenant_used_first_is_dead_lettered_and_never_gets_that_tenants_outcome(
) {
    let stack = Stack::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let id = Uuid::new_v4();
    let first = stack
        .send_body(
            "register_domain",
            &json!({"command_id": id, "tenant_id": a, "domain": "first.test"}),
        )
        .await;
    assert_eq!(first.outcome, Verdict::Accepted);

    let mut sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{id}"))
        .await
        .unwrap();
    stack.client.flush().await.unwrap();
    stack
        .publish(
            "register_domain",
            &json!({"command_id": id, "tenant_id": b, "domain": "second.test"}),
            Some(&Uuid::new_v4().to_string()),
        )
        .await;
    let letter = dead_letter(&stack, "command_id_taken").await;
    assert!(
        letter["error"].as_str().unwrap().contains("another tenant"),
        "{letter}"
    );
    stack.settled().await;
    stack.client.flush().await.unwrap();
    let leaked = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(
        leaked.is_err(),
        "no outcome is published for B: {:?}",
        leaked.map(|m| m.map(|m| String::from_utf8_lossy(&m.payload).to_string()))
    );
    let kept = stack.stored_outcome(&id.to_string()).await.unwrap();
    assert_eq!(
        kept["tenant_id"],
        a.to_string(),
        "A's outcome stays the id's"
    );
    assert_eq!(kept["domain"], "first.test");
    assert!(
        stack.domains(b).await.is_empty(),
        "B's command had no effect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_for_one_domain_keep_their_order_with_two_handler_instances() {
    let stack = Stack::start_with(StackOptions {
        handlers: 2,
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    let mut subs = Vec::new();
    for i in 0..20 {
        let domain = format!("order{i}.test");
        for t in ["register_domain", "dns_configured", "refresh_status"] {
            let id = Uuid::new_v4();
            subs.push((
                t,
                stack
                    .client
                    .subscribe(format!("email_domains.outcomes.{id}"))
                    .await
                    .unwrap(),
                id,
            ));
            stack
                .publish(
                    t,
                    &json!({"command_id": id, "tenant_id": tenant, "domain": domain}),
                    None,
                )
                .await;
        }
    }
    for (t, mut sub, id) in subs {
        let o = stack.next_outcome(&mut sub, &id.to_string()).await;
        assert_eq!(o.outcome, Verdict::Accepted, "{t} was {o:?}");
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_held_by_one_tenant_is_refused_to_another_until_it_fails_and_is_released() {
    let stack = Stack::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let first = stack.send("register_domain", a, "shared.test").await;
    assert_eq!(first.outcome, Verdict::Accepted);
    let again = stack.send("register_domain", a, "Shared.TEST.").await;
    assert_eq!(code(&again), "already_registered");
    assert_eq!(again.domain_id, first.domain_id, "the tenant's own id");
    let taken = stack.send("register_domain", b, "shared.test").await;
    assert_eq!(code(&taken), "domain_taken");
    assert_eq!(taken.domain_id, None, "never another tenant's id");
    for t in ["dns_configured", "refresh_status", "delete_domain"] {
        let o = stack.send(t, b, "shared.test").await;
        assert_eq!(code(&o), "domain_not_found", "{t} by another tenant");
        assert_eq!(o.domain_id, None);
    }
    // Tenant A's registration fails (an operator fails it); B may then take the name.
    let body = json!({"command_id": Uuid::new_v4(), "tenant_id": a, "domain": "shared.test", "reason": "test"});
    assert_eq!(
        stack.send_body("fail_domain", &body).await.outcome,
        Verdict::Accepted
    );
    stack.wait_status(a, "shared.test", "failed").await;
    let taken = stack.send("register_domain", b, "shared.test").await;
    assert_eq!(taken.outcome, Verdict::Accepted, "{taken:?}");
    assert_ne!(taken.domain_id, first.domain_id);
    let released = stack.wait_status(a, "shared.test", "deactivated").await;
    assert_eq!(released["metadata"]["deactivation_reason"], "released");
    stack.wait_status(b, "shared.test", "awaiting_dns").await;
    // A deleted name is free again for its old owner, as a new registration.
    let gone = stack.send("delete_domain", b, "shared.test").await;
    assert_eq!(gone.outcome, Verdict::Accepted);
    let back = stack.send("register_domain", a, "shared.test").await;
    assert_eq!(back.outcome, Verdict::Accepted);
    assert_ne!(
        back.domain_id, first.domain_id,
        "a new registration, a new id"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_names_are_rejected_with_the_contract_codes() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let cases = [
        ("", "invalid_domain"),
        ("acme..com", "invalid_domain"),
        ("exa mple.com", "invalid_domain"),
        ("-bad.com", "invalid_domain"),
        (&format!("{}.com", "a".repeat(64)), "invalid_domain"),
        (
            &(vec!["abcdefghij"; 25].join(".") + ".com"),
            "invalid_domain",
        ),
        ("10.0.0.1", "invalid_domain"),
        ("[::1]", "invalid_domain"),
        ("localhost", "invalid_domain"),
        ("co.uk", "invalid_domain"),
        ("github.io", "invalid_domain"),
        ("_dmarc.acme.com", "invalid_domain"),
        ("acme.invalid", "invalid_domain"),
        ("a.localhost", "invalid_domain"),
        ("printer.local", "invalid_domain"),
        ("platform.example.com", "reserved_domain"),
        ("mail.platform.example.com", "reserved_domain"),
    ];
    for (name, expected) in cases.iter() {
        let o = stack.send("register_domain", tenant, name).await;
        assert_eq!(o.outcome, Verdict::Rejected, "{name:?}");
        assert_eq!(code(&o), *expected, "{name:?}: {o:?}");
        assert!(!o.reason.as_ref().unwrap().message.is_empty());
    }
    let idn = stack.send("register_domain", tenant, "Bücher.test.").await;
    assert_eq!(idn.outcome, Verdict::Accepted);
    let row = stack
        .wait_status(tenant, "xn--bcher-kva.test", "awaiting_dns")
        .await;
    assert_eq!(row["domain_name"], "xn--bcher-kva.test");
    assert!(
        stack
            .events()
            .await
            .iter()
            .all(|e| e.domain == "xn--bcher-kva.test"),
        "no event for any rejected command"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreadable_messages_are_dead_lettered_with_their_bytes_and_readable_ids_get_an_outcome() {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();
    let known = Uuid::new_v4();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("register_domain", b"{not json".to_vec(), "unreadable_json"),
        ("register_domain", b"[1,2,3]".to_vec(), "not_an_object"),
        (
            "register_domain",
            br#"{"tenant_id":"x","domain":"a.test"}"#.to_vec(),
            "missing_command_id",
        ),
        ("register_domain", vec![b' '; 70 * 1024], "too_large"),
        (
            "transfer_domain",
            serde_json::to_vec(
                &json!({"command_id": known, "tenant_id": tenant, "domain": "a.test"}),
            )
            .unwrap(),
            "unknown_command",
        ),
    ];
    let mut known_sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{known}"))
        .await
        .unwrap();
    for (t, body, _) in &cases {
        stack
            .js
            .publish(format!("email_domains.commands.{t}"), body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let o = stack.next_outcome(&mut known_sub, &known.to_string()).await;
    assert_eq!(code(&o), "invalid_command");
    let stream = stack
        .js
        .get_stream("EMAIL_DOMAIN_DEAD_LETTERS")
        .await
        .unwrap();
    let mut letters = Vec::new();
    for _ in 0..200 {
        letters.clear();
        let mut seq = 1;
        while let Ok(m) = stream
            .direct_get_next_for_subject("email_domains.dead_letters.>", Some(seq))
            .await
        {
            letters.push(
                serde_json::from_slice::<runtime::dead_letters::DeadLetter>(&m.payload).unwrap(),
            );
            seq = m.sequence + 1;
        }
        if letters.len() >= cases.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (t, body, reason) in &cases {
        let l = letters
            .iter()
            .find(|l| l.reason == *reason)
            .unwrap_or_else(|| panic!("no dead letter {reason}"));
        assert_eq!(&l.body().unwrap(), body, "{reason}: original bytes kept");
        assert_eq!(l.subject, format!("email_domains.commands.{t}"));
        assert!(!l.error.is_empty());
    }
    // An invalid command (readable id, bad field) is answered and dead-lettered; after
    // correction the same id is accepted (it counted as not seen).
    let id = Uuid::new_v4();
    let bad = json!({"command_id": id, "tenant_id": "not-a-uuid", "domain": "fixme.test"});
    let o = stack.send_body("register_domain", &bad).await;
    assert_eq!(code(&o), "invalid_command");
    let good = json!({"command_id": id, "tenant_id": tenant, "domain": "fixme.test"});
    // Re-sent with a fresh Nats-Msg-Id: within two minutes JetStream would drop a
    // repeat of the same header before the service sees it.
    let mut sub = stack
        .client
        .subscribe(format!("email_domains.outcomes.{id}"))
        .await
        .unwrap();
    stack
        .publish("register_domain", &good, Some(&Uuid::new_v4().to_string()))
        .await;
    let o = stack.next_outcome(&mut sub, &id.to_string()).await;
    assert_eq!(o.outcome, Verdict::Accepted, "{o:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_the_same_version_cannot_both_append() {
    // The event store alone: no services that would react to these events.
    let nats = system_tests::Nats::start();
    let js = runtime::jetstream(runtime::connect_nats(&nats.url(), "test").await.unwrap());
    runtime::streams::ensure(&js, &Default::default())
        .await
        .unwrap();
    let store = runtime::store::EventStore::open(&js, 16).await.unwrap();
    let tenant = email_domain_events::TenantId(Uuid::new_v4());
    let domain = email_domain_events::DomainId(Uuid::new_v4());
    let event = |version: u64| email_domain_events::Event {
        event_id: email_domain_events::EventId(Uuid::new_v4()),
        tenant_id: tenant,
        domain_id: domain,
        domain: "race.test".into(),
        version,
        occurred_at: chrono::Utc::now(),
        causation_id: email_domain_events::CommandId(Uuid::new_v4()),
        correlation_id: Uuid::new_v4(),
        schema_version: 1,
        data: EventData::DomainRegistered {
            region: None,
            requested_by: None,
            deadline_at: chrono::Utc::now(),
        },
    };
    let (e1, e2) = (event(1), event(1));
    let (a, b) = tokio::join!(store.append(&e1, 0), store.append(&e2, 0));
    let conflicts = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(runtime::store::AppendError::Conflict)))
        .count();
    assert_eq!(conflicts, 1, "exactly one writer wins: {a:?} {b:?}");
    let seq = a.as_ref().or(b.as_ref()).copied().unwrap();
    // The loser reloads and appends on the new version.
    let loaded = store.load(tenant, domain).await.unwrap();
    assert_eq!(loaded.last_seq, seq);
    assert!(matches!(
        store.append(&event(2), 0).await,
        Err(runtime::store::AppendError::Conflict)
    ));
    store.append(&event(2), loaded.last_seq).await.unwrap();
    let history = store.history(tenant, domain).await.unwrap();
    assert_eq!(
        history.iter().map(|(_, e)| e.version).collect::<Vec<_>>(),
        vec![1, 2],
        "{history:?}"
    );
}

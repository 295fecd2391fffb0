mod common;

use async_nats::jetstream::consumer::pull;
use common::*;
use email_domain_events::command::decode;
use email_domain_events::outcome::Outcome;
use email_domain_events::{DomainId, TenantId};
use futures::StreamExt;
use runtime::dead_letters::{self, DeadLetter};
use uuid::Uuid;

/// A stand-in command handler: answers every command on the commands stream,
/// `domain_taken` for taken.test, `domain_not_found` for gone.test, else accepted;
/// passes each body on.
async fn fake_handler(
    js: async_nats::jetstream::Context,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = js.get_stream(runtime::streams::COMMANDS).await.unwrap();
    let consumer = stream
        .get_or_create_consumer(
            "fake",
            pull::Config {
                durable_name: Some("fake".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let outcomes = runtime::outcomes::Outcomes::open(&js).await.unwrap();
    tokio::spawn(async move {
        let mut messages = consumer.messages().await.unwrap();
        while let Some(Ok(m)) = messages.next().await {
            let token = m.subject.as_str().rsplit('.').next().unwrap().to_string();
            let _ = tx.send((m.subject.to_string(), m.payload.to_vec()));
            if let Ok(c) = decode(&token, &m.payload) {
                let id = DomainId(Uuid::new_v4());
                let outcome = match c.domain.as_str() {
                    "taken.test" | "gone.test" => {
                        let code = if c.domain == "taken.test" {
                            "domain_taken"
                        } else {
                            "domain_not_found"
                        };
                        serde_json::from_value::<Outcome>(serde_json::json!({
                            "command_id": c.command_id, "tenant_id": c.tenant_id.to_string(), "domain": c.domain,
                            "domain_id": null, "outcome": "rejected", "reason": {"code": code, "message": "no"}
                        }))
                        .unwrap()
                    }
                    _ => Outcome::accepted(
                        c.command_id,
                        c.tenant_id.to_string(),
                        c.domain.clone(),
                        id,
                    ),
                };
                outcomes.publish(&outcome).await.unwrap();
            }
            m.ack().await.unwrap();
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_state_of_a_known_domain() {
    let nats = Nats::start().await;
    let (db, pool) = Db::create().await;
    let js = nats.js().await;
    let mut w = Writer::new(&js).await;
    let tenant = TenantId(Uuid::new_v4());
    let id = w.verified(tenant, "acme.test", t0(), true).await;
    let t = tenant.to_string();
    // Only the projection knows it (no name claim in the KV): found through Postgres.
    domainctl::replay(&js, &pool, &Default::default())
        .await
        .unwrap();

    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "history",
            "--tenant",
            &t,
            "--domain",
            "ACME.test.",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let types: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "domain_registered",
            "domain_provisioned",
            "dns_checked",
            "provider_polled"
        ]
    );
    assert_eq!(v[3]["version"], 4);
    assert_eq!(v[0]["domain_id"], id.to_string());

    let out = ctl(
        &nats.url,
        &db.url,
        &["history", "--tenant", &t, "--domain", "acme.test"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("provider_polled") && out.stdout.contains("verified=true"),
        "{}",
        out.stdout
    );

    let out = ctl(
        &nats.url,
        &db.url,
        &["state", "--tenant", &t, "--domain", "acme.test", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["status"], "verified");
    assert_eq!(v["version"], 4);
    assert_eq!(v["provider_domain_id"], "pd-acme.test");
    assert_eq!(v["records"].as_array().unwrap().len(), 4);
    assert_eq!(v["records"][0]["dns_status"], "found");
    assert!(v.get("next_check_at").is_some());

    let out = ctl(
        &nats.url,
        &db.url,
        &["state", "--tenant", &t, "--domain-id", &id.to_string()],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("verified (version 4)"),
        "{}",
        out.stdout
    );

    // The name index alone (no database) finds the current holder.
    let kv = js
        .get_key_value(runtime::streams::NAMES_BUCKET)
        .await
        .unwrap();
    runtime::names::NameIndex::new(kv)
        .claim(
            "acme.test",
            runtime::names::Holder {
                tenant_id: tenant,
                domain_id: id,
            },
            None,
        )
        .await
        .unwrap();
    let closed = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let out = ctl(
        &nats.url,
        &closed,
        &["state", "--tenant", &t, "--domain", "acme.test", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Unknown domain, unknown tenant: 3.
    let out = ctl(
        &nats.url,
        &db.url,
        &["history", "--tenant", &t, "--domain", "nope.test"],
    )
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("nope.test"));
    let other = Uuid::new_v4().to_string();
    let out = ctl(
        &nats.url,
        &db.url,
        &["state", "--tenant", &other, "--domain", "acme.test"],
    )
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "state",
            "--tenant",
            &t,
            "--domain-id",
            &Uuid::new_v4().to_string(),
        ],
    )
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    // Usage: 2.
    let out = ctl(
        &nats.url,
        &db.url,
        &["state", "--tenant", "not-a-uuid", "--domain", "acme.test"],
    )
    .await;
    assert_eq!(out.code, 2);
    let out = domainctl::run_args(["domainctl", "history", "--help"]).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("--tenant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_values_with_terminal_escapes_are_printed_escaped() {
    let nats = Nats::start().await;
    let (db, pool) = Db::create().await;
    let js = nats.js().await;
    let mut w = Writer::new(&js).await;
    let tenant = TenantId(Uuid::new_v4());
    let name = "escape.test";
    let id = w.verified(tenant, name, t0(), true).await;
    // a check stored as it was before the DNS adapter escaped what it keeps: the
    // tenant's TXT record clears the screen and fakes a prompt
    let mut records = records(name, email_domain_events::records::DnsStatus::Mismatch);
    records[0].observed = vec!["v=spf1 +all\u{1b}[2J\u{1b}]0;owned\u{7}\r$ ".into()];
    w.append(
        tenant,
        id,
        name,
        t0() + chrono::Duration::days(2),
        email_domain_events::event::EventData::DnsChecked {
            trigger: email_domain_events::event::CheckTrigger::DnsConfigured,
            records,
            all_required_found: false,
            request_verification: false,
            poll_provider: false,
            next_check_at: None,
            new_deadline_at: None,
            attempt: 0,
            drift_detected: false,
            drift_resolved: false,
            propagation: Vec::new(),
            provider_domain_id: None,
        },
    )
    .await;
    // found through the projection, as an operator would
    domainctl::replay(&js, &pool, &Default::default())
        .await
        .unwrap();
    let t = tenant.to_string();

    let out = ctl(
        &nats.url,
        &db.url,
        &["state", "--tenant", &t, "--domain", name],
    )
    .await;

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("observed: v=spf1 +all\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{d}$ "),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.chars().any(|c| c.is_control() && c != '\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_exit_4() {
    let closed_nats = format!("nats://127.0.0.1:{}", free_port());
    let closed_db = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let t = Uuid::new_v4().to_string();
    let out = ctl(
        &closed_nats,
        &closed_db,
        &["history", "--tenant", &t, "--domain", "a.test"],
    )
    .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains(&closed_nats) && out.stderr.contains("nats-server"),
        "{}",
        out.stderr
    );
    let out = ctl(&closed_nats, &closed_db, &["dead-letters", "list"]).await;
    assert_eq!(out.code, 4);
    let out = ctl(
        &closed_nats,
        &closed_db,
        &["register", "--tenant", &t, "--domain", "a.test"],
    )
    .await;
    assert_eq!(out.code, 4);
    // A refused Postgres is reported at once, not after the pool's 5 s of retries.
    let asked = std::time::Instant::now();
    let out = ctl(&closed_nats, &closed_db, &["domains"]).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("Postgres"), "{}", out.stderr);
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let out = ctl(&closed_nats, &closed_db, &["replay", "--json"]).await;
    assert_eq!(out.code, 4);
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_and_retry_round_trip() {
    let nats = Nats::start().await;
    let (db, _pool) = Db::create().await;
    let js = nats.js().await;
    let mut commands = fake_handler(js.clone()).await;
    let id = Uuid::new_v4();
    let tenant = Uuid::new_v4();
    let bad = format!(r#"{{"command_id":"{id}","tenant_id":"not-a-uuid","domain":"fixed.test"}}"#);
    let letter = DeadLetter::new(
        "invalid_command",
        "`tenant_id` is missing or not a UUID",
        "email_domains.commands.register_domain",
        None,
        bad.as_bytes(),
    );
    dead_letters::publish(&js, &letter, "dl-1").await.unwrap();
    let junk = DeadLetter::new(
        "unreadable_json",
        "the body is not JSON",
        "email_domains.commands.register_domain",
        None,
        b"{nope",
    );
    dead_letters::publish(&js, &junk, "dl-2").await.unwrap();

    let out = ctl(&nats.url, &db.url, &["dead-letters", "list", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["seq"], 1);
    assert_eq!(v[0]["reason"], "invalid_command");
    assert!(v[0]["body_preview"]
        .as_str()
        .unwrap()
        .contains("not-a-uuid"));
    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "dead-letters",
            "list",
            "--reason",
            "unreadable_json",
            "--json",
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["seq"], 2);
    let out = ctl(&nats.url, &db.url, &["dead-letters", "list"]).await;
    assert!(
        out.stdout.contains("#1") && out.stdout.contains("invalid_command"),
        "{}",
        out.stdout
    );

    // Retry with a corrected body under the same command id.
    let fixed = format!(r#"{{"command_id":"{id}","tenant_id":"{tenant}","domain":"fixed.test"}}"#);
    let file = std::env::temp_dir().join(format!("dctl-body-{}.json", Uuid::new_v4()));
    std::fs::write(&file, &fixed).unwrap();
    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "dead-letters",
            "retry",
            "--seq",
            "1",
            "--body",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    std::fs::remove_file(&file).ok();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["command_id"], id.to_string());
    assert_eq!(v["msg_id"], id.to_string());
    assert_eq!(v["outcome"]["outcome"], "accepted");
    let (subject, body) = commands.recv().await.unwrap();
    assert_eq!(subject, "email_domains.commands.register_domain");
    assert_eq!(body, fixed.as_bytes());
    // The dead letter stays.
    let out = ctl(&nats.url, &db.url, &["dead-letters", "list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    // The original body, without waiting; a body without a command id gets a fresh msg id.
    let out = ctl(
        &nats.url,
        &db.url,
        &["dead-letters", "retry", "--seq", "2", "--no-wait", "--json"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["command_id"].is_null());
    assert_ne!(v["msg_id"], "");
    let (_, body) = commands.recv().await.unwrap();
    assert_eq!(body, b"{nope");
    let out = ctl(
        &nats.url,
        &db.url,
        &["dead-letters", "retry", "--seq", "99"],
    )
    .await;
    assert_eq!(out.code, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_wait_for_their_outcome() {
    let nats = Nats::start().await;
    let (db, _pool) = Db::create().await;
    let js = nats.js().await;
    let mut commands = fake_handler(js.clone()).await;
    let t = Uuid::new_v4().to_string();

    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "register",
            "--tenant",
            &t,
            "--domain",
            "new.test",
            "--region",
            "eu-west-1",
            "--operator",
            "ann",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["outcome"]["outcome"], "accepted");
    let (subject, body) = commands.recv().await.unwrap();
    assert_eq!(subject, "email_domains.commands.register_domain");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["requested_by"], "operator:ann");
    assert_eq!(body["region"], "eu-west-1");

    let out = ctl(
        &nats.url,
        &db.url,
        &["register", "--tenant", &t, "--domain", "taken.test"],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("domain_taken"), "{}", out.stdout);
    commands.recv().await.unwrap();

    let out = ctl(
        &nats.url,
        &db.url,
        &["delete", "--tenant", &t, "--domain", "gone.test"],
    )
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    commands.recv().await.unwrap();

    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "fail", "--tenant", &t, "--domain", "new.test", "--reason", "abuse",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (subject, body) = commands.recv().await.unwrap();
    assert_eq!(subject, "email_domains.commands.fail_domain");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["reason"],
        "abuse"
    );

    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "release",
            "--tenant",
            &t,
            "--domain",
            "new.test",
            "--reason",
            "ticket 42",
            "--operator",
            "bo",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (subject, body) = commands.recv().await.unwrap();
    assert_eq!(subject, "email_domains.commands.delete_domain");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["requested_by"], "operator:bo (release: ticket 42)");

    for (cmd, subject) in [
        ("dns-configured", "dns_configured"),
        ("refresh", "refresh_status"),
    ] {
        let out = ctl(
            &nats.url,
            &db.url,
            &[cmd, "--tenant", &t, "--domain", "new.test"],
        )
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            commands.recv().await.unwrap().0,
            format!("email_domains.commands.{subject}")
        );
    }
    // The same command id again: the stored outcome is the answer.
    let id = Uuid::new_v4().to_string();
    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "refresh",
            "--tenant",
            &t,
            "--domain",
            "new.test",
            "--command-id",
            &id,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "refresh",
            "--tenant",
            &t,
            "--domain",
            "new.test",
            "--command-id",
            &id,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["outcome"]["outcome"], "accepted");

    // No query service: 4 with a hint.
    let out = ctl(
        &nats.url,
        &db.url,
        &["sender", "--tenant", &t, "--timeout", "1"],
    )
    .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("query service"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_dead_letter_is_listed_as_truncated_and_is_not_retried_without_a_body() {
    let nats = Nats::start().await;
    let (db, _pool) = Db::create().await;
    let js = nats.js().await;
    let mut commands = fake_handler(js.clone()).await;
    let id = Uuid::new_v4();
    let tenant = Uuid::new_v4();
    let big = format!(
        r#"{{"command_id":"{id}","tenant_id":"{tenant}","domain":"big.test","requested_by":"{}"}}"#,
        "x".repeat(100_000)
    );
    let original = dead_letters::Original {
        subject: "email_domains.commands.register_domain",
        headers: None,
        body: big.as_bytes(),
    };
    // Room for about 3 KB of body: the rest is cut.
    let letter = DeadLetter::within("too_large", "the body is too large", original, 4_000);
    assert!(letter.body_truncated);
    dead_letters::publish(&js, &letter, "dl-1").await.unwrap();

    let out = ctl(&nats.url, &db.url, &["dead-letters", "list", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["body_truncated"], true, "{v}");
    assert_eq!(v[0]["body_size"], big.len());
    assert_eq!(v[0]["body_sha256"], letter.body_sha256.clone().unwrap());
    let out = ctl(&nats.url, &db.url, &["dead-letters", "list"]).await;
    assert!(
        out.stdout.contains("truncated") && out.stdout.contains(&big.len().to_string()),
        "{}",
        out.stdout
    );

    // Without --body there is no body to send: refused, nothing published.
    let out = ctl(&nats.url, &db.url, &["dead-letters", "retry", "--seq", "1"]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("truncated") && out.stderr.contains("--body"),
        "{}",
        out.stderr
    );
    // With one it goes, and is the next (and only) command the handler sees.
    let fixed = format!(r#"{{"command_id":"{id}","tenant_id":"{tenant}","domain":"big.test"}}"#);
    let file = std::env::temp_dir().join(format!("dctl-body-{}.json", Uuid::new_v4()));
    std::fs::write(&file, &fixed).unwrap();
    let out = ctl(
        &nats.url,
        &db.url,
        &[
            "dead-letters",
            "retry",
            "--seq",
            "1",
            "--body",
            file.to_str().unwrap(),
        ],
    )
    .await;
    std::fs::remove_file(&file).ok();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let (_, body) = commands.recv().await.unwrap();
    assert_eq!(body, fixed.as_bytes(), "the truncated body was never sent");
}

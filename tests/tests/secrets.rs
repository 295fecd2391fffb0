//! The provider key appears in no event, outcome, row, analytics message, dead letter
//! or log line (at TRACE level), through a whole lifecycle.

use email_domain_events::outcome::Verdict;
use std::sync::{Arc, Mutex};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

const KEY: &str = "re_SECRET_k3y_that_must_never_leak_7f3a9";

async fn everything_stored(stack: &Stack) -> Vec<u8> {
    let mut all = Vec::new();
    for stream in [
        "EMAIL_DOMAIN_EVENTS",
        "EMAIL_DOMAIN_OUTCOMES",
        "EMAIL_DOMAIN_ANALYTICS",
        "EMAIL_DOMAIN_DEAD_LETTERS",
        "EMAIL_DOMAIN_PROVIDER_WORK",
        "KV_email_domain_snapshots",
        "KV_email_domain_names",
    ] {
        let s = stack.js.get_stream(stream).await.unwrap();
        let mut seq = 1;
        while let Ok(m) = s.get_raw_message(seq).await {
            all.extend_from_slice(&m.payload);
            for (name, values) in m.headers.iter() {
                all.extend_from_slice(name.to_string().as_bytes());
                for v in values {
                    all.extend_from_slice(v.to_string().as_bytes());
                }
            }
            seq = m.sequence + 1;
        }
    }
    for table in [
        "email_domains",
        "tenant_email_settings",
        "projection_checkpoints",
        "scheduler_timers",
    ] {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {table} t"))
                .fetch_all(&stack.pool)
                .await
                .unwrap();
        for r in rows {
            all.extend_from_slice(r.to_string().as_bytes());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_provider_key_is_written_nowhere() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    system_tests::capture_logs(logs.clone());
    let stack = Stack::start_with(StackOptions {
        api_key: Some(KEY.into()),
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    assert_eq!(
        stack
            .send("register_domain", tenant, "secret.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    let row = stack
        .wait_status(tenant, "secret.test", "awaiting_dns")
        .await;
    stack.publish_records("secret.test", &row);
    assert_eq!(
        stack
            .send("dns_configured", tenant, "secret.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack.wait_status(tenant, "secret.test", "verified").await;
    // A bad command too, so the dead letters and error paths have spoken.
    stack
        .js
        .publish("email_domains.commands.register_domain", "{oops".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        stack
            .send("delete_domain", tenant, "secret.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack
        .wait_status(tenant, "secret.test", "deactivated")
        .await;
    let stored = everything_stored(&stack).await;
    stack.shutdown().await;
    let logs = logs.lock().unwrap().clone();

    // Positive controls: the scan finds what is there.
    assert!(
        contains(&stored, "secret.test"),
        "the scan reads the stored data"
    );
    assert!(
        logs.len() > 10_000 && contains(&logs, "secret.test"),
        "the scan reads TRACE logs ({} bytes)",
        logs.len()
    );
    let planted = [stored.clone(), KEY.as_bytes().to_vec()].concat();
    assert!(contains(&planted, KEY), "the scan would find the key");

    assert!(!contains(&stored, KEY), "the key is in a stream or a table");
    assert!(!contains(&logs, KEY), "the key is in a log line");
    // Also not a recognisable part of it.
    assert!(!contains(&logs, "k3y_that_must_never_leak"));
}

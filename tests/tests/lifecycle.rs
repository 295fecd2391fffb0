//! The whole lifecycle through the contract only: commands in; outcomes, rows,
//! events and analytics out.

use email_domain_events::outcome::Verdict;
use serde_json::Value;
use system_tests::Stack;
use uuid::Uuid;

fn types(events: &[email_domain_events::Event], domain: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.domain == domain)
        .map(|e| e.data.type_name())
        .collect()
}

async fn verify(stack: &Stack, tenant: Uuid, domain: &str) -> Value {
    let out = stack.send("register_domain", tenant, domain).await;
    assert_eq!(out.outcome, Verdict::Accepted, "{out:?}");
    let row = stack.wait_status(tenant, domain, "awaiting_dns").await;
    let records = row["dns_records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .all(|r| r["name"].as_str().unwrap().ends_with(domain)),
        "full names: {records:?}"
    );
    assert!(records
        .iter()
        .any(|r| r["purpose"] == "dkim" && r["required"] == true));
    assert!(records
        .iter()
        .any(|r| r["purpose"] == "spf" && r["required"] == true));
    assert!(records
        .iter()
        .any(|r| r["purpose"] == "dmarc" && r["required"] == false));
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "MX" && r["name"] == domain),
        "never an MX at the apex of the registered domain"
    );
    stack.publish_records(domain, &row);
    let out = stack.send("dns_configured", tenant, domain).await;
    assert_eq!(out.outcome, Verdict::Accepted, "{out:?}");
    assert_eq!(
        out.domain_id.map(|d| d.0),
        row["id"].as_str().map(|s| s.parse().unwrap())
    );
    stack.wait_status(tenant, domain, "verified").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_walks_from_registration_to_verified_and_becomes_the_sender_then_rolls_back_on_delete(
) {
    let stack = Stack::start().await;
    let tenant = Uuid::new_v4();

    let before = stack.sender(tenant).await;
    assert_eq!(before["from"], "notifications@platform.invalid");
    assert_eq!(before["managed"], false);

    let row = verify(&stack, tenant, "acme.test").await;
    assert!(row["verified_at"].is_string());
    assert!(row["dns_records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["required"] == true)
        .all(|r| r["dns_status"] == "found"));
    // The settings projector has its own lag behind the row.
    let sender = stack.wait_sender(tenant, "acme.test").await;
    assert_eq!(sender["from"], "notifications@acme.test");
    assert_eq!(sender["domain"], "acme.test");
    assert_eq!(sender["managed"], true);

    // A second domain verifies and becomes the default; the first is kept as previous.
    verify(&stack, tenant, "second.test").await;
    let settings: (Option<String>, Option<String>) =
        wait_settings(&stack, tenant, Some("second.test")).await;
    assert_eq!(settings.1.as_deref(), Some("acme.test"));

    // Deleting it rolls the default back to the first.
    let out = stack.send("delete_domain", tenant, "second.test").await;
    assert_eq!(out.outcome, Verdict::Accepted);
    stack
        .wait_status(tenant, "second.test", "deactivated")
        .await;
    let settings = wait_settings(&stack, tenant, Some("acme.test")).await;
    assert_eq!(
        settings.1, None,
        "previous_from_domain is cleared by a rollback"
    );
    assert_eq!(
        stack.sender(tenant).await["from"],
        "notifications@acme.test"
    );

    // The log is the domain's timeline.
    let events = stack.events().await;
    let acme = types(&events, "acme.test");
    assert_eq!(&acme[..2], &["domain_registered", "domain_provisioned"]);
    assert!(acme.contains(&"dns_checked"));
    assert!(acme.contains(&"provider_polled"));
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e.domain == "acme.test")
        .map(|e| e.version)
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "gapless versions"
    );
    let second = types(&events, "second.test");
    assert!(second.contains(&"domain_deleted"));

    // Analytics: CloudEvents with the contract's attributes.
    let analytics = stack
        .analytics_until(|a| a.iter().any(|e| e["type"] == "email_domain.deleted"))
        .await;
    for name in [
        "registered",
        "dns_checked",
        "verified",
        "activated",
        "deleted",
    ] {
        assert!(
            analytics
                .iter()
                .any(|e| e["type"] == format!("email_domain.{name}")),
            "missing {name}"
        );
    }
    let verified = analytics
        .iter()
        .find(|e| e["type"] == "email_domain.verified")
        .unwrap();
    assert_eq!(verified["specversion"], "1.0");
    assert_eq!(verified["source"], "/email-domains");
    assert_eq!(verified["tenantid"], tenant.to_string());
    assert!(verified["subject"].is_string());
    let ids: std::collections::HashSet<&str> = analytics
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), analytics.len(), "each analytics event once");

    // The provider domain was cleaned up: the dev provider no longer has it.
    let provider_id = events
        .iter()
        .find_map(|e| match &e.data {
            email_domain_events::EventData::DomainProvisioned {
                provider_domain_id, ..
            } if e.domain == "second.test" => Some(provider_domain_id.clone()),
            _ => None,
        })
        .unwrap();
    wait_provider_gone(&stack, &provider_id).await;
    stack.shutdown().await;
}

async fn wait_settings(
    stack: &Stack,
    tenant: Uuid,
    default: Option<&str>,
) -> (Option<String>, Option<String>) {
    for _ in 0..600 {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT default_from_domain, previous_from_domain FROM tenant_email_settings WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&stack.pool)
                .await
                .unwrap();
        if let Some(r) = row {
            if r.0.as_deref() == default {
                return r;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("default_from_domain never became {default:?}");
}

async fn wait_provider_gone(stack: &Stack, provider_domain_id: &str) {
    let http = reqwest_like_get(stack, provider_domain_id);
    for _ in 0..200 {
        if http.await_status().await == 404 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the provider domain {provider_domain_id} was never deleted");
}

struct Probe {
    url: String,
}

fn reqwest_like_get(stack: &Stack, id: &str) -> Probe {
    Probe {
        url: format!("{}/domains/{id}", stack.provider_url),
    }
}

impl Probe {
    /// A plain HTTP/1.1 GET over a TCP socket: the status code.
    async fn await_status(&self) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = self.url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

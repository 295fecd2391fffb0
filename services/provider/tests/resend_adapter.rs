//! The Resend adapter against the dev provider, over real HTTP on 127.0.0.1.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use dev_provider::{DevProviderConfig, DevProviderControl, Faults};
use email_provider::{ApiKey, EmailProvider, ProviderError, ProviderStatus, ResendProvider};

/// Distinctive, so that a leak anywhere would be found by a plain substring search.
const KEY: &str = "re_Zq9LEAKCANARY_7f3b2c_do_not_print";

struct Harness {
    provider: ResendProvider,
    control: DevProviderControl,
    base: String,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn harness() -> Harness {
    harness_with_timeout(Duration::from_secs(5)).await
}

async fn harness_with_timeout(timeout: Duration) -> Harness {
    let (addr, server) = dev_provider::spawn(DevProviderConfig::default()).await;
    let base = format!("http://{addr}");
    Harness {
        provider: ResendProvider::new(&base, ApiKey::new(KEY), timeout).unwrap(),
        control: DevProviderControl::new(&base),
        base,
        _server: server,
    }
}

fn assert_no_key(error: &ProviderError) {
    let shown = format!("{error} | {error:?}");
    assert!(!shown.contains(KEY), "the API key leaked: {shown}");
    assert!(
        !shown.contains("LEAKCANARY"),
        "part of the API key leaked: {shown}"
    );
}

#[tokio::test]
async fn create_returns_full_name_records_with_purposes() {
    let h = harness().await;
    assert_eq!(h.provider.provider_id(), "resend");
    let domain = h
        .provider
        .create_domain("Mail.Example.com.", None)
        .await
        .unwrap();
    assert_eq!(domain.name, "mail.example.com");
    assert_eq!(domain.status, ProviderStatus::NotStarted);
    assert_eq!(domain.region.as_deref(), Some("us-east-1"));
    let summary: Vec<_> = domain
        .records
        .iter()
        .map(|r| {
            (
                r.purpose.as_str(),
                r.record_type.as_str(),
                r.name.as_str(),
                r.priority,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("return_path", "MX", "send.mail.example.com", Some(10)),
            ("spf", "TXT", "send.mail.example.com", None),
            ("dkim", "TXT", "resend._domainkey.mail.example.com", None),
        ]
    );
    assert_eq!(
        domain.records[0].value,
        "feedback-smtp.us-east-1.amazonses.com"
    );
    assert_eq!(domain.records[1].value, "v=spf1 include:amazonses.com ~all");
    assert!(domain.records[2].value.starts_with("p=") && domain.records[2].value.len() > 255);
    assert!(domain
        .records
        .iter()
        .all(|r| r.status.as_deref() == Some("not_started")));
}

#[tokio::test]
async fn create_in_a_region_sends_the_region() {
    let h = harness().await;
    let domain = h
        .provider
        .create_domain("eu.example.com", Some("eu-west-1"))
        .await
        .unwrap();
    assert_eq!(domain.region.as_deref(), Some("eu-west-1"));
    assert_eq!(
        domain.records[0].value,
        "feedback-smtp.eu-west-1.amazonses.com"
    );
}

#[tokio::test]
async fn get_returns_the_created_domain() {
    let h = harness().await;
    let created = h
        .provider
        .create_domain("get.example.com", None)
        .await
        .unwrap();
    let fetched = h
        .provider
        .get_domain(&created.provider_domain_id)
        .await
        .unwrap();
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn get_of_an_unknown_domain_is_not_found() {
    let h = harness().await;
    for id in ["4dd369bc-aa82-4ff3-97de-514ae3000ee0", "", "a/b"] {
        assert_eq!(
            h.provider.get_domain(id).await,
            Err(ProviderError::NotFound),
            "{id:?}"
        );
    }
}

#[tokio::test]
async fn list_follows_every_page() {
    let h = harness().await;
    let mut created = HashSet::new();
    for i in 0..230 {
        let d = h
            .provider
            .create_domain(&format!("list{i}.example.com"), None)
            .await
            .unwrap();
        created.insert((d.provider_domain_id, d.name));
    }
    let listed = h.provider.list_domains().await.unwrap();
    assert_eq!(listed.len(), 230);
    let listed_set: HashSet<_> = listed
        .iter()
        .map(|d| (d.provider_domain_id.clone(), d.name.clone()))
        .collect();
    assert_eq!(listed_set, created);
    assert!(listed
        .iter()
        .all(|d| d.status == ProviderStatus::NotStarted));
    // 100 + 100 + 30.
    assert_eq!(h.control.stats().await.unwrap().by_path["GET /domains"], 3);
}

#[tokio::test]
async fn request_verification_marks_the_domain_pending() {
    let (addr, _server) = dev_provider::spawn(DevProviderConfig {
        // A DNS server that does not answer: the domain stays pending.
        dns_nameservers: vec!["127.0.0.1:9".parse::<SocketAddr>().unwrap()],
        ..Default::default()
    })
    .await;
    let provider = ResendProvider::new(
        &format!("http://{addr}"),
        ApiKey::new(KEY),
        Duration::from_secs(10),
    )
    .unwrap();
    let domain = provider
        .create_domain("verify.example.com", None)
        .await
        .unwrap();
    provider
        .request_verification(&domain.provider_domain_id)
        .await
        .unwrap();
    let fetched = provider
        .get_domain(&domain.provider_domain_id)
        .await
        .unwrap();
    assert_eq!(fetched.status, ProviderStatus::Pending);
    assert!(fetched
        .records
        .iter()
        .all(|r| r.status.as_deref() == Some("pending")));
    assert_eq!(
        provider.request_verification("no-such-id").await,
        Err(ProviderError::NotFound)
    );
}

#[tokio::test]
async fn delete_removes_the_domain_and_an_unknown_id_is_already_gone() {
    let h = harness().await;
    let domain = h
        .provider
        .create_domain("delete.example.com", None)
        .await
        .unwrap();
    h.provider
        .delete_domain(&domain.provider_domain_id)
        .await
        .unwrap();
    assert_eq!(
        h.provider.get_domain(&domain.provider_domain_id).await,
        Err(ProviderError::NotFound)
    );
    h.provider
        .delete_domain(&domain.provider_domain_id)
        .await
        .unwrap();
    h.provider.delete_domain("never-existed").await.unwrap();
    assert_eq!(h.control.stats().await.unwrap().domains, 0);
}

#[tokio::test]
async fn a_429_surfaces_as_rate_limited_with_its_retry_after() {
    let h = harness().await;
    h.control
        .set_faults(&Faults {
            rate_limit_next: Some(2),
            retry_after_secs: Some(2.5),
            ..Default::default()
        })
        .await
        .unwrap();
    let error = h
        .provider
        .create_domain("rl.example.com", None)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ProviderError::RateLimited {
            retry_after: Duration::from_millis(2500)
        }
    );
    assert!(error.is_retryable());
    assert_no_key(&error);
    let error = h.provider.list_domains().await.unwrap_err();
    assert!(
        matches!(error, ProviderError::RateLimited { retry_after } if retry_after == Duration::from_millis(2500))
    );
    // The limit has passed: the same call succeeds.
    h.provider
        .create_domain("rl.example.com", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_500_surfaces_as_transient() {
    let h = harness().await;
    h.control
        .set_faults(&Faults {
            server_error_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let error = h.provider.get_domain("any").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Transient(m) if m.contains("500")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_no_key(&error);
}

#[tokio::test]
async fn a_timeout_and_a_refused_connection_are_transient() {
    let h = harness_with_timeout(Duration::from_millis(200)).await;
    h.control
        .set_faults(&Faults {
            delay_ms: Some(1000),
            delay_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let error = h.provider.list_domains().await.unwrap_err();
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
    assert_no_key(&error);

    // A port nobody listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = ResendProvider::new(
        &format!("http://{closed}"),
        ApiKey::new(KEY),
        Duration::from_secs(2),
    )
    .unwrap();
    let error = provider
        .create_domain("x.example.com", None)
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
    assert_no_key(&error);
}

#[tokio::test]
async fn other_4xx_answers_are_rejected_with_the_error_body() {
    let h = harness().await;
    let error = h
        .provider
        .create_domain("not a domain", None)
        .await
        .unwrap_err();
    match &error {
        ProviderError::Rejected {
            status,
            name,
            message,
        } => {
            assert_eq!(*status, 422);
            assert_eq!(name, "validation_error");
            assert!(!message.is_empty());
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!error.is_retryable());
    assert_no_key(&error);
    let error = h
        .provider
        .create_domain("x.example.com", Some("mars-1"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Rejected { status: 422, .. }));
}

#[tokio::test]
async fn a_create_answered_registered_already_adopts_the_domain_it_made() {
    let h = harness().await;
    h.control
        .set_faults(&Faults {
            forbid_next_create: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    // The dev provider creates the domain, then answers 403 "registered already".
    let adopted = h
        .provider
        .create_domain("lost.example.com", None)
        .await
        .unwrap();
    assert_eq!(adopted.name, "lost.example.com");
    assert_eq!(
        adopted.records.len(),
        3,
        "adoption fetches the records by id"
    );
    let stats = h.control.stats().await.unwrap();
    assert_eq!(stats.domains, 1, "no second domain");
    assert_eq!(stats.by_path["POST /domains"], 1);
    assert_eq!(stats.by_path["GET /domains"], 1);
    assert_eq!(stats.by_path["GET /domains/{id}"], 1);

    // A plain retry of the create adopts the same domain again.
    let again = h
        .provider
        .create_domain("LOST.example.com", None)
        .await
        .unwrap();
    assert_eq!(again.provider_domain_id, adopted.provider_domain_id);
    assert_eq!(again, adopted);
    assert_eq!(h.control.stats().await.unwrap().domains, 1);
}

#[tokio::test]
async fn unknown_statuses_parse_as_unknown() {
    let h = harness().await;
    let domain = h
        .provider
        .create_domain("odd.example.com", None)
        .await
        .unwrap();
    h.control
        .force_status(
            &domain.provider_domain_id,
            "quarantined_by_robots",
            Some("mystery"),
        )
        .await
        .unwrap();
    let fetched = h
        .provider
        .get_domain(&domain.provider_domain_id)
        .await
        .unwrap();
    assert_eq!(
        fetched.status,
        ProviderStatus::Unknown("quarantined_by_robots".into())
    );
    assert!(fetched
        .records
        .iter()
        .all(|r| r.status.as_deref() == Some("mystery")));
    let listed = h.provider.list_domains().await.unwrap();
    assert_eq!(
        listed[0].status,
        ProviderStatus::Unknown("quarantined_by_robots".into())
    );

    h.control
        .force_status(&domain.provider_domain_id, "partially_failed", None)
        .await
        .unwrap();
    let fetched = h
        .provider
        .get_domain(&domain.provider_domain_id)
        .await
        .unwrap();
    assert_eq!(fetched.status, ProviderStatus::PartiallyFailed);
}

#[tokio::test]
async fn inbound_mx_records_are_never_handed_on() {
    let h = harness().await;
    // Made outside the adapter, with receiving on: Resend then lists an MX at the apex.
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/domains", h.base))
        .bearer_auth("other")
        .json(&serde_json::json!({"name": "inbound.example.com", "capabilities": {"receiving": "enabled"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["record"] == "Receiving"));
    let domain = h
        .provider
        .get_domain(created["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(domain.records.len(), 3);
    assert!(domain
        .records
        .iter()
        .all(|r| !(r.record_type == "MX" && r.name == "inbound.example.com")));
}

#[tokio::test]
async fn the_key_is_sent_as_a_bearer_token_but_never_shown() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::any;

    // A hostile server that echoes the Authorization header into its error bodies.
    let echo = any(|headers: HeaderMap| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let status = if auth == format!("Bearer {KEY}") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNAUTHORIZED
        };
        (
            status,
            axum::Json(serde_json::json!({
                "statusCode": status.as_u16(), "name": "echo", "message": format!("you sent {auth}")
            })),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(echo);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let provider = ResendProvider::new(
        &format!("http://{addr}"),
        ApiKey::new(KEY),
        Duration::from_secs(5),
    )
    .unwrap();
    let error = provider.get_domain("x").await.unwrap_err();
    match &error {
        ProviderError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 400, "the key arrived as `Bearer <key>`");
            assert_eq!(message, "you sent Bearer ***");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_no_key(&error);
    assert!(!format!("{provider:?}").contains(KEY));
    assert!(!format!("{:?} {}", ApiKey::new(KEY), ApiKey::new(KEY)).contains(KEY));
}

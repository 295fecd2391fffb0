//! The gateway as the deployment runs it: connected as the NATS user `gateway` of
//! `k8s/nats/accounts.conf`, through the whole owner flow and its readiness check,
//! without one permission violation. (tools/schemagen/tests/nats_permissions.rs
//! shows, on the same file, what the user may not do.)

use gateway::token::{Claims, Keys};
use reqwest::{Client, StatusCode};
use runtime::Shutdown;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use system_tests::{Nats, NatsOptions, Stack, StackOptions};
use uuid::Uuid;

const SECRET: &str = "test-secret-for-the-gateway";

async fn request(
    http: &Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The violations nats-server logged so far.
fn violations(nats: &Nats) -> Vec<String> {
    std::fs::read_to_string(nats.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_does_the_owner_flow_with_exactly_its_nats_permissions() {
    let stack = Stack::start_with(StackOptions {
        nats: NatsOptions {
            accounts: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut config = stack.config.clone();
    config.nats_url = stack.nats.url_as("gateway");
    let ops_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.ops_addr = Some(ops_addr);
    let shutdown = Shutdown::new();
    let ops = runtime::ops::Ops::serve(&config, "gateway", &shutdown)
        .await
        .unwrap();
    let keys = Keys::new(SECRET);
    let router = gateway::app_with_ops(config, gateway::Options::new(keys.clone()), &ops)
        .await
        .expect("the gateway starts as its NATS user");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serving = tokio::spawn(gateway::serve(listener, router, shutdown.clone()));
    let http = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // Ready: its NATS connection, the streams (listed by name) and Postgres answer.
    let ready = format!("http://{ops_addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body) = request(&http, reqwest::Method::GET, &ready, None, None).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "not ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = request(
        &http,
        reqwest::Method::GET,
        &format!("http://{ops_addr}/healthz"),
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let tenant = Uuid::new_v4();
    let token = keys.sign(&Claims {
        tenant_id: tenant,
        edition: "enterprise".into(),
        exp: chrono::Utc::now().timestamp() + 600,
        sub: Some("test".into()),
    });
    let t = Some(token.as_str());
    use reqwest::Method as M;

    // A command and its outcome.
    let (s, reg) = request(
        &http,
        M::POST,
        &format!("{base}/api/v1/domains"),
        t,
        Some(json!({"domain": "perms.test"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let id = reg["domain"]["id"].as_str().unwrap().to_string();
    let domain_url = format!("{base}/api/v1/domains/{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = request(&http, M::GET, &domain_url, t, None).await;
        if d["domain"]["status"] == "awaiting_dns" {
            break;
        }
        assert!(Instant::now() < deadline, "no records: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = request(
        &http,
        M::POST,
        &format!("{domain_url}/dns-configured"),
        t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");

    // The log (the timeline).
    let (s, v) = request(&http, M::GET, &format!("{domain_url}/timeline"), t, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["entries"].as_array().is_some_and(|e| e.len() >= 2), "{v}");

    // Its bucket: a share link, revoked twice (the epoch created, then updated).
    let (s, share) = request(&http, M::POST, &format!("{domain_url}/share"), t, None).await;
    assert_eq!(s, StatusCode::OK, "{share}");
    let link = share["url"]
        .as_str()
        .unwrap()
        .replace("/share/", "/api/v1/share/");
    let (s, v) = request(&http, M::GET, &link, None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for _ in 0..2 {
        let (s, v) = request(&http, M::DELETE, &format!("{domain_url}/share"), t, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = request(&http, M::GET, &link, None, None).await;
    assert_eq!(s, StatusCode::GONE, "{v}");

    let (s, v) = request(&http, M::DELETE, &domain_url, t, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let seen = violations(&stack.nats);
    assert!(
        seen.is_empty(),
        "permission violations:\n{}",
        seen.join("\n")
    );
    // The check above can fail: the same log shows a refused publish.
    let gw_client = runtime::connect_nats(&stack.nats.url_as("gateway"), "probe")
        .await
        .unwrap();
    gw_client
        .publish("email_domains.commands.recheck", "{}".into())
        .await
        .unwrap();
    gw_client.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while violations(&stack.nats).is_empty() {
        assert!(Instant::now() < deadline, "nats-server logged no violation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    stack.shutdown().await;
}

//! Forcing statuses for tests: only some records failed, and a status held against
//! the verification requests and DNS checks that would otherwise reset it.

mod common;

use common::Server;
use dev_provider::{DevProviderConfig, ForcedRecordStatus, ForcedStatus};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn statuses(domain: &Value) -> Vec<(String, String, String)> {
    domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn get(server: &Server, id: &str) -> Value {
    let (status, _, body) = server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn only_the_records_named_are_failed_and_a_held_status_survives_a_verification_request() {
    let server = Server::start(DevProviderConfig::default()).await;
    let id = server.create("partly.example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .control
        .force(
            &id,
            &ForcedStatus {
                status: "partially_failed".into(),
                record_status: Some("verified".into()),
                records: vec![ForcedRecordStatus {
                    name: "resend._domainkey".into(),
                    record_type: Some("TXT".into()),
                    status: "failed".into(),
                }],
                hold: true,
            },
        )
        .await
        .unwrap();
    let (status, _, _) = server
        .call(Method::POST, &format!("/domains/{id}/verify"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let domain = get(&server, &id).await;
    assert_eq!(
        domain["status"], "partially_failed",
        "held through the verify"
    );
    let failed: Vec<_> = statuses(&domain)
        .into_iter()
        .filter(|(_, _, s)| s == "failed")
        .collect();
    assert_eq!(
        failed,
        vec![(
            "TXT".to_owned(),
            "resend._domainkey".to_owned(),
            "failed".to_owned()
        )]
    );
    assert!(statuses(&domain)
        .iter()
        .filter(|(_, n, _)| n != "resend._domainkey")
        .all(|(_, _, s)| s == "verified"));

    // Forced again without holding: a verification request resets it as before.
    server
        .control
        .force_status(&id, "failed", None)
        .await
        .unwrap();
    server
        .call(Method::POST, &format!("/domains/{id}/verify"), None)
        .await;
    assert_ne!(get(&server, &id).await["status"], "failed");
}

#[tokio::test]
async fn a_record_status_for_a_record_the_domain_lacks_is_refused_and_changes_nothing() {
    let server = Server::start(DevProviderConfig::default()).await;
    let id = server.create("typo.example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = server
        .control
        .force(
            &id,
            &ForcedStatus {
                status: "failed".into(),
                records: vec![ForcedRecordStatus {
                    name: "nope".into(),
                    record_type: None,
                    status: "failed".into(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(get(&server, &id).await["status"], "not_started");
}

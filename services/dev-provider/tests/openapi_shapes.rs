//! Every answer of the dev provider, validated against Resend's OpenAPI description.
//!
//! The description (a copy in `openapi/`) declares no `required` fields and allows
//! extra properties, so each schema is tightened here: `additionalProperties: false`
//! on every object (nothing Resend does not document), plus the fields a client relies
//! on marked required. Resend's error body has no schema in the description; its
//! shape (`statusCode`, `message`, `name`) is written out below.

mod common;

use std::time::Duration;

use common::Server;
use dev_provider::{DevProviderConfig, Faults};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/resend-openapi.yaml");
    let text = std::fs::read_to_string(path).expect("the OpenAPI copy is in openapi/");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    serde_json::to_value(yaml).expect("YAML maps to JSON")
}

/// Inlines `#/components/schemas/...` references, turns OpenAPI 3.0 `nullable` into a
/// JSON Schema type union, and forbids undocumented properties.
fn tighten(schema: &Value, spec: &Value, depth: usize) -> Value {
    assert!(depth < 32, "reference cycle in the schema");
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer = reference.trim_start_matches('#');
                let target = spec
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("unresolved {reference}"));
                return tighten(target, spec, depth + 1);
            }
            let mut out = serde_json::Map::new();
            for (key, value) in map {
                if key == "nullable" {
                    continue;
                }
                out.insert(key.clone(), tighten(value, spec, depth + 1));
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
            }
            if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| tighten(v, spec, depth + 1)).collect())
        }
        other => other.clone(),
    }
}

/// The schema `components/schemas/<name>`, tightened, with `required` fields.
fn schema(name: &str, required: &[&str]) -> Value {
    let spec = openapi();
    let raw = spec
        .pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("no schema {name}"))
        .clone();
    let mut schema = tighten(&raw, &spec, 0);
    schema["required"] = json!(required);
    schema
}

const RECORD_FIELDS: &[&str] = &["record", "name", "type", "ttl", "status", "value"];

/// Marks the record fields required inside `records.items`.
fn with_required_records(mut schema: Value) -> Value {
    schema["properties"]["records"]["items"]["required"] = json!(RECORD_FIELDS);
    schema
}

fn assert_valid(schema: &Value, instance: &Value) {
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance:#}\nviolates the schema:\n{}",
        errors.join("\n")
    );
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["statusCode", "message", "name"],
        "additionalProperties": false,
        "properties": {
            "statusCode": {"type": "integer"},
            "message": {"type": "string", "minLength": 1},
            "name": {"type": "string", "minLength": 1}
        }
    })
}

fn assert_error(status: StatusCode, body: &Value, expected_status: u16, expected_name: &str) {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    assert_valid(&error_schema(), body);
    assert_eq!(body["statusCode"], expected_status);
    assert_eq!(body["name"], expected_name);
}

#[test]
fn the_openapi_copy_is_the_shared_reference() {
    let copy = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/resend-openapi.yaml");
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/resend-openapi.yaml"
    );
    // shared/ may sit elsewhere (CI clones); compare only when it is there.
    if let Ok(original) = std::fs::read_to_string(shared) {
        assert_eq!(std::fs::read_to_string(copy).unwrap(), original);
    }
    let license = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/resend-openapi.LICENSE"
    );
    assert!(
        std::fs::metadata(license).is_ok(),
        "the license travels with the copy"
    );
}

#[test]
fn the_tightened_schemas_reject_what_resend_does_not_document() {
    let schema = with_required_records(schema("Domain", &["object", "id", "records"]));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let good = json!({"object": "domain", "id": "1", "records": [
        {"record": "SPF", "name": "send", "type": "MX", "ttl": "Auto", "status": "pending",
         "value": "x", "priority": 10}]});
    assert!(validator.is_valid(&good));
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    assert!(!validator.is_valid(&extra), "undocumented field");
    let mut bad_status = good.clone();
    bad_status["records"][0]["status"] = json!("weird");
    assert!(
        !validator.is_valid(&bad_status),
        "undocumented record status"
    );
    let mut ttl_number = good.clone();
    ttl_number["records"][0]["ttl"] = json!(3600);
    assert!(!validator.is_valid(&ttl_number), "ttl is a string");
    let mut missing = good;
    missing["records"][0]
        .as_object_mut()
        .unwrap()
        .remove("value");
    assert!(!validator.is_valid(&missing), "record without value");
}

#[tokio::test]
async fn create_answers_201_with_a_create_domain_response() {
    let server = Server::start(DevProviderConfig::default()).await;
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "Shapes.Example.com."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let schema = with_required_records(schema(
        "CreateDomainResponse",
        &["id", "name", "created_at", "status", "records", "region"],
    ));
    assert_valid(&schema, &body);
    assert_eq!(body["name"], "shapes.example.com");
    assert_eq!(body["status"], "not_started");
    assert_eq!(body["region"], "us-east-1");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());

    let records = body["records"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["record"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("SPF", "MX", "send"),
            ("SPF", "TXT", "send"),
            ("DKIM", "TXT", "resend._domainkey")
        ]
    );
    assert_eq!(records[0]["value"], "feedback-smtp.us-east-1.amazonses.com");
    assert_eq!(records[0]["priority"], 10);
    assert_eq!(records[1]["value"], "v=spf1 include:amazonses.com ~all");
    assert!(records[1].get("priority").is_none());
    let dkim = records[2]["value"].as_str().unwrap();
    assert!(dkim.starts_with("p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
    assert!(
        dkim.len() > 255,
        "a realistic 2048-bit key is longer than one TXT string"
    );
    assert!(records
        .iter()
        .all(|r| r["ttl"] == "Auto" && r["status"] == "not_started"));
}

#[tokio::test]
async fn create_in_a_region_uses_that_region_and_rejects_unknown_ones() {
    let server = Server::start(DevProviderConfig::default()).await;
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "eu.example.com", "region": "eu-west-1", "unknown_option": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["region"], "eu-west-1");
    assert_eq!(
        body["records"][0]["value"],
        "feedback-smtp.eu-west-1.amazonses.com"
    );

    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "x.example.com", "region": "mars-1"})),
        )
        .await;
    assert_error(status, &body, 422, "validation_error");
}

#[tokio::test]
async fn get_answers_a_domain_with_records() {
    let server = Server::start(DevProviderConfig::default()).await;
    let created = server.create("get.example.com").await;
    let id = created["id"].as_str().unwrap();
    let (status, _, body) = server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let schema = with_required_records(schema(
        "Domain",
        &[
            "object",
            "id",
            "name",
            "status",
            "created_at",
            "region",
            "records",
        ],
    ));
    assert_valid(&schema, &body);
    assert_eq!(body["object"], "domain");
    assert_eq!(body["id"], created["id"]);
    assert_eq!(body["records"], created["records"]);
}

#[tokio::test]
async fn list_answers_pages_newest_first_without_records() {
    let server = Server::start(DevProviderConfig::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.create(&format!("list{i}.example.com")).await["id"].clone());
    }
    let schema = schema("ListDomainsResponse", &["object", "has_more", "data"]);
    let item_required = json!(["id", "name", "status", "created_at", "region"]);

    let (status, _, page1) = server.call(Method::GET, "/domains?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut schema = schema;
    schema["properties"]["data"]["items"]["required"] = item_required;
    assert_valid(&schema, &page1);
    assert_eq!(page1["object"], "list");
    assert_eq!(page1["has_more"], true);
    let names = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["list4.example.com", "list3.example.com"]);
    assert!(page1["data"][0].get("records").is_none());

    let cursor = page1["data"][1]["id"].as_str().unwrap();
    let (_, _, page2) = server
        .call(
            Method::GET,
            &format!("/domains?limit=2&after={cursor}"),
            None,
        )
        .await;
    assert_valid(&schema, &page2);
    assert_eq!(names(&page2), ["list2.example.com", "list1.example.com"]);
    assert_eq!(page2["has_more"], true);

    let cursor = page2["data"][1]["id"].as_str().unwrap();
    let (_, _, page3) = server
        .call(
            Method::GET,
            &format!("/domains?limit=2&after={cursor}"),
            None,
        )
        .await;
    assert_eq!(names(&page3), ["list0.example.com"]);
    assert_eq!(page3["has_more"], false);

    let cursor = page3["data"][0]["id"].as_str().unwrap();
    let (_, _, back) = server
        .call(
            Method::GET,
            &format!("/domains?limit=2&before={cursor}"),
            None,
        )
        .await;
    assert_eq!(names(&back), ["list2.example.com", "list1.example.com"]);

    let (_, _, all) = server.call(Method::GET, "/domains", None).await;
    assert_valid(&schema, &all);
    assert_eq!(all["data"].as_array().unwrap().len(), 5);

    let (status, _, body) = server.call(Method::GET, "/domains?limit=101", None).await;
    assert_error(status, &body, 422, "validation_error");
}

#[tokio::test]
async fn verify_answers_the_verify_shape_and_marks_the_domain_pending() {
    let server = Server::start(DevProviderConfig {
        // A DNS server that never answers: nothing verifies, the domain stays pending.
        dns_nameservers: vec!["127.0.0.1:9".parse().unwrap()],
        ..Default::default()
    })
    .await;
    let id = server.create("verify.example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = server
        .call(Method::POST, &format!("/domains/{id}/verify"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_valid(&schema("VerifyDomainResponse", &["object", "id"]), &body);
    assert_eq!(body, json!({"object": "domain", "id": id}));

    let (_, _, domain) = server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    assert_eq!(domain["status"], "pending");
    assert!(domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "pending"));
}

#[tokio::test]
async fn delete_answers_the_delete_shape_and_the_domain_is_gone() {
    let server = Server::start(DevProviderConfig::default()).await;
    let id = server.create("delete.example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = server
        .call(Method::DELETE, &format!("/domains/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_valid(
        &schema("DeleteDomainResponse", &["object", "id", "deleted"]),
        &body,
    );
    assert_eq!(body, json!({"object": "domain", "id": id, "deleted": true}));

    let (status, _, body) = server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, _, body) = server
        .call(Method::DELETE, &format!("/domains/{id}"), None)
        .await;
    assert_error(status, &body, 404, "not_found");
    // The name is free again.
    server.create("delete.example.com").await;
}

#[tokio::test]
async fn errors_have_resends_error_shape() {
    let server = Server::start(DevProviderConfig::default()).await;

    let response = server
        .http
        .get(format!("{}/domains", server.base))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        401,
        "missing_api_key",
    );
    let response = server
        .http
        .get(format!("{}/domains", server.base))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, _, body) = server.call(Method::GET, "/domains/no-such-id", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, _, body) = server
        .call(Method::POST, "/domains/no-such-id/verify", None)
        .await;
    assert_error(status, &body, 404, "not_found");

    server.create("dup.example.com").await;
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "DUP.example.com"})),
        )
        .await;
    assert_error(status, &body, 403, "validation_error");
    assert_eq!(
        body["message"],
        "The domain dup.example.com has been registered already"
    );

    let (status, _, body) = server.call(Method::POST, "/domains", Some(json!({}))).await;
    assert_error(status, &body, 422, "missing_required_field");
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "not a domain"})),
        )
        .await;
    assert_error(status, &body, 422, "validation_error");
}

#[tokio::test]
async fn injected_rate_limits_answer_429_with_retry_headers() {
    let server = Server::start(DevProviderConfig::default()).await;
    server
        .control
        .set_faults(&Faults {
            rate_limit_next: Some(2),
            retry_after_secs: Some(3.0),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let (status, headers, body) = server.call(Method::GET, "/domains", None).await;
        assert_error(status, &body, 429, "rate_limit_exceeded");
        assert_eq!(headers["retry-after"], "3");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "3");
        assert!(headers.contains_key("ratelimit-limit"));
    }
    let (status, _, _) = server.call(Method::GET, "/domains", None).await;
    assert_eq!(status, StatusCode::OK);

    server
        .control
        .set_faults(&Faults {
            rate_limit_next: Some(1),
            retry_after_secs: Some(0.25),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, headers, _) = server.call(Method::GET, "/domains", None).await;
    assert_eq!(headers["retry-after"], "0.25");
    assert_eq!(headers["ratelimit-reset"], "1");
}

#[tokio::test]
async fn injected_server_errors_answer_500_then_recover() {
    let server = Server::start(DevProviderConfig::default()).await;
    server
        .control
        .set_faults(&Faults {
            server_error_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "e500.example.com"})),
        )
        .await;
    assert_error(status, &body, 500, "internal_server_error");
    server.create("e500.example.com").await;
    assert_eq!(server.control.stats().await.unwrap().server_errors, 1);
}

#[tokio::test]
async fn a_lost_create_answer_still_creates_the_domain() {
    let server = Server::start(DevProviderConfig::default()).await;
    server
        .control
        .set_faults(&Faults {
            forbid_next_create: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "lost.example.com"})),
        )
        .await;
    assert_error(status, &body, 403, "validation_error");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("registered already"));
    assert_eq!(server.control.stats().await.unwrap().domains, 1);
    // Only the next create is affected.
    server.create("other.example.com").await;
}

#[tokio::test]
async fn delays_hold_requests_back() {
    let server = Server::start(DevProviderConfig::default()).await;
    server
        .control
        .set_faults(&Faults {
            delay_ms: Some(300),
            delay_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    server.call(Method::GET, "/domains", None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = std::time::Instant::now();
    server.call(Method::GET, "/domains", None).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn a_delay_can_be_limited_to_one_route() {
    let server = Server::start(DevProviderConfig::default()).await;
    server
        .control
        .set_faults(&Faults {
            delay_ms: Some(300),
            delay_next: Some(1),
            delay_route: Some("POST /domains".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // Other routes are not held back and do not use up the one delay.
    let started = std::time::Instant::now();
    server.call(Method::GET, "/domains", None).await;
    assert!(started.elapsed() < Duration::from_millis(300));
    let started = std::time::Instant::now();
    server.create("route.example.com").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = std::time::Instant::now();
    server.create("route2.example.com").await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn a_late_answer_still_carries_out_the_request() {
    let server = Server::start(DevProviderConfig::default()).await;
    let faults = server
        .control
        .set_faults(&Faults {
            delay_ms: Some(2000),
            delay_next: Some(1),
            delay_route: Some("POST /domains".into()),
            delay_after_handling: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(faults.delay_route.as_deref(), Some("POST /domains"));
    assert_eq!(faults.delay_after_handling, Some(true));
    // A client that gives up before the answer comes.
    let gave_up = server
        .http
        .post(format!("{}/domains", server.base))
        .bearer_auth("re_test_key")
        .json(&json!({"name": "late.example.com"}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // The domain exists all the same: a second create is refused, not duplicated.
    let (status, _, body) = server
        .call(
            Method::POST,
            "/domains",
            Some(json!({"name": "late.example.com"})),
        )
        .await;
    assert_error(status, &body, 403, "validation_error");
    let stats = server.control.stats().await.unwrap();
    assert_eq!(stats.domains, 1);
    assert_eq!(stats.created_by_name["late.example.com"], 1);
    assert_eq!(stats.by_path["POST /domains"], 2);
}

#[tokio::test]
async fn stats_count_api_requests_by_route() {
    let server = Server::start(DevProviderConfig::default()).await;
    let id = server.create("stats.example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    server.call(Method::GET, "/domains", None).await;
    let stats = server.control.stats().await.unwrap();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.by_path["POST /domains"], 1);
    assert_eq!(stats.by_path["GET /domains/{id}"], 2);
    assert_eq!(stats.by_path["GET /domains"], 1);
    assert_eq!(stats.domains, 1);
}

#[tokio::test]
async fn a_natural_rate_limit_answers_429_beyond_the_limit() {
    let server = Server::start(DevProviderConfig {
        rate_limit_per_sec: Some(2),
        ..Default::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = server.call(Method::GET, "/domains", None).await;
        assert_eq!(headers["ratelimit-limit"], "2");
        statuses.push((status.as_u16(), headers.get("retry-after").is_some()));
    }
    assert_eq!(statuses, [(200, false), (200, false), (429, true)]);
}

#[tokio::test]
async fn forced_statuses_are_reported_raw() {
    let server = Server::start(DevProviderConfig::default()).await;
    let id = server.create("forced.example.com").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .control
        .force_status(&id, "partially_failed", Some("failed"))
        .await
        .unwrap();
    let (_, _, body) = server
        .call(Method::GET, &format!("/domains/{id}"), None)
        .await;
    assert_eq!(body["status"], "partially_failed");
    assert_eq!(body["records"][0]["status"], "failed");
}

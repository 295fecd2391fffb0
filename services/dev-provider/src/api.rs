//! Resend's domain endpoints: create, get, list, verify, delete.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::dns_check::check_records;
use crate::records::{sending_records, DEFAULT_REGION, REGIONS};
use crate::state::{AppState, DevDomain};

/// Longest a DNS check may hold up a `GET` of a pending domain.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LIST_LIMIT: usize = 20;
const MAX_LIST_LIMIT: usize = 100;

/// Resend's error body: `{"statusCode", "message", "name"}`.
pub(crate) fn error_response(
    status: StatusCode,
    name: &str,
    message: impl Into<String>,
) -> Response {
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message.into(),
        "name": name,
    });
    (status, Json(body)).into_response()
}

fn domain_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "Domain not found")
}

fn registered_already(name: &str) -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "validation_error",
        format!("The domain {name} has been registered already"),
    )
}

fn validation_error(message: impl Into<String>) -> Response {
    error_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
        message,
    )
}

pub(crate) async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "Route not found")
}

/// A plausible DNS domain name: two or more LDH labels of 1 to 63 characters.
fn is_valid_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_valid_return_path(name: &str) -> bool {
    is_valid_domain(&format!("{name}.x"))
}

pub(crate) async fn create_domain(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return validation_error("The request body is not valid JSON.");
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_required_field",
            "Missing `name` field.",
        );
    };
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if !is_valid_domain(&name) {
        return validation_error(format!("The domain {name} is not a valid domain name."));
    }
    let region = match body.get("region") {
        None | Some(Value::Null) => DEFAULT_REGION,
        Some(Value::String(r)) if REGIONS.contains(&r.as_str()) => r.as_str(),
        Some(_) => {
            return validation_error(
                "Invalid region. Possible values are us-east-1 | eu-west-1 | sa-east-1 | ap-northeast-1",
            )
        }
    };
    let return_path = match body.get("custom_return_path") {
        None | Some(Value::Null) => "send".to_owned(),
        Some(Value::String(p)) if is_valid_return_path(&p.to_ascii_lowercase()) => {
            p.to_ascii_lowercase()
        }
        Some(_) => return validation_error("Invalid custom_return_path."),
    };
    let receiving = body.pointer("/capabilities/receiving") == Some(&json!("enabled"));
    let lose_answer = std::mem::take(&mut state.control().faults.forbid_next_create);

    let records = sending_records(region, &return_path, receiving);
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f+00")
        .to_string();
    let answer = {
        let mut store = state.store_write();
        if store.by_name.contains_key(&name) {
            return registered_already(&name);
        }
        let seq = store.next_seq;
        store.next_seq += 1;
        let domain = DevDomain {
            id: id.clone(),
            name: name.clone(),
            region: region.to_owned(),
            created_at,
            status: "not_started".to_owned(),
            records,
            seq,
            status_held: false,
        };
        let answer = domain.create_json();
        store.by_name.insert(name.clone(), id.clone());
        *store.created_by_name.entry(name.clone()).or_default() += 1;
        store.order.insert(seq, id.clone());
        store.domains.insert(id, domain);
        answer
    };
    if lose_answer {
        return registered_already(&name);
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

pub(crate) async fn get_domain(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let Some(domain) = state.store_read().domains.get(&id).cloned() else {
        return domain_not_found();
    };
    let domain = if domain.status == "pending" && !domain.status_held {
        recheck(&state, domain).await
    } else {
        domain
    };
    Json(domain.get_json()).into_response()
}

/// Runs the DNS check of a pending domain and records the outcome; returns the domain
/// as it is afterwards.
async fn recheck(state: &AppState, domain: DevDomain) -> DevDomain {
    let Some(resolver) = &state.resolver else {
        return domain;
    };
    let published = tokio::time::timeout(
        CHECK_TIMEOUT,
        check_records(resolver, &domain.name, &domain.records),
    )
    .await
    .unwrap_or_else(|_| vec![false; domain.records.len()]);
    let mut store = state.store_write();
    let Some(current) = store.domains.get_mut(&domain.id) else {
        return domain;
    };
    // Only a domain still waiting takes the outcome (not one forced or re-verified meanwhile).
    if current.status == "pending"
        && !current.status_held
        && current.records.len() == published.len()
    {
        for (record, ok) in current.records.iter_mut().zip(&published) {
            record.status = if *ok { "verified" } else { "pending" }.to_owned();
        }
        if published.iter().all(|ok| *ok) {
            current.status = "verified".to_owned();
        }
    }
    current.clone()
}

pub(crate) async fn verify_domain(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let domain = {
        let mut store = state.store_write();
        let Some(domain) = store.domains.get_mut(&id) else {
            return domain_not_found();
        };
        if domain.status_held {
            // A forced status stays until the next force (what a test set up).
            return Json(json!({ "object": "domain", "id": id })).into_response();
        }
        domain.status = "pending".to_owned();
        for record in &mut domain.records {
            record.status = "pending".to_owned();
        }
        domain.clone()
    };
    // Asynchronous, like Resend: the answer does not wait for DNS.
    let background = state.clone();
    tokio::spawn(async move {
        recheck(&background, domain).await;
    });
    Json(json!({ "object": "domain", "id": id })).into_response()
}

pub(crate) async fn delete_domain(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    state.wait_while_deletes_held().await;
    {
        let mut store = state.store_write();
        let Some(domain) = store.domains.remove(&id) else {
            return domain_not_found();
        };
        store.by_name.remove(&domain.name);
        store.order.remove(&domain.seq);
        store.deleted_seq.insert(domain.id, domain.seq);
    }
    Json(json!({ "object": "domain", "id": id, "deleted": true })).into_response()
}

/// Newest first; `after` pages towards older domains, `before` towards newer ones.
pub(crate) async fn list_domains(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIST_LIMIT,
        Some(Ok(l)) if (1..=MAX_LIST_LIMIT).contains(&l) => l,
        Some(_) => return validation_error("The `limit` parameter must be between 1 and 100."),
    };
    if query.contains_key("after") && query.contains_key("before") {
        return validation_error("Use either `after` or `before`, not both.");
    }
    let (page, has_more) = {
        let store = state.store_read();
        let cursor = |key: &str| -> Result<Option<u64>, String> {
            match query.get(key) {
                None => Ok(None),
                Some(id) => store
                    .cursor_seq(id)
                    .map(Some)
                    .ok_or_else(|| format!("The `{key}` cursor is not a known id.")),
            }
        };
        let (after, before) = match (cursor("after"), cursor("before")) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(message), _) | (_, Err(message)) => return validation_error(message),
        };
        let (ids, has_more): (Vec<&String>, bool) = if let Some(before) = before {
            // The `limit` domains just newer than the cursor, still listed newest first.
            let mut newer: Vec<&String> = store
                .order
                .range(before + 1..)
                .take(limit + 1)
                .map(|(_, id)| id)
                .collect();
            let has_more = newer.len() > limit;
            newer.truncate(limit);
            newer.reverse();
            (newer, has_more)
        } else {
            let mut older: Vec<&String> = store
                .order
                .range(..after.unwrap_or(u64::MAX))
                .rev()
                .take(limit + 1)
                .map(|(_, id)| id)
                .collect();
            let has_more = older.len() > limit;
            older.truncate(limit);
            (older, has_more)
        };
        let page: Vec<DevDomain> = ids
            .into_iter()
            .filter_map(|id| store.domains.get(id).cloned())
            .collect();
        (page, has_more)
    };
    // Like a get, and like Resend's own background checks: a pending domain's status
    // is current in the list too (a poller reading only the list still sees it verify).
    let page = futures::future::join_all(page.into_iter().map(|d| {
        let state = state.clone();
        async move {
            if d.status == "pending" && !d.status_held {
                recheck(&state, d).await
            } else {
                d
            }
        }
    }))
    .await;
    let data: Vec<Value> = page.iter().map(DevDomain::list_item_json).collect();
    Json(json!({ "object": "list", "has_more": has_more, "data": data })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_are_checked_plainly() {
        assert!(is_valid_domain("example.com"));
        assert!(is_valid_domain("mail-1.example.co.uk"));
        assert!(!is_valid_domain("localhost"));
        assert!(!is_valid_domain("-bad.com"));
        assert!(!is_valid_domain("a..com"));
        assert!(!is_valid_domain("under_score.com"));
    }
}

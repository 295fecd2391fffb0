//! The test control surface (`/_control/...`) and a small client for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::error_response;
use crate::state::AppState;

/// Faults to inject, as posted to `POST /_control/faults`. Absent fields keep their
/// current setting; the answer is the complete current setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// The next n API requests answer 429 with `retry-after` and `ratelimit-*` headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_next: Option<u32>,
    /// The `retry-after` of injected 429s, in seconds (fractions allowed; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<f64>,
    /// The next n API requests (after any injected 429s) answer 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_error_next: Option<u32>,
    /// API requests are delayed by this many milliseconds (0 stops delaying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Delay only the next n requests; absent: every request until `delay_ms` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_next: Option<u32>,
    /// The next create answers 403 "registered already" after really creating the
    /// domain: a create whose answer was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbid_next_create: Option<bool>,
}

/// Counters from `GET /_control/stats`. Control requests are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// API requests received, whatever they were answered.
    pub requests: u64,
    /// Requests per `"METHOD /route"`, e.g. `"POST /domains"`, `"GET /domains/{id}"`.
    pub by_path: HashMap<String, u64>,
    /// Domains that exist now.
    pub domains: u64,
    /// Requests answered 429 (injected or natural).
    #[serde(default)]
    pub rate_limited: u64,
    /// Requests answered with an injected 500.
    #[serde(default)]
    pub server_errors: u64,
}

/// The faults still to be served.
#[derive(Debug, Clone)]
pub(crate) struct ActiveFaults {
    pub rate_limit_next: u32,
    pub retry_after_secs: f64,
    pub server_error_next: u32,
    pub delay: Duration,
    pub delay_next: Option<u32>,
    pub forbid_next_create: bool,
}

impl Default for ActiveFaults {
    fn default() -> Self {
        Self {
            rate_limit_next: 0,
            retry_after_secs: 1.0,
            server_error_next: 0,
            delay: Duration::ZERO,
            delay_next: None,
            forbid_next_create: false,
        }
    }
}

impl ActiveFaults {
    fn apply(&mut self, faults: &Faults) {
        if let Some(n) = faults.rate_limit_next {
            self.rate_limit_next = n;
        }
        if let Some(s) = faults.retry_after_secs {
            self.retry_after_secs = if s.is_finite() { s.max(0.0) } else { 1.0 };
        }
        if let Some(n) = faults.server_error_next {
            self.server_error_next = n;
        }
        if let Some(ms) = faults.delay_ms {
            self.delay = Duration::from_millis(ms);
            self.delay_next = faults.delay_next;
        }
        if let Some(forbid) = faults.forbid_next_create {
            self.forbid_next_create = forbid;
        }
    }

    fn to_wire(&self) -> Faults {
        Faults {
            rate_limit_next: Some(self.rate_limit_next),
            retry_after_secs: Some(self.retry_after_secs),
            server_error_next: Some(self.server_error_next),
            delay_ms: Some(self.delay.as_millis() as u64),
            delay_next: self.delay_next,
            forbid_next_create: Some(self.forbid_next_create),
        }
    }

    /// The delay owed to the next request.
    pub(crate) fn take_delay(&mut self) -> Duration {
        match &mut self.delay_next {
            None => self.delay,
            Some(0) => Duration::ZERO,
            Some(n) => {
                *n -= 1;
                self.delay
            }
        }
    }
}

pub(crate) async fn set_faults(
    State(state): State<Arc<AppState>>,
    Json(faults): Json<Faults>,
) -> Json<Faults> {
    let mut control = state.control();
    control.faults.apply(&faults);
    Json(control.faults.to_wire())
}

pub(crate) async fn clear_faults(State(state): State<Arc<AppState>>) -> Json<Faults> {
    let mut control = state.control();
    control.faults = ActiveFaults::default();
    Json(control.faults.to_wire())
}

pub(crate) async fn stats(State(state): State<Arc<AppState>>) -> Json<Stats> {
    let domains = state.store_read().domains.len() as u64;
    let control = state.control();
    Json(Stats {
        requests: control.requests,
        by_path: control.by_path.clone(),
        domains,
        rate_limited: control.rate_limited,
        server_errors: control.server_errors,
    })
}

#[derive(Deserialize)]
pub(crate) struct ForcedStatus {
    status: String,
    /// Also set every record's status to this.
    #[serde(default)]
    record_status: Option<String>,
}

/// Sets a domain's raw status (any text), e.g. to show the adapter a status it does
/// not know, or `failed`.
pub(crate) async fn force_status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(forced): Json<ForcedStatus>,
) -> Response {
    let mut store = state.store_write();
    let Some(domain) = store.domains.get_mut(&id) else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "Domain not found");
    };
    domain.status = forced.status;
    if let Some(record_status) = forced.record_status {
        for record in &mut domain.records {
            record.status = record_status.clone();
        }
    }
    Json(domain.get_json()).into_response()
}

/// A client for the control surface, for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct DevProviderControl {
    base: String,
    http: reqwest::Client,
}

impl DevProviderControl {
    /// `base_url` like `http://127.0.0.1:3001`.
    pub fn new(base_url: &str) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Merges `faults` into the current setting; returns the complete setting.
    pub async fn set_faults(&self, faults: &Faults) -> reqwest::Result<Faults> {
        self.http
            .post(format!("{}/_control/faults", self.base))
            .json(faults)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Removes every injected fault.
    pub async fn clear_faults(&self) -> reqwest::Result<()> {
        self.http
            .delete(format!("{}/_control/faults", self.base))
            .send()
            .await?
            .error_for_status()
            .map(drop)
    }

    pub async fn stats(&self) -> reqwest::Result<Stats> {
        self.http
            .get(format!("{}/_control/stats", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Forces the raw status of a domain (and, if given, of all its records).
    pub async fn force_status(
        &self,
        domain_id: &str,
        status: &str,
        record_status: Option<&str>,
    ) -> reqwest::Result<()> {
        self.http
            .post(format!("{}/_control/domains/{domain_id}/status", self.base))
            .json(&serde_json::json!({ "status": status, "record_status": record_status }))
            .send()
            .await?
            .error_for_status()
            .map(drop)
    }
}

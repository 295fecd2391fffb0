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
    /// Delay only requests of this route, spelt as in [`Stats::by_path`] (e.g.
    /// `"POST /domains"`); absent: every API request. Only matching requests count
    /// towards `delay_next`. Set together with `delay_ms` (absent resets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_route: Option<String>,
    /// Hold back the answer rather than the request: the request is carried out at
    /// once and its answer sent after the delay, so a client that gives up waiting has
    /// still had its request done (a create whose answer came too late). Set together
    /// with `delay_ms` (absent resets it to false: the request itself waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_after_handling: Option<bool>,
    /// The next create answers 403 "registered already" after really creating the
    /// domain: a create whose answer was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbid_next_create: Option<bool>,
    /// While true, every `DELETE /domains/{id}` waits before it is carried out; setting
    /// it back to false lets the held deletes through (a provider clean-up that is slow
    /// to land, so a test can order other work around it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_deletes: Option<bool>,
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
    /// Domains ever created per name (deleted ones included): more than one for a name
    /// is a duplicate, unless the first was deleted in between.
    #[serde(default)]
    pub created_by_name: HashMap<String, u64>,
    /// `DELETE /domains/{id}` requests waiting now because deletes are held.
    #[serde(default)]
    pub deletes_held: u64,
}

/// The faults still to be served.
#[derive(Debug, Clone)]
pub(crate) struct ActiveFaults {
    pub rate_limit_next: u32,
    pub retry_after_secs: f64,
    pub server_error_next: u32,
    pub delay: Duration,
    pub delay_next: Option<u32>,
    pub delay_route: Option<String>,
    pub delay_after_handling: bool,
    pub forbid_next_create: bool,
}

/// The delay one request owes, and where it falls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OwedDelay {
    pub delay: Duration,
    /// After the handler ran (the answer waits), not before (the request waits).
    pub after_handling: bool,
}

impl Default for ActiveFaults {
    fn default() -> Self {
        Self {
            rate_limit_next: 0,
            retry_after_secs: 1.0,
            server_error_next: 0,
            delay: Duration::ZERO,
            delay_next: None,
            delay_route: None,
            delay_after_handling: false,
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
            self.delay_route = faults.delay_route.clone().filter(|r| !r.trim().is_empty());
            self.delay_after_handling = faults.delay_after_handling.unwrap_or(false);
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
            delay_route: self.delay_route.clone(),
            delay_after_handling: Some(self.delay_after_handling),
            forbid_next_create: Some(self.forbid_next_create),
            hold_deletes: None,
        }
    }

    /// The delay owed to the next request, of `route` (`"METHOD /path"`).
    pub(crate) fn take_delay(&mut self, route: &str) -> OwedDelay {
        if self.delay.is_zero()
            || self
                .delay_route
                .as_deref()
                .is_some_and(|wanted| wanted != route)
        {
            return OwedDelay::default();
        }
        let delay = match &mut self.delay_next {
            None => self.delay,
            Some(0) => Duration::ZERO,
            Some(n) => {
                *n -= 1;
                self.delay
            }
        };
        OwedDelay {
            delay,
            after_handling: self.delay_after_handling,
        }
    }
}

pub(crate) async fn set_faults(
    State(state): State<Arc<AppState>>,
    Json(faults): Json<Faults>,
) -> Json<Faults> {
    // The hold lives in a watch channel, so held deletes wake up when it is lifted.
    let hold = faults
        .hold_deletes
        .unwrap_or_else(|| *state.hold_deletes.borrow());
    state.hold_deletes.send_replace(hold);
    let mut control = state.control();
    control.faults.apply(&faults);
    Json(Faults {
        hold_deletes: Some(hold),
        ..control.faults.to_wire()
    })
}

pub(crate) async fn clear_faults(State(state): State<Arc<AppState>>) -> Json<Faults> {
    state.hold_deletes.send_replace(false);
    let mut control = state.control();
    control.faults = ActiveFaults::default();
    Json(Faults {
        hold_deletes: Some(false),
        ..control.faults.to_wire()
    })
}

pub(crate) async fn stats(State(state): State<Arc<AppState>>) -> Json<Stats> {
    let (domains, created_by_name) = {
        let store = state.store_read();
        (store.domains.len() as u64, store.created_by_name.clone())
    };
    let control = state.control();
    Json(Stats {
        requests: control.requests,
        by_path: control.by_path.clone(),
        domains,
        rate_limited: control.rate_limited,
        server_errors: control.server_errors,
        created_by_name,
        deletes_held: state.deletes_held.load(std::sync::atomic::Ordering::SeqCst),
    })
}

/// A status to force on a domain, as posted to `POST /_control/domains/{id}/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForcedStatus {
    /// The domain's raw status (any text).
    pub status: String,
    /// Also set every record's status to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_status: Option<String>,
    /// Then set these records' statuses (after `record_status`), e.g. to mark only
    /// some records failed. Each must name a record of the domain, or nothing changes
    /// and the answer is 422.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<ForcedRecordStatus>,
    /// Keep these statuses until the next force: a verification request and the DNS
    /// checks of gets and lists leave them alone. Without it the next verification
    /// request sets the domain back to `pending`.
    #[serde(default)]
    pub hold: bool,
}

/// One record's forced status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForcedRecordStatus {
    /// As the domain lists it: relative to the domain (`send`, `resend._domainkey`, `@`).
    pub name: String,
    /// `TXT`, `MX`, ...; absent: every record of that name.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
    pub status: String,
}

impl ForcedRecordStatus {
    fn matches(&self, record: &crate::records::DevRecord) -> bool {
        record.name.eq_ignore_ascii_case(&self.name)
            && self
                .record_type
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(record.record_type))
    }
}

/// Sets a domain's raw status (any text), e.g. to show the adapter a status it does
/// not know, or `failed`; and, if asked, its records' statuses, all or some.
pub(crate) async fn force_status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(forced): Json<ForcedStatus>,
) -> Response {
    let mut store = state.store_write();
    let Some(domain) = store.domains.get_mut(&id) else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "Domain not found");
    };
    if let Some(unmatched) = forced
        .records
        .iter()
        .find(|f| !domain.records.iter().any(|r| f.matches(r)))
    {
        return error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            format!("The domain has no record `{}`.", unmatched.name),
        );
    }
    domain.status = forced.status;
    domain.status_held = forced.hold;
    if let Some(record_status) = forced.record_status {
        for record in &mut domain.records {
            record.status = record_status.clone();
        }
    }
    for f in &forced.records {
        for record in domain.records.iter_mut().filter(|r| f.matches(r)) {
            record.status = f.status.clone();
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
        self.force(
            domain_id,
            &ForcedStatus {
                status: status.into(),
                record_status: record_status.map(str::to_owned),
                ..Default::default()
            },
        )
        .await
    }

    /// Forces statuses as `forced` says (some records, held until the next force).
    pub async fn force(&self, domain_id: &str, forced: &ForcedStatus) -> reqwest::Result<()> {
        self.http
            .post(format!("{}/_control/domains/{domain_id}/status", self.base))
            .json(forced)
            .send()
            .await?
            .error_for_status()
            .map(drop)
    }
}

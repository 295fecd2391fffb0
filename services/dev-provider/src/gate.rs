//! What every API request passes before its handler: counting, latency, the API key
//! check, injected faults and the natural rate limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error_response;
use crate::control::OwedDelay;
use crate::state::{AppState, Control};

/// What the control knobs decided for one request.
enum Admission {
    Pass {
        rate_headers: Option<RateHeaders>,
    },
    RateLimited {
        retry_after_secs: f64,
        headers: RateHeaders,
    },
    ServerError,
}

struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

impl Control {
    /// Counts the request and takes the delay owed to it.
    fn count(&mut self, route: String) -> OwedDelay {
        self.requests += 1;
        let owed = self.faults.take_delay(&route);
        *self.by_path.entry(route).or_default() += 1;
        owed
    }

    fn admit(&mut self, now: Instant, rate_limit_per_sec: Option<u32>) -> Admission {
        if self.faults.rate_limit_next > 0 {
            self.faults.rate_limit_next -= 1;
            self.rate_limited += 1;
            let retry_after_secs = self.faults.retry_after_secs;
            return Admission::RateLimited {
                retry_after_secs,
                headers: RateHeaders {
                    limit: rate_limit_per_sec.unwrap_or(2),
                    remaining: 0,
                    reset_secs: retry_after_secs.ceil() as u64,
                },
            };
        }
        if self.faults.server_error_next > 0 {
            self.faults.server_error_next -= 1;
            self.server_errors += 1;
            return Admission::ServerError;
        }
        let Some(limit) = rate_limit_per_sec else {
            return Admission::Pass { rate_headers: None };
        };
        // A fixed one-second window: simple, and enough to provoke natural 429s.
        let start = match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => start,
            _ => {
                self.window_start = Some(now);
                self.window_count = 0;
                now
            }
        };
        let reset = Duration::from_secs(1).saturating_sub(now.duration_since(start));
        let reset_secs = reset.as_secs_f64().ceil().max(1.0) as u64;
        if self.window_count >= limit {
            self.rate_limited += 1;
            return Admission::RateLimited {
                retry_after_secs: reset_secs as f64,
                headers: RateHeaders {
                    limit,
                    remaining: 0,
                    reset_secs,
                },
            };
        }
        self.window_count += 1;
        Admission::Pass {
            rate_headers: Some(RateHeaders {
                limit,
                remaining: limit - self.window_count,
                reset_secs,
            }),
        }
    }
}

fn insert_rate_headers(headers: &mut HeaderMap, rate: &RateHeaders) {
    headers.insert("ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(rate.reset_secs));
}

fn has_api_key(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty())
}

pub(crate) async fn gate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = format!(
        "{} {}",
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or(request.uri().path(), MatchedPath::as_str)
    );
    let owed = state.control().count(route);
    let (before, after) = if owed.after_handling {
        (state.latency, owed.delay)
    } else {
        (state.latency + owed.delay, Duration::ZERO)
    };
    if !before.is_zero() {
        tokio::time::sleep(before).await;
    }
    let response = admit_and_run(&state, request, next).await;
    // The request is done; only its answer waits (a client may give up meanwhile).
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    response
}

/// The key check, injected faults and the natural rate limit, then the handler.
async fn admit_and_run(state: &AppState, request: Request, next: Next) -> Response {
    if !has_api_key(request.headers()) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "Missing API key in the authorization header. Include the following header: \
             Authorization: Bearer YOUR_API_KEY in the request.",
        );
    }
    let admission = state
        .control()
        .admit(Instant::now(), state.rate_limit_per_sec);
    match admission {
        Admission::Pass { rate_headers } => {
            let mut response = next.run(request).await;
            if let Some(rate) = rate_headers {
                insert_rate_headers(response.headers_mut(), &rate);
            }
            response
        }
        Admission::RateLimited {
            retry_after_secs,
            headers,
        } => {
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                format!(
                    "Too many requests. You can only make {} requests per second. See rate limit \
                     response headers for more information. Or contact support to increase rate limit.",
                    headers.limit
                ),
            );
            insert_rate_headers(response.headers_mut(), &headers);
            // Rust prints 2.0 as "2" and 0.5 as "0.5": integral values look like Resend's.
            if let Ok(value) = HeaderValue::from_str(&format!("{retry_after_secs}")) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        Admission::ServerError => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "An unexpected error occurred.",
        ),
    }
}

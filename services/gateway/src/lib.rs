//! The gateway: the tenant's "Managed sending" page and the small JSON API behind it,
//! plus signed, expiring, read-only share links for the tenant's DNS admin.
//!
//! It speaks the contract only: it publishes the contract's commands on
//! `email_domains.commands.<type>` and waits (bounded) for their outcomes, and it
//! reads the projections (`email_domains`, `tenant_email_settings`) and, for the
//! timeline, the domain's events. Every API request carries a token the platform
//! signs for one tenant (see [`token`]); a domain of another tenant is "not found".
#![forbid(unsafe_code)]

pub mod limits;
pub mod prose;
pub mod settings;
pub mod token;
pub mod view;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::DirectGetErrorKind;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use email_domain_events::outcome::{Outcome, Verdict};
use email_domain_events::tenant::TenantSettings;
use email_domain_events::{event, Command, CommandId, CommandType, DomainId, Event, TenantId};
use futures::StreamExt;
use runtime::outcomes::Outcomes;
use runtime::{Config, Shutdown};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

pub use token::{Claims, Keys};

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const SHARE_HTML: &str = include_str!("assets/share.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// Every route the router serves, as (method, path) in axum/OpenAPI path syntax.
/// `openapi.yaml` must describe exactly these (checked by a test).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/app.js"),
    ("get", "/app.css"),
    ("get", "/openapi.yaml"),
    ("get", "/healthz"),
    ("get", "/share/{id}"),
    ("get", "/api/v1/session"),
    ("get", "/api/v1/domains"),
    ("post", "/api/v1/domains"),
    ("get", "/api/v1/domains/{id}"),
    ("delete", "/api/v1/domains/{id}"),
    ("post", "/api/v1/domains/{id}/dns-configured"),
    ("post", "/api/v1/domains/{id}/refresh"),
    ("get", "/api/v1/domains/{id}/timeline"),
    ("post", "/api/v1/domains/{id}/share"),
    ("delete", "/api/v1/domains/{id}/share"),
    ("get", "/api/v1/domains/{id}/records.csv"),
    ("get", "/api/v1/domains/{id}/records.zone"),
    ("get", "/api/v1/share/{id}"),
    ("get", "/api/v1/share/{id}/records.csv"),
    ("get", "/api/v1/share/{id}/records.zone"),
];

/// The gateway's KV bucket of share epochs: key = domain id, value = the epoch (decimal).
/// A share link carries the epoch it was made in; revoking raises the domain's epoch,
/// which refuses every older link. Created by the gateway itself (idempotent).
pub const SHARE_EPOCHS_BUCKET: &str = "gateway_share_epochs";

pub const PLAN_MESSAGE: &str =
    "Managed sending is not available on your plan. It is part of the Enterprise edition; ask your account owner about upgrading.";

/// The gateway's own settings (the NATS/Postgres ones come from [`Config`]).
#[derive(Clone, Debug)]
pub struct Options {
    pub keys: Keys,
    /// Where share links point: `GATEWAY_PUBLIC_URL` (e.g.
    /// `https://mail-settings.example.com`). The default of [`Options::new`], the
    /// request's `Host`, is for development and tests: the binary allows it only with
    /// `GATEWAY_DEV` (see [`settings::share_base`]).
    pub share_base: settings::ShareBase,
    /// How long a request waits for a command's outcome.
    pub command_timeout: Duration,
    /// Default lifetime of a share link.
    pub share_ttl: Duration,
    /// Every command a tenant sends (`GATEWAY_TENANT_COMMANDS_PER_MINUTE`,
    /// `GATEWAY_TENANT_COMMAND_BURST`); see [`limits`].
    pub tenant_commands: limits::Rate,
    /// The checks of one domain (`GATEWAY_DOMAIN_CHECK_INTERVAL_SECS`,
    /// `GATEWAY_DOMAIN_CHECK_BURST`); see [`limits`].
    pub domain_checks: limits::Rate,
    /// The most events one timeline answer is made of ([`TIMELINE_PAGE`]).
    pub timeline_page: usize,
}

/// The most events one timeline answer is made of: the page shows the newest ones and
/// asks for older ones with `?before=`. A hundred covers weeks of a domain's checks
/// and milestones while keeping the answer (asked every few seconds) small.
pub const TIMELINE_PAGE: usize = 100;

impl Options {
    pub fn new(keys: Keys) -> Self {
        Options {
            keys,
            share_base: settings::ShareBase::RequestHost,
            command_timeout: Duration::from_secs(10),
            share_ttl: Duration::from_secs(7 * 86_400),
            tenant_commands: limits::Rate::per_minute(
                limits::TENANT_COMMANDS_PER_MINUTE,
                limits::TENANT_COMMAND_BURST,
            ),
            domain_checks: limits::Rate::every_secs(
                limits::DOMAIN_CHECK_INTERVAL_SECS,
                limits::DOMAIN_CHECK_BURST,
            ),
            timeline_page: TIMELINE_PAGE,
        }
    }
}

struct Inner {
    opts: Options,
    config: Config,
    client: async_nats::Client,
    js: jetstream::Context,
    outcomes: Outcomes,
    /// The contract's event stream, read by Direct Get for the timeline.
    events: jetstream::stream::Stream<()>,
    pool: PgPool,
    share_epochs: kv::Store,
    /// Per process: each gateway replica keeps its own buckets (see [`limits`]).
    limits: Mutex<limits::Limits>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Connects to NATS and Postgres and builds the router.
pub async fn app(config: Config, opts: Options) -> anyhow::Result<Router> {
    build(config, opts, None).await
}

/// [`app`], and `ops` reports ready once the gateway's NATS (with the contract's
/// streams) and Postgres are usable, for as long as they stay so (`/readyz`).
pub async fn app_with_ops(
    config: Config,
    opts: Options,
    ops: &runtime::ops::Ops,
) -> anyhow::Result<Router> {
    build(config, opts, Some(ops)).await
}

async fn build(
    config: Config,
    opts: Options,
    ops: Option<&runtime::ops::Ops>,
) -> anyhow::Result<Router> {
    let client = runtime::connect_nats(&config.nats_url, "gateway").await?;
    let js = runtime::jetstream(client.clone());
    // Idempotent: the gateway can start before the other services.
    runtime::streams::ensure(&js, &Default::default()).await?;
    let outcomes = Outcomes::open(&js).await?;
    let events = js.get_stream_no_info(runtime::streams::EVENTS).await?;
    let share_epochs = runtime::streams::ensure_bucket(&js, SHARE_EPOCHS_BUCKET).await?;
    let pool = runtime::db::connect_and_migrate(&config.database_url, 8).await?;
    if let Some(ops) = ops {
        ops.jetstream(&js).postgres(&pool).ready();
    }
    let limits = Mutex::new(limits::Limits::new(
        opts.tenant_commands,
        opts.domain_checks,
    ));
    let state = AppState(Arc::new(Inner {
        opts,
        config,
        client,
        js,
        outcomes,
        events,
        pool,
        share_epochs,
        limits,
    }));
    Ok(router(state))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/openapi.yaml",
            get(|| async { asset("application/yaml; charset=utf-8", OPENAPI_YAML) }),
        )
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route("/share/{id}", get(share_page))
        .route("/api/v1/session", get(session))
        .route("/api/v1/domains", get(list_domains).post(register))
        .route(
            "/api/v1/domains/{id}",
            get(get_domain).delete(delete_domain),
        )
        .route("/api/v1/domains/{id}/dns-configured", post(dns_configured))
        .route("/api/v1/domains/{id}/refresh", post(refresh))
        .route("/api/v1/domains/{id}/timeline", get(timeline))
        .route(
            "/api/v1/domains/{id}/share",
            post(create_share).delete(revoke_shares),
        )
        .route("/api/v1/domains/{id}/records.csv", get(records_csv))
        .route("/api/v1/domains/{id}/records.zone", get(records_zone))
        .route("/api/v1/share/{id}", get(share_domain))
        .route("/api/v1/share/{id}/records.csv", get(share_csv))
        .route("/api/v1/share/{id}/records.zone", get(share_zone))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_route",
                "there is nothing here",
            )
        })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

// ---------------------------------------------------------------------------------
// errors

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After`, in whole seconds (429 only).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 429: the tenant, or this domain's checks, are over their rate limit.
    fn rate_limited(check: bool, limits::RetryAfter(secs): limits::RetryAfter) -> Self {
        let wait = match secs {
            1 => "a second".to_string(),
            2..=90 => format!("{secs} seconds"),
            _ => format!("{} minutes", secs.div_ceil(60)),
        };
        let message = if check {
            format!("this domain was checked moments ago; check again in {wait}")
        } else {
            format!("too many changes in a short time; try again in {wait}")
        };
        ApiError {
            retry_after: Some(secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such domain")
    }
    fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unavailable; try again in a moment",
        )
    }
}

impl IntoResponse for ApiError {
    /// The message as it is: the gateway's own words, or a refusal that [`rejection`]
    /// already kept free of the provider's name.
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn now() -> i64 {
    Utc::now().timestamp()
}

/// The caller's claims, from `Authorization: Bearer <token>`; 401 without a valid
/// token, 403 (with the plan message) when the edition lacks managed sending.
fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<Claims> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    let claims = state.0.opts.keys.verify(token, now()).map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            match e {
                token::TokenError::Expired => "token_expired",
                _ => "unauthorized",
            },
            e.message(),
        )
    })?;
    if !claims.managed_sending() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "plan_not_available",
            PLAN_MESSAGE,
        ));
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------------
// reading the projections

async fn tenant_rows(pool: &PgPool, tenant: Uuid) -> ApiResult<Vec<Value>> {
    sqlx::query_scalar(
        "SELECT to_jsonb(d) FROM email_domains d WHERE tenant = $1 ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(ApiError::unavailable)
}

/// The caller's claims, the domain id of the path, and its row: answered as not found
/// when the domain is another tenant's.
async fn owned_row(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<(Claims, Uuid, Value)> {
    let claims = authorize(state, headers)?;
    let id = parse_id(id)?;
    let row = tenant_row(&state.0.pool, claims.tenant_id, id).await?;
    Ok((claims, id, row))
}

/// One row, only if it is the tenant's (another tenant's domain is "not found").
async fn tenant_row(pool: &PgPool, tenant: Uuid, id: Uuid) -> ApiResult<Value> {
    row_by_id(pool, id)
        .await?
        .filter(|r| r["tenant"].as_str() == Some(&tenant.to_string()))
        .ok_or_else(ApiError::not_found)
}

async fn row_by_id(pool: &PgPool, id: Uuid) -> ApiResult<Option<Value>> {
    sqlx::query_scalar("SELECT to_jsonb(d) FROM email_domains d WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(ApiError::unavailable)
}

fn view_of(row: &Value) -> ApiResult<view::DomainView> {
    view::domain_view(row).ok_or_else(|| ApiError::unavailable("unreadable row"))
}

async fn sender(state: &AppState, tenant: Uuid) -> ApiResult<Value> {
    let default: Option<Option<String>> = sqlx::query_scalar(
        "SELECT default_from_domain FROM tenant_email_settings WHERE tenant = $1",
    )
    .bind(tenant)
    .fetch_optional(&state.0.pool)
    .await
    .map_err(ApiError::unavailable)?;
    let settings = TenantSettings {
        default_from_domain: default.flatten(),
        ..Default::default()
    };
    let s = settings.sender(
        &state.0.config.sender_local_part,
        &state.0.config.platform_from_address,
    );
    Ok(json!({"from": s.from, "domain": s.domain, "managed": s.managed}))
}

// ---------------------------------------------------------------------------------
// commands

/// Takes the tokens a command costs (see [`limits`]): the tenant's, and the domain's
/// when `check` names it; 429 with `Retry-After` when over a limit. Called just before
/// publishing, so a request that would publish nothing costs nothing.
fn admit(state: &AppState, tenant: Uuid, check: Option<Uuid>) -> ApiResult<()> {
    let admitted = state
        .0
        .limits
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(tenant, check, std::time::Instant::now());
    admitted.map_err(|wait| {
        tracing::info!(tenant = %tenant, domain_id = ?check, retry_after = wait.0, "command over the rate limit");
        ApiError::rate_limited(check.is_some(), wait)
    })
}

/// Publishes a contract command and waits (bounded) for its outcome: subscribes to
/// the outcome subject first, and also asks the outcome stream, so neither a quick
/// answer nor a lost core-NATS delivery is missed.
async fn send_command(
    state: &AppState,
    http: &HeaderMap,
    kind: CommandType,
    claims: &Claims,
    domain: &str,
    region: Option<String>,
) -> ApiResult<Outcome> {
    let id = CommandId(Uuid::new_v4());
    let command = Command {
        command_type: kind,
        command_id: id,
        tenant_id: TenantId(claims.tenant_id),
        domain: domain.to_string(),
        requested_by: Some(claims.requested_by()),
        region,
        domain_id: None,
        reason: None,
        provider_result: None,
        correlation_id: None,
    };
    let inner = &state.0;
    let mut sub = inner
        .client
        .subscribe(Outcome::subject(id))
        .await
        .map_err(ApiError::unavailable)?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    // With tracing on, the command's trace starts here, or continues the caller's when
    // its request carried a W3C `traceparent` (the handler, the events and the
    // projectors continue it).
    let span =
        tracing::info_span!("gateway.command", r#type = kind.as_str(), command_id = %id, domain);
    runtime::trace::follow_w3c(&span, |k| http.get(k).and_then(|v| v.to_str().ok()));
    {
        let _entered = span.enter();
        runtime::trace::inject(&mut headers);
    }
    let body = serde_json::to_vec(&command.to_body()).map_err(ApiError::unavailable)?;
    inner
        .js
        .publish_with_headers(command.subject(), headers, body.into())
        .await
        .map_err(ApiError::unavailable)?
        .await
        .map_err(ApiError::unavailable)?;
    let deadline = tokio::time::Instant::now() + inner.opts.command_timeout;
    loop {
        tokio::select! {
            m = sub.next() => {
                if let Some(m) = m {
                    if let Ok(o) = serde_json::from_slice::<Outcome>(&m.payload) { return Ok(o) }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(750)) => {
                if let Ok(Some(bytes)) = inner.outcomes.lookup(id).await {
                    if let Ok(o) = serde_json::from_slice::<Outcome>(&bytes) { return Ok(o) }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "still_processing",
                "your request was received and is still being processed; this page updates when it is done",
            ));
        }
    }
}

/// A refused command as an API error. The core's message may quote the name the
/// owner typed (`typed`) and its normalised form: both are kept exactly while the
/// provider's name is kept out (see [`prose`]).
fn rejection(o: &Outcome, typed: &str) -> ApiError {
    let keep = prose::Keep::new()
        .domain(typed)
        .domain(o.domain.as_deref().unwrap_or_default());
    let (code, message) = o
        .reason
        .as_ref()
        .map(|r| (r.code.as_str(), r.message.as_str()))
        .unwrap_or(("rejected", "the request was refused"));
    let (status, code): (StatusCode, &'static str) = match code {
        "invalid_domain" => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain"),
        "reserved_domain" => (StatusCode::UNPROCESSABLE_ENTITY, "reserved_domain"),
        "domain_taken" => (StatusCode::CONFLICT, "domain_taken"),
        "already_registered" => (StatusCode::CONFLICT, "already_registered"),
        "domain_not_found" => (StatusCode::NOT_FOUND, "not_found"),
        "invalid_command" => (StatusCode::BAD_REQUEST, "invalid_request"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
    };
    ApiError::new(status, code, prose::without_provider(message, &keep))
}

// ---------------------------------------------------------------------------------
// handlers: tenant API

async fn session(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let claims = authorize(&state, &headers)?;
    Ok(Json(json!({
        "tenant_id": claims.tenant_id,
        "edition": claims.edition,
        "managed_sending": true,
        "expires_at": chrono::DateTime::from_timestamp(claims.exp, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "sender": sender(&state, claims.tenant_id).await?,
    })))
}

async fn list_domains(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let claims = authorize(&state, &headers)?;
    let rows = tenant_rows(&state.0.pool, claims.tenant_id).await?;
    let domains: Vec<_> = rows.iter().filter_map(view::domain_view).collect();
    Ok(Json(
        json!({"sender": sender(&state, claims.tenant_id).await?, "domains": domains}),
    ))
}

#[derive(Deserialize)]
struct RegisterBody {
    domain: String,
    #[serde(default)]
    region: Option<String>,
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let claims = authorize(&state, &headers)?;
    let Json(body) = body.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send a JSON object {\"domain\": \"example.com\"}",
        )
    })?;
    if body.domain.trim().is_empty() || body.domain.len() > 300 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_domain",
            "enter a domain name such as example.com",
        ));
    }
    admit(&state, claims.tenant_id, None)?;
    let o = send_command(
        &state,
        &headers,
        CommandType::RegisterDomain,
        &claims,
        body.domain.trim(),
        body.region,
    )
    .await?;
    if o.outcome != Verdict::Accepted {
        return Err(rejection(&o, body.domain.trim()));
    }
    let id = o
        .domain_id
        .map(|d| d.0)
        .ok_or_else(|| ApiError::unavailable("accepted without a domain id"))?;
    // The projection follows the log within moments; wait briefly so the answer shows the row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(row) = row_by_id(&state.0.pool, id).await? {
            return Ok((StatusCode::CREATED, Json(json!({"domain": view_of(&row)?}))));
        }
        if tokio::time::Instant::now() >= deadline {
            let domain = o.domain.clone().unwrap_or(body.domain);
            let (b, label) = view::badge("created");
            return Ok((
                StatusCode::CREATED,
                Json(
                    json!({"domain": {"id": id, "domain_unicode": view::unicode_domain(&domain), "domain": domain, "status": "created", "badge": b, "badge_label": label,
                    "next_step": "We are preparing the DNS records for this domain; they appear here in a few seconds.",
                    "records": []}}),
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_domain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let claims = authorize(&state, &headers)?;
    let row = tenant_row(&state.0.pool, claims.tenant_id, parse_id(&id)?).await?;
    Ok(Json(json!({"domain": view_of(&row)?})))
}

/// Whether the domain was deleted or released (its row stays, `deactivated`).
fn is_removed(row: &Value) -> bool {
    row["status"] == "deactivated"
}

/// The row of a domain that is still live; a removed one is "not found".
fn live(row: Value) -> ApiResult<Value> {
    if is_removed(&row) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this domain was removed",
        ));
    }
    Ok(row)
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found())
}

/// Sends a command about one of the tenant's live domains; returns the outcome and the fresh row.
async fn domain_command(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    kind: CommandType,
) -> ApiResult<Json<Value>> {
    let (claims, id, row) = owned_row(state, headers, id).await?;
    let row = live(row)?;
    let name = row["domain_name"].as_str().unwrap_or_default().to_string();
    let check = matches!(
        kind,
        CommandType::DnsConfigured | CommandType::RefreshStatus
    );
    admit(state, claims.tenant_id, check.then_some(id))?;
    let o = send_command(state, headers, kind, &claims, &name, None).await?;
    if o.outcome != Verdict::Accepted {
        return Err(rejection(&o, &name));
    }
    let row = tenant_row(&state.0.pool, claims.tenant_id, id).await?;
    Ok(Json(
        json!({"outcome": "accepted", "domain": view_of(&row)?}),
    ))
}

async fn dns_configured(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    Ok((
        StatusCode::ACCEPTED,
        domain_command(&state, &headers, &id, CommandType::DnsConfigured).await?,
    ))
}

async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    Ok((
        StatusCode::ACCEPTED,
        domain_command(&state, &headers, &id, CommandType::RefreshStatus).await?,
    ))
}

async fn delete_domain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    domain_command(&state, &headers, &id, CommandType::DeleteDomain).await
}

/// A timeline request's window, by the stream sequences the answers carry.
#[derive(Deserialize, Default)]
struct TimelineQuery {
    /// Only events older than this (an answer's `older`): the previous page.
    before: Option<String>,
    /// Only events newer than this (an answer's `latest`): what happened since.
    after: Option<String>,
}

/// The domain's events with stream sequence in `from ..= to`, oldest first, at most
/// `keep` of them (the newest), and whether older ones in the range were left out.
///
/// Direct Get by subject reads forward only (NATS 2.9 has no "previous message of a
/// subject"), so the window is read from `from` on, each event once, keeping only the
/// newest `keep` in memory: an answer for the newest page (`from` = 1) or an older one
/// still reads the domain's log up to `to`. What the page asks every few seconds is
/// `?after=<latest>`, which reads only the events since its last answer (none: no read
/// past the subject's last message, which would make the server scan the rest of the
/// stream; `to` is never past it).
async fn events_between(
    state: &AppState,
    subject: &str,
    from: u64,
    to: u64,
    keep: usize,
) -> ApiResult<(VecDeque<(u64, Event)>, bool)> {
    let mut out = VecDeque::new();
    let mut left_out = false;
    let mut next = from;
    while next <= to {
        let msg = match state
            .0
            .events
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(m) => m,
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break,
            Err(e) => return Err(ApiError::unavailable(format!("reading {subject}: {e}"))),
        };
        if msg.sequence > to {
            break;
        }
        let ev = Event::from_json(&msg.payload).map_err(|e| {
            ApiError::unavailable(format!(
                "event at stream sequence {} is unreadable: {e}",
                msg.sequence
            ))
        })?;
        if out.len() == keep {
            out.pop_front();
            left_out = true;
        }
        out.push_back((msg.sequence, ev));
        next = msg.sequence + 1;
    }
    Ok((out, left_out))
}

/// The stream sequence of `subject`'s last event (0: none). A Direct Get naming the
/// subject in its request's body: the gateway's NATS user may ask
/// `$JS.API.DIRECT.GET.EMAIL_DOMAIN_EVENTS` only (`k8s/nats/accounts.conf`), not the
/// `….<subject>` form async-nats uses for "last by subject".
async fn last_seq(state: &AppState, subject: &str) -> ApiResult<u64> {
    let body =
        serde_json::to_vec(&json!({ "last_by_subj": subject })).map_err(ApiError::unavailable)?;
    let msg = state
        .0
        .client
        .request(
            format!("$JS.API.DIRECT.GET.{}", runtime::streams::EVENTS),
            body.into(),
        )
        .await
        .map_err(|e| ApiError::unavailable(format!("reading {subject}: {e}")))?;
    match msg.status {
        Some(async_nats::StatusCode::NOT_FOUND) => return Ok(0),
        Some(s) if s != async_nats::StatusCode::OK => {
            return Err(ApiError::unavailable(format!(
                "reading {subject}: status {s} {:?}",
                msg.description
            )))
        }
        _ => {}
    }
    msg.headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_SEQUENCE))
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| ApiError::unavailable(format!("reading {subject}: no sequence")))
}

/// The domain's checks and milestones, newest first, from at most
/// [`Options::timeline_page`] of its newest events (or those before `?before=`, or
/// only those after `?after=`). `latest` is the stream sequence of the domain's newest
/// event (for `?after=`); `older`, when events older than the answer's are left out,
/// is what to pass as `?before=` for them.
async fn timeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult<Json<Value>> {
    let (claims, id, _) = owned_row(&state, &headers, &id).await?;
    let seq = |v: &Option<String>| -> ApiResult<Option<u64>> {
        v.as_deref()
            .map(|s| {
                s.trim().parse::<u64>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "`before` and `after` are the `older` and `latest` of an earlier answer",
                    )
                })
            })
            .transpose()
    };
    let (before, after) = (seq(&q.before)?, seq(&q.after)?);
    let subject = event::subject(TenantId(claims.tenant_id), DomainId(id));
    // The subject's last message first: the reads below stop there.
    let latest = last_seq(&state, &subject).await?;
    let from = after.map_or(1, |a| a.saturating_add(1));
    let to = before.map_or(latest, |b| b.saturating_sub(1).min(latest));
    let page = state.0.opts.timeline_page.max(1);
    let (window, left_out) = events_between(&state, &subject, from, to, page).await?;
    let older = left_out.then(|| window.front().map(|(s, _)| *s)).flatten();
    let events: Vec<Event> = window.into_iter().map(|(_, e)| e).collect();
    let mut entries = view::timeline(&events);
    entries.reverse(); // newest first
    Ok(Json(
        json!({"entries": entries, "latest": latest, "older": older}),
    ))
}

#[derive(Deserialize, Default)]
struct ShareBody {
    /// Lifetime of the link in seconds (at most 30 days).
    #[serde(default)]
    ttl_secs: Option<u64>,
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    match &state.0.opts.share_base {
        settings::ShareBase::Public(u) => u.clone(),
        settings::ShareBase::RequestHost => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1:8080");
            format!("http://{host}")
        }
    }
}

async fn create_share(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let claims = authorize(&state, &headers)?;
    // No body, or a JSON object (a malformed one is answered in JSON too, not by axum's plain-text rejection).
    let body: ShareBody = if body.iter().all(u8::is_ascii_whitespace) {
        ShareBody::default()
    } else {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(Value::is_object)
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "send no body, or a JSON object such as {\"ttl_secs\": 86400}",
                )
            })?
    };
    let id = parse_id(&id)?;
    live(tenant_row(&state.0.pool, claims.tenant_id, id).await?)?;
    let ttl = body
        .ttl_secs
        .unwrap_or(state.0.opts.share_ttl.as_secs())
        .clamp(60, 30 * 86_400) as i64;
    let exp = now() + ttl;
    let epoch = share_epoch(&state, id).await?;
    let sig = state.0.opts.keys.share_sig_at(id, exp, epoch);
    let base = base_url(&state, &headers);
    let q = share_query(exp, epoch, &sig);
    Ok(Json(json!({
        "url": format!("{base}/share/{id}?{q}"),
        "csv_url": format!("{base}/api/v1/share/{id}/records.csv?{q}"),
        "zone_url": format!("{base}/api/v1/share/{id}/records.zone?{q}"),
        "expires_at": chrono::DateTime::from_timestamp(exp, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    })))
}

/// The query string of a share link (`ep` only after the first revocation).
fn share_query(exp: i64, epoch: u64, sig: &str) -> String {
    if epoch == 0 {
        format!("exp={exp}&sig={sig}")
    } else {
        format!("exp={exp}&ep={epoch}&sig={sig}")
    }
}

/// A stored share epoch: a decimal number, else an error. Never taken for 0 (which
/// would reopen every revoked link of the domain): its links, and new ones, are then
/// refused until the value is readable again.
fn parse_epoch(stored: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(stored)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "unreadable share epoch {:?}",
                String::from_utf8_lossy(stored)
            )
        })
}

/// The domain's current share epoch (0 until its links are first revoked).
async fn share_epoch(state: &AppState, id: Uuid) -> ApiResult<u64> {
    let stored = state
        .0
        .share_epochs
        .get(id.to_string())
        .await
        .map_err(ApiError::unavailable)?;
    match stored {
        None => Ok(0),
        Some(v) => parse_epoch(&v).map_err(ApiError::unavailable),
    }
}

/// Raises the domain's share epoch by one (compare-and-set, retried on a race);
/// returns the new epoch.
async fn raise_share_epoch(state: &AppState, id: Uuid) -> ApiResult<u64> {
    let kv = &state.0.share_epochs;
    let key = id.to_string();
    for _ in 0..20 {
        let entry = kv.entry(key.clone()).await.map_err(ApiError::unavailable)?;
        let written = match entry {
            Some(e) => {
                let next = parse_epoch(&e.value).map_err(ApiError::unavailable)? + 1;
                kv.update(&key, next.to_string().into(), e.revision)
                    .await
                    .map(|_| next)
                    .map_err(|e| e.to_string())
            }
            None => kv
                .create(&key, "1".into())
                .await
                .map(|_| 1)
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(epoch) => return Ok(epoch),
            Err(e) => {
                tracing::debug!(error = %e, domain_id = %id, "share epoch changed meanwhile; retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Err(ApiError::unavailable("could not raise the share epoch"))
}

/// Revokes every share link of the domain made so far (links made afterwards work).
async fn revoke_shares(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (claims, id, _) = owned_row(&state, &headers, &id).await?;
    raise_share_epoch(&state, id).await?;
    tracing::info!(domain_id = %id, by = ?claims.sub, "share links revoked");
    Ok(Json(json!({
        "revoked": true,
        "revoked_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })))
}

fn download(view: &view::DomainView, zone: bool) -> Response {
    let (body, ct, ext) = if zone {
        (
            view::zone_file(view, Utc::now()),
            "text/dns; charset=utf-8",
            "zone",
        )
    } else {
        (view::csv(view), "text/csv; charset=utf-8", "csv")
    };
    let disposition = format!("attachment; filename=\"{}-dns-records.{ext}\"", view.domain);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ct)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        body,
    )
        .into_response()
}

async fn records_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let claims = authorize(&state, &headers)?;
    let row = tenant_row(&state.0.pool, claims.tenant_id, parse_id(&id)?).await?;
    Ok(download(&view_of(&row)?, false))
}

async fn records_zone(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let claims = authorize(&state, &headers)?;
    let row = tenant_row(&state.0.pool, claims.tenant_id, parse_id(&id)?).await?;
    Ok(download(&view_of(&row)?, true))
}

// ---------------------------------------------------------------------------------
// share links: no login, HMAC over the domain id and the expiry

/// A share link's query, as text: a garbled value is a refused link (403 in JSON or
/// HTML), not the framework's plain-text rejection.
#[derive(Deserialize)]
struct ShareQuery {
    exp: Option<String>,
    /// The share epoch the link was made in (absent: 0).
    ep: Option<String>,
    sig: Option<String>,
}

/// A share link that passed [`check_share`].
struct ShareLink {
    id: Uuid,
    exp: i64,
    epoch: u64,
}

/// 403 for a tampered, garbled or unsigned link, 410 for an expired or revoked one.
async fn check_share(state: &AppState, id: &str, q: &ShareQuery) -> ApiResult<ShareLink> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_link",
            "this link is not valid; ask the domain owner for a new one",
        )
    };
    let id = Uuid::parse_str(id).map_err(|_| refused())?;
    let (Some(exp), Some(sig)) = (
        q.exp.as_deref().and_then(|e| e.parse::<i64>().ok()),
        q.sig.as_deref(),
    ) else {
        return Err(refused());
    };
    let epoch = match q.ep.as_deref() {
        None => 0,
        Some(e) => e.parse::<u64>().map_err(|_| refused())?,
    };
    match state
        .0
        .opts
        .keys
        .verify_share_at(id, exp, epoch, sig, now())
    {
        Ok(()) => {}
        Err(token::TokenError::Expired) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "link_expired",
                "this link has expired; ask the domain owner for a new one",
            ))
        }
        Err(_) => return Err(refused()),
    }
    // Only the current epoch: an older link was revoked, and a newer one means the
    // stored epoch went back (lost or restored), which must not reopen revoked links.
    if epoch != share_epoch(state, id).await? {
        return Err(ApiError::new(
            StatusCode::GONE,
            "link_revoked",
            "the domain owner has withdrawn this link; ask them for a new one",
        ));
    }
    Ok(ShareLink { id, exp, epoch })
}

/// The row a share link shows: its domain's links close when the domain is deleted
/// or released (410 `link_revoked`).
async fn shared_row(state: &AppState, link: &ShareLink) -> ApiResult<Value> {
    let row = row_by_id(&state.0.pool, link.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if is_removed(&row) {
        return Err(ApiError::new(
            StatusCode::GONE,
            "link_revoked",
            "this domain was removed, so its link no longer works",
        ));
    }
    Ok(row)
}

async fn shared_view(
    state: &AppState,
    id: &str,
    q: &ShareQuery,
) -> ApiResult<(ShareLink, view::DomainView)> {
    let link = check_share(state, id, q).await?;
    let row = shared_row(state, &link).await?;
    Ok((link, view_of(&row)?))
}

async fn share_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShareQuery>,
) -> Response {
    match shared_view(&state, &id, &q).await {
        Ok(_) => Html(SHARE_HTML).into_response(),
        Err(e) => {
            let page = REFUSED_HTML.replace("{{message}}", &e.message);
            (e.status, Html(page)).into_response()
        }
    }
}

const REFUSED_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Link not valid – DNS records</title><link rel="stylesheet" href="/app.css"></head>
<body><main class="page"><h1>DNS records</h1>
<p class="refused" role="alert" id="refused">{{message}}</p></main></body></html>"#;

async fn share_domain(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShareQuery>,
) -> ApiResult<Json<Value>> {
    let (link, view) = shared_view(&state, &id, &q).await?;
    let (id, exp) = (link.id, link.exp);
    let qs = share_query(exp, link.epoch, q.sig.as_deref().unwrap_or("").trim());
    Ok(Json(json!({
        "domain": view,
        "expires_at": chrono::DateTime::from_timestamp(exp, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "csv_url": format!("/api/v1/share/{id}/records.csv?{qs}"),
        "zone_url": format!("/api/v1/share/{id}/records.zone?{qs}"),
    })))
}

async fn share_csv(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShareQuery>,
) -> ApiResult<Response> {
    Ok(download(&shared_view(&state, &id, &q).await?.1, false))
}

async fn share_zone(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShareQuery>,
) -> ApiResult<Response> {
    Ok(download(&shared_view(&state, &id, &q).await?.1, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use email_domain_events::outcome::Reason;

    fn refused(domain: Option<&str>, code: &str, message: &str) -> Outcome {
        Outcome {
            command_id: None,
            tenant_id: None,
            domain: domain.map(str::to_string),
            domain_id: None,
            outcome: Verdict::Rejected,
            reason: Some(Reason {
                code: code.into(),
                message: message.into(),
            }),
        }
    }

    #[test]
    fn an_unreadable_share_epoch_is_an_error_never_zero() {
        assert_eq!(parse_epoch(b"0"), Ok(0));
        assert_eq!(parse_epoch(b" 7\n"), Ok(7));
        for bad in [
            &b""[..],
            b"x",
            b"-1",
            b"1.5",
            b"\xff",
            b"18446744073709551616",
        ] {
            assert!(parse_epoch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refusal_keeps_the_name_the_owner_typed_exactly() {
        let o = refused(
            None,
            "invalid_domain",
            "`resend_mail.weresend.test` contains an underscore, which a host name may not",
        );
        let e = rejection(&o, "resend_mail.weresend.test");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.message, o.reason.unwrap().message);
    }

    #[test]
    fn a_refusal_quoting_the_provider_keeps_its_name_out_but_not_the_domains() {
        let o = refused(
            Some("weresend.test"),
            "domain_taken",
            "Resend already has weresend.test in another account",
        );
        let e = rejection(&o, "WereSend.test");
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(
            e.message,
            "The email provider already has weresend.test in another account"
        );
    }
}

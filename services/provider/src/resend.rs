//! The Resend adapter: [`EmailProvider`] over Resend's HTTP domains API.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::api_key::ApiKey;
use crate::records::{full_record_name, normalize_name, record_purpose};
use crate::types::{
    DomainPage, EmailProvider, ProviderDomain, ProviderDomainSummary, ProviderError,
    ProviderRecord, ProviderStatus,
};

/// Where Resend's API lives.
pub const DEFAULT_RESEND_BASE_URL: &str = "https://api.resend.com";

/// Page size asked of `GET /domains` (Resend's maximum).
const LIST_PAGE_SIZE: u32 = 100;
/// A bound on list pages, so a provider that keeps saying `has_more` cannot loop us forever.
const MAX_LIST_PAGES: usize = 10_000;
/// Longest wait a `retry-after` header may impose; anything longer is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of a non-JSON error body goes into an error message.
const MAX_ERROR_BODY_CHARS: usize = 300;

/// Why a [`ResendProvider`] could not be built. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResendConfigError {
    #[error("invalid Resend base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("the Resend API key is empty")]
    EmptyKey,
    #[error("the Resend API key contains characters not allowed in an HTTP header")]
    InvalidKey,
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// Resend, reached over HTTP at a base URL (the real API or the dev provider).
pub struct ResendProvider {
    client: reqwest::Client,
    base: Url,
    key: ApiKey,
}

impl fmt::Debug for ResendProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResendProvider")
            .field("base", &self.base.as_str())
            .field("key", &self.key)
            .finish()
    }
}

impl ResendProvider {
    /// An adapter for the API at `base_url` (e.g. [`DEFAULT_RESEND_BASE_URL`]); every
    /// request is bounded by `timeout` (a timeout is a [`ProviderError::Transient`]).
    pub fn new(base_url: &str, key: ApiKey, timeout: Duration) -> Result<Self, ResendConfigError> {
        let invalid = |reason: &str| ResendConfigError::InvalidBaseUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.query().is_some() {
            return Err(invalid("must be a plain http(s) URL without a query"));
        }
        if key.is_empty() {
            return Err(ResendConfigError::EmptyKey);
        }
        if HeaderValue::from_str(&format!("Bearer {}", key.expose())).is_err() {
            return Err(ResendConfigError::InvalidKey);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("email-provider/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ResendConfigError::Client(e.to_string()))?;
        Ok(Self { client, base, key })
    }

    /// `base/seg1/seg2...`, each segment percent-encoded (ids never escape their segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A request with the key as its bearer token. reqwest marks the header sensitive,
    /// so the builder's and the request's `Debug` show `Sensitive`, not the key.
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .bearer_auth(self.key.expose())
    }

    /// Removes the key from a text that may have come from outside (error bodies,
    /// transport errors), so it can be shown and logged.
    fn scrub(&self, text: String) -> String {
        let secret = self.key.expose();
        if !secret.is_empty() && text.contains(secret) {
            text.replace(secret, "***")
        } else {
            text
        }
    }

    /// Sends a request and sorts every failure into a [`ProviderError`].
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ProviderError> {
        let path = url.path().to_owned();
        let mut request = self.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            ProviderError::Transient(self.scrub(format!("{method} {path}: {}", error_chain(&e))))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(response.headers());
            tracing::debug!(%method, %path, ?retry_after, "provider rate limited");
            return Err(ProviderError::RateLimited { retry_after });
        }
        if status == StatusCode::NOT_FOUND {
            return Err(ProviderError::NotFound);
        }
        // Scrubbed whole before anything is cut from it: a key straddling the cut
        // would otherwise leave its first part behind.
        let text = self.scrub(response.text().await.unwrap_or_default());
        let (name, message) = error_body(&text);
        let (name, message) = (self.scrub(name), self.scrub(message));
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Err(ProviderError::Transient(format!(
                "{method} {path}: HTTP {}: {name}: {message}",
                status.as_u16()
            )));
        }
        Err(ProviderError::Rejected {
            status: status.as_u16(),
            name,
            message,
        })
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<T, ProviderError> {
        let path = url.path().to_owned();
        let response = self.send(method.clone(), url, body).await?;
        let bytes = response.bytes().await.map_err(|e| {
            ProviderError::Transient(self.scrub(format!("{method} {path}: {}", error_chain(&e))))
        })?;
        // serde's message quotes the offending value ("invalid type: string \"…\""),
        // which is the provider's text: scrubbed like any other.
        serde_json::from_slice(&bytes).map_err(|e| {
            ProviderError::Transient(self.scrub(format!("{method} {path}: unreadable answer: {e}")))
        })
    }

    /// After create said "already registered": find our domain of that name and fetch
    /// it whole (the list carries no records).
    async fn adopt(&self, name: &str) -> Result<Option<ProviderDomain>, ProviderError> {
        let wanted = normalize_name(name);
        let existing = self.list_domains().await?;
        let Some(found) = existing
            .into_iter()
            .find(|d| normalize_name(&d.name) == wanted)
        else {
            return Ok(None);
        };
        tracing::info!(domain = %wanted, provider_domain_id = %found.provider_domain_id,
            "domain already registered at Resend; adopting it");
        self.get_domain(&found.provider_domain_id).await.map(Some)
    }
}

#[async_trait]
impl EmailProvider for ResendProvider {
    fn provider_id(&self) -> &'static str {
        "resend"
    }

    async fn create_domain(
        &self,
        name: &str,
        region: Option<&str>,
    ) -> Result<ProviderDomain, ProviderError> {
        // Only name and region: receiving stays disabled, tracking off, defaults for the rest.
        let mut body = serde_json::json!({ "name": normalize_name(name) });
        if let Some(region) = region {
            body["region"] = Value::from(region);
        }
        let created: Result<WireDomain, _> = self
            .send_json(Method::POST, self.url(&["domains"]), Some(&body))
            .await;
        match created {
            Ok(domain) => Ok(domain.into_provider_domain()),
            Err(ProviderError::Rejected {
                status,
                name: error_name,
                message,
            }) if matches!(status, 403 | 409 | 422) && says_already_registered(&message) => {
                match self.adopt(name).await? {
                    Some(domain) => Ok(domain),
                    // Registered, but not in this account: a real rejection.
                    None => Err(ProviderError::Rejected {
                        status,
                        name: error_name,
                        message,
                    }),
                }
            }
            Err(other) => Err(other),
        }
    }

    async fn get_domain(&self, provider_domain_id: &str) -> Result<ProviderDomain, ProviderError> {
        if provider_domain_id.is_empty() {
            return Err(ProviderError::NotFound);
        }
        let domain: WireDomain = self
            .send_json(
                Method::GET,
                self.url(&["domains", provider_domain_id]),
                None,
            )
            .await?;
        Ok(domain.into_provider_domain())
    }

    async fn list_domains(&self) -> Result<Vec<ProviderDomainSummary>, ProviderError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self.list_domains_page(after.as_deref()).await?;
            all.extend(page.domains);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
        Ok(all)
    }

    async fn list_domains_page(&self, after: Option<&str>) -> Result<DomainPage, ProviderError> {
        let mut url = self.url(&["domains"]);
        url.query_pairs_mut()
            .append_pair("limit", &LIST_PAGE_SIZE.to_string());
        if let Some(cursor) = after {
            url.query_pairs_mut().append_pair("after", cursor);
        }
        let page: WireList = self.send_json(Method::GET, url, None).await?;
        let last_id = page.data.last().map(|d| d.id.clone());
        // A cursor that does not move would loop a caller forever: that is the last page.
        let next = last_id.filter(|last| page.has_more && after != Some(last.as_str()));
        Ok(DomainPage {
            domains: page
                .data
                .into_iter()
                .map(WireDomain::into_summary)
                .collect(),
            next,
        })
    }

    async fn request_verification(&self, provider_domain_id: &str) -> Result<(), ProviderError> {
        if provider_domain_id.is_empty() {
            return Err(ProviderError::NotFound);
        }
        let url = self.url(&["domains", provider_domain_id, "verify"]);
        self.send(Method::POST, url, None).await.map(drop)
    }

    async fn delete_domain(&self, provider_domain_id: &str) -> Result<(), ProviderError> {
        if provider_domain_id.is_empty() {
            return Ok(());
        }
        let url = self.url(&["domains", provider_domain_id]);
        match self.send(Method::DELETE, url, None).await {
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// Resend's wording for a name that exists: "The domain x has been registered already".
fn says_already_registered(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("registered already")
        || message.contains("already registered")
        || message.contains("already exists")
        || message.contains("already been registered")
}

/// How long a 429 asks us to wait: `retry-after` (seconds, possibly fractional), else
/// `ratelimit-reset`, else one second.
fn retry_after(headers: &HeaderMap) -> Duration {
    ["retry-after", "ratelimit-reset"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(parse_seconds))
        .unwrap_or(Duration::from_secs(1))
}

fn parse_seconds(value: &HeaderValue) -> Option<Duration> {
    let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds).min(MAX_RETRY_AFTER))
}

/// `(name, message)` of Resend's error body `{"statusCode", "message", "name"}`, or
/// of whatever else answered (a proxy's HTML page, an empty body).
fn error_body(text: &str) -> (String, String) {
    #[derive(Deserialize)]
    struct WireError {
        name: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<WireError>(text) {
        Ok(WireError { name, message }) if name.is_some() || message.is_some() => (
            name.unwrap_or_else(|| "unknown".into()),
            message.unwrap_or_default(),
        ),
        _ => (
            "unknown".into(),
            text.trim().chars().take(MAX_ERROR_BODY_CHARS).collect(),
        ),
    }
}

/// A transport error with its causes ("error sending request: connection refused").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A domain as Resend sends it. Every field but `id` is optional, unknown fields are
/// ignored, and values are read leniently (`ttl: "Auto"`, priorities as text).
#[derive(Deserialize)]
struct WireDomain {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    records: Option<Vec<WireRecord>>,
}

#[derive(Deserialize)]
struct WireRecord {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    record_type: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    priority: Option<Value>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct WireList {
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    data: Vec<WireDomain>,
}

impl WireDomain {
    fn status(&self) -> ProviderStatus {
        ProviderStatus::from_raw(self.status.as_deref().unwrap_or(""))
    }

    fn into_summary(self) -> ProviderDomainSummary {
        ProviderDomainSummary {
            status: self.status(),
            provider_domain_id: self.id,
            name: normalize_name(self.name.as_deref().unwrap_or("")),
        }
    }

    fn into_provider_domain(self) -> ProviderDomain {
        let status = self.status();
        let name = normalize_name(self.name.as_deref().unwrap_or(""));
        let records = self
            .records
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.into_provider_record(&name))
            .collect();
        ProviderDomain {
            provider_domain_id: self.id,
            name,
            status,
            region: self.region,
            records,
        }
    }
}

impl WireRecord {
    fn into_provider_record(self, domain: &str) -> Option<ProviderRecord> {
        let record_type = self.record_type?.trim().to_ascii_uppercase();
        let value = self.value?.trim().to_owned();
        let name = full_record_name(self.name.as_deref().unwrap_or(""), domain);
        let purpose = record_purpose(self.record.as_deref(), &record_type, &name, domain, &value)?;
        let priority = match self.priority {
            Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        Some(ProviderRecord {
            purpose,
            record_type,
            name,
            value,
            priority,
            status: self.status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_fractional_seconds_then_falls_back() {
        assert_eq!(retry_after(&header("2")), Duration::from_secs(2));
        assert_eq!(retry_after(&header("0.5")), Duration::from_millis(500));
        assert_eq!(retry_after(&header("soon")), Duration::from_secs(1));
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Duration::from_secs(3));
        assert_eq!(retry_after(&HeaderMap::new()), Duration::from_secs(1));
    }

    #[test]
    fn lenient_parsing_of_a_resend_domain() {
        let json = serde_json::json!({
            "object": "domain", "id": "d1", "name": "Example.com", "status": "brand_new_state",
            "created_at": "2023-04-26 20:21:26.347412+00", "region": "eu-west-1",
            "extra": {"anything": true},
            "records": [
                {"record": "SPF", "name": "send", "type": "MX", "ttl": "Auto", "status": "pending",
                 "value": "feedback-smtp.eu-west-1.amazonses.com", "priority": 10},
                {"record": "SPF", "name": "send", "type": "TXT", "ttl": "Auto",
                 "value": "v=spf1 include:amazonses.com ~all"},
                {"record": "DKIM", "name": "resend._domainkey.", "type": "TXT", "ttl": 3600,
                 "value": "p=abc"},
                {"record": "Receiving", "name": "@", "type": "MX", "value": "inbound-smtp.x.com",
                 "priority": "10"},
                {"record": "Tracking", "name": "links", "type": "CNAME", "value": "links1.resend-dns.com"},
                {"record": "DKIM", "name": "broken"}
            ]
        });
        let domain: WireDomain = serde_json::from_value(json).unwrap();
        let domain = domain.into_provider_domain();
        assert_eq!(domain.name, "example.com");
        assert_eq!(
            domain.status,
            ProviderStatus::Unknown("brand_new_state".into())
        );
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
                ("return_path", "MX", "send.example.com", Some(10)),
                ("spf", "TXT", "send.example.com", None),
                ("dkim", "TXT", "resend._domainkey.example.com", None),
                ("tracking", "CNAME", "links.example.com", None),
            ]
        );
        assert_eq!(domain.records[0].status.as_deref(), Some("pending"));
    }

    #[test]
    fn error_bodies_give_name_and_message() {
        let (name, message) =
            error_body(r#"{"statusCode":403,"message":"nope","name":"validation_error"}"#);
        assert_eq!(
            (name.as_str(), message.as_str()),
            ("validation_error", "nope")
        );
        let (name, message) = error_body("<html>bad gateway</html>");
        assert_eq!(
            (name.as_str(), message.as_str()),
            ("unknown", "<html>bad gateway</html>")
        );
    }

    #[test]
    fn already_registered_wordings_are_recognised() {
        assert!(says_already_registered(
            "The domain example.com has been registered already"
        ));
        assert!(says_already_registered("Domain already exists"));
        assert!(!says_already_registered("The domain name is invalid"));
    }

    #[test]
    fn base_url_with_a_path_keeps_it_and_ids_are_escaped() {
        let p = ResendProvider::new(
            "http://localhost:1/api/",
            ApiKey::new("k"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            p.url(&["domains", "a/b?c", "verify"]).as_str(),
            "http://localhost:1/api/domains/a%2Fb%3Fc/verify"
        );
    }

    #[test]
    fn a_request_as_built_never_shows_the_key() {
        let secret = "re_built_request_SECRET_42";
        let p = ResendProvider::new(
            "http://localhost:1",
            ApiKey::new(secret),
            Duration::from_secs(1),
        )
        .unwrap();
        let builder = p.request(Method::POST, p.url(&["domains"]));
        assert!(!format!("{builder:?}").contains(secret));
        let request = builder.build().unwrap();
        let auth = &request.headers()[reqwest::header::AUTHORIZATION];
        assert!(auth.is_sensitive());
        assert_eq!(
            auth.to_str().unwrap(),
            format!("Bearer {secret}"),
            "the key is sent"
        );
        let shown = format!("{request:?} {:?} {auth:?}", request.headers());
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!format!("{p:?}").contains(secret));
    }

    #[test]
    fn scrubbing_comes_before_cutting_an_error_body() {
        let secret = "re_cut_in_half_SECRET_99";
        let p = ResendProvider::new(
            "http://localhost:1",
            ApiKey::new(secret),
            Duration::from_secs(1),
        )
        .unwrap();
        // Not JSON, and the key straddles the point where the body is cut.
        let body = format!("{}{secret} and more", "x".repeat(MAX_ERROR_BODY_CHARS - 8));
        let (_, cut_first) = error_body(&body);
        assert!(
            cut_first.contains("re_cut_i"),
            "the trap is real: {cut_first}"
        );
        let (_, message) = error_body(&p.scrub(body));
        assert!(!message.contains("re_cut_i"), "{message}");
    }

    #[test]
    fn construction_errors_never_show_the_key() {
        let err = ResendProvider::new(
            "http://x",
            ApiKey::new("bad\u{7}key"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err, ResendConfigError::InvalidKey);
        assert!(!format!("{err} {err:?}").contains("bad"));
        assert!(ResendProvider::new("ftp://x", ApiKey::new("k"), Duration::from_secs(1)).is_err());
        assert!(ResendProvider::new("http://x", ApiKey::new(" "), Duration::from_secs(1)).is_err());
    }
}

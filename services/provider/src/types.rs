//! The provider-neutral vocabulary: what any sending provider gives back, and the port.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One DNS record the provider asks the domain owner to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// What the record is for: `spf`, `dkim`, `return_path`, `tracking`, or the
    /// provider's own tag in lower case for anything else.
    pub purpose: String,
    /// DNS type in upper case: `TXT`, `MX`, `CNAME`, ...
    pub record_type: String,
    /// The FULL record name, lower case, without a trailing dot.
    pub name: String,
    /// The record's value as the provider gave it (MX: the exchange host).
    pub value: String,
    /// MX preference; `None` for other types.
    pub priority: Option<u16>,
    /// The provider's own status for this record, raw (e.g. `verified`).
    pub status: Option<String>,
}

/// The provider's verdict on a whole domain.
///
/// Parsing never fails: a spelling this crate does not know becomes
/// [`ProviderStatus::Unknown`] with the raw text, and serialises back to that text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProviderStatus {
    NotStarted,
    Pending,
    Verified,
    Failed,
    PartiallyVerified,
    PartiallyFailed,
    TemporaryFailure,
    Unknown(String),
}

impl ProviderStatus {
    /// Parses a provider's status text; unknown text is kept as [`ProviderStatus::Unknown`].
    pub fn from_raw(raw: &str) -> Self {
        match raw.trim().to_ascii_lowercase().as_str() {
            "not_started" => Self::NotStarted,
            "pending" => Self::Pending,
            "verified" => Self::Verified,
            "failed" => Self::Failed,
            "partially_verified" => Self::PartiallyVerified,
            "partially_failed" => Self::PartiallyFailed,
            "temporary_failure" => Self::TemporaryFailure,
            _ => Self::Unknown(raw.to_owned()),
        }
    }

    /// The snake_case spelling (the raw text for [`ProviderStatus::Unknown`]).
    pub fn as_str(&self) -> &str {
        match self {
            Self::NotStarted => "not_started",
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::PartiallyVerified => "partially_verified",
            Self::PartiallyFailed => "partially_failed",
            Self::TemporaryFailure => "temporary_failure",
            Self::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for ProviderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderStatus {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::from_raw(s))
    }
}

impl Serialize for ProviderStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProviderStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Self::from_raw(&raw))
    }
}

/// A sending domain as the provider knows it, with the records to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDomain {
    pub provider_domain_id: String,
    /// The domain name, lower case, without a trailing dot.
    pub name: String,
    pub status: ProviderStatus,
    pub region: Option<String>,
    /// Sending records only: never an inbound (receiving) MX, never an MX at the apex.
    pub records: Vec<ProviderRecord>,
}

/// A domain as the provider's list shows it (lists carry no records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDomainSummary {
    pub provider_domain_id: String,
    pub name: String,
    pub status: ProviderStatus,
}

/// A page of [`EmailProvider::list_domains_page`]; `next` is the cursor of the page
/// after it, `None` on the last page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPage {
    pub domains: Vec<ProviderDomainSummary>,
    pub next: Option<String>,
}

/// Why a provider call failed, sorted by what the caller should do about it.
///
/// The texts never contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Too many requests: wait `retry_after`, then try again.
    #[error("provider rate limit reached; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// A 5xx answer, a timeout, a connection error or an unreadable answer: try again later.
    #[error("provider temporarily unavailable: {0}")]
    Transient(String),
    /// The provider does not know this domain.
    #[error("provider domain not found")]
    NotFound,
    /// The provider refused the request (a 4xx other than 404 and 429): retrying the
    /// same request will not help.
    #[error("provider rejected the request (HTTP {status}, {name}): {message}")]
    Rejected {
        status: u16,
        name: String,
        message: String,
    },
}

impl ProviderError {
    /// True for errors worth retrying later (rate limits and transient failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient(_))
    }
}

/// The port to an email sending provider. Object safe: hold it as `Arc<dyn EmailProvider>`.
#[async_trait]
pub trait EmailProvider: Send + Sync {
    /// A short, stable name of the provider, e.g. `"resend"`.
    fn provider_id(&self) -> &'static str;

    /// Creates the sending domain. Idempotent: when the provider already holds a domain
    /// of that name in this account, that domain is returned instead of a second one.
    async fn create_domain(
        &self,
        name: &str,
        region: Option<&str>,
    ) -> Result<ProviderDomain, ProviderError>;

    /// The domain with its records and current status.
    async fn get_domain(&self, provider_domain_id: &str) -> Result<ProviderDomain, ProviderError>;

    /// Every domain of the account (all pages).
    async fn list_domains(&self) -> Result<Vec<ProviderDomainSummary>, ProviderError>;

    /// One page of the account's domains, from the cursor `after` on (`None`: the
    /// first page). Lets a caller poll many domains with one call and stop walking as
    /// soon as it has seen the ones it wants. A provider without pages answers
    /// everything as one page.
    async fn list_domains_page(&self, after: Option<&str>) -> Result<DomainPage, ProviderError> {
        if after.is_some() {
            return Ok(DomainPage::default());
        }
        Ok(DomainPage {
            domains: self.list_domains().await?,
            next: None,
        })
    }

    /// Asks the provider to check the domain's DNS records (asynchronously).
    async fn request_verification(&self, provider_domain_id: &str) -> Result<(), ProviderError>;

    /// Removes the domain; a domain that is already gone counts as removed.
    async fn delete_domain(&self, provider_domain_id: &str) -> Result<(), ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statuses_round_trip_through_serde() {
        for s in [
            "not_started",
            "pending",
            "verified",
            "failed",
            "partially_verified",
            "partially_failed",
            "temporary_failure",
        ] {
            let status: ProviderStatus = serde_json::from_value(serde_json::json!(s)).unwrap();
            assert!(!matches!(status, ProviderStatus::Unknown(_)), "{s}");
            assert_eq!(serde_json::to_value(&status).unwrap(), serde_json::json!(s));
        }
    }

    #[test]
    fn unknown_status_keeps_the_raw_text() {
        let status: ProviderStatus =
            serde_json::from_value(serde_json::json!("Quarantined-Weird")).unwrap();
        assert_eq!(status, ProviderStatus::Unknown("Quarantined-Weird".into()));
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!("Quarantined-Weird")
        );
    }

    #[test]
    fn status_parsing_ignores_case() {
        assert_eq!(
            ProviderStatus::from_raw("Verified"),
            ProviderStatus::Verified
        );
    }
}

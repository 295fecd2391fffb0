//! Wire shapes that have no Rust type of their own in `events/`: command bodies
//! (decoded leniently by `events::command::decode`), the dead letter (mirrors
//! `svc-runtime`'s `DeadLetter`), the analytics CloudEvent (built with `json!` by
//! `events::analytics::cloud_event`), and the query requests and replies (answered
//! by `services/query`). The examples in `schemas/examples/` are serialised from the
//! real values where there are any, so a drift between these mirrors and the code
//! shows up as an example that no longer validates.

use chrono::{DateTime, Utc};
use email_domain_events::command::ProviderResult;
use email_domain_events::event::CheckTrigger;
use email_domain_events::records::{DiagnosisCode, DnsRecord, DnsStatus};
use email_domain_events::state::Status;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// `email_domains.commands.register_domain`: a tenant asks to send from a domain.
///
/// `domain` is the raw input (any case, trailing dot, Unicode IDN): a name that is
/// not registrable is answered with the outcome `invalid_domain`, so it is a plain
/// string here. Publish with the header `Nats-Msg-Id: <command_id>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegisterDomain {
    /// The command's identity (a UUID); one effect however often it is delivered.
    #[schemars(extend("format" = "uuid"))]
    pub command_id: String,
    #[schemars(extend("format" = "uuid"))]
    pub tenant_id: String,
    /// The domain name as the tenant typed it.
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requested_by: Option<String>,
    /// A provider region such as `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// The caller's correlation id (else the command id is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub correlation_id: Option<String>,
}

/// A command of the contract that names an existing domain (`dns_configured`,
/// `refresh_status`, `delete_domain`). `domain` is a plain string: a bad name is
/// answered with an outcome, never a schema error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DomainCommand {
    #[schemars(extend("format" = "uuid"))]
    pub command_id: String,
    #[schemars(extend("format" = "uuid"))]
    pub tenant_id: String,
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub correlation_id: Option<String>,
}

/// INTERNAL/operator command `email_domains.commands.fail_domain` (published by
/// `domainctl fail`): fails a domain by hand with a reason. Gets an outcome.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FailDomain {
    #[schemars(extend("format" = "uuid"))]
    pub command_id: String,
    #[schemars(extend("format" = "uuid"))]
    pub tenant_id: String,
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requested_by: Option<String>,
    /// Why the operator failed the domain (shown to the owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub domain_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub correlation_id: Option<String>,
}

/// INTERNAL command `email_domains.commands.recheck`: the scheduler's timed re-check
/// of one registration. Not part of the public contract; answered by events, no outcome.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Recheck {
    /// Derived from the domain id and the due time.
    #[schemars(extend("format" = "uuid"))]
    pub command_id: String,
    #[schemars(extend("format" = "uuid"))]
    pub tenant_id: String,
    pub domain: String,
    /// The registration this re-check is about.
    #[schemars(extend("format" = "uuid"))]
    pub domain_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub correlation_id: Option<String>,
}

/// INTERNAL command `email_domains.commands.provider_result`: what the provider
/// worker learned from the provider. Not part of the public contract; answered by
/// events, no outcome.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProviderResultCommand {
    #[schemars(extend("format" = "uuid"))]
    pub command_id: String,
    #[schemars(extend("format" = "uuid"))]
    pub tenant_id: String,
    pub domain: String,
    #[schemars(extend("format" = "uuid"))]
    pub domain_id: String,
    pub provider_result: ProviderResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub correlation_id: Option<String>,
}

/// A message on `email_domains.commands.*` that could not be read as a command (or a
/// readable command that can never take effect), kept on
/// `email_domains.dead_letters.<reason>` (mirrors `svc-runtime`'s `DeadLetter`). A
/// letter is one NATS message: what does not fit the server's max payload is cut
/// (`body_truncated`, `headers_truncated`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// `unreadable_json`, `not_an_object`, `missing_command_id`, `unknown_command`,
    /// `too_large`, `invalid_command` or `unprocessable` (a readable command that
    /// failed for good, e.g. its event is larger than the server takes); also the last
    /// subject token.
    pub reason: String,
    /// What is wrong, in words a person can act on (at most 4 KiB; a longer one is cut
    /// and ends in `…`).
    pub error: String,
    /// The original subject.
    pub subject: String,
    /// The original headers (several values of one name joined with `, `); those that
    /// did not fit are left out (`headers_truncated`).
    pub headers: BTreeMap<String, String>,
    /// The original bytes, base64 (standard alphabet, padded); only the first bytes
    /// when `body_truncated`.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub body_base64: String,
    /// The original body's size in bytes (absent in letters written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub body_size: Option<u64>,
    /// SHA-256 of the whole original body, lower-case hex (absent in older letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("pattern" = "^[0-9a-f]{64}$"))]
    pub body_sha256: Option<String>,
    /// `body_base64` holds only the body's first bytes: the whole did not fit one
    /// message (absent in older letters: `false`).
    #[serde(default)]
    pub body_truncated: bool,
    /// Some headers were left out to make room (absent in older letters: `false`).
    #[serde(default)]
    pub headers_truncated: bool,
    pub received_at: DateTime<Utc>,
}

/// An analytics event (CloudEvents 1.0, structured JSON mode) on
/// `analytics.email_domain.<name>`. Its `id` derives from the source event and the
/// name, so it is the same on every emission.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AnalyticsCloudEvent {
    #[schemars(extend("const" = "1.0"))]
    pub specversion: String,
    #[schemars(extend("format" = "uuid"))]
    pub id: String,
    #[schemars(extend("const" = "/email-domains"))]
    pub source: String,
    /// `email_domain.<name>`: `registered`, `provisioned`, `dns_checked`, `dns_drift`,
    /// `dns_restored`, `verified`, `activated`, `failed`, `deleted`, `released`, ...
    #[serde(rename = "type")]
    #[schemars(extend("pattern" = "^email_domain\\.[a-z_]+$"))]
    pub event_type: String,
    /// The domain id.
    #[schemars(extend("format" = "uuid"))]
    pub subject: String,
    /// When the source event occurred.
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    /// Extension attribute: the tenant id.
    #[schemars(extend("format" = "uuid"))]
    pub tenantid: String,
    pub data: AnalyticsData,
}

/// The `data` of an analytics CloudEvent: the source event's identity, plus fields
/// of some event types.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AnalyticsData {
    pub tenant_id: Uuid,
    pub domain_id: Uuid,
    pub domain: String,
    /// The source event's id.
    pub event_id: Uuid,
    /// The source event's type (`domain_registered`, `dns_checked`, ...).
    pub event_type: String,
    /// The source event's version.
    pub version: u64,
    /// `dns_checked`: what started the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<CheckTrigger>,
    /// `dns_checked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_required_found: Option<bool>,
    /// `dns_checked`: each record's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<AnalyticsRecord>>,
    /// `failed`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_operator: Option<bool>,
    /// `registered`: the provider region asked for (null: the default).
    #[serde(default)]
    pub region: Option<String>,
}

/// One record's verdict in a `dns_checked` analytics event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AnalyticsRecord {
    pub purpose: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub dns_status: DnsStatus,
    pub diagnosis: Option<DiagnosisCode>,
}

/// Request on `email_domains.query.sender` and `email_domains.query.domains`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryRequest {
    #[schemars(extend("format" = "uuid"))]
    pub tenant_id: String,
}

/// A query that could not be answered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct QueryError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// `invalid_request` (a bad request) or `unavailable` (try again).
    pub code: String,
    pub message: String,
}

/// Reply on `email_domains.query.sender`: the tenant's sender, or an error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SenderReply {
    /// The tenant's verified default domain, else `PLATFORM_FROM_ADDRESS` with `managed: false`.
    Sender(email_domain_events::tenant::Sender),
    Error(QueryError),
}

/// Reply on `email_domains.query.domains`: the tenant's rows, or an error.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DomainsReply {
    Domains {
        /// Every registration of the tenant, deactivated ones included, oldest first.
        domains: Vec<EmailDomainRow>,
    },
    Error(QueryError),
}

/// A row of the `email_domains` projection as JSON (docs/interface.md §3).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EmailDomainRow {
    /// The domain id.
    pub id: Uuid,
    pub tenant: Uuid,
    pub domain_name: String,
    pub status: Status,
    pub provider_id: Option<String>,
    pub provider_domain_id: Option<String>,
    pub dns_records: Vec<DnsRecord>,
    pub failure_reason: Option<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub verified_at: Option<DateTime<Utc>>,
    pub dns_last_checked_at: Option<DateTime<Utc>>,
    pub next_check_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The domain's event version this row reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

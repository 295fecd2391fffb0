//! Commands as they arrive on `email_domains.commands.<type>`, and their decoding.
//!
//! Decoding is total: any bytes give either a [`Command`] or a reason the message is
//! not one ([`Unreadable`], dead-lettered) or an invalid command with a readable id
//! ([`Invalid`], answered with `invalid_command` and dead-lettered).

use crate::ids::{CommandId, DomainId, TenantId};
use crate::provider::{FailedRecord, ProviderStatus};
use crate::records::DnsRecord;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bodies over this size are not read (docs/interface.md §2.1).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// The four commands of the contract, and the service's own internal ones.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandType {
    RegisterDomain,
    DnsConfigured,
    RefreshStatus,
    DeleteDomain,
    /// Internal: the scheduler's timed re-check.
    Recheck,
    /// Internal: what the provider worker learned.
    ProviderResult,
    /// Operator: fail a domain by hand with a reason.
    FailDomain,
    /// Internal: look for what will bite the owner later, after provisioning.
    Preflight,
}

impl CommandType {
    pub fn from_subject_token(s: &str) -> Option<Self> {
        Some(match s {
            "register_domain" => CommandType::RegisterDomain,
            "dns_configured" => CommandType::DnsConfigured,
            "refresh_status" => CommandType::RefreshStatus,
            "delete_domain" => CommandType::DeleteDomain,
            "recheck" => CommandType::Recheck,
            "provider_result" => CommandType::ProviderResult,
            "fail_domain" => CommandType::FailDomain,
            "preflight" => CommandType::Preflight,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::RegisterDomain => "register_domain",
            CommandType::DnsConfigured => "dns_configured",
            CommandType::RefreshStatus => "refresh_status",
            CommandType::DeleteDomain => "delete_domain",
            CommandType::Recheck => "recheck",
            CommandType::ProviderResult => "provider_result",
            CommandType::FailDomain => "fail_domain",
            CommandType::Preflight => "preflight",
        }
    }

    /// Commands of the contract get an outcome; internal ones are answered by events.
    pub fn is_public(self) -> bool {
        matches!(
            self,
            CommandType::RegisterDomain
                | CommandType::DnsConfigured
                | CommandType::RefreshStatus
                | CommandType::DeleteDomain
                | CommandType::FailDomain
        )
    }

    /// Work a person is waiting for goes before background re-checks.
    pub fn is_interactive(self) -> bool {
        !matches!(self, CommandType::Recheck)
    }
}

/// A decoded command. `domain` is still the raw input: validating it is the
/// decider's job, so that a bad name earns `invalid_domain`, not `invalid_command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub command_type: CommandType,
    pub command_id: CommandId,
    pub tenant_id: TenantId,
    pub domain: String,
    pub requested_by: Option<String>,
    pub region: Option<String>,
    /// Internal commands name the domain registration they are about.
    pub domain_id: Option<DomainId>,
    pub reason: Option<String>,
    pub provider_result: Option<ProviderResult>,
    /// The caller's correlation id, if it sent one; else the command id.
    pub correlation_id: Option<Uuid>,
}

/// What the provider worker reports back, as a command on `provider_result`.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderResult {
    /// The provider domain exists (created, or adopted after a lost create response).
    Created {
        provider_id: String,
        provider_domain_id: String,
        region: Option<String>,
        records: Vec<DnsRecord>,
    },
    /// The provider refused the domain for good (validation error): a person must act.
    CreateRejected { message: String },
    /// The provider's verification status, polled.
    Polled {
        provider_status: ProviderStatus,
        /// The provider domain that was asked about: a result about a provider domain
        /// the registration no longer has changes nothing. Absent in results reported
        /// before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_domain_id: Option<String>,
        /// The records the provider marked failed (only a single domain's answer has
        /// records; a list page has none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed_records: Vec<FailedRecord>,
    },
    /// The provider domain is gone (deleted, or was never there).
    CleanedUp,
}

/// Why bytes are not a command at all (docs/interface.md §2.3 dead-letter reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unreadable {
    UnreadableJson,
    NotAnObject,
    MissingCommandId,
    UnknownCommand,
    TooLarge,
}

impl Unreadable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unreadable::UnreadableJson => "unreadable_json",
            Unreadable::NotAnObject => "not_an_object",
            Unreadable::MissingCommandId => "missing_command_id",
            Unreadable::UnknownCommand => "unknown_command",
            Unreadable::TooLarge => "too_large",
        }
    }
}

/// A message that is not a command, with what a person needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    /// `None` for an invalid command whose id could be read (`invalid_command`).
    pub dead_letter_reason: &'static str,
    pub error: String,
    /// Present when a command id could be read: the sender gets a rejected outcome.
    pub command_id: Option<CommandId>,
    pub tenant_id: Option<TenantId>,
    pub domain: Option<String>,
}

impl DecodeFailure {
    fn unreadable(reason: Unreadable, error: impl Into<String>) -> Self {
        DecodeFailure {
            dead_letter_reason: reason.as_str(),
            error: error.into(),
            command_id: None,
            tenant_id: None,
            domain: None,
        }
    }
}

#[derive(Deserialize)]
struct Body {
    command_id: Option<serde_json::Value>,
    tenant_id: Option<serde_json::Value>,
    domain: Option<serde_json::Value>,
    requested_by: Option<serde_json::Value>,
    region: Option<serde_json::Value>,
    domain_id: Option<serde_json::Value>,
    reason: Option<serde_json::Value>,
    provider_result: Option<serde_json::Value>,
    correlation_id: Option<serde_json::Value>,
}

fn uuid_of(v: &serde_json::Value) -> Option<Uuid> {
    v.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

fn opt_string(
    v: &Option<serde_json::Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        // Free text ends up in events and rows: control characters (a NUL above all,
        // which Postgres refuses in text and jsonb) have no business there.
        Some(serde_json::Value::String(s)) if s.chars().any(char::is_control) => {
            Err(format!("`{field}` contains control characters"))
        }
        Some(serde_json::Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(serde_json::Value::String(_)) => {
            Err(format!("`{field}` is longer than {max} characters"))
        }
        Some(_) => Err(format!("`{field}` must be a string")),
    }
}

/// Decodes the body of a message on `email_domains.commands.<type_token>`.
pub fn decode(type_token: &str, body: &[u8]) -> Result<Command, DecodeFailure> {
    if body.len() > MAX_COMMAND_BYTES {
        return Err(DecodeFailure::unreadable(
            Unreadable::TooLarge,
            format!(
                "the body is {} bytes; commands are at most {MAX_COMMAND_BYTES} bytes",
                body.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        DecodeFailure::unreadable(
            Unreadable::UnreadableJson,
            format!("the body is not JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(DecodeFailure::unreadable(
            Unreadable::NotAnObject,
            "the body is JSON but not an object; send {\"command_id\", \"tenant_id\", \"domain\"}",
        ));
    }
    let raw: Body = serde_json::from_value(value).map_err(|e| {
        DecodeFailure::unreadable(
            Unreadable::UnreadableJson,
            format!("the body could not be read: {e}"),
        )
    })?;
    let command_id = match raw.command_id.as_ref() {
        None | Some(serde_json::Value::Null) => {
            return Err(DecodeFailure::unreadable(
                Unreadable::MissingCommandId,
                "the body has no `command_id`; every command needs a UUID `command_id`",
            ))
        }
        Some(v) => uuid_of(v).map(CommandId).ok_or_else(|| {
            DecodeFailure::unreadable(
                Unreadable::MissingCommandId,
                format!("`command_id` is not a UUID: {v}"),
            )
        })?,
    };
    let tenant_id = raw.tenant_id.as_ref().and_then(uuid_of).map(TenantId);
    let domain = raw
        .domain
        .as_ref()
        .and_then(|v| v.as_str().map(str::to_owned));
    let invalid = |error: String| DecodeFailure {
        dead_letter_reason: "invalid_command",
        error,
        command_id: Some(command_id),
        tenant_id,
        domain: domain.clone(),
    };
    let Some(command_type) = CommandType::from_subject_token(type_token) else {
        return Err(DecodeFailure {
            dead_letter_reason: Unreadable::UnknownCommand.as_str(),
            error: format!(
                "`{type_token}` is not a command; use register_domain, dns_configured, refresh_status or delete_domain"
            ),
            command_id: Some(command_id),
            tenant_id,
            domain: domain.clone(),
        });
    };
    let Some(tenant_id) = tenant_id else {
        return Err(invalid("`tenant_id` is missing or not a UUID".into()));
    };
    let Some(domain) = domain.clone() else {
        return Err(invalid("`domain` is missing or not a string".into()));
    };
    let requested_by = opt_string(&raw.requested_by, "requested_by", 256).map_err(invalid)?;
    let region = opt_string(&raw.region, "region", 64).map_err(invalid)?;
    let reason = opt_string(&raw.reason, "reason", 2048).map_err(invalid)?;
    let domain_id = match &raw.domain_id {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            Some(DomainId(uuid_of(v).ok_or_else(|| {
                invalid("`domain_id` is not a UUID".into())
            })?))
        }
    };
    let correlation_id = raw.correlation_id.as_ref().and_then(uuid_of);
    let provider_result = match raw.provider_result {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<ProviderResult>(v)
                .map_err(|e| invalid(format!("`provider_result` is not readable: {e}")))?,
        ),
    };
    match command_type {
        CommandType::Recheck | CommandType::ProviderResult | CommandType::Preflight
            if domain_id.is_none() =>
        {
            return Err(invalid(format!(
                "`{}` needs a `domain_id`",
                command_type.as_str()
            )))
        }
        CommandType::ProviderResult if provider_result.is_none() => {
            return Err(invalid(
                "`provider_result` needs a `provider_result`".into(),
            ))
        }
        _ => {}
    }
    Ok(Command {
        command_type,
        command_id,
        tenant_id,
        domain,
        requested_by,
        region,
        domain_id,
        reason,
        provider_result,
        correlation_id,
    })
}

impl Command {
    /// The wire body of this command (what [`decode`] reads back).
    pub fn to_body(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("command_id".into(), self.command_id.to_string().into());
        m.insert("tenant_id".into(), self.tenant_id.to_string().into());
        m.insert("domain".into(), self.domain.clone().into());
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("requested_by", self.requested_by.clone().map(Into::into));
        put("region", self.region.clone().map(Into::into));
        put("domain_id", self.domain_id.map(|d| d.to_string().into()));
        put("reason", self.reason.clone().map(Into::into));
        put(
            "provider_result",
            self.provider_result
                .as_ref()
                .map(|p| serde_json::to_value(p).expect("serialisable")),
        );
        put(
            "correlation_id",
            self.correlation_id.map(|c| c.to_string().into()),
        );
        serde_json::Value::Object(m)
    }

    pub fn subject(&self) -> String {
        format!("email_domains.commands.{}", self.command_type.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b5e7c4e-8f0a-4b8e-9a43-5f1c2d3e4f50";
    const TENANT: &str = "1c9d6e2a-0000-4000-8000-000000000001";

    #[test]
    fn a_valid_register_command_decodes() {
        let body = format!(
            r#"{{"command_id":"{ID}","tenant_id":"{TENANT}","domain":"Acme.com.","region":"eu-west-1","extra":1}}"#
        );
        let c = decode("register_domain", body.as_bytes()).unwrap();
        assert_eq!(c.command_type, CommandType::RegisterDomain);
        assert_eq!(c.domain, "Acme.com.");
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        let again = decode(
            "register_domain",
            serde_json::to_vec(&c.to_body()).unwrap().as_slice(),
        )
        .unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn each_dead_letter_reason_is_named() {
        let reason = |t: &str, b: &[u8]| decode(t, b).unwrap_err().dead_letter_reason;
        assert_eq!(reason("register_domain", b"{nope"), "unreadable_json");
        assert_eq!(reason("register_domain", b"[1,2]"), "not_an_object");
        assert_eq!(
            reason("register_domain", b"{\"tenant_id\":\"x\"}"),
            "missing_command_id"
        );
        assert_eq!(
            reason("register_domain", b"{\"command_id\":\"not-a-uuid\"}"),
            "missing_command_id"
        );
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert_eq!(reason("register_domain", &big), "too_large");
        let body = format!(r#"{{"command_id":"{ID}","tenant_id":"{TENANT}","domain":"a.com"}}"#);
        let f = decode("transfer_domain", body.as_bytes()).unwrap_err();
        assert_eq!(f.dead_letter_reason, "unknown_command");
        assert!(
            f.command_id.is_some(),
            "an unknown command with a readable id still gets an outcome"
        );
    }

    #[test]
    fn free_text_with_control_characters_is_an_invalid_command() {
        let body = format!(
            r#"{{"command_id":"{ID}","tenant_id":"{TENANT}","domain":"a.com","requested_by":"x\u0000y"}}"#
        );
        let f = decode("register_domain", body.as_bytes()).unwrap_err();
        assert_eq!(f.dead_letter_reason, "invalid_command");
        assert!(f.error.contains("control characters"), "{}", f.error);
    }

    #[test]
    fn a_readable_id_with_bad_fields_is_an_invalid_command() {
        let body = format!(r#"{{"command_id":"{ID}","tenant_id":"not-a-uuid","domain":"a.com"}}"#);
        let f = decode("register_domain", body.as_bytes()).unwrap_err();
        assert_eq!(f.dead_letter_reason, "invalid_command");
        assert_eq!(f.command_id.unwrap().to_string(), ID);
        let body = format!(r#"{{"command_id":"{ID}","tenant_id":"{TENANT}","domain":42}}"#);
        assert_eq!(
            decode("dns_configured", body.as_bytes())
                .unwrap_err()
                .dead_letter_reason,
            "invalid_command"
        );
        let body = format!(
            r#"{{"command_id":"{ID}","tenant_id":"{TENANT}","domain":"a.com","region":7}}"#
        );
        assert_eq!(
            decode("register_domain", body.as_bytes())
                .unwrap_err()
                .dead_letter_reason,
            "invalid_command"
        );
    }
}

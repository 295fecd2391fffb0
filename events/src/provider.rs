//! What the email provider says about a domain, as the core reads it. The rule for
//! each status (what it leads to) is one match in `decide::decide_polled`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The provider's verdict on a domain, or that it has no such domain.
///
/// Parsing never fails: a spelling the core does not know is kept as
/// [`ProviderStatus::Unknown`] with its raw text, and every status serialises as its
/// text, so results and events written when this was a plain string read the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProviderStatus {
    NotStarted,
    Pending,
    PartiallyVerified,
    Verified,
    /// The provider checked and the records are wrong.
    Failed,
    /// The provider checked and some records are wrong.
    PartiallyFailed,
    /// The provider could not finish checking (a DNS lookup of theirs failed).
    TemporaryFailure,
    /// The provider has no domain of that id (every call answers 404): it was deleted
    /// out of band. Reported by the provider worker, not by the provider.
    NotFound,
    Unknown(String),
}

impl ProviderStatus {
    pub fn from_raw(raw: &str) -> Self {
        match raw.trim().to_ascii_lowercase().as_str() {
            "not_started" => Self::NotStarted,
            "pending" => Self::Pending,
            "partially_verified" => Self::PartiallyVerified,
            "verified" => Self::Verified,
            "failed" => Self::Failed,
            "partially_failed" => Self::PartiallyFailed,
            "temporary_failure" => Self::TemporaryFailure,
            "not_found" => Self::NotFound,
            _ => Self::Unknown(raw.to_owned()),
        }
    }

    /// The snake_case spelling (the raw text for [`ProviderStatus::Unknown`]).
    pub fn as_str(&self) -> &str {
        match self {
            Self::NotStarted => "not_started",
            Self::Pending => "pending",
            Self::PartiallyVerified => "partially_verified",
            Self::Verified => "verified",
            Self::Failed => "failed",
            Self::PartiallyFailed => "partially_failed",
            Self::TemporaryFailure => "temporary_failure",
            Self::NotFound => "not_found",
            Self::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for ProviderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ProviderStatus {
    fn from(raw: &str) -> Self {
        Self::from_raw(raw)
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

/// On the wire it is any string; the known spellings are listed as examples, not as an
/// enum, because an unknown one must stay readable.
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for ProviderStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProviderStatus".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "The provider's status of the domain (`not_found`: the provider has no such domain). Any other text is kept as it came.",
            "examples": ["not_started", "pending", "partially_verified", "verified", "failed", "partially_failed", "temporary_failure", "not_found"]
        })
    }
}

/// A record the provider marked failed: its type and full name (lower case).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRecord {
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
}

impl fmt::Display for FailedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} record at {}", self.record_type, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_status_and_an_unknown_one_round_trip_as_their_text() {
        for raw in [
            "not_started",
            "pending",
            "partially_verified",
            "verified",
            "failed",
            "partially_failed",
            "temporary_failure",
            "not_found",
            "Quarantined-Weird",
        ] {
            let s: ProviderStatus = serde_json::from_value(serde_json::json!(raw)).unwrap();
            assert_eq!(
                matches!(s, ProviderStatus::Unknown(_)),
                raw == "Quarantined-Weird"
            );
            assert_eq!(serde_json::to_value(&s).unwrap(), serde_json::json!(raw));
        }
    }
}

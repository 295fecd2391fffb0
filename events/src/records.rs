//! DNS records as the owner must enter them, and what a check said about each.
//!
//! This is the record form of docs/interface.md §3 (`email_domains.dns_records`) and of
//! `domainctl dns-check`. It is also what a DNS lookup observed (`DnsObservation`),
//! so that the verdict code in [`crate::verdict`] stays pure: the DNS adapter only
//! executes the lookups the core plans and hands back what it saw.

use serde::{Deserialize, Serialize};

/// One DNS record the owner must (or may) add, with the verdict of the last check.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// `spf`, `dkim`, `return_path`, `dmarc`, `tracking`, or another provider purpose.
    pub purpose: String,
    /// `TXT`, `MX`, `CNAME`, ... (upper case).
    #[serde(rename = "type")]
    pub record_type: String,
    /// The full name (never the bare `send`), lower case, no trailing dot.
    pub name: String,
    /// Exactly what the owner must enter.
    pub value: String,
    #[serde(default)]
    pub priority: Option<u16>,
    /// Verification waits for the required records (the provider's SPF, DKIM, return path).
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub dns_status: DnsStatus,
    #[serde(default)]
    pub observed: Vec<String>,
    #[serde(default)]
    pub diagnosis: Option<Diagnosis>,
}

impl DnsRecord {
    /// A required record as the provider asks for it: not checked yet, nothing observed.
    pub fn required(
        purpose: &str,
        record_type: &str,
        name: &str,
        value: &str,
        priority: Option<u16>,
    ) -> DnsRecord {
        DnsRecord {
            purpose: purpose.into(),
            record_type: record_type.into(),
            name: name.into(),
            value: value.into(),
            priority,
            required: true,
            dns_status: DnsStatus::Pending,
            observed: vec![],
            diagnosis: None,
        }
    }
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DnsStatus {
    #[default]
    Pending,
    Found,
    Missing,
    Mismatch,
    LookupFailed,
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub code: DiagnosisCode,
    /// Plain words telling the owner exactly what to change. The core's own words
    /// never name the email provider (it does not know which one it is); every name
    /// and value in them is quoted in backticks, exactly as the owner must enter it.
    pub message: String,
    /// The full name of the record the diagnosis is about (lower case, no trailing
    /// dot), so that a reader needs no text of the message to know which record.
    /// Empty in diagnoses written before it was recorded (they still read; written
    /// back without it, so a stored event reads back as it was).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub record: String,
    /// The host name the message tells the owner to enter or edit at the DNS host:
    /// `record` relative to the registrable domain (`@` for its apex). Empty in older
    /// diagnoses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// What the check saw at the name (presentation form, e.g. `CNAME <target>`,
    /// a TXT value), the same list as the record's `observed`. Empty in older
    /// diagnoses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed: Vec<String>,
}

/// docs/interface.md §4. The declaration order is the precedence order: the first code
/// that fits wins.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosisCode {
    LookupFailed,
    MultipleSpfRecords,
    DuplicateRecords,
    ProxiedOrFlattened,
    WrongType,
    ValueMismatch,
    AppendedDomain,
    WrongName,
}

impl DiagnosisCode {
    /// How a diagnosis sets the record's status (docs/interface.md §4).
    pub fn status(self) -> DnsStatus {
        match self {
            DiagnosisCode::AppendedDomain | DiagnosisCode::WrongName => DnsStatus::Missing,
            DiagnosisCode::LookupFailed => DnsStatus::LookupFailed,
            _ => DnsStatus::Mismatch,
        }
    }
}

/// A record the zone's authoritative servers already serve while the recursive
/// resolvers (and so the provider) still deny it from their negative cache: it will be
/// seen by everyone in `expires_in_secs` (from the SOA minimum / negative TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Propagation {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// What the resolver still answers: `nx_domain` or `no_data`.
    pub resolver_answer: String,
    pub expires_in_secs: Option<u32>,
}

/// One question the DNS adapter must ask: `name` (full, lower case, no trailing dot)
/// and the record type (`TXT`, `MX`, `CNAME`, `A`, `AAAA`, `NS`, `SOA`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsQuestion {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
}

/// A record as it came back in an answer section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRecord {
    /// The owner name of the record in the answer (a CNAME chain shows each step).
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// Presentation value: for TXT the character-strings concatenated, for MX the
    /// exchange host, for CNAME the target, for A/AAAA the address.
    pub value: String,
    /// For TXT: the character-strings as served (a long DKIM key is often split).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub txt_strings: Vec<String>,
    #[serde(default)]
    pub priority: Option<u16>,
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// How one question was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LookupAnswer {
    /// NOERROR with records (possibly only a CNAME chain, or records of other types
    /// reached through it).
    Records { records: Vec<ObservedRecord> },
    /// NOERROR, the name exists, no records of that type. `negative_ttl` from the SOA.
    NoData { negative_ttl: Option<u32> },
    /// NXDOMAIN: the name does not exist. `negative_ttl` from the SOA.
    NxDomain { negative_ttl: Option<u32> },
    /// SERVFAIL, REFUSED, a timeout or a transport error: not proof of anything.
    Failed { error: LookupError, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupError {
    ServFail,
    Refused,
    Timeout,
    Other,
}

/// Everything the adapter saw for one check: the answer to each planned question.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsObservation {
    pub answers: Vec<(DnsQuestion, LookupAnswer)>,
}

impl DnsObservation {
    pub fn answer(&self, name: &str, record_type: &str) -> Option<&LookupAnswer> {
        self.answers
            .iter()
            .find(|(q, _)| q.name == name && q.record_type.eq_ignore_ascii_case(record_type))
            .map(|(_, a)| a)
    }
}

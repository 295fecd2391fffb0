//! The event log (docs/interface.md §2.4): one stream subject per domain registration,
//! versions from 1 without gaps, every event readable by every later build.
//!
//! One command appends at most one event. Events are therefore "fat": a DNS check
//! that also asks the provider to verify is one `dns_checked` event whose data says
//! so. That keeps every append atomic on a server without batch publish.

use crate::ids::{CommandId, DomainId, EventId, TenantId};
use crate::provider::{FailedRecord, ProviderStatus};
use crate::records::DnsRecord;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version written today. Readers upcast older versions (see [`upcast`]).
pub const SCHEMA_VERSION: u32 = 1;

/// What started a DNS check.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckTrigger {
    DnsConfigured,
    RefreshStatus,
    Scheduled,
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventData {
    /// A tenant registered the name; the domain exists with status `created`.
    DomainRegistered {
        region: Option<String>,
        requested_by: Option<String>,
        /// The verification deadline of this window.
        deadline_at: DateTime<Utc>,
    },
    /// The provider domain exists; the owner can now be told which records to add.
    DomainProvisioned {
        provider_id: String,
        provider_domain_id: String,
        region: Option<String>,
        records: Vec<DnsRecord>,
        next_check_at: Option<DateTime<Utc>>,
        /// The domain was deleted before the provider answered: remove it there.
        cleanup_required: bool,
    },
    /// The owner said the records are in place before the provider answered: check
    /// as soon as the domain is provisioned.
    CheckRequested { trigger: CheckTrigger },
    /// What will bite the owner later (see `preflight`), found after provisioning.
    PreflightChecked {
        warnings: Vec<crate::preflight::Warning>,
    },
    /// The provider refused the domain for good.
    ProvisioningFailed { reason: String },
    /// A DNS check ran. Its data also carries what follows from it.
    DnsChecked {
        trigger: CheckTrigger,
        #[serde(deserialize_with = "deferrable_records")]
        records: Vec<DnsRecord>,
        all_required_found: bool,
        /// Ask the provider to verify now (status becomes `verifying`).
        request_verification: bool,
        /// Ask the provider for its verification status (while `verifying`).
        poll_provider: bool,
        next_check_at: Option<DateTime<Utc>>,
        /// Set when this check opened a new verification window (a failed domain retried).
        new_deadline_at: Option<DateTime<Utc>>,
        /// Recheck attempt number after this check (0 after an owner's command).
        attempt: u32,
        /// A verified domain whose required records are gone or changed.
        #[serde(default)]
        drift_detected: bool,
        #[serde(default)]
        drift_resolved: bool,
        /// The provider's id of the domain, for the provider worker's verify or poll.
        #[serde(default)]
        provider_domain_id: Option<String>,
        /// Records the authority serves but resolvers still deny (negative cache).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        propagation: Vec<crate::records::Propagation>,
    },
    /// The provider said where verification stands.
    ProviderPolled {
        provider_status: ProviderStatus,
        /// The provider confirmed: the domain is `verified`.
        verified: bool,
        /// Verified after registration or after a new window: becomes the tenant's default.
        activates: bool,
        /// The provider failed verification (`failed`, `partially_failed`): back to
        /// `awaiting_dns` until DNS is right again.
        provider_failed: bool,
        /// A `temporary_failure` moves this to the fast end of the cadence.
        next_check_at: Option<DateTime<Utc>>,
        /// With `provider_failed`: what the provider failed, in words for the owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// With `provider_failed`: the records the provider marked failed (empty when
        /// it did not say which).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed_records: Vec<FailedRecord>,
    },
    /// The provider no longer has the domain (it answers 404: deleted out of band).
    /// Back to `created`, in a new verification window: the domain is set up at the
    /// provider again, and its new records (a new DKIM key) replace the old ones.
    ProviderDomainVanished {
        /// The provider domain that is gone.
        provider_domain_id: String,
        /// The registration's region, for the new create.
        region: Option<String>,
        /// What the owner is told.
        reason: String,
        /// The new verification window's deadline.
        deadline_at: DateTime<Utc>,
    },
    /// The deadline passed (or an operator failed it): the domain is `failed`.
    VerificationFailed {
        reason: String,
        records: Vec<DnsRecord>,
        by_operator: bool,
    },
    /// A failed domain's window reopened but it never reached the provider: provision again.
    WindowReopened { deadline_at: DateTime<Utc> },
    /// The tenant deleted the domain: `deactivated`; the provider clean-up follows.
    DomainDeleted {
        requested_by: Option<String>,
        cleanup_required: bool,
        #[serde(default)]
        provider_domain_id: Option<String>,
    },
    /// Another tenant registered this failed name: `deactivated` (reason `released`).
    DomainReleased {
        to_tenant: TenantId,
        cleanup_required: bool,
        #[serde(default)]
        provider_domain_id: Option<String>,
    },
    /// The provider domain is gone.
    ProviderCleanedUp {},
}

impl EventData {
    /// Adds what the DNS adapter learned about resolver caches to a check's event (a
    /// fact of the check, like its records; it decides nothing).
    pub fn with_propagation(mut self, p: Vec<crate::records::Propagation>) -> Self {
        if let EventData::DnsChecked { propagation, .. } = &mut self {
            *propagation = p;
        }
        self
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            EventData::DomainRegistered { .. } => "domain_registered",
            EventData::DomainProvisioned { .. } => "domain_provisioned",
            EventData::CheckRequested { .. } => "check_requested",
            EventData::PreflightChecked { .. } => "preflight_checked",
            EventData::ProvisioningFailed { .. } => "provisioning_failed",
            EventData::DnsChecked { .. } => "dns_checked",
            EventData::ProviderPolled { .. } => "provider_polled",
            EventData::ProviderDomainVanished { .. } => "provider_domain_vanished",
            EventData::VerificationFailed { .. } => "verification_failed",
            EventData::WindowReopened { .. } => "window_reopened",
            EventData::DomainDeleted { .. } => "domain_deleted",
            EventData::DomainReleased { .. } => "domain_released",
            EventData::ProviderCleanedUp {} => "provider_cleaned_up",
        }
    }
}

/// One stored event, in the contract's envelope.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub event_id: EventId,
    pub tenant_id: TenantId,
    pub domain_id: DomainId,
    pub domain: String,
    pub version: u64,
    pub occurred_at: DateTime<Utc>,
    pub causation_id: CommandId,
    pub correlation_id: Uuid,
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    #[serde(flatten)]
    pub data: EventData,
}

fn schema_v1() -> u32 {
    1
}

/// Reads an event in one pass: every consumer reads every event, so this is the hot
/// path of the service. The envelope's fields are read as they come; `data` is read
/// straight into its variant when `type` came before it (as this service writes
/// events). Only when `data` comes first is it kept raw until the type is known.
/// (A derived `#[serde(flatten)]` would buffer the whole envelope first.)
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> serde::de::Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        use serde::de::{Error, IgnoredAny};
        use std::borrow::Cow;
        let mut event_id = None;
        let mut tenant_id = None;
        let mut domain_id = None;
        let mut domain: Option<String> = None;
        let mut version = None;
        let mut occurred_at = None;
        let mut causation_id = None;
        let mut correlation_id = None;
        let mut schema_version = None;
        let mut kind: Option<Cow<'de, str>> = None;
        let mut data: Option<EventData> = None;
        let mut raw_data: Option<&'de serde_json::value::RawValue> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "event_id" => event_id = Some(map.next_value()?),
                "tenant_id" => tenant_id = Some(map.next_value()?),
                "domain_id" => domain_id = Some(map.next_value()?),
                "domain" => domain = Some(map.next_value()?),
                "version" => version = Some(map.next_value()?),
                "occurred_at" => occurred_at = Some(map.next_value()?),
                "causation_id" => causation_id = Some(map.next_value()?),
                "correlation_id" => correlation_id = Some(map.next_value()?),
                "schema_version" => schema_version = Some(map.next_value()?),
                "type" => kind = Some(map.next_value::<Cow<'de, str>>()?),
                "data" => match &kind {
                    Some(k) => data = Some(map.next_value_seed(DataOf(k))?),
                    None => raw_data = map.next_value()?,
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
        let data = match data {
            Some(d) => d,
            // `data` came before `type`, or is absent (an event with empty data).
            None => {
                let raw = raw_data.map(|r| r.get()).unwrap_or("{}");
                let tagged = format!(
                    "{{\"type\":{},\"data\":{}}}",
                    serde_json::to_string(&kind).map_err(A::Error::custom)?,
                    raw
                );
                serde_json::from_str(&tagged).map_err(A::Error::custom)?
            }
        };
        Ok(Event {
            event_id: event_id.ok_or_else(|| A::Error::missing_field("event_id"))?,
            tenant_id: tenant_id.ok_or_else(|| A::Error::missing_field("tenant_id"))?,
            domain_id: domain_id.ok_or_else(|| A::Error::missing_field("domain_id"))?,
            domain: domain.ok_or_else(|| A::Error::missing_field("domain"))?,
            version: version.ok_or_else(|| A::Error::missing_field("version"))?,
            occurred_at: occurred_at.ok_or_else(|| A::Error::missing_field("occurred_at"))?,
            causation_id: causation_id.ok_or_else(|| A::Error::missing_field("causation_id"))?,
            correlation_id: correlation_id
                .ok_or_else(|| A::Error::missing_field("correlation_id"))?,
            schema_version: schema_version.unwrap_or_else(schema_v1),
            data,
        })
    }
}

/// Reads an event's `data` as the variant its `type` names, by handing the derived
/// (adjacently tagged) `EventData` a two-entry map: the type, then the data itself.
struct DataOf<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for DataOf<'_> {
    type Value = EventData;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<EventData, D::Error> {
        EventData::deserialize(serde::de::value::MapAccessDeserializer::new(Tagged {
            kind: self.0,
            data: Some(d),
            at: 0,
        }))
    }
}

struct Tagged<'k, D> {
    kind: &'k str,
    data: Option<D>,
    at: u8,
}

impl<'de, D: serde::Deserializer<'de>> serde::de::MapAccess<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, D::Error> {
        use serde::de::IntoDeserializer;
        let key = match self.at {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, D::Error> {
        use serde::de::{Error, IntoDeserializer};
        self.at += 1;
        if self.at == 1 {
            seed.deserialize(self.kind.into_deserializer())
        } else {
            let d = self
                .data
                .take()
                .ok_or_else(|| D::Error::custom("event data read twice"))?;
            seed.deserialize(d)
        }
    }
}

impl Event {
    /// The subject of this domain's stream of events.
    pub fn subject(&self) -> String {
        subject(self.tenant_id, self.domain_id)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise")
    }

    /// Reads a stored event of any schema version: today's form directly (the hot
    /// path of every consumer), older forms through [`upcast`].
    pub fn from_json(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        // UTF-8 checked once for the whole event, not string by string (a seventh of
        // the decoding time).
        let parsed = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str::<Event>(text),
            Err(_) => serde_json::from_slice::<Event>(bytes),
        };
        if let Ok(event) = parsed {
            if event.schema_version == SCHEMA_VERSION {
                return Ok(event);
            }
        }
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        upcast(&mut value);
        // Raw values borrow from bytes, not from a `Value`: read the upcast form as text.
        serde_json::from_slice(&serde_json::to_vec(&value)?)
    }
}

/// A `dns_checked` event's records left as JSON text by
/// [`Event::from_json_deferring_records`].
pub type DeferredRecords = Box<serde_json::value::RawValue>;

thread_local! {
    /// Set while [`Event::from_json_deferring_records`] decodes on this thread.
    static DEFER_RECORDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The records the decode on this thread left unparsed.
    static DEFERRED: std::cell::RefCell<Option<DeferredRecords>> =
        const { std::cell::RefCell::new(None) };
}

/// `DnsChecked::records`: parsed, or (while deferring) kept as raw JSON and read as empty.
fn deferrable_records<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DnsRecord>, D::Error> {
    if DEFER_RECORDS.with(|f| f.get()) {
        let raw = DeferredRecords::deserialize(d)?;
        DEFERRED.with(|slot| *slot.borrow_mut() = Some(raw));
        Ok(Vec::new())
    } else {
        Vec::<DnsRecord>::deserialize(d)
    }
}

impl Event {
    /// Like [`Event::from_json`], except that a `dns_checked` event's records are not
    /// parsed: the event comes back with no records, and their JSON (checked to be
    /// well-formed JSON, nothing more) comes back beside it, for
    /// [`Event::parse_deferred_records`]. A check's records replace the state's
    /// records whole, so a reader folding many events (the replay) only needs to
    /// parse the last check's: most of a check's bytes are its records.
    pub fn from_json_deferring_records(
        bytes: &[u8],
    ) -> Result<(Event, Option<DeferredRecords>), serde_json::Error> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                DEFER_RECORDS.with(|f| f.set(false));
                DEFERRED.with(|slot| slot.borrow_mut().take());
            }
        }
        let _reset = Reset;
        DEFERRED.with(|slot| slot.borrow_mut().take());
        DEFER_RECORDS.with(|f| f.set(true));
        let event = Event::from_json(bytes)?;
        let deferred = DEFERRED.with(|slot| slot.borrow_mut().take());
        Ok((event, deferred))
    }

    /// The records [`Event::from_json_deferring_records`] left unparsed.
    pub fn parse_deferred_records(
        raw: &DeferredRecords,
    ) -> Result<Vec<DnsRecord>, serde_json::Error> {
        serde_json::from_str(raw.get())
    }
}

pub fn subject(tenant: TenantId, domain: DomainId) -> String {
    format!("email_domains.events.{tenant}.{domain}")
}

/// Brings an event of an older schema version to today's form. Version 1 is today's;
/// a change of an event's data adds a step here, never an edit of stored events.
pub fn upcast(value: &mut serde_json::Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    let version = obj
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(1);
    if version < 1 {
        obj.insert("schema_version".into(), 1.into());
    }
    // Every event has a `data` object (docs/interface.md §2.4), also one whose data is empty.
    if !obj.contains_key("data") || obj.get("data").is_some_and(|d| d.is_null()) {
        obj.insert("data".into(), serde_json::Value::Object(Default::default()));
    }
}

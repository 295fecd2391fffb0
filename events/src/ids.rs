//! Identifiers. All are UUIDs in lowercase hyphenated form on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

id_type!(
    /// A tenant of the platform.
    TenantId
);
id_type!(
    /// One registration of a domain name by a tenant (a new registration, a new id).
    DomainId
);
id_type!(
    /// The identity of a command (also of a scheduler trigger or a provider result).
    CommandId
);
id_type!(
    /// The identity of one stored event.
    EventId
);

/// Namespace for ids derived from other ids, so that a retried step derives the
/// same id again (idempotence without coordination).
const DERIVED: Uuid = Uuid::from_bytes([
    0x6d, 0x61, 0x69, 0x6c, 0x2d, 0x64, 0x6f, 0x6d, 0x61, 0x69, 0x6e, 0x73, 0x2d, 0x76, 0x31, 0x00,
]);

/// A UUID v5 derived from a parent id and a label.
pub fn derive(parent: Uuid, label: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + label.len());
    name.extend_from_slice(parent.as_bytes());
    name.extend_from_slice(label.as_bytes());
    Uuid::new_v5(&DERIVED, &name)
}

impl DomainId {
    /// The domain id a `register_domain` command creates: derived from the command id,
    /// so a redelivered command names the same domain.
    pub fn for_registration(command: CommandId) -> Self {
        DomainId(derive(command.0, "domain"))
    }
}

impl EventId {
    /// The id of the event that command `causation` appends to a domain at `version`.
    /// Redelivered, the same command derives the same event id, so `Nats-Msg-Id`
    /// dedup and our own checks agree.
    pub fn for_command(causation: CommandId, domain: DomainId, version: u64) -> Self {
        let mut label = String::with_capacity(48);
        label.push_str(&domain.to_string());
        label.push('/');
        label.push_str(&version.to_string());
        EventId(derive(causation.0, &label))
    }
}

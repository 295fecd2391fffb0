//! Which registration holds a domain name: a JetStream KV bucket written with
//! create-if-absent and revision-checked updates, so two tenants can never both
//! claim a name, also with two handlers running.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use email_domain_events::{DomainId, TenantId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub tenant_id: TenantId,
    pub domain_id: DomainId,
}

/// A holder and the KV revision it was read at (for the compare-and-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub holder: Holder,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the name changed hands since it was read")]
    Conflict,
    #[error("{0}")]
    Other(String),
}

#[derive(Clone)]
pub struct NameIndex {
    kv: kv::Store,
}

impl NameIndex {
    pub fn new(kv: kv::Store) -> Self {
        NameIndex { kv }
    }

    pub async fn get(&self, name: &str) -> anyhow::Result<Option<Claim>> {
        match self.kv.entry(name).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let holder: Holder = serde_json::from_slice(&entry.value)?;
                Ok(Some(Claim {
                    holder,
                    revision: entry.revision,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Claims `name` for `holder`: creates the key if `previous` is `None`, else replaces
    /// the previous holder only if the key is still at that revision.
    pub async fn claim(
        &self,
        name: &str,
        holder: Holder,
        previous: Option<&Claim>,
    ) -> Result<Claim, ClaimError> {
        let body = serde_json::to_vec(&holder).map_err(|e| ClaimError::Other(e.to_string()))?;
        let revision = match previous {
            None => self
                .kv
                .create(name, body.into())
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => ClaimError::Conflict,
                    _ => ClaimError::Other(e.to_string()),
                })?,
            Some(p) => self
                .kv
                .update(name, body.into(), p.revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => ClaimError::Conflict,
                    _ => ClaimError::Other(e.to_string()),
                })?,
        };
        Ok(Claim { holder, revision })
    }
}

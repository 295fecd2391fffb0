//! A tenant's sender settings, folded from its domains' events: the default sender
//! domain and the one it replaced (docs/interface.md §3's activation and rollback rules).

use crate::event::{Event, EventData};
use crate::ids::DomainId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    pub default_from_domain: Option<String>,
    pub previous_from_domain: Option<String>,
    /// The tenant's verified registrations, by id (what "still verified" means).
    pub verified: BTreeMap<DomainId, String>,
}

impl TenantSettings {
    /// Whether `event` can change a tenant's settings at all: only these kinds are
    /// read by [`TenantSettings::apply`]; any other leaves every tenant's settings as
    /// they are.
    pub fn may_change(event: &Event) -> bool {
        matches!(
            event.data,
            EventData::ProviderPolled { verified: true, .. }
                | EventData::VerificationFailed { .. }
                | EventData::DomainDeleted { .. }
                | EventData::DomainReleased { .. }
                | EventData::ProvisioningFailed { .. }
        )
    }

    /// Applies one event of one of the tenant's domains. Returns whether anything changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        let before = self.clone();
        match &event.data {
            EventData::ProviderPolled {
                verified: true,
                activates,
                ..
            } => {
                self.verified.insert(event.domain_id, event.domain.clone());
                if *activates && self.default_from_domain.as_deref() != Some(event.domain.as_str())
                {
                    self.previous_from_domain = self.default_from_domain.take();
                    self.default_from_domain = Some(event.domain.clone());
                }
            }
            EventData::VerificationFailed { .. }
            | EventData::DomainDeleted { .. }
            | EventData::DomainReleased { .. }
            | EventData::ProvisioningFailed { .. } => {
                let was_verified = self.verified.remove(&event.domain_id).is_some();
                let was_default =
                    self.default_from_domain.as_deref() == Some(event.domain.as_str());
                let was_previous =
                    self.previous_from_domain.as_deref() == Some(event.domain.as_str());
                if was_verified || was_default || was_previous {
                    self.withdraw(&event.domain);
                }
            }
            _ => {}
        }
        *self != before
    }

    /// A domain stops being usable: roll the default back to the previous domain if
    /// that is still verified, else to none (the platform address).
    fn withdraw(&mut self, domain: &str) {
        if self.default_from_domain.as_deref() == Some(domain) {
            let previous = self.previous_from_domain.take();
            self.default_from_domain = previous.filter(|p| self.verified.values().any(|v| v == p));
        } else if self.previous_from_domain.as_deref() == Some(domain) {
            // A deleted previous domain can never be rolled back to.
            self.previous_from_domain = None;
        }
    }

    /// The sender address (docs/interface.md §2.6 `email_domains.query.sender`).
    pub fn sender(&self, local_part: &str, platform_from: &str) -> Sender {
        match &self.default_from_domain {
            Some(d) => Sender {
                from: format!("{local_part}@{d}"),
                domain: Some(d.clone()),
                managed: true,
            },
            None => Sender {
                from: platform_from.to_string(),
                domain: None,
                managed: false,
            },
        }
    }
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub from: String,
    pub domain: Option<String>,
    pub managed: bool,
}

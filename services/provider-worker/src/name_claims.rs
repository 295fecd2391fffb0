//! Provider work for one domain name is ordered across registrations.
//!
//! The provider holds one domain per name. When a name changes hands (a failed
//! registration released to another tenant, or a deleted one registered again), the
//! old registration's clean-up (a delete) and the new one's create are separate work
//! items that may run in either order. Run the create first and the provider answers
//! "registered already": adopting that domain would take over the old registration's
//! domain, which its delete then removes.
//!
//! So a create first claims the name in the `email_domain_provider_names` KV bucket
//! (create-if-absent, revision-checked), and the claim is given up only when that
//! registration's provider domain is gone (its delete finished, or its create was
//! refused). A create that finds an older registration's claim waits for it; one that
//! finds a newer registration's claim was released before its create ran, and has
//! nothing to do. Holding the claim, a "registered already" answer can only mean a
//! domain this registration created itself (a create whose answer was lost).

use async_nats::jetstream::kv::{self, DeleteErrorKind};
use chrono::{DateTime, Utc};
use email_domain_events::DomainId;
use serde::{Deserialize, Serialize};

/// The registration whose provider domain has (or will have) the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub domain_id: DomainId,
    /// When the event that asked for the create happened: registrations of one name
    /// follow each other (at most one live owner at a time), so this orders them.
    pub since: DateTime<Utc>,
}

/// What a create may do about the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This registration holds the name: create (or adopt its own lost create).
    Held,
    /// An older registration's provider domain still has the name: wait for its clean-up.
    WaitFor(DomainId),
    /// A newer registration holds the name: this one was released before its create
    /// ran, so there is nothing to create.
    Superseded(DomainId),
}

/// Decides from the current holder (pure, so the rule is tested without NATS).
pub fn outcome(me: &Holder, current: &Holder) -> ClaimOutcome {
    if current.domain_id == me.domain_id {
        ClaimOutcome::Held
    } else if current.since <= me.since {
        ClaimOutcome::WaitFor(current.domain_id)
    } else {
        ClaimOutcome::Superseded(current.domain_id)
    }
}

#[derive(Clone)]
pub struct NameClaims {
    kv: kv::Store,
}

impl NameClaims {
    pub fn new(kv: kv::Store) -> Self {
        NameClaims { kv }
    }

    async fn current(&self, name: &str) -> anyhow::Result<Option<(Holder, u64)>> {
        match self.kv.entry(name).await? {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((serde_json::from_slice(&e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Claims `name` for `me`, or says who holds it.
    pub async fn claim(&self, name: &str, me: Holder) -> anyhow::Result<ClaimOutcome> {
        if let Some((current, _)) = self.current(name).await? {
            return Ok(outcome(&me, &current));
        }
        let body = serde_json::to_vec(&me)?;
        match self.kv.create(name, body.into()).await {
            Ok(_) => Ok(ClaimOutcome::Held),
            // Lost a race: whoever won holds it now (or the error stands).
            Err(e) => match self.current(name).await? {
                Some((current, _)) => Ok(outcome(&me, &current)),
                None => Err(e.into()),
            },
        }
    }

    /// Gives up `domain_id`'s claim of `name` (its provider domain is gone); another
    /// registration's claim is left alone.
    pub async fn release(&self, name: &str, domain_id: DomainId) -> anyhow::Result<()> {
        match self.current(name).await? {
            Some((holder, revision)) if holder.domain_id == domain_id => {
                // Revision-checked: a claim taken in between is never removed.
                match self.kv.delete_expect_revision(name, Some(revision)).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == DeleteErrorKind::WrongLastRevision => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn holder(n: u128, secs: i64) -> Holder {
        Holder {
            domain_id: DomainId(uuid::Uuid::from_u128(n)),
            since: Utc.timestamp_opt(secs, 0).unwrap(),
        }
    }

    #[test]
    fn the_holder_itself_goes_ahead() {
        assert_eq!(outcome(&holder(1, 10), &holder(1, 5)), ClaimOutcome::Held);
    }

    #[test]
    fn a_newer_registration_waits_for_the_older_ones_clean_up() {
        let older = holder(1, 5);
        assert_eq!(
            outcome(&holder(2, 10), &older),
            ClaimOutcome::WaitFor(older.domain_id)
        );
    }

    #[test]
    fn an_older_registration_whose_create_comes_late_has_nothing_to_create() {
        let newer = holder(2, 10);
        assert_eq!(
            outcome(&holder(1, 5), &newer),
            ClaimOutcome::Superseded(newer.domain_id)
        );
    }
}

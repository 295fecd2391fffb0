//! Outcomes (docs/interface.md §2.2): exactly one per command, on `email_domains.outcomes.<command_id>`.

use crate::decide::Rejection;
use crate::ids::{CommandId, DomainId};
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub command_id: Option<CommandId>,
    /// As read from the command (null where unreadable).
    pub tenant_id: Option<String>,
    pub domain: Option<String>,
    pub domain_id: Option<DomainId>,
    pub outcome: Verdict,
    pub reason: Option<Reason>,
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    Rejected,
}

#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub message: String,
}

impl Outcome {
    pub fn accepted(
        command_id: CommandId,
        tenant: String,
        domain: String,
        domain_id: DomainId,
    ) -> Self {
        Outcome {
            command_id: Some(command_id),
            tenant_id: Some(tenant),
            domain: Some(domain),
            domain_id: Some(domain_id),
            outcome: Verdict::Accepted,
            reason: None,
        }
    }

    pub fn rejected(
        command_id: CommandId,
        tenant: Option<String>,
        domain: Option<String>,
        domain_id: Option<DomainId>,
        rejection: &Rejection,
    ) -> Self {
        Outcome {
            command_id: Some(command_id),
            tenant_id: tenant,
            domain,
            domain_id,
            outcome: Verdict::Rejected,
            reason: Some(Reason {
                code: rejection.code.as_str().to_string(),
                message: rejection.message.clone(),
            }),
        }
    }

    /// Every outcome's subject (a subscription's or the stream's filter).
    pub const ALL_SUBJECTS: &'static str = "email_domains.outcomes.>";

    pub fn subject(command_id: CommandId) -> String {
        format!("email_domains.outcomes.{command_id}")
    }
}

/// What a command gets whose id has a stored outcome already (docs/interface.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenBefore {
    /// The same command again: it gets the stored outcome again.
    Repeat,
    /// The stored outcome said `invalid_command`: that command counts as not seen, so
    /// this one is handled afresh.
    NotSeen,
    /// Another tenant used the id first. Its outcome is not this tenant's to read, and
    /// a new outcome on the id's subject would replace it in the ledger (the first
    /// command could then take effect twice): dead-lettered, no outcome.
    OtherTenant,
}

/// Judges a command id seen before by the stored outcome bytes and the tenant that
/// sends it now. Stored bytes that do not read as an outcome count as a repeat.
pub fn seen_before(stored: &[u8], tenant: &str) -> SeenBefore {
    let Ok(o) = serde_json::from_slice::<Outcome>(stored) else {
        return SeenBefore::Repeat;
    };
    let invalid = o.outcome == Verdict::Rejected
        && o.reason
            .as_ref()
            .is_some_and(|r| r.code == "invalid_command");
    match o.tenant_id {
        _ if invalid => SeenBefore::NotSeen,
        Some(first) if first != tenant => SeenBefore::OtherTenant,
        _ => SeenBefore::Repeat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::RejectionCode;

    const A: &str = "5f0c6d4e-0000-4000-8000-00000000000a";
    const B: &str = "5f0c6d4e-0000-4000-8000-00000000000b";

    fn stored(o: &Outcome) -> Vec<u8> {
        serde_json::to_vec(o).unwrap()
    }

    fn accepted_for(tenant: &str) -> Outcome {
        Outcome::accepted(
            CommandId(uuid::Uuid::nil()),
            tenant.into(),
            "acme.com".into(),
            DomainId(uuid::Uuid::nil()),
        )
    }

    #[test]
    fn given_an_outcome_of_the_same_tenant_when_the_id_comes_again_then_it_is_a_repeat() {
        assert_eq!(
            seen_before(&stored(&accepted_for(A)), A),
            SeenBefore::Repeat
        );
    }

    #[test]
    fn given_an_outcome_of_another_tenant_when_the_id_comes_again_then_it_is_not_replayed() {
        assert_eq!(
            seen_before(&stored(&accepted_for(A)), B),
            SeenBefore::OtherTenant
        );
    }

    #[test]
    fn given_an_invalid_command_outcome_when_the_id_comes_again_then_it_counts_as_not_seen() {
        let rejection = Rejection::new(RejectionCode::InvalidCommand, "bad");
        let o = Outcome::rejected(
            CommandId(uuid::Uuid::nil()),
            Some(A.into()),
            None,
            None,
            &rejection,
        );
        assert_eq!(seen_before(&stored(&o), A), SeenBefore::NotSeen);
        assert_eq!(seen_before(&stored(&o), B), SeenBefore::NotSeen);
    }

    #[test]
    fn given_an_outcome_without_a_tenant_or_unreadable_when_the_id_comes_again_then_it_is_a_repeat()
    {
        let mut o = accepted_for(A);
        o.tenant_id = None;
        assert_eq!(seen_before(&stored(&o), B), SeenBefore::Repeat);
        assert_eq!(seen_before(b"not json", B), SeenBefore::Repeat);
    }
}

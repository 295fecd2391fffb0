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

    pub fn subject(command_id: CommandId) -> String {
        format!("email_domains.outcomes.{command_id}")
    }
}

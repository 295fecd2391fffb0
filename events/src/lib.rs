//! The pure domain core of the managed email domain service.
//!
//! Types that can only be built valid, the commands and events, the domain state
//! machine as `decide`/`evolve`, DNS verdicts, the re-check schedule, the tenant's
//! sender settings and the analytics mapping. Nothing in this crate does IO: no
//! tokio, no NATS, no SQL, no HTTP. Adapters at the edges feed it facts (the clock,
//! DNS answers, provider replies) as plain values.
#![forbid(unsafe_code)]

pub mod acceptance;
pub mod analytics;
pub mod command;
pub mod decide;
pub mod domain_name;
pub mod event;
pub mod ids;
pub mod outcome;
pub mod preflight;
pub mod provider;
pub mod records;
pub mod schedule;
pub mod state;
pub mod tenant;
pub mod verdict;

pub use command::{Command, CommandType, ProviderResult};
pub use decide::{
    decide, decide_register, needs_dns_check, Decision, RegisterPlan, Rejection, RejectionCode,
};
pub use domain_name::{DomainName, ReservedDomains};
pub use event::{Event, EventData};
pub use ids::{CommandId, DomainId, EventId, TenantId};
pub use provider::{FailedRecord, ProviderStatus};
pub use records::{DnsRecord, DnsStatus};
pub use schedule::Policy;
pub use state::{evolve, DomainState, Status};

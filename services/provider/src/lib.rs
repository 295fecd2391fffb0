//! The email provider port and its Resend adapter.
//!
//! This crate's job is to talk to the company that sends the mail. It defines the
//! provider-neutral vocabulary the rest of the service uses ([`ProviderDomain`],
//! [`ProviderRecord`], [`ProviderStatus`], [`ProviderError`]) and the object-safe
//! [`EmailProvider`] trait that services hold as `Arc<dyn EmailProvider>`.
//!
//! [`ResendProvider`] implements the trait over Resend's HTTP API. It is the only
//! place that knows Resend's wire format: relative record names, record tags such as
//! `SPF`/`DKIM`, status spellings, error bodies and rate-limit headers. Everything it
//! hands back is already normalised (full lower-case record names, a `purpose` per
//! record, no inbound MX record).
//!
//! What is deliberately absent: no retry loop (callers decide, with
//! [`jittered_backoff`] and [`retry_after_with_jitter`]), no DNS checks, no logging of
//! the API key — [`ApiKey`] cannot be printed and error texts are scrubbed of it.
#![forbid(unsafe_code)]

mod api_key;
mod backoff;
mod records;
mod resend;
mod types;

pub use api_key::ApiKey;
pub use backoff::{jittered_backoff, retry_after_with_jitter};
pub use resend::{ResendConfigError, ResendProvider, DEFAULT_RESEND_BASE_URL};
pub use types::{
    DomainPage, EmailProvider, ProviderDomain, ProviderDomainSummary, ProviderError,
    ProviderRecord, ProviderStatus,
};

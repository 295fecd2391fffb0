//! The dev provider's own, deliberately simple verification check.
//!
//! A record counts as verified when DNS answers at its full name with exactly the
//! expected value, compared in lower case: the MX exchange host (no trailing dot), or a
//! TXT record's strings concatenated. Nothing else: no SPF or DKIM parsing, no
//! diagnosis. It must stay independent of the service's verdict logic, which it
//! witnesses.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::records::DevRecord;

/// A resolver asking `nameservers` (UDP, then TCP for long answers), or the system's
/// when empty. No cache: polling must see a record as soon as it is published.
pub(crate) fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, ResolveError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers: Vec<NameServerConfig> = nameservers
            .iter()
            .flat_map(|addr| {
                [
                    NameServerConfig::new(*addr, Protocol::Udp),
                    NameServerConfig::new(*addr, Protocol::Tcp),
                ]
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioConnectionProvider::default(),
        )
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    options.positive_max_ttl = Some(Duration::ZERO);
    options.negative_max_ttl = Some(Duration::ZERO);
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    options.edns0 = true;
    options.ndots = 0;
    Ok(builder.build())
}

/// The absolute DNS name of a record given relative to `domain`.
fn fqdn(relative: &str, domain: &str) -> String {
    match relative {
        "" | "@" => format!("{domain}."),
        name => format!("{name}.{domain}."),
    }
}

/// Whether DNS serves `record` of `domain` with exactly its value.
pub(crate) async fn record_is_published(
    resolver: &TokioResolver,
    domain: &str,
    record: &DevRecord,
) -> bool {
    let name = fqdn(&record.name, domain);
    let expected = record.value.to_ascii_lowercase();
    match record.record_type {
        "TXT" => match resolver.txt_lookup(name).await {
            Ok(answers) => answers.iter().any(|txt| {
                let joined: Vec<u8> = txt
                    .txt_data()
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                String::from_utf8_lossy(&joined).to_ascii_lowercase() == expected
            }),
            Err(_) => false,
        },
        "MX" => match resolver.mx_lookup(name).await {
            Ok(answers) => answers.iter().any(|mx| {
                mx.exchange()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
                    == expected
            }),
            Err(_) => false,
        },
        _ => false,
    }
}

/// Checks every record at once; `true` per record that is published.
pub(crate) async fn check_records(
    resolver: &TokioResolver,
    domain: &str,
    records: &[DevRecord],
) -> Vec<bool> {
    futures::future::join_all(
        records
            .iter()
            .map(|record| record_is_published(resolver, domain, record)),
    )
    .await
}

//! Configuration from the environment (contract §1), with the service's own extras.

use chrono::Duration;
use email_domain_events::{Policy, ReservedDomains};
use std::net::SocketAddr;

#[derive(Clone)]
pub struct Config {
    pub nats_url: String,
    pub database_url: String,
    /// `Some` only when `RESEND_API_KEY` is set. Never logged: see [`Config`]'s Debug.
    pub resend_api_key: Option<String>,
    pub resend_base_url: String,
    pub dns_nameservers: Option<Vec<SocketAddr>>,
    pub policy: Policy,
    pub sender_local_part: String,
    pub platform_from_address: String,
    pub reserved_domains: ReservedDomains,
    /// Provider requests per second; `None` = unlimited.
    pub provider_rate_limit: Option<f64>,
    /// Parallel lanes in the command handler (per-domain order holds within a lane).
    pub handler_lanes: usize,
    /// Write a snapshot every this many events of a domain.
    pub snapshot_every: u64,
    /// Leader lease time-to-live.
    pub lease_ttl: std::time::Duration,
    /// The commands stream's duplicate window (tests shorten it).
    pub command_dedup_window: std::time::Duration,
    /// `METRICS_ADDR`: where `/metrics`, `/healthz` and `/readyz` are served; `None` = not served.
    pub ops_addr: Option<SocketAddr>,
    /// `PROVIDER_TIMEOUT_MS`: how long one provider request may take (default 15 s).
    pub provider_timeout: std::time::Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("nats_url", &self.nats_url)
            .field("database_url", &redact_url(&self.database_url))
            .field(
                "resend_api_key",
                &self.resend_api_key.as_ref().map(|_| "***"),
            )
            .field("resend_base_url", &self.resend_base_url)
            .field("dns_nameservers", &self.dns_nameservers)
            .field("policy", &self.policy)
            .field("provider_rate_limit", &self.provider_rate_limit)
            .field("provider_timeout", &self.provider_timeout)
            .finish_non_exhaustive()
    }
}

fn redact_url(url: &str) -> String {
    // postgres://user:password@host → postgres://user:***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The local development provider's address when no key is set (`make run` starts it there).
pub const DEV_PROVIDER_URL: &str = "http://127.0.0.1:3001";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn secs(name: &str, default: i64) -> anyhow::Result<Duration> {
    match var(name) {
        None => Ok(Duration::seconds(default)),
        Some(v) => {
            let n: f64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number of seconds"))?;
            anyhow::ensure!(n > 0.0, "{name} must be positive, got {v}");
            Ok(Duration::milliseconds((n * 1000.0) as i64))
        }
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let resend_api_key = var("RESEND_API_KEY");
        let resend_base_url = var("RESEND_BASE_URL").unwrap_or_else(|| {
            if resend_api_key.is_some() {
                "https://api.resend.com".into()
            } else {
                DEV_PROVIDER_URL.into()
            }
        });
        let dns_nameservers = match var("DNS_NAMESERVERS") {
            None => None,
            Some(v) => Some(
                v.split(',')
                    .map(|s| {
                        s.trim().parse::<SocketAddr>().map_err(|_| {
                            anyhow::anyhow!("DNS_NAMESERVERS entry {s:?} is not ip:port")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
        };
        let provider_rate_limit = match var("PROVIDER_RATE_LIMIT") {
            Some(v) => {
                let n: f64 = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("PROVIDER_RATE_LIMIT={v:?} is not a number"))?;
                if n <= 0.0 {
                    None
                } else {
                    Some(n)
                }
            }
            None if resend_api_key.is_some() => Some(4.0),
            None => None,
        };
        Ok(Config {
            nats_url: var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            database_url: var("DATABASE_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/email_domains".into()),
            resend_api_key,
            resend_base_url,
            dns_nameservers,
            policy: Policy {
                recheck_initial: secs("RECHECK_INITIAL_SECS", 300)?,
                recheck_max: secs("RECHECK_MAX_SECS", 3600)?,
                verification_deadline: secs("VERIFICATION_DEADLINE_SECS", 604_800)?,
                monitor_interval: secs("MONITOR_INTERVAL_SECS", 86_400)?,
            },
            sender_local_part: var("SENDER_LOCAL_PART").unwrap_or_else(|| "notifications".into()),
            platform_from_address: var("PLATFORM_FROM_ADDRESS")
                .unwrap_or_else(|| "notifications@platform.invalid".into()),
            reserved_domains: ReservedDomains::parse(&var("RESERVED_DOMAINS").unwrap_or_default()),
            provider_rate_limit,
            handler_lanes: var("HANDLER_LANES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(256),
            snapshot_every: var("SNAPSHOT_EVERY")
                .and_then(|v| v.parse().ok())
                .unwrap_or(4),
            lease_ttl: std::time::Duration::from_millis(
                var("LEASE_TTL_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(6000),
            ),
            command_dedup_window: std::time::Duration::from_secs(
                var("COMMAND_DEDUP_WINDOW_SECS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(120),
            ),
            provider_timeout: std::time::Duration::from_millis(
                var("PROVIDER_TIMEOUT_MS")
                    .and_then(|v| v.parse().ok())
                    .filter(|ms| *ms > 0)
                    .unwrap_or(15_000),
            ),
            ops_addr: match var("METRICS_ADDR") {
                None => None,
                Some(v) => Some(v.trim().parse().map_err(|_| {
                    anyhow::anyhow!("METRICS_ADDR={v:?} is not ip:port (e.g. 0.0.0.0:9090)")
                })?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact_url("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
    }
}

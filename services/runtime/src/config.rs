//! Configuration from the environment (docs/interface.md §1), with the service's own extras.

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
    /// Commands the handler works on at once (its workers take the lanes in fair order).
    pub handler_workers: usize,
    /// `HANDLER_FLEET_RATE`: scheduled re-checks one handler instance starts a second
    /// at most (`None`: unlimited), so a fleet's re-checks coming due together share
    /// the machine with people's commands instead of filling it.
    pub handler_fleet_rate: Option<u32>,
    /// `HANDLER_PARTITIONS`: partitions of the command work, shared by the handler
    /// instances. Fixed for a deployment: every instance must use the same number.
    pub handler_partitions: u32,
    /// `PROJECTOR_PARTITIONS`: partitions of each Postgres projection, shared by its
    /// instances. Changing it needs a `domainctl replay` of the projection.
    pub projector_partitions: u32,
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
            .field("nats_url", &redact_url(&self.nats_url))
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

/// A server URL with the password of its `user:password@` replaced by `***`
/// (`nats://gateway:s3cret@nats:4222` → `nats://gateway:***@nats:4222`), for every URL
/// that reaches a log line, an error or a Debug: `NATS_URL` and `DATABASE_URL`. The
/// scheme is optional, as NATS reads `user:password@host:4222` too; everything up to
/// the last `@` goes, so a password with an unescaped `@` or `/` does not survive either.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |s| s + 3);
    let Some(at) = url.rfind('@').filter(|&at| at >= start) else {
        return url.to_string();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_string(),
    }
}

/// The local development provider's address when no key is set (`make run` starts it there).
pub const DEV_PROVIDER_URL: &str = "http://127.0.0.1:3001";

/// A variable whose value cannot be read: the service stops with this message rather
/// than run on a default nobody asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    /// What a valid value looks like.
    pub expected: String,
}

/// The longest duration a setting may name: 100 years (longer ones overflow the clock
/// arithmetic of the policy, and mean "never" anyway).
const MAX_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// The environment as a lookup, so parsing can be tested with a map.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// A set variable's value; unset and blank both mean "use the default".
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// `read` applied to the trimmed value, or `default` when unset.
    fn parse<T>(
        &self,
        name: &'static str,
        default: T,
        expected: impl FnOnce() -> String,
        read: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        read(value.trim()).ok_or_else(|| ConfigError {
            name,
            value,
            expected: expected(),
        })
    }

    /// A whole number from `min` to `max`.
    fn whole(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let expected = || match max {
            u64::MAX => format!("a whole number, at least {min} (default {default})"),
            _ => format!("a whole number from {min} to {max} (default {default})"),
        };
        self.parse(name, default, expected, |v| {
            v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
        })
    }

    /// Milliseconds, at least 1.
    fn millis(&self, name: &'static str, default: u64) -> Result<std::time::Duration, ConfigError> {
        let max = (MAX_SECS * 1000.0) as u64;
        self.whole(name, default, 1, max)
            .map(std::time::Duration::from_millis)
    }

    /// Seconds (fractions allowed), more than zero.
    fn secs(&self, name: &'static str, default: i64) -> Result<Duration, ConfigError> {
        let expected = || {
            format!("a number of seconds above 0 and at most 100 years, e.g. 300 or 0.5 (default {default})")
        };
        self.parse(name, Duration::seconds(default), expected, |v| {
            let n: f64 = v.parse().ok()?;
            let ms = (n * 1000.0).round();
            (n.is_finite() && ms >= 1.0 && n <= MAX_SECS).then(|| Duration::milliseconds(ms as i64))
        })
    }

    /// `ip:port`.
    fn addr(&self, name: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
        self.parse(
            name,
            None,
            || "ip:port, e.g. 0.0.0.0:9090".into(),
            |v| v.parse().ok().map(Some),
        )
    }

    /// `ip:port,...`, at least one.
    fn addrs(&self, name: &'static str) -> Result<Option<Vec<SocketAddr>>, ConfigError> {
        self.parse(
            name,
            None,
            || "a comma-separated list of ip:port, e.g. 10.0.0.2:53,10.0.0.3:53".into(),
            |v| {
                v.split(',')
                    .map(|s| s.trim().parse::<SocketAddr>().ok())
                    .collect::<Option<Vec<_>>>()
                    .map(Some)
            },
        )
    }

    /// Requests per second: a number above 0, or 0 for no limit; `default` when unset.
    fn rate(&self, name: &'static str, default: Option<f64>) -> Result<Option<f64>, ConfigError> {
        let expected =
            || "requests per second, a number above 0 (e.g. 4 or 0.5), or 0 for no limit".into();
        self.parse(name, default, expected, |v| {
            let n: f64 = v.parse().ok()?;
            match n {
                0.0 => Some(None),
                n if n.is_finite() && n > 0.0 => Some(Some(n)),
                _ => None,
            }
        })
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }
}

impl Config {
    /// From the process environment; see [`Config::from_vars`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From a lookup of variables (the environment, or a map in tests). An unset or
    /// blank variable takes its default; a value that cannot be read is an error
    /// naming the variable, the value and what a valid one looks like.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(get);
        let resend_api_key = vars.get("RESEND_API_KEY");
        let resend_base_url = vars.get("RESEND_BASE_URL").unwrap_or_else(|| {
            if resend_api_key.is_some() {
                "https://api.resend.com".into()
            } else {
                DEV_PROVIDER_URL.into()
            }
        });
        // Limited for the real provider; the development provider takes anything.
        let default_rate = resend_api_key.is_some().then_some(4.0);
        Ok(Config {
            nats_url: vars.text("NATS_URL", "nats://127.0.0.1:4222"),
            database_url: vars.text(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/email_domains",
            ),
            resend_api_key,
            resend_base_url,
            dns_nameservers: vars.addrs("DNS_NAMESERVERS")?,
            policy: Policy {
                recheck_initial: vars.secs("RECHECK_INITIAL_SECS", 300)?,
                recheck_max: vars.secs("RECHECK_MAX_SECS", 3600)?,
                verification_deadline: vars.secs("VERIFICATION_DEADLINE_SECS", 604_800)?,
                monitor_interval: vars.secs("MONITOR_INTERVAL_SECS", 86_400)?,
            },
            sender_local_part: vars.text("SENDER_LOCAL_PART", "notifications"),
            platform_from_address: vars
                .text("PLATFORM_FROM_ADDRESS", "notifications@platform.invalid"),
            reserved_domains: ReservedDomains::parse(&vars.text("RESERVED_DOMAINS", "")),
            provider_rate_limit: vars.rate("PROVIDER_RATE_LIMIT", default_rate)?,
            // Each lane is a task with its own queue: more than this is a typo.
            handler_lanes: vars.whole("HANDLER_LANES", 256, 1, 65_536)? as usize,
            handler_workers: vars.whole("HANDLER_WORKERS", 16, 1, 4_096)? as usize,
            handler_fleet_rate: match vars.whole(
                "HANDLER_FLEET_RATE",
                u64::from(DEFAULT_FLEET_RATE),
                0,
                1_000_000,
            )? {
                0 => None,
                n => Some(n as u32),
            },
            handler_partitions: vars.whole("HANDLER_PARTITIONS", 8, 1, 1_024)? as u32,
            projector_partitions: vars.whole("PROJECTOR_PARTITIONS", 4, 1, 256)? as u32,
            snapshot_every: vars.whole("SNAPSHOT_EVERY", 4, 1, u64::MAX)?,
            lease_ttl: vars.millis("LEASE_TTL_MS", 6000)?,
            command_dedup_window: std::time::Duration::from_secs(vars.whole(
                "COMMAND_DEDUP_WINDOW_SECS",
                120,
                1,
                MAX_SECS as u64,
            )?),
            provider_timeout: vars.millis("PROVIDER_TIMEOUT_MS", 15_000)?,
            ops_addr: vars.addr("METRICS_ADDR")?,
        })
    }
}

/// Scheduled re-checks one handler instance starts a second, unless configured.
pub const DEFAULT_FLEET_RATE: u32 = 500;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| map.get(name).cloned())
    }

    /// The error of loading with `name=value`, which must fail and say so in words
    /// that name the variable and the value.
    fn refused(name: &str, value: &str) -> ConfigError {
        let e = load(&[(name, value)])
            .err()
            .unwrap_or_else(|| panic!("{name}={value:?} was accepted"));
        assert_eq!(e.name, name);
        assert_eq!(e.value, value);
        let text = e.to_string();
        assert!(
            text.contains(name) && text.contains(value) && text.contains("expected"),
            "{text}"
        );
        e
    }

    #[test]
    fn with_nothing_set_every_default_applies() {
        let c = load(&[]).unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.handler_lanes, 256);
        assert_eq!(c.snapshot_every, 4);
        assert_eq!(c.lease_ttl, std::time::Duration::from_millis(6000));
        assert_eq!(c.provider_timeout, std::time::Duration::from_millis(15_000));
        assert_eq!(c.command_dedup_window, std::time::Duration::from_secs(120));
        assert_eq!(c.policy.recheck_initial, Duration::seconds(300));
        assert_eq!(c.policy.recheck_max, Duration::seconds(3600));
        assert_eq!(c.policy.verification_deadline, Duration::seconds(604_800));
        assert_eq!(c.policy.monitor_interval, Duration::seconds(86_400));
        assert_eq!(c.provider_rate_limit, None);
        assert_eq!(c.resend_base_url, DEV_PROVIDER_URL);
        assert_eq!(c.dns_nameservers, None);
        assert_eq!(c.ops_addr, None);
    }

    #[test]
    fn blank_values_take_the_default_like_unset_ones() {
        let c = load(&[("HANDLER_LANES", "  "), ("RESERVED_DOMAINS", "")]).unwrap();
        assert_eq!(c.handler_lanes, 256);
    }

    #[test]
    fn readable_values_are_used() {
        let c = load(&[
            ("HANDLER_LANES", "8"),
            ("SNAPSHOT_EVERY", "16"),
            ("LEASE_TTL_MS", " 1500 "),
            ("PROVIDER_TIMEOUT_MS", "2000"),
            ("COMMAND_DEDUP_WINDOW_SECS", "5"),
            ("RECHECK_INITIAL_SECS", "0.5"),
            ("PROVIDER_RATE_LIMIT", "2.5"),
            ("METRICS_ADDR", "0.0.0.0:9090"),
            ("DNS_NAMESERVERS", "127.0.0.1:53, 10.0.0.2:5353"),
        ])
        .unwrap();
        assert_eq!(c.handler_lanes, 8);
        assert_eq!(c.snapshot_every, 16);
        assert_eq!(c.lease_ttl, std::time::Duration::from_millis(1500));
        assert_eq!(c.provider_timeout, std::time::Duration::from_millis(2000));
        assert_eq!(c.command_dedup_window, std::time::Duration::from_secs(5));
        assert_eq!(c.policy.recheck_initial, Duration::milliseconds(500));
        assert_eq!(c.provider_rate_limit, Some(2.5));
        assert_eq!(c.ops_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.dns_nameservers.map(|s| s.len()), Some(2));
    }

    #[test]
    fn an_unreadable_handler_workers_stops_the_service() {
        assert_eq!(load(&[]).unwrap().handler_workers, 16);
        assert_eq!(
            load(&[("HANDLER_WORKERS", "4")]).unwrap().handler_workers,
            4
        );
        for bad in ["0", "-1", "many", "4097"] {
            refused("HANDLER_WORKERS", bad);
        }
    }

    #[test]
    fn the_fleet_rate_is_a_rate_a_second_or_zero_for_unlimited() {
        assert_eq!(
            load(&[]).unwrap().handler_fleet_rate,
            Some(DEFAULT_FLEET_RATE)
        );
        assert_eq!(
            load(&[("HANDLER_FLEET_RATE", "50")])
                .unwrap()
                .handler_fleet_rate,
            Some(50)
        );
        assert_eq!(
            load(&[("HANDLER_FLEET_RATE", "0")])
                .unwrap()
                .handler_fleet_rate,
            None
        );
        for bad in ["-1", "fast", "1000001"] {
            refused("HANDLER_FLEET_RATE", bad);
        }
    }

    #[test]
    fn an_unreadable_handler_lanes_stops_the_service() {
        for bad in ["many", "-1", "0", "1.5", "65537"] {
            refused("HANDLER_LANES", bad);
        }
        assert!(refused("HANDLER_LANES", "0")
            .expected
            .contains("from 1 to 65536"));
    }

    #[test]
    fn an_unreadable_snapshot_every_stops_the_service() {
        for bad in ["often", "0", "-4", "4.0"] {
            refused("SNAPSHOT_EVERY", bad);
        }
    }

    #[test]
    fn an_unreadable_lease_ttl_stops_the_service() {
        for bad in ["6s", "0", "-6000", "6000.5"] {
            refused("LEASE_TTL_MS", bad);
        }
    }

    #[test]
    fn an_unreadable_provider_timeout_stops_the_service() {
        for bad in ["15s", "0", "-1"] {
            refused("PROVIDER_TIMEOUT_MS", bad);
        }
    }

    #[test]
    fn an_unreadable_command_dedup_window_stops_the_service() {
        for bad in ["2m", "0", "-120"] {
            refused("COMMAND_DEDUP_WINDOW_SECS", bad);
        }
    }

    #[test]
    fn an_unreadable_policy_duration_stops_the_service() {
        for name in [
            "RECHECK_INITIAL_SECS",
            "RECHECK_MAX_SECS",
            "VERIFICATION_DEADLINE_SECS",
            "MONITOR_INTERVAL_SECS",
        ] {
            // Not a number, not positive, too small to be a millisecond, not finite, or
            // so long the clock would overflow.
            for bad in ["5m", "0", "-1", "0.0001", "NaN", "inf", "1e300"] {
                refused(name, bad);
            }
        }
    }

    #[test]
    fn an_unreadable_provider_rate_limit_stops_the_service() {
        for bad in ["fast", "-1", "NaN", "inf"] {
            refused("PROVIDER_RATE_LIMIT", bad);
        }
        // Zero is documented: no limit, even with a key.
        let c = load(&[("PROVIDER_RATE_LIMIT", "0"), ("RESEND_API_KEY", "re_x")]).unwrap();
        assert_eq!(c.provider_rate_limit, None);
    }

    #[test]
    fn an_unreadable_address_stops_the_service() {
        refused("METRICS_ADDR", "everywhere");
        refused("METRICS_ADDR", "9090");
        refused("DNS_NAMESERVERS", "not-an-address");
        refused("DNS_NAMESERVERS", "127.0.0.1:53,");
        refused("DNS_NAMESERVERS", "127.0.0.1");
    }

    #[test]
    fn the_provider_key_is_never_part_of_an_error() {
        let e = load(&[("RESEND_API_KEY", "re_secret"), ("HANDLER_LANES", "x")]).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("re_secret"));
    }

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

    #[test]
    fn nats_passwords_are_redacted_with_or_without_a_scheme() {
        for (url, shown) in [
            (
                "nats://gateway:s3cret@nats:4222",
                "nats://gateway:***@nats:4222",
            ),
            ("gateway:s3cret@nats:4222", "gateway:***@nats:4222"),
            ("tls://gw:s3c@r/et@nats:4222", "tls://gw:***@nats:4222"),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("127.0.0.1:4222", "127.0.0.1:4222"),
        ] {
            assert_eq!(super::redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn the_config_debug_shows_no_nats_password() {
        for url in [
            "nats://gateway:s3cret@nats:4222",
            "gateway:s3cret@nats:4222",
        ] {
            let c = load(&[
                ("NATS_URL", url),
                ("DATABASE_URL", "postgres://u:s3cret@h/db"),
            ])
            .unwrap();
            let shown = format!("{c:?} {c:#?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("gateway:***@nats:4222"), "{shown}");
        }
    }
}

//! Reading the gateway's own settings (`GATEWAY_*`, or the matching flags). Like the
//! shared configuration (`runtime::Config::from_vars`), a value that cannot be read
//! stops the gateway with a message naming the variable and what a valid value looks
//! like (clap adds the value itself), instead of quietly using a default or a clamp.

use std::net::SocketAddr;

/// The longest a request may wait for a command's outcome.
pub const MAX_COMMAND_TIMEOUT_SECS: u64 = 3600;
/// The bounds of a share link's lifetime (a request may ask anything in between).
pub const MIN_SHARE_TTL_SECS: u64 = 60;
pub const MAX_SHARE_TTL_SECS: u64 = 30 * 86_400;

fn invalid(name: &str, flag: &str, expected: &str) -> String {
    format!("{name} (--{flag}) must be {expected}")
}

/// `GATEWAY_LISTEN`: `ip:port`.
pub fn listen(v: &str) -> Result<SocketAddr, String> {
    v.trim()
        .parse()
        .map_err(|_| invalid("GATEWAY_LISTEN", "listen", "ip:port, e.g. 0.0.0.0:8080"))
}

/// `GATEWAY_TOKEN_SECRET`: any non-blank text (blank would let anyone sign tokens).
pub fn token_secret(v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        return Err(invalid(
            "GATEWAY_TOKEN_SECRET",
            "token-secret",
            "the shared signing secret, not blank",
        ));
    }
    Ok(v.to_string())
}

/// The shortest signing secret the gateway starts with outside development.
pub const MIN_SECRET_BYTES: usize = 32;

/// What the gateway signs tokens and share links with. A strong `GATEWAY_TOKEN_SECRET`
/// (at least [`MIN_SECRET_BYTES`] bytes, not the development value) always; anything
/// else only with `GATEWAY_DEV` set (`make run` sets it): then the given secret, or the
/// development one. Without the switch the gateway refuses to start, since a weak or
/// public secret lets anyone sign a token for any tenant.
pub fn signing_secret(secret: Option<&str>, dev: bool) -> Result<String, String> {
    match (secret, dev) {
        (Some(s), _) if s.len() >= MIN_SECRET_BYTES && s != crate::token::DEV_SECRET => {
            Ok(s.to_string())
        }
        (Some(s), true) => Ok(s.to_string()),
        (None, true) => Ok(crate::token::DEV_SECRET.to_string()),
        (Some(s), false) if s == crate::token::DEV_SECRET => Err(
            "GATEWAY_TOKEN_SECRET is the development secret, which anyone can read in the \
             repository: set a random secret of at least 32 bytes (GATEWAY_DEV=1 allows it \
             for development only)"
                .into(),
        ),
        (Some(s), false) => Err(format!(
            "GATEWAY_TOKEN_SECRET is {} bytes long: it must be at least {MIN_SECRET_BYTES} \
             (e.g. `openssl rand -base64 48`; GATEWAY_DEV=1 allows a short one for development only)",
            s.len()
        )),
        (None, false) => Err(
            "GATEWAY_TOKEN_SECRET is not set: set a random secret of at least 32 bytes \
             (GATEWAY_DEV=1 uses the development secret, for development only)"
                .into(),
        ),
    }
}

/// `GATEWAY_PUBLIC_URL`: an `http://` or `https://` base URL with a host.
pub fn public_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    let host = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .map(|rest| rest.split('/').next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(v.to_string()),
        _ => Err(invalid(
            "GATEWAY_PUBLIC_URL",
            "public-url",
            "an http:// or https:// base URL, e.g. https://mail-settings.example.com",
        )),
    }
}

/// Where share links point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareBase {
    /// `GATEWAY_PUBLIC_URL`, without a trailing `/`.
    Public(String),
    /// Development only: `http://` and the request's `Host` header.
    RequestHost,
}

/// The base of share links: `GATEWAY_PUBLIC_URL` always; the request's `Host` only with
/// `GATEWAY_DEV` set (`make run` sets it). Without the switch the gateway refuses to
/// start, since a link built from `Host` goes over plain http to whatever host the
/// request named.
pub fn share_base(public_url: Option<&str>, dev: bool) -> Result<ShareBase, String> {
    match (public_url, dev) {
        (Some(u), _) => Ok(ShareBase::Public(
            u.trim().trim_end_matches('/').to_string(),
        )),
        (None, true) => Ok(ShareBase::RequestHost),
        (None, false) => Err(
            "GATEWAY_PUBLIC_URL is not set: set the https:// address the owners and their DNS \
             admins reach the gateway at, which share links point to (GATEWAY_DEV=1 builds \
             them from the request's Host, for development only)"
                .into(),
        ),
    }
}

/// `GATEWAY_COMMAND_TIMEOUT_SECS`: whole seconds, 1 … 3600.
pub fn command_timeout_secs(v: &str) -> Result<u64, String> {
    whole(v, 1, MAX_COMMAND_TIMEOUT_SECS).ok_or_else(|| {
        invalid(
            "GATEWAY_COMMAND_TIMEOUT_SECS",
            "command-timeout-secs",
            &format!("a whole number of seconds from 1 to {MAX_COMMAND_TIMEOUT_SECS} (default 10)"),
        )
    })
}

/// `GATEWAY_SHARE_TTL_SECS`: whole seconds, 60 … 30 days.
pub fn share_ttl_secs(v: &str) -> Result<u64, String> {
    whole(v, MIN_SHARE_TTL_SECS, MAX_SHARE_TTL_SECS).ok_or_else(|| {
        invalid(
            "GATEWAY_SHARE_TTL_SECS",
            "share-ttl-secs",
            &format!(
                "a whole number of seconds from {MIN_SHARE_TTL_SECS} to {MAX_SHARE_TTL_SECS} (30 days; default 604800)"
            ),
        )
    })
}

/// The bounds of the rate limits (see [`crate::limits`] for the defaults and why).
pub const MAX_TENANT_COMMANDS_PER_MINUTE: u64 = 6000;
pub const MAX_TENANT_COMMAND_BURST: u64 = 1000;
pub const MAX_DOMAIN_CHECK_INTERVAL_SECS: u64 = 3600;
pub const MAX_DOMAIN_CHECK_BURST: u64 = 100;

/// `GATEWAY_TENANT_COMMANDS_PER_MINUTE`: commands a tenant may send a minute after its
/// burst, 1 … 6000.
pub fn tenant_commands_per_minute(v: &str) -> Result<u32, String> {
    count(v, MAX_TENANT_COMMANDS_PER_MINUTE).ok_or_else(|| {
        invalid(
            "GATEWAY_TENANT_COMMANDS_PER_MINUTE",
            "tenant-commands-per-minute",
            &format!(
                "a whole number of commands from 1 to {MAX_TENANT_COMMANDS_PER_MINUTE} (default {})",
                crate::limits::TENANT_COMMANDS_PER_MINUTE
            ),
        )
    })
}

/// `GATEWAY_TENANT_COMMAND_BURST`: commands a tenant may send at once, 1 … 1000.
pub fn tenant_command_burst(v: &str) -> Result<u32, String> {
    count(v, MAX_TENANT_COMMAND_BURST).ok_or_else(|| {
        invalid(
            "GATEWAY_TENANT_COMMAND_BURST",
            "tenant-command-burst",
            &format!(
                "a whole number of commands from 1 to {MAX_TENANT_COMMAND_BURST} (default {})",
                crate::limits::TENANT_COMMAND_BURST
            ),
        )
    })
}

/// `GATEWAY_DOMAIN_CHECK_INTERVAL_SECS`: seconds between an owner's checks of one
/// domain after its burst, 1 … 3600.
pub fn domain_check_interval_secs(v: &str) -> Result<u64, String> {
    whole(v, 1, MAX_DOMAIN_CHECK_INTERVAL_SECS).ok_or_else(|| {
        invalid(
            "GATEWAY_DOMAIN_CHECK_INTERVAL_SECS",
            "domain-check-interval-secs",
            &format!(
                "a whole number of seconds from 1 to {MAX_DOMAIN_CHECK_INTERVAL_SECS} (default {})",
                crate::limits::DOMAIN_CHECK_INTERVAL_SECS
            ),
        )
    })
}

/// `GATEWAY_DOMAIN_CHECK_BURST`: checks of one domain an owner may ask at once, 1 … 100.
pub fn domain_check_burst(v: &str) -> Result<u32, String> {
    count(v, MAX_DOMAIN_CHECK_BURST).ok_or_else(|| {
        invalid(
            "GATEWAY_DOMAIN_CHECK_BURST",
            "domain-check-burst",
            &format!(
                "a whole number of checks from 1 to {MAX_DOMAIN_CHECK_BURST} (default {})",
                crate::limits::DOMAIN_CHECK_BURST
            ),
        )
    })
}

/// `GATEWAY_DEV_TENANT`: a UUID.
pub fn dev_tenant(v: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(v.trim()).map_err(|_| {
        invalid(
            "GATEWAY_DEV_TENANT",
            "dev-tenant",
            "a tenant UUID, e.g. 00000000-0000-4000-8000-00000000d3f0",
        )
    })
}

/// A count from 1 to `max` (which fits a `u32`).
fn count(v: &str, max: u64) -> Option<u32> {
    whole(v, 1, max).and_then(|n| u32::try_from(n).ok())
}

fn whole(v: &str, min: u64, max: u64) -> Option<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parser refuses `value` with a message naming `var`.
    fn refused<T: std::fmt::Debug>(parse: fn(&str) -> Result<T, String>, value: &str, var: &str) {
        match parse(value) {
            Ok(v) => panic!("{var}={value:?} was accepted as {v:?}"),
            Err(e) => assert!(e.contains(var) && e.contains("must be"), "{e}"),
        }
    }

    #[test]
    fn an_unreadable_listen_address_is_refused() {
        assert_eq!(listen("0.0.0.0:8080").unwrap().port(), 8080);
        for bad in ["8080", "localhost:8080", "everywhere", ""] {
            refused(listen, bad, "GATEWAY_LISTEN");
        }
    }

    #[test]
    fn a_blank_token_secret_is_refused() {
        assert_eq!(token_secret("s3cret").unwrap(), "s3cret");
        for bad in ["", "   ", "\n"] {
            refused(token_secret, bad, "GATEWAY_TOKEN_SECRET");
        }
    }

    #[test]
    fn the_gateway_signs_only_with_a_strong_secret_unless_in_development() {
        let strong = "k".repeat(MIN_SECRET_BYTES);
        assert_eq!(signing_secret(Some(&strong), false).unwrap(), strong);
        assert_eq!(signing_secret(Some(&strong), true).unwrap(), strong);
        for weak in [Some("short"), Some(crate::token::DEV_SECRET), None] {
            let e = signing_secret(weak, false).unwrap_err();
            assert!(
                e.contains("GATEWAY_TOKEN_SECRET") && e.contains("GATEWAY_DEV"),
                "{e}"
            );
        }
        let just_short = "k".repeat(MIN_SECRET_BYTES - 1);
        assert!(signing_secret(Some(&just_short), false).is_err());
        assert_eq!(signing_secret(Some("short"), true).unwrap(), "short");
        assert_eq!(
            signing_secret(None, true).unwrap(),
            crate::token::DEV_SECRET
        );
    }

    #[test]
    fn a_public_url_must_be_http_with_a_host() {
        assert_eq!(
            public_url("https://mail.example.com/").unwrap(),
            "https://mail.example.com/"
        );
        assert!(public_url("http://127.0.0.1:8080").is_ok());
        for bad in [
            "mail.example.com",
            "ftp://x",
            "https://",
            "https:///path",
            "",
        ] {
            refused(public_url, bad, "GATEWAY_PUBLIC_URL");
        }
    }

    #[test]
    fn share_links_need_a_public_url_unless_in_development() {
        let public = ShareBase::Public("https://mail.example.com".into());
        for dev in [false, true] {
            assert_eq!(
                share_base(Some("https://mail.example.com/"), dev),
                Ok(public.clone())
            );
        }
        assert_eq!(share_base(None, true), Ok(ShareBase::RequestHost));
        let e = share_base(None, false).unwrap_err();
        assert!(
            e.contains("GATEWAY_PUBLIC_URL") && e.contains("GATEWAY_DEV"),
            "{e}"
        );
    }

    #[test]
    fn a_zero_or_unreadable_command_timeout_is_refused() {
        assert_eq!(command_timeout_secs("10").unwrap(), 10);
        for bad in ["0", "-1", "10s", "1.5", "3601"] {
            refused(command_timeout_secs, bad, "GATEWAY_COMMAND_TIMEOUT_SECS");
        }
    }

    #[test]
    fn a_share_ttl_outside_a_minute_to_thirty_days_is_refused() {
        assert_eq!(share_ttl_secs("60").unwrap(), 60);
        assert_eq!(share_ttl_secs("2592000").unwrap(), 2_592_000);
        for bad in ["0", "59", "2592001", "7d", "-60"] {
            refused(share_ttl_secs, bad, "GATEWAY_SHARE_TTL_SECS");
        }
    }

    #[test]
    fn a_rate_limit_of_zero_above_its_bound_or_unreadable_is_refused() {
        assert_eq!(tenant_commands_per_minute("30").unwrap(), 30);
        assert_eq!(tenant_commands_per_minute(" 6000 ").unwrap(), 6000);
        assert_eq!(tenant_command_burst("1").unwrap(), 1);
        assert_eq!(tenant_command_burst("1000").unwrap(), 1000);
        assert_eq!(domain_check_interval_secs("10").unwrap(), 10);
        assert_eq!(domain_check_interval_secs("3600").unwrap(), 3600);
        assert_eq!(domain_check_burst("2").unwrap(), 2);
        assert_eq!(domain_check_burst("100").unwrap(), 100);
        for bad in ["0", "-1", "6001", "30/min", "1.5", ""] {
            refused(
                tenant_commands_per_minute,
                bad,
                "GATEWAY_TENANT_COMMANDS_PER_MINUTE",
            );
        }
        for bad in ["0", "1001", "ten"] {
            refused(tenant_command_burst, bad, "GATEWAY_TENANT_COMMAND_BURST");
        }
        for bad in ["0", "3601", "10s", "-5"] {
            refused(
                domain_check_interval_secs,
                bad,
                "GATEWAY_DOMAIN_CHECK_INTERVAL_SECS",
            );
        }
        for bad in ["0", "101", "two"] {
            refused(domain_check_burst, bad, "GATEWAY_DOMAIN_CHECK_BURST");
        }
    }

    #[test]
    fn an_unreadable_dev_tenant_is_refused() {
        assert!(dev_tenant("00000000-0000-4000-8000-00000000d3f0").is_ok());
        refused(dev_tenant, "tenant-1", "GATEWAY_DEV_TENANT");
    }
}

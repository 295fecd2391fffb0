//! The adapters every service of the managed email domain service shares.
//!
//! Configuration (docs/interface.md §1), the JetStream streams and KV buckets (docs/interface.md §2),
//! the event store with optimistic appends, the domain-name ownership index, leader
//! leases, outcomes, dead letters, Postgres set-up, logging and graceful shutdown.
//! Domain rules live in `email-domain-events`; this crate only moves bytes.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod dead_letters;
pub mod fair;
pub mod lease;
pub mod names;
pub mod ops;
pub mod outcomes;
pub mod partitions;
pub mod retry;
pub mod shutdown;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod trace;

pub use config::Config;
pub use shutdown::Shutdown;

/// Connects to NATS with the settings every service uses: reconnect forever, so
/// a restarted server is picked up by itself.
pub async fn connect_nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = nats_options(url)
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to NATS at {}: {e} (is nats-server running with -js?)",
                config::redact_url(url)
            )
        })?;
    Ok(client)
}

/// Connect options carrying the user and password of `nats://user:password@host`:
/// the client does not read credentials from the URL itself (the deployment puts
/// each service's NATS user there).
pub fn nats_options(url: &str) -> async_nats::ConnectOptions {
    match nats_credentials(url) {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    }
}

/// The (percent-decoded) user and password in a URL's authority, if it has both.
fn nats_credentials(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, _host) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some((percent_decode(user), percent_decode(password)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JetStream context tuned for pipelined publishing.
pub fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .max_ack_inflight(20_000)
        .build(client)
}

#[cfg(test)]
mod tests {
    use super::nats_credentials;

    #[test]
    fn credentials_in_the_nats_url_are_found_and_decoded() {
        assert_eq!(
            nats_credentials("nats://gateway:s3cr%40t@nats:4222"),
            Some(("gateway".into(), "s3cr@t".into()))
        );
        assert_eq!(
            nats_credentials("nats://u:p@127.0.0.1:4222/x@y"),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(nats_credentials("nats://127.0.0.1:4222"), None);
        assert_eq!(nats_credentials("nats://token@127.0.0.1:4222"), None);
    }

    #[tokio::test]
    async fn a_connect_error_does_not_show_the_nats_password() {
        for url in [
            "nats://gateway:s3cret@nats:no-port",
            "gateway:s3cret@nats:no-port",
        ] {
            let Err(e) = super::connect_nats(url, "test").await else {
                panic!("{url}: connected");
            };
            let shown = format!("{e} {e:?} {e:#}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("gateway:***@nats:no-port"), "{shown}");
        }
    }
}

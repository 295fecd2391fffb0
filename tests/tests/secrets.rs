//! The provider key appears in no event, outcome, row, analytics message, dead letter
//! or log line (at TRACE level), through a whole lifecycle.

use email_domain_events::outcome::Verdict;
use std::sync::{Arc, Mutex};
use system_tests::{Stack, StackOptions};
use uuid::Uuid;

const KEY: &str = "re_SECRET_k3y_that_must_never_leak_7f3a9";

async fn everything_stored(stack: &Stack) -> Vec<u8> {
    let mut all = Vec::new();
    for stream in [
        "EMAIL_DOMAIN_EVENTS",
        "EMAIL_DOMAIN_OUTCOMES",
        "EMAIL_DOMAIN_ANALYTICS",
        "EMAIL_DOMAIN_DEAD_LETTERS",
        "EMAIL_DOMAIN_PROVIDER_WORK",
        "KV_email_domain_snapshots",
        "KV_email_domain_names",
    ] {
        let s = stack.js.get_stream(stream).await.unwrap();
        let mut seq = 1;
        while let Ok(m) = s.get_raw_message(seq).await {
            all.extend_from_slice(&m.payload);
            for (name, values) in m.headers.iter() {
                all.extend_from_slice(name.to_string().as_bytes());
                for v in values {
                    all.extend_from_slice(v.to_string().as_bytes());
                }
            }
            seq = m.sequence + 1;
        }
    }
    for table in [
        "email_domains",
        "tenant_email_settings",
        "projection_checkpoints",
        "scheduler_timers",
    ] {
        let rows: Vec<serde_json::Value> =
            sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {table} t"))
                .fetch_all(&stack.pool)
                .await
                .unwrap();
        for r in rows {
            all.extend_from_slice(r.to_string().as_bytes());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_provider_key_is_written_nowhere() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    system_tests::capture_logs(logs.clone());
    let stack = Stack::start_with(StackOptions {
        api_key: Some(KEY.into()),
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    assert_eq!(
        stack
            .send("register_domain", tenant, "secret.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    let row = stack
        .wait_status(tenant, "secret.test", "awaiting_dns")
        .await;
    stack.publish_records("secret.test", &row);
    assert_eq!(
        stack
            .send("dns_configured", tenant, "secret.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack.wait_status(tenant, "secret.test", "verified").await;
    // A bad command too, so the dead letters and error paths have spoken.
    stack
        .js
        .publish("email_domains.commands.register_domain", "{oops".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        stack
            .send("delete_domain", tenant, "secret.test")
            .await
            .outcome,
        Verdict::Accepted
    );
    stack
        .wait_status(tenant, "secret.test", "deactivated")
        .await;
    let stored = everything_stored(&stack).await;
    stack.shutdown().await;
    let logs = logs.lock().unwrap().clone();

    // Positive controls: the scan finds what is there.
    assert!(
        contains(&stored, "secret.test"),
        "the scan reads the stored data"
    );
    assert!(
        logs.len() > 10_000 && contains(&logs, "secret.test"),
        "the scan reads TRACE logs ({} bytes)",
        logs.len()
    );
    let planted = [stored.clone(), KEY.as_bytes().to_vec()].concat();
    assert!(contains(&planted, KEY), "the scan would find the key");

    assert!(!contains(&stored, KEY), "the key is in a stream or a table");
    assert!(!contains(&logs, KEY), "the key is in a log line");
    // Also not a recognisable part of it.
    assert!(!contains(&logs, "k3y_that_must_never_leak"));
}

// ---------------------------------------------------------------------------------
// Panics: a panic where the key is held (the configuration, the provider the worker
// builds from it, the errors of its calls) never prints it.
// ---------------------------------------------------------------------------------

/// Another key than [`KEY`], so the two tests of this file never see each other's.
const PANIC_KEY: &str = "re_PANIC_sys_k3y_5e2b_must_not_print";
const PANIC_KEY_PART: &str = "sys_k3y_5e2b";
/// Threads whose panics are forced; other panics still reach the previous hook.
const FORCED: &str = "forced-panic";

/// Every panic message of the process (hook) and every forced panic's payload.
#[derive(Clone, Default)]
struct Panics {
    text: Arc<Mutex<String>>,
    forced: Arc<Mutex<usize>>,
}

impl Panics {
    fn capture() -> Panics {
        let panics = Panics::default();
        let sink = panics.text.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&format!("{info}\n"));
            let forced = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(FORCED));
            if !forced {
                previous(info);
            }
        }));
        panics
    }

    /// Runs `f` on a thread of its own; it must panic. Its payload (what a thread's
    /// or task's owner gets, and might log) joins the capture.
    fn force<R: Send>(&self, label: &str, f: impl FnOnce() -> R + Send) {
        let joined = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name(format!("{FORCED} {label}"))
                .spawn_scoped(s, f)
                .expect("spawn")
                .join()
        });
        let payload = joined
            .err()
            .unwrap_or_else(|| panic!("{label}: did not panic"));
        let payload = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        self.text
            .lock()
            .unwrap()
            .push_str(&format!("payload of {label}: {payload}\n"));
        *self.forced.lock().unwrap() += 1;
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn messages(&self) -> usize {
        self.text().matches("panicked at").count()
    }
}

/// A provider that answers every request with a 500 whose body echoes the
/// `Authorization` header (raw HTTP/1.1 over TCP, one request per connection).
async fn echoing_provider() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as they announce.
                let (head, mut body_left) = loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&request[..end]).to_string();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        break (head, length.saturating_sub(request.len() - end - 4));
                    }
                };
                while body_left > 0 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body_left = body_left.saturating_sub(n),
                    }
                }
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "statusCode": 500, "name": "internal_server_error",
                    "message": format!("could not use {auth}"),
                })
                .to_string();
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// Sets (or with `None` removes) environment variables for `Config::from_env`.
fn set_env(vars: &[(&str, Option<&str>)]) {
    for (name, value) in vars {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// `unwrap`/`expect` on literal `Err`/`None` values are the point: their panic messages.
#[allow(clippy::unnecessary_literal_unwrap, clippy::expect_fun_call)]
async fn a_panic_where_the_provider_key_is_held_never_prints_it() {
    let panics = Panics::capture();

    // Positive control: the capture finds a planted key (message and payload).
    panics.force("planted", || panic!("planted: Bearer {PANIC_KEY}"));
    assert_eq!(panics.messages(), 1, "the hook captured the panic");
    assert_eq!(
        panics.text().matches(PANIC_KEY).count(),
        2,
        "the capture finds a planted key"
    );
    panics.text.lock().unwrap().clear();
    *panics.forced.lock().unwrap() = 0;

    let (dev_addr, _dev) = dev_provider::spawn(dev_provider::DevProviderConfig::default()).await;
    let dev_url = format!("http://{dev_addr}");
    let control = dev_provider::DevProviderControl::new(&dev_url);
    let echo_url = echoing_provider().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    // The configuration as a deployment loads it (the key from a secrets file, with
    // its trailing newline), and loads that fail while the key is set.
    let padded_key = format!(" {PANIC_KEY}\n");
    set_env(&[
        ("RESEND_API_KEY", Some(&padded_key)),
        ("RESEND_BASE_URL", Some(&dev_url)),
    ]);
    let config = runtime::Config::from_env().expect("config from the environment");
    assert_eq!(
        config.resend_api_key.as_deref().map(str::trim),
        Some(PANIC_KEY)
    );
    let mut failed_loads = Vec::new();
    for (name, bad) in [
        ("PROVIDER_RATE_LIMIT", "fast"),
        ("DNS_NAMESERVERS", "not-an-address"),
        ("METRICS_ADDR", "everywhere"),
        ("RECHECK_INITIAL_SECS", "-1"),
    ] {
        set_env(&[(name, Some(bad))]);
        failed_loads.push((name, runtime::Config::from_env()));
        set_env(&[(name, None)]);
    }
    set_env(&[("RESEND_API_KEY", None), ("RESEND_BASE_URL", None)]);
    assert!(failed_loads.iter().all(|(_, r)| r.is_err()));

    // The provider the worker builds from it, and ones that cannot be built.
    let provider = provider_worker::provider_from_config(&config).expect("a provider");
    let mut echoing = config.clone();
    echoing.resend_base_url = echo_url;
    let echoing = provider_worker::provider_from_config(&echoing).unwrap();
    let mut nowhere = config.clone();
    nowhere.resend_base_url = format!("http://{closed}");
    let nowhere = provider_worker::provider_from_config(&nowhere).unwrap();
    let mut bad_key = config.clone();
    bad_key.resend_api_key = Some(format!("{PANIC_KEY}\u{7}"));
    let bad_key = provider_worker::provider_from_config(&bad_key).map(drop);
    assert!(bad_key.is_err());

    // Every way its calls fail (as values), and one that succeeds by adoption.
    control
        .set_faults(&dev_provider::Faults {
            rate_limit_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut failures = vec![(
        "429",
        provider.create_domain("limited.test", None).await.map(drop),
    )];
    control
        .set_faults(&dev_provider::Faults {
            server_error_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    failures.push((
        "500",
        provider.create_domain("broken.test", None).await.map(drop),
    ));
    failures.push((
        "422",
        provider.create_domain("not a name", None).await.map(drop),
    ));
    failures.push(("404", provider.get_domain("no-such-id").await.map(drop)));
    failures.push((
        "echo",
        echoing.create_domain("echo.test", None).await.map(drop),
    ));
    failures.push(("echo list", echoing.list_domains().await.map(drop)));
    failures.push((
        "refused",
        nowhere.create_domain("nowhere.test", None).await.map(drop),
    ));
    control
        .set_faults(&dev_provider::Faults {
            forbid_next_create: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let adopted = provider.create_domain("adopted.test", None).await;
    assert!(adopted.is_ok(), "the lost create is adopted: {adopted:?}");
    let shown: String = failures
        .iter()
        .map(|(l, r)| format!("{l}: {r:?}\n"))
        .collect();
    assert!(failures.iter().all(|(_, r)| r.is_err()), "{shown}");
    assert!(
        shown.contains("could not use Bearer ***"),
        "the echoed key reached the error, scrubbed:\n{shown}"
    );

    // Now the panics.
    panics.force("config debug", || panic!("{config:?} {config:#?}"));
    panics.force("config unwrap", || Err::<(), _>(config.clone()).unwrap());
    panics.force("config expect", || {
        None::<()>.expect(&format!("no provider for {config:?}"))
    });
    for (name, result) in failed_loads {
        panics.force(name, move || result.unwrap());
    }
    panics.force("bad key", move || bad_key.unwrap());
    for (label, result) in &failures {
        panics.force(label, || result.clone().unwrap());
        panics.force(label, || result.clone().expect(label));
        panics.force(label, || {
            let e = result.clone().unwrap_err();
            panic!(
                "{label}: {e} / {e:?} / {:?}",
                anyhow::Error::new(e.clone()).context("calling the provider")
            )
        });
    }
    // Inside a tokio task, the provider mid-call; its JoinError is formatted too.
    panics.force("task", || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{FORCED} runtime"))
            .enable_all()
            .build()
            .unwrap();
        let echoing = echoing.clone();
        let joined = rt.block_on(async move {
            tokio::spawn(async move { echoing.create_domain("task.test", None).await.unwrap() })
                .await
        });
        let error = joined.unwrap_err();
        assert!(error.is_panic());
        panic!("the provider task ended: {error} / {error:?}");
    });

    let forced = *panics.forced.lock().unwrap();
    assert_eq!(
        panics.messages(),
        forced + 1,
        "every panic was captured (+1: the task's own)"
    );
    let text = panics.text();
    for expected in [
        "resend_api_key",
        "could not use Bearer ***",
        "PROVIDER_RATE_LIMIT",
        "Config {",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} is not in the panics:\n{text}"
        );
    }
    assert!(
        !text.contains(PANIC_KEY),
        "the key is in a panic message:\n{text}"
    );
    assert!(
        !text.contains(PANIC_KEY_PART),
        "part of the key is in a panic message:\n{text}"
    );

    // Positive control again: the same capture still finds a planted key.
    panics.force("planted again", || {
        Err::<(), _>(format!("Bearer {PANIC_KEY}")).expect("planted")
    });
    assert!(panics.text().contains(PANIC_KEY));
    drop(std::panic::take_hook());
}

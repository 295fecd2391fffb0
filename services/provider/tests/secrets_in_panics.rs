//! A panic where the adapter holds the key never prints it.
//!
//! A panic hook captures every panic message of the process. Panics are then forced
//! in every place the key lives: `Debug`/`Display` of the key and of the adapter inside
//! `panic!`/`unwrap`/`expect`, construction errors, and the error of every way a call
//! can fail (a server that echoes the `Authorization` header in JSON errors, in a
//! non-JSON body cut at its limit, in a 2xx answer the adapter cannot read, in a
//! redirect to a URL nobody serves; timeouts; a refused connection), also from inside
//! a tokio task. The key must be in none of them; a planted key is found by the same
//! capture (positive control).
//!
//! One test in this file: the hook is process-wide.

// `unwrap`/`expect` on literal `Err`/`None` values are the point: their panic messages.
#![allow(clippy::unnecessary_literal_unwrap, clippy::expect_fun_call)]

use std::panic;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dev_provider::{DevProviderConfig, DevProviderControl, Faults};
use email_provider::{ApiKey, EmailProvider, ProviderError, ResendProvider};
use serde_json::{json, Value};

const KEY: &str = "re_PANIC_canary_k3y_4c1d_never_print";
/// A recognisable inner part of the key: not even a piece of it may show.
const KEY_PART: &str = "canary_k3y";
/// Threads whose panics are forced by this test (other panics also reach the old hook).
const FORCED: &str = "forced-panic";

type Captured = Arc<Mutex<String>>;

/// Installs a hook that appends every panic message (location, message) to the buffer.
fn capture_panics() -> Captured {
    let captured: Captured = Arc::default();
    let sink = captured.clone();
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
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
    captured
}

/// Text of a panic payload (what a `JoinHandle` holder would see and could log).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-text payload>".into())
}

/// Runs `f` on a thread of its own, which must panic; its payload joins the capture.
fn force<R: Send>(captured: &Captured, label: &str, f: impl FnOnce() -> R + Send) {
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
    captured.lock().unwrap().push_str(&format!(
        "payload of {label}: {}\n",
        payload_text(&*payload)
    ));
}

fn count_panics(captured: &Captured) -> usize {
    captured.lock().unwrap().matches("panicked at").count()
}

/// A provider that echoes the `Authorization` header it was sent back in every way it
/// can, picked by route (and by the name a create asks for).
async fn hostile(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let token = auth.strip_prefix("Bearer ").unwrap_or("").to_owned();
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let path = uri.path().to_owned();
    let json_error = |status: StatusCode, name: &str, message: String| {
        (
            status,
            axum::Json(json!({"statusCode": status.as_u16(), "name": name, "message": message})),
        )
            .into_response()
    };
    match (method.as_str(), path.as_str(), name.as_str()) {
        ("POST", "/domains", "echo400.test") => json_error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            format!("invalid request with {auth}"),
        ),
        ("POST", "/domains", "echo500.test") => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &token,
            format!("internal error for {auth}"),
        ),
        // Not JSON; the key straddles the point where the adapter cuts error bodies
        // (300 characters), which falls just after `KEY_PART`.
        ("POST", "/domains", "html502.test") => (
            StatusCode::BAD_GATEWAY,
            format!("{}{auth} trailing", "x".repeat(271)),
        )
            .into_response(),
        // 2xx whose shape the adapter cannot read: serde quotes the value.
        ("POST", "/domains", "garbage200.test") => (
            StatusCode::CREATED,
            axum::Json(json!({"id": "d1", "name": "garbage200.test", "records": auth})),
        )
            .into_response(),
        // "Registered already": the adapter adopts, and the list it reads is garbage.
        ("POST", "/domains", "registered.test") => json_error(
            StatusCode::FORBIDDEN,
            "validation_error",
            format!("The domain registered.test has been registered already ({auth})"),
        ),
        ("GET", "/domains", _) => {
            axum::Json(json!({"has_more": token, "data": []})).into_response()
        }
        // A redirect to a place nobody serves, with the key in the URL.
        ("POST", "/domains", "redirect.test") => {
            let closed = closed_port();
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    header::LOCATION,
                    format!("http://127.0.0.1:{closed}/{token}"),
                )],
            )
                .into_response()
        }
        ("POST", "/domains", _) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", token.clone())],
            format!("slow down {auth}"),
        )
            .into_response(),
        ("GET", _, _) => {
            axum::Json(json!({"id": ["not", "a", "string"], "name": auth})).into_response()
        }
        ("DELETE", _, _) => json_error(StatusCode::UNAUTHORIZED, &auth, auth.clone()),
        _ => json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", auth.clone()),
    }
}

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_where_the_adapter_holds_the_key_never_prints_it() {
    let captured = capture_panics();

    // Positive control: the capture sees a planted key, in the message and the payload.
    force(&captured, "planted", || panic!("planted: Bearer {KEY}"));
    assert_eq!(count_panics(&captured), 1, "the hook captured the panic");
    assert_eq!(
        captured.lock().unwrap().matches(KEY).count(),
        2,
        "the capture finds a planted key (message and payload)"
    );
    captured.lock().unwrap().clear();

    // The hostile provider, the dev provider (for timeouts), and a closed port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostile_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(hostile)).await });
    let (dev_addr, _dev) = dev_provider::spawn(DevProviderConfig::default()).await;
    let dev_url = format!("http://{dev_addr}");
    let control = DevProviderControl::new(&dev_url);

    let provider = Arc::new(
        ResendProvider::new(
            &hostile_url,
            ApiKey::new(format!("  {KEY}\n")),
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let impatient =
        ResendProvider::new(&dev_url, ApiKey::new(KEY), Duration::from_millis(200)).unwrap();
    let nowhere = ResendProvider::new(
        &format!("http://127.0.0.1:{}", closed_port()),
        ApiKey::new(KEY),
        Duration::from_secs(2),
    )
    .unwrap();

    // Every way a call fails, while the adapter holds the key.
    let mut failures: Vec<(&str, ProviderError)> = Vec::new();
    for name in [
        "echo400.test",
        "echo500.test",
        "html502.test",
        "garbage200.test",
        "registered.test",
        "redirect.test",
        "limited.test",
    ] {
        let error = provider.create_domain(name, None).await.unwrap_err();
        failures.push((name, error));
    }
    failures.push(("get", provider.get_domain("d1").await.unwrap_err()));
    failures.push(("list", provider.list_domains().await.unwrap_err()));
    failures.push((
        "verify",
        provider.request_verification("d1").await.unwrap_err(),
    ));
    failures.push(("delete", provider.delete_domain("d1").await.unwrap_err()));
    control
        .set_faults(&Faults {
            delay_ms: Some(1_000),
            delay_next: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    failures.push((
        "timeout",
        impatient
            .create_domain("slow.test", None)
            .await
            .unwrap_err(),
    ));
    failures.push((
        "refused",
        nowhere
            .create_domain("nowhere.test", None)
            .await
            .unwrap_err(),
    ));

    // The failures are the ones meant: the hostile texts did reach the errors (scrubbed).
    let all_errors: String = failures
        .iter()
        .map(|(label, e)| format!("{label}: {e} | {e:?}\n"))
        .collect();
    for expected in [
        "invalid request with Bearer ***",
        "internal error for Bearer ***",
        "xxxxxxxxxx",
        "invalid type: string \\\"Bearer ***\\\"",
        "invalid type: string \\\"***\\\"",
        "timed out",
        "RateLimited",
    ] {
        assert!(
            all_errors.contains(expected),
            "expected {expected:?} among the errors:\n{all_errors}"
        );
    }

    assert!(
        matches!(&failures[5], ("redirect.test", ProviderError::Transient(m)) if m.contains("error sending request")),
        "the redirect was followed to a closed port: {:?}",
        failures[5]
    );

    // Now the panics.
    for (label, error) in &failures {
        let result: Result<(), ProviderError> = Err(error.clone());
        force(&captured, label, || result.clone().unwrap());
        force(&captured, label, || {
            result.clone().expect(&format!("{label} via {provider:?}"))
        });
        force(&captured, label, || panic!("{label}: {error} / {error:?}"));
    }
    let key = ApiKey::new(KEY);
    force(&captured, "key debug", || panic!("{key:?}"));
    force(&captured, "key display", || panic!("{key}"));
    force(&captured, "key unwrap", || {
        Err::<(), _>(key.clone()).unwrap()
    });
    force(&captured, "key eq", || {
        assert_eq!(key, ApiKey::new("another"))
    });
    force(&captured, "adapter debug", || {
        panic!("{provider:?} {impatient:#?}")
    });
    force(&captured, "adapter expect", || {
        None::<()>.expect(&format!("no answer from {nowhere:?}"))
    });
    let bad_key = ResendProvider::new(
        &hostile_url,
        ApiKey::new(format!("{KEY}\u{7}")),
        Duration::from_secs(1),
    );
    force(&captured, "construction", || bad_key.unwrap());
    // Inside a tokio task, holding the adapter mid-call; the JoinError is formatted too.
    force(&captured, "task", || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{FORCED} runtime"))
            .enable_all()
            .build()
            .unwrap();
        let provider = provider.clone();
        let joined = runtime.block_on(async move {
            tokio::spawn(async move { provider.create_domain("echo400.test", None).await.unwrap() })
                .await
        });
        let error = joined.unwrap_err();
        assert!(error.is_panic());
        panic!("the task ended: {error} / {error:?}");
    });

    // Three per failure, seven of key and adapter, two for the task (its own and the thread's).
    let forced = 3 * failures.len() + 7 + 2;
    assert_eq!(
        count_panics(&captured),
        forced,
        "every forced panic was captured"
    );
    let text = captured.lock().unwrap().clone();
    // What was formatted did reach the messages.
    for expected in [
        "ApiKey(***)",
        "ResendProvider",
        "Bearer ***",
        "InvalidKey",
        "task",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    assert!(
        !text.contains(KEY),
        "the key is in a panic message:\n{text}"
    );
    assert!(
        !text.contains(KEY_PART),
        "part of the key is in a panic message:\n{text}"
    );

    // Positive control again: the same capture still finds a planted key.
    force(&captured, "planted again", || {
        Err::<(), _>(format!("Bearer {KEY}")).expect("planted")
    });
    assert!(captured.lock().unwrap().contains(KEY));
    drop(panic::take_hook());
}

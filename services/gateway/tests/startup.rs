//! The gateway binary refuses to start without a strong signing secret, and starts
//! with one (or with the development switch `make run` sets); it refuses to serve
//! without `GATEWAY_PUBLIC_URL` outside development.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gateway(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("GATEWAY_TOKEN_SECRET")
        .env_remove("GATEWAY_DEV")
        .env_remove("GATEWAY_PUBLIC_URL")
        .envs(env.iter().copied())
        .output()
        .expect("the gateway binary runs")
}

/// A refusal comes before any IO, but a cold binary on a loaded machine took over
/// 5 s to get there once: a refusal is waited for this long.
const REFUSAL_WITHIN: Duration = Duration::from_secs(60);
/// A gateway still running after this long got past its checks (it then waits for
/// NATS, which nobody runs here).
const STARTED_AFTER: Duration = Duration::from_secs(5);

/// Runs the gateway with `env` added; its output if it exits `within`, else `None`
/// (it was killed: it started).
fn gateway_exit(env: &[(&str, &str)], args: &[&str], within: Duration) -> Option<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("GATEWAY_TOKEN_SECRET")
        .env_remove("GATEWAY_DEV")
        .env_remove("GATEWAY_PUBLIC_URL")
        .env_remove("METRICS_ADDR")
        // Nothing listens here: a gateway that does start keeps retrying, and touches nothing.
        .env("NATS_URL", "nats://127.0.0.1:9")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary runs");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill the gateway this test started");
    let _ = child.wait();
    None
}

const TENANT: &str = "1c9d6e2a-0000-4000-8000-000000000001";

#[test]
fn without_a_strong_secret_the_gateway_does_not_start() {
    for env in [
        vec![],
        vec![("GATEWAY_TOKEN_SECRET", "dev-secret")],
        vec![("GATEWAY_TOKEN_SECRET", "short-but-not-blank")],
    ] {
        // Serving would connect to NATS first: the refusal comes before anything else.
        let out = gateway(&env, &["serve", "--listen", "127.0.0.1:0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?}: started");
        assert!(
            stderr.contains("does not start") && stderr.contains("GATEWAY_TOKEN_SECRET"),
            "{env:?}: {stderr}"
        );
        // Nor does it sign a token with it.
        let out = gateway(&env, &["token", "--tenant", TENANT]);
        assert!(!out.status.success() && out.stdout.is_empty(), "{env:?}");
    }
}

#[test]
fn with_a_strong_secret_or_in_development_it_signs() {
    let strong = "0123456789abcdef0123456789abcdef";
    for env in [
        vec![("GATEWAY_TOKEN_SECRET", strong)],
        vec![("GATEWAY_DEV", "1")],
        vec![("GATEWAY_DEV", "1"), ("GATEWAY_TOKEN_SECRET", "short")],
    ] {
        let out = gateway(&env, &["token", "--tenant", TENANT]);
        let token = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(token.trim().len() > 20, "{env:?}: {token}");
    }
}

#[test]
fn without_a_public_url_the_gateway_does_not_serve_outside_development() {
    let strong = "0123456789abcdef0123456789abcdef";
    let out = gateway_exit(
        &[("GATEWAY_TOKEN_SECRET", strong)],
        &["serve", "--listen", "127.0.0.1:0"],
        REFUSAL_WITHIN,
    )
    .expect("the gateway started without GATEWAY_PUBLIC_URL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not start") && stderr.contains("GATEWAY_PUBLIC_URL"),
        "{stderr}"
    );
    // In development, or with the public URL, it gets past the check (and then waits
    // for NATS, which nobody runs here).
    for env in [
        vec![("GATEWAY_DEV", "1")],
        vec![
            ("GATEWAY_TOKEN_SECRET", strong),
            ("GATEWAY_PUBLIC_URL", "https://mail-settings.example.com"),
        ],
    ] {
        if let Some(out) = gateway_exit(&env, &["serve", "--listen", "127.0.0.1:0"], STARTED_AFTER)
        {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("GATEWAY_PUBLIC_URL"), "{env:?}: {stderr}");
        }
    }
}

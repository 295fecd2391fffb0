//! The gateway binary refuses to start without a strong signing secret, and starts
//! with one (or with the development switch `make run` sets).

use std::process::{Command, Output};

fn gateway(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("GATEWAY_TOKEN_SECRET")
        .env_remove("GATEWAY_DEV")
        .envs(env.iter().copied())
        .output()
        .expect("the gateway binary runs")
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

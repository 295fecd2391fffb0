//! `gateway`: the "Managed sending" page and its JSON API over HTTP.
//!
//! `gateway [serve]` serves; `gateway token --tenant T` prints a signed session token
//! (for development and for platforms that want to sign with this tool).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use gateway::settings;
use gateway::token::{Claims, Keys, DEV_SECRET, MAX_TOKEN_LIFETIME_SECS};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "gateway",
    about = "The tenant's 'Managed sending' page and JSON API"
)]
struct Cli {
    /// Address to listen on.
    #[arg(
        long,
        env = "GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080",
        value_parser = settings::listen,
        global = true
    )]
    listen: SocketAddr,
    /// Shared secret the platform signs session tokens with (HMAC-SHA256, at least 32
    /// bytes); also signs share links.
    #[arg(long, env = "GATEWAY_TOKEN_SECRET", value_parser = settings::token_secret, hide_env_values = true, global = true)]
    token_secret: Option<String>,
    /// Development: start without a strong secret (the development one when none is
    /// set). `make run` sets it; never set it in a deployment.
    #[arg(long, env = "GATEWAY_DEV", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    dev: bool,
    /// Base URL of share links; required unless GATEWAY_DEV is set (then the default
    /// is http://<Host header>).
    #[arg(long, env = "GATEWAY_PUBLIC_URL", value_parser = settings::public_url, global = true)]
    public_url: Option<String>,
    /// Seconds a request waits for a command's outcome (1 … 3600).
    #[arg(
        long,
        env = "GATEWAY_COMMAND_TIMEOUT_SECS",
        default_value = "10",
        value_parser = settings::command_timeout_secs,
        global = true
    )]
    command_timeout_secs: u64,
    /// Default lifetime of a share link, in seconds (60 … 2592000).
    #[arg(long, env = "GATEWAY_SHARE_TTL_SECS", default_value = "604800", value_parser = settings::share_ttl_secs, global = true)]
    share_ttl_secs: u64,
    /// Commands (register, dns-configured, refresh, delete) a tenant may send a minute
    /// after its burst (1 … 6000); over it: 429 with Retry-After. Per gateway process.
    #[arg(long, env = "GATEWAY_TENANT_COMMANDS_PER_MINUTE", default_value = "30", value_parser = settings::tenant_commands_per_minute, global = true)]
    tenant_commands_per_minute: u32,
    /// Commands a tenant may send at once (1 … 1000).
    #[arg(long, env = "GATEWAY_TENANT_COMMAND_BURST", default_value = "10", value_parser = settings::tenant_command_burst, global = true)]
    tenant_command_burst: u32,
    /// Seconds between checks (dns-configured, refresh) of one domain after its burst
    /// (1 … 3600).
    #[arg(long, env = "GATEWAY_DOMAIN_CHECK_INTERVAL_SECS", default_value = "10", value_parser = settings::domain_check_interval_secs, global = true)]
    domain_check_interval_secs: u64,
    /// Checks of one domain an owner may ask at once (1 … 100).
    #[arg(long, env = "GATEWAY_DOMAIN_CHECK_BURST", default_value = "2", value_parser = settings::domain_check_burst, global = true)]
    domain_check_burst: u32,
    /// Tenant of the dev link printed with the development secret.
    #[arg(long, env = "GATEWAY_DEV_TENANT", value_parser = settings::dev_tenant, global = true)]
    dev_tenant: Option<uuid::Uuid>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the page and the API (the default).
    Serve,
    /// Print a signed session token.
    Token {
        #[arg(long)]
        tenant: uuid::Uuid,
        #[arg(long, default_value = "enterprise")]
        edition: String,
        /// Lifetime in seconds (at most a day: the gateway refuses longer-lived tokens).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=MAX_TOKEN_LIFETIME_SECS))]
        ttl: i64,
        #[arg(long)]
        sub: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secret = settings::signing_secret(cli.token_secret.as_deref(), cli.dev)
        .map_err(|e| anyhow::anyhow!("the gateway does not start: {e}"))?;
    let keys = Keys::new(&secret);
    if let Some(Cmd::Token {
        tenant,
        edition,
        ttl,
        sub,
    }) = cli.command
    {
        let claims = Claims {
            tenant_id: tenant,
            edition,
            exp: chrono::Utc::now().timestamp() + ttl,
            sub,
        };
        println!("{}", keys.sign(&claims));
        return Ok(());
    }
    let share_base = settings::share_base(cli.public_url.as_deref(), cli.dev)
        .map_err(|e| anyhow::anyhow!("the gateway does not start: {e}"))?;
    runtime::telemetry::init("gateway");
    if keys.is_dev_default() {
        tracing::warn!(
            "!!! GATEWAY_DEV: using the development secret {DEV_SECRET:?}. Anyone can sign tokens for any tenant. Never run a deployment like this. !!!"
        );
    }
    let config = runtime::Config::from_env()?;
    let shutdown = runtime::Shutdown::on_signals();
    // /healthz, /readyz and /metrics on METRICS_ADDR, like every other service.
    let ops = runtime::ops::Ops::serve(&config, "gateway", &shutdown).await?;
    let mut opts = gateway::Options::new(keys.clone());
    opts.share_base = share_base;
    opts.command_timeout = Duration::from_secs(cli.command_timeout_secs);
    opts.share_ttl = Duration::from_secs(cli.share_ttl_secs);
    opts.tenant_commands =
        gateway::limits::Rate::per_minute(cli.tenant_commands_per_minute, cli.tenant_command_burst);
    opts.domain_checks =
        gateway::limits::Rate::every_secs(cli.domain_check_interval_secs, cli.domain_check_burst);
    let router = gateway::app_with_ops(config, opts, &ops).await?;
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    let base = cli
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    tracing::info!("managed sending page at {base}/ (API under {base}/api/v1, description at {base}/openapi.yaml)");
    println!("gateway: {base}/");
    if keys.is_dev_default() {
        // A ready-to-open link for development: a fixed dev tenant, enterprise edition, 12 h.
        let tenant = cli.dev_tenant.unwrap_or(uuid::Uuid::from_u128(
            0x00000000_0000_4000_8000_00000000d3f0,
        ));
        let claims = Claims {
            tenant_id: tenant,
            edition: "enterprise".into(),
            exp: chrono::Utc::now().timestamp() + 12 * 3600,
            sub: Some("dev".into()),
        };
        println!(
            "gateway: dev link (tenant {tenant}): {base}/#token={}",
            keys.sign(&claims)
        );
    }
    let result = gateway::serve(listener, router, shutdown).await;
    runtime::telemetry::shutdown();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsing `args` fails with a message naming `var` and quoting `value`.
    fn refused(args: &[&str], var: &str, value: &str) {
        let argv = std::iter::once("gateway").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains(var) && text.contains(&format!("'{value}'")),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn every_gateway_setting_refuses_an_unreadable_value_naming_its_variable() {
        refused(&["--listen", "8080"], "GATEWAY_LISTEN", "8080");
        refused(&["--token-secret", " "], "GATEWAY_TOKEN_SECRET", " ");
        refused(
            &["--public-url", "example.com"],
            "GATEWAY_PUBLIC_URL",
            "example.com",
        );
        refused(
            &["--command-timeout-secs", "0"],
            "GATEWAY_COMMAND_TIMEOUT_SECS",
            "0",
        );
        refused(&["--share-ttl-secs", "30"], "GATEWAY_SHARE_TTL_SECS", "30");
        refused(&["--dev-tenant", "dev"], "GATEWAY_DEV_TENANT", "dev");
        refused(
            &["--tenant-commands-per-minute", "0"],
            "GATEWAY_TENANT_COMMANDS_PER_MINUTE",
            "0",
        );
        refused(
            &["--tenant-command-burst", "0"],
            "GATEWAY_TENANT_COMMAND_BURST",
            "0",
        );
        refused(
            &["--domain-check-interval-secs", "0"],
            "GATEWAY_DOMAIN_CHECK_INTERVAL_SECS",
            "0",
        );
        refused(
            &["--domain-check-burst", "101"],
            "GATEWAY_DOMAIN_CHECK_BURST",
            "101",
        );
    }

    #[test]
    fn a_token_is_signed_for_a_day_at_most() {
        let tenant = "1c9d6e2a-0000-4000-8000-000000000001";
        let parse =
            |ttl: &str| Cli::try_parse_from(["gateway", "token", "--tenant", tenant, "--ttl", ttl]);
        assert!(parse("86400").is_ok());
        for bad in ["86401", "0", "-5"] {
            assert!(parse(bad).is_err(), "--ttl {bad}");
        }
    }

    #[test]
    fn the_defaults_are_readable() {
        let cli = Cli::try_parse_from(["gateway"]).expect("defaults parse");
        assert!(!cli.dev && cli.token_secret.is_none());
        assert_eq!(cli.command_timeout_secs, 10);
        assert_eq!(cli.share_ttl_secs, 7 * 86_400);
        assert_eq!(cli.listen.port(), 8080);
        assert_eq!(
            (
                cli.tenant_commands_per_minute,
                cli.tenant_command_burst,
                cli.domain_check_interval_secs,
                cli.domain_check_burst
            ),
            (
                gateway::limits::TENANT_COMMANDS_PER_MINUTE,
                gateway::limits::TENANT_COMMAND_BURST,
                gateway::limits::DOMAIN_CHECK_INTERVAL_SECS,
                gateway::limits::DOMAIN_CHECK_BURST
            )
        );
    }
}

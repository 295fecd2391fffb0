//! `dev-provider`: serves the local Resend stand-in (see the library docs).
//!
//! `dev-provider --listen 127.0.0.1:3001`; environment: `DEV_PROVIDER_LISTEN`,
//! `DEV_PROVIDER_DNS` (comma-separated `ip:port` of DNS servers for verification; empty:
//! the system resolver), `DEV_PROVIDER_RATE_LIMIT` (requests per second; empty or 0:
//! none), `DEV_PROVIDER_LATENCY_MS` (added to every API request).

/// glibc malloc was a third of the profile under load (many small JSON allocations).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dev_provider::DevProviderConfig;

#[derive(Parser, Debug)]
#[command(version, about = "A local server that speaks Resend's domains API")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEV_PROVIDER_LISTEN", default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// DNS servers (ip:port, comma-separated) for the verification check.
    #[arg(long, env = "DEV_PROVIDER_DNS", default_value = "")]
    dns: String,
    /// Natural rate limit in requests per second (empty or 0: none).
    #[arg(long, env = "DEV_PROVIDER_RATE_LIMIT", default_value = "")]
    rate_limit: String,
    /// Latency added to every API request, in milliseconds.
    #[arg(long, env = "DEV_PROVIDER_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
}

fn parse_config(args: &Args) -> anyhow::Result<DevProviderConfig> {
    let dns_nameservers = args
        .dns
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("DNS server {s:?} is not ip:port"))
        })
        .collect::<anyhow::Result<_>>()?;
    let rate_limit = args.rate_limit.trim();
    let rate_limit_per_sec = if rate_limit.is_empty() {
        None
    } else {
        Some(
            rate_limit
                .parse::<u32>()
                .context("rate limit is not a number")?,
        )
        .filter(|n| *n > 0)
    };
    Ok(DevProviderConfig {
        dns_nameservers,
        rate_limit_per_sec,
        latency: Duration::from_millis(args.latency_ms),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = parse_config(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, ?config, "dev provider serving Resend's domains API");
    dev_provider::serve_with_shutdown(listener, config, shutdown_signal()).await?;
    tracing::info!("dev provider stopped");
    Ok(())
}

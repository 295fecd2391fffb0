//! `query`: request-reply queries over NATS.
#![forbid(unsafe_code)]

/// glibc malloc was a third of the profile under load (many small JSON allocations).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("query");
    let config = runtime::Config::from_env()?;
    let result = query::run(config, runtime::Shutdown::on_signals()).await;
    runtime::telemetry::shutdown();
    result
}

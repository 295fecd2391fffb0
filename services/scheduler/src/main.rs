//! `scheduler`: timed re-checks.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("scheduler");
    let config = runtime::Config::from_env()?;
    scheduler::run(config, runtime::Shutdown::on_signals()).await
}

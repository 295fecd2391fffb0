//! `query`: request-reply queries over NATS.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("query");
    let config = runtime::Config::from_env()?;
    query::run(config, runtime::Shutdown::on_signals()).await
}

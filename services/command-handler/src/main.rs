//! `command-handler`: the service that turns commands into events.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("command-handler");
    let config = runtime::Config::from_env()?;
    command_handler::run(config, runtime::Shutdown::on_signals()).await
}

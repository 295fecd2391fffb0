//! `command-handler`: the service that turns commands into events.
#![forbid(unsafe_code)]

/// glibc malloc was a third of the profile under load (many small JSON allocations).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("command-handler");
    let config = runtime::Config::from_env()?;
    let result = command_handler::run(config, runtime::Shutdown::on_signals()).await;
    runtime::telemetry::shutdown();
    result
}

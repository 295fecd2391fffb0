//! `projector --projection email_domains|tenant_settings|analytics|all`
#![forbid(unsafe_code)]

/// glibc malloc was a third of the profile under load (many small JSON allocations).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use projector::Projection;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = std::env::args()
        .skip_while(|a| a != "--projection")
        .nth(1)
        .or_else(|| std::env::var("PROJECTION").ok())
        .unwrap_or_else(|| "all".into());
    let which = Projection::parse_list(&arg)?;
    runtime::telemetry::init(&format!("projector-{arg}"));
    let config = runtime::Config::from_env()?;
    let result = projector::run(
        config,
        which,
        runtime::Shutdown::on_signals(),
        projector::Options::default(),
    )
    .await;
    runtime::telemetry::shutdown();
    result
}

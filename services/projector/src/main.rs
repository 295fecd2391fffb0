//! `projector --projection email_domains|tenant_settings|analytics|all`
#![forbid(unsafe_code)]

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
    projector::run(config, which, runtime::Shutdown::on_signals(), projector::Options::default()).await
}

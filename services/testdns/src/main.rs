//! `dev-dns`: the development stack's DNS server. Serves the records of a JSON
//! zone file (see [`testdns::ZoneFile`]) authoritatively over UDP and TCP, and
//! re-reads the file whenever its modification time changes, so that `make demo`
//! can write records and see them served at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use testdns::{TestDns, ZoneFile};

#[derive(Parser, Debug)]
#[command(
    name = "dev-dns",
    about = "Serve a JSON zone file as an authoritative DNS server"
)]
struct Args {
    /// Address for UDP and TCP.
    #[arg(long, default_value = "127.0.0.1:5354")]
    listen: SocketAddr,
    /// JSON: `[{"name","type","value","priority"?,"ttl"?}]` or `{"zones":[...],"records":[...]}`.
    /// A missing file serves nothing until it appears.
    #[arg(long)]
    zone_file: PathBuf,
    /// How often to look at the file's modification time, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

fn load(dns: &TestDns, path: &PathBuf) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dev-dns: cannot read {}: {e}", path.display());
            return;
        }
    };
    match ZoneFile::parse(&text) {
        Ok(zf) => {
            let (zones, records) = zf.into_parts();
            let errors = dns.replace_all(&zones, &records);
            for e in &errors {
                eprintln!("dev-dns: skipped {e}");
            }
            eprintln!(
                "dev-dns: serving {} records in {} zones ({})",
                records.len() - errors.len(),
                zones.len(),
                zones
                    .iter()
                    .map(|(z, _)| z.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Err(e) => eprintln!(
            "dev-dns: {} is not a zone file, keeping the previous records: {e}",
            path.display()
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dns = TestDns::start(args.listen).await?;
    eprintln!("dev-dns: listening on {} (UDP and TCP)", dns.addr());
    let mut seen: Option<Vec<u8>> = None;
    loop {
        // The content itself, not the modification time: two writes of the same length
        // within one mtime tick would look alike. Zone files are small.
        let content = std::fs::read(&args.zone_file).ok();
        if content.is_some() && content != seen {
            load(&dns, &args.zone_file);
            seen = content;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.poll_ms)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

//! How fast DNS checks run against a loopback authoritative server, and what CPU
//! they cost: `cargo run -p dns-check --example check_speed [-- CHECKS CONCURRENCY ROUNDS]`
//! (defaults 400 checks, 32 at a time, 5 rounds; the median round is printed).
//!
//! Each check is a whole `DnsChecker::check` of a registration's five records (SPF,
//! DKIM, return path MX, DMARC, tracking CNAME): the thirty-odd questions the core
//! plans, all found. The server runs in this process too; it does the same work
//! whatever the client does, so a change in CPU between two builds is the client's.

use std::time::Instant;

use dns_check::{DnsChecker, DnsConfig};
use email_domain_events::records::{DnsRecord, DnsStatus};
use testdns::TestDns;

const ZONE: &str = "speed.test";
const KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDLxKqJ7k9kVp0xL3Wn2QeX8vHb0Y4mTtR5sJ1aFhQ9gUo3EwXyZ7nC6iP2dLkAbCdEfGhIjKlMnOpQrStUvWxYz01234567AbCdEfGhIjKlMnOpQIDAQAB";

/// CPU seconds this process has used, (user, system), from /proc: the system part is
/// where opening and closing sockets shows.
fn cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (field(11), field(12))
}

/// The records of registration `i`, published on `dns`.
fn registration(dns: &TestDns, i: usize) -> (String, Vec<DnsRecord>) {
    let zone = format!("d{i}.{ZONE}");
    let records = vec![
        DnsRecord::required(
            "spf",
            "TXT",
            &format!("send.{zone}"),
            "v=spf1 include:amazonses.com ~all",
            None,
        ),
        DnsRecord::required(
            "dkim",
            "TXT",
            &format!("resend._domainkey.{zone}"),
            &format!("p={KEY}"),
            None,
        ),
        DnsRecord::required(
            "return_path",
            "MX",
            &format!("send.{zone}"),
            "feedback-smtp.us-east-1.amazonses.com",
            Some(10),
        ),
        DnsRecord::required(
            "dmarc",
            "TXT",
            &format!("_dmarc.{zone}"),
            "v=DMARC1; p=none;",
            None,
        ),
        DnsRecord::required(
            "tracking",
            "CNAME",
            &format!("links.{zone}"),
            "track.provider.test",
            None,
        ),
    ];
    for r in &records {
        dns.add(&r.name, &r.record_type, &r.value, r.priority, 300);
    }
    (zone, records)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let checks = args.first().copied().unwrap_or(400);
    let concurrency = args.get(1).copied().unwrap_or(32).max(1);
    let rounds = args.get(2).copied().unwrap_or(5).max(1);

    let dns = TestDns::start("127.0.0.1:0".parse()?).await?;
    dns.add_zone(ZONE, 300);
    let work: Vec<(String, Vec<DnsRecord>)> = (0..checks).map(|i| registration(&dns, i)).collect();
    let checker = DnsChecker::new(DnsConfig::only(vec![dns.addr()]))?;

    let mut results = Vec::new();
    for round in 0..rounds {
        let queries_before = dns.queries();
        let (cpu0, t0) = (cpu_secs(), Instant::now());
        for chunk in work.chunks(concurrency) {
            let out = futures::future::join_all(
                chunk
                    .iter()
                    .map(|(zone, records)| checker.check(zone, records)),
            )
            .await;
            for r in out.iter().flatten() {
                anyhow::ensure!(r.dns_status == DnsStatus::Found, "not found: {r:?}");
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let (user, sys) = (cpu_secs().0 - cpu0.0, cpu_secs().1 - cpu0.1);
        let queries = dns.queries() - queries_before;
        let per = |x: f64| x * 1e3 / checks as f64;
        println!(
            "round {round}: {checks} checks ({queries} queries) in {wall:.3} s: per check \
             {:.2} ms wall, {:.3} ms CPU ({:.3} user, {:.3} system)",
            per(wall),
            per(user + sys),
            per(user),
            per(sys)
        );
        results.push((wall, user, sys));
    }
    let median = |pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = results.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3 / checks as f64
    };
    println!(
        "median per check: {:.2} ms wall, {:.3} ms user, {:.3} ms system CPU ({checks} checks, \
         {concurrency} at a time)",
        median(|r| r.0),
        median(|r| r.1),
        median(|r| r.2)
    );
    Ok(())
}

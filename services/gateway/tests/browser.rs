//! Browser end-to-end test: starts the whole stack and the gateway, then runs
//! `node e2e/run.mjs <url> <token>` (Playwright driving /usr/bin/chromium) and
//! answers its requests: put a domain's records into the test DNS server (or all but
//! its DKIM key, with a CNAME at the key's name instead), sign an expired share link. The script also audits each state with axe-core (serious or
//! critical violations fail) and walks the page with the keyboard. Fails (never
//! silently passes) when Chromium, node or the e2e packages are missing.

mod common;

use common::Gw;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Puts a row's records into the test DNS, but a CNAME where the DKIM key belongs: the
/// check then explains, with the whole (long) key, that the CNAME must go.
fn publish_with_a_cname_for_dkim(gw: &Gw, zone: &str, row: &serde_json::Value) {
    let dns = &gw.stack.dns;
    dns.add_zone(zone, 60);
    for r in row["dns_records"].as_array().expect("records") {
        let name = r["name"].as_str().unwrap();
        if r["purpose"] == "dkim" {
            dns.add(name, "CNAME", "dkim.mail-host.test", None, 60);
            continue;
        }
        let priority = r["priority"].as_u64().map(|p| p as u16);
        let (rtype, value) = (r["type"].as_str().unwrap(), r["value"].as_str().unwrap());
        dns.add(name, rtype, value, priority, 60);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_managed_sending_page_in_a_real_browser() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Chromium at {CHROMIUM}: run `apt-get install -y chromium` (this test fails rather than pass without a browser)"
    );
    for package in ["playwright-core", "axe-core"] {
        assert!(
            e2e.join("node_modules").join(package).exists(),
            "the browser test needs {package}: run `npm ci` in {} (node 20)",
            e2e.display()
        );
    }

    let started = Instant::now();
    let gw = Gw::start().await;
    let tenant = Uuid::new_v4();
    let token = gw.token(tenant, "enterprise", 3600);
    let other = gw.token(Uuid::new_v4(), "enterprise", 3600);
    let community = gw.token(Uuid::new_v4(), "community", 3600);
    println!(
        "gateway at {}/  token for tenant {tenant}: {token}",
        gw.base
    );

    let mut child = tokio::process::Command::new("node")
        .arg(e2e.join("run.mjs"))
        .arg(&gw.base)
        .arg(&token)
        .env("OTHER_TOKEN", &other)
        .env("COMMUNITY_TOKEN", &community)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node on PATH (node 20)");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ok = false;

    let run = async {
        while let Some(line) = out.next_line().await.unwrap() {
            println!("e2e: {line}");
            if let Some(domain) = line.strip_prefix("NEED_RECORDS ") {
                let row = gw
                    .stack
                    .wait_status(tenant, domain.trim(), "awaiting_dns")
                    .await;
                gw.stack.publish_records(domain.trim(), &row);
                stdin.write_all(b"RECORDS_PUBLISHED\n").await.unwrap();
            } else if let Some(domain) = line.strip_prefix("NEED_DKIM_CNAME ") {
                let row = gw
                    .stack
                    .wait_status(tenant, domain.trim(), "awaiting_dns")
                    .await;
                publish_with_a_cname_for_dkim(&gw, domain.trim(), &row);
                stdin.write_all(b"DKIM_CNAME_PUBLISHED\n").await.unwrap();
            } else if let Some(id) = line.strip_prefix("NEED_EXPIRED_LINK ") {
                let id = Uuid::parse_str(id.trim()).unwrap();
                let exp = chrono::Utc::now().timestamp() - 60;
                let url = format!(
                    "{}/share/{id}?exp={exp}&sig={}",
                    gw.base,
                    gw.keys.share_sig(id, exp)
                );
                stdin
                    .write_all(format!("EXPIRED_LINK {url}\n").as_bytes())
                    .await
                    .unwrap();
            } else if line == "E2E OK" {
                ok = true;
            }
            stdin.flush().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test finished within 240 s");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("node exits")
        .unwrap();
    println!(
        "browser test (stack + browser) took {:?}",
        started.elapsed()
    );
    gw.stop().await;
    assert!(
        status.success() && ok,
        "the browser test failed (exit {status}); screenshots in {}/screenshots",
        e2e.display()
    );
}

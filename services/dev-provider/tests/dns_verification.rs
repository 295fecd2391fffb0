//! Verification through real DNS: a tiny UDP DNS server publishes records, and the dev
//! provider's own check turns the domain `verified` once all of them match.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::Server;
use dev_provider::DevProviderConfig;
use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use reqwest::Method;
use serde_json::Value;
use tokio::net::UdpSocket;

/// Records by (lower-case name without trailing dot, type).
type Zone = Arc<RwLock<HashMap<(String, RecordType), Vec<RData>>>>;

/// Answers A-less, authoritative-looking responses from `zone`; just enough for the
/// resolver's TXT and MX lookups.
async fn dns_server() -> (SocketAddr, Zone) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let zone: Zone = Arc::default();
    let served = zone.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut response = Message::new();
            response
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_op_code(request.op_code())
                .set_recursion_desired(request.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            for query in request.queries() {
                response.add_query(query.clone());
                let key = (
                    query
                        .name()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                    query.query_type(),
                );
                let zone = served.read().unwrap();
                match zone.get(&key) {
                    Some(rdatas) => {
                        for rdata in rdatas {
                            response.add_answer(Record::from_rdata(
                                query.name().clone(),
                                60,
                                rdata.clone(),
                            ));
                        }
                    }
                    None if !zone.keys().any(|(name, _)| *name == key.0) => {
                        response.set_response_code(ResponseCode::NXDomain);
                    }
                    None => {}
                }
            }
            if request.extensions().is_some() {
                let mut edns = Edns::new();
                edns.set_max_payload(4096);
                response.set_edns(edns);
            }
            let bytes = response.to_vec().unwrap();
            let _ = socket.send_to(&bytes, peer).await;
        }
    });
    (addr, zone)
}

fn publish(zone: &Zone, name: &str, record_type: RecordType, rdata: RData) {
    zone.write()
        .unwrap()
        .entry((name.to_owned(), record_type))
        .or_default()
        .push(rdata);
}

/// TXT data split into DNS character strings of at most 255 bytes, as DNS hosts do.
fn txt(value: &str) -> RData {
    let chunks = value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    RData::TXT(TXT::new(chunks))
}

fn record<'a>(domain: &'a Value, tag: &str, record_type: &str) -> &'a Value {
    domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"] == tag && r["type"] == record_type)
        .unwrap()
}

fn statuses(domain: &Value) -> Vec<String> {
    domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_domain_verifies_once_all_its_records_resolve() {
    let (dns, zone) = dns_server().await;
    let server = Server::start(DevProviderConfig {
        dns_nameservers: vec![dns],
        ..Default::default()
    })
    .await;
    let created = server.create("verify.example.test").await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/domains/{id}");
    let get = || server.call(Method::GET, &path, None);

    // Nothing published and nothing requested: not started.
    assert_eq!(get().await.2["status"], "not_started");
    server
        .call(Method::POST, &format!("/domains/{id}/verify"), None)
        .await;
    let (_, _, domain) = get().await;
    assert_eq!(domain["status"], "pending");
    assert_eq!(statuses(&domain), ["pending", "pending", "pending"]);

    // Return path and SPF, with a wrong-case MX host and trailing dot: still exact enough.
    let mx_host = record(&created, "SPF", "MX")["value"]
        .as_str()
        .unwrap()
        .to_uppercase();
    publish(
        &zone,
        "send.verify.example.test",
        RecordType::MX,
        RData::MX(MX::new(10, Name::from_str(&format!("{mx_host}.")).unwrap())),
    );
    publish(
        &zone,
        "send.verify.example.test",
        RecordType::TXT,
        txt(record(&created, "SPF", "TXT")["value"].as_str().unwrap()),
    );
    // A wrong DKIM key first.
    publish(
        &zone,
        "resend._domainkey.verify.example.test",
        RecordType::TXT,
        txt("p=wrong"),
    );
    let (_, _, domain) = get().await;
    assert_eq!(domain["status"], "pending");
    assert_eq!(statuses(&domain), ["verified", "verified", "pending"]);

    // The real key, longer than 255 characters, served as two strings.
    let dkim = record(&created, "DKIM", "TXT")["value"].as_str().unwrap();
    assert!(dkim.len() > 255);
    publish(
        &zone,
        "resend._domainkey.verify.example.test",
        RecordType::TXT,
        txt(dkim),
    );
    let (_, _, domain) = get().await;
    assert_eq!(domain["status"], "verified");
    assert_eq!(statuses(&domain), ["verified", "verified", "verified"]);

    // Verified stays verified without DNS work; verify again resets to pending and rechecks.
    assert_eq!(get().await.2["status"], "verified");
    server
        .call(Method::POST, &format!("/domains/{id}/verify"), None)
        .await;
    let mut status = Value::Null;
    for _ in 0..50 {
        status = get().await.2["status"].clone();
        if status == "verified" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "verified");
}

#[tokio::test]
async fn verify_checks_in_the_background_without_a_get() {
    let (dns, zone) = dns_server().await;
    let server = Server::start(DevProviderConfig {
        dns_nameservers: vec![dns],
        ..Default::default()
    })
    .await;
    let created = server.create("bg.example.test").await;
    for r in created["records"].as_array().unwrap() {
        let name = format!("{}.bg.example.test", r["name"].as_str().unwrap());
        let value = r["value"].as_str().unwrap();
        match r["type"].as_str().unwrap() {
            "MX" => publish(
                &zone,
                &name,
                RecordType::MX,
                RData::MX(MX::new(10, Name::from_str(value).unwrap())),
            ),
            _ => publish(&zone, &name, RecordType::TXT, txt(value)),
        }
    }
    let id = created["id"].as_str().unwrap();
    server
        .call(Method::POST, &format!("/domains/{id}/verify"), None)
        .await;
    // The list does no DNS work, so only the background check can have verified it.
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, _, list) = server.call(Method::GET, "/domains", None).await;
        status = list["data"][0]["status"].clone();
        if status == "verified" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "verified");
}

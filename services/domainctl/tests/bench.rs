//! `cargo test -p domainctl --release --test bench -- --ignored --nocapture`
//! (DCTL_BENCH_EVENTS, default 1,000,000): writes that many events to a private
//! nats-server and replays them into a fresh database.
mod common;

use async_nats::jetstream::message::PublishMessage;
use chrono::Duration;
use common::*;
use email_domain_events::event::{CheckTrigger, EventData};
use email_domain_events::records::DnsStatus;
use email_domain_events::{CommandId, DomainId, Event, EventId, TenantId};
use futures::StreamExt;
use std::future::IntoFuture;
use std::time::Instant;
use uuid::Uuid;

fn domain_events(tenant: TenantId, n: usize, i: usize) -> Vec<Event> {
    let id = DomainId(Uuid::new_v4());
    let name = format!("d{i}.bench.test");
    let at = t0() + Duration::seconds(i as i64);
    let mut out = Vec::new();
    for v in 1..=n as u64 {
        let data = match v {
            1 => EventData::DomainRegistered {
                region: None,
                requested_by: Some("bench".into()),
                deadline_at: at + Duration::days(7),
            },
            2 => EventData::DomainProvisioned {
                provider_id: "resend".into(),
                provider_domain_id: format!("pd-{i}"),
                region: Some("us-east-1".into()),
                records: records(&name, DnsStatus::Pending),
                next_check_at: Some(at + Duration::seconds(300)),
                cleanup_required: false,
            },
            v if v as usize == n => EventData::ProviderPolled {
                provider_status: "verified".into(),
                verified: true,
                activates: true,
                provider_failed: false,
                next_check_at: Some(at + Duration::days(1)),
                reason: None,
                failed_records: Vec::new(),
            },
            v => EventData::DnsChecked {
                trigger: CheckTrigger::Scheduled,
                records: records(
                    &name,
                    if v as usize == n - 1 {
                        DnsStatus::Found
                    } else {
                        DnsStatus::Missing
                    },
                ),
                all_required_found: v as usize == n - 1,
                request_verification: v as usize == n - 1,
                poll_provider: false,
                next_check_at: Some(at + Duration::seconds(300 * v as i64)),
                new_deadline_at: None,
                attempt: v as u32,
                drift_detected: false,
                drift_resolved: false,
                propagation: Vec::new(),
                provider_domain_id: Some(format!("pd-{i}")),
            },
        };
        let causation = CommandId(Uuid::new_v4());
        out.push(Event {
            event_id: EventId::for_command(causation, id, v),
            tenant_id: tenant,
            domain_id: id,
            domain: name.clone(),
            version: v,
            occurred_at: at + Duration::seconds(60 * v as i64),
            causation_id: causation,
            correlation_id: causation.0,
            schema_version: 1,
            data,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn replay_a_million_events() {
    let total: usize = std::env::var("DCTL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_domain = 8;
    let nats = Nats::start().await;
    let (_db, pool) = Db::create().await;
    let js = nats.js().await;
    let t = Instant::now();
    let tenants: Vec<TenantId> = (0..total / per_domain / 4 + 1)
        .map(|_| TenantId(Uuid::new_v4()))
        .collect();
    // Interleave domains, as a live log would.
    let mut written = 0;
    let mut i = 0;
    while written < total {
        let group: Vec<Vec<Event>> = (0..1000)
            .map(|k| domain_events(tenants[(i + k) % tenants.len()], per_domain, i + k))
            .collect();
        i += 1000;
        let mut acks = futures::stream::FuturesUnordered::new();
        'outer: for v in 0..per_domain {
            for d in &group {
                if written >= total {
                    break 'outer;
                }
                let e = &d[v];
                let ack = js
                    .send_publish(
                        e.subject(),
                        PublishMessage::build().payload(e.to_json().into()),
                    )
                    .await
                    .unwrap();
                acks.push(ack.into_future());
                written += 1;
            }
        }
        while let Some(a) = acks.next().await {
            a.unwrap();
        }
    }
    println!(
        "wrote {written} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let summary = domainctl::replay(&js, &pool, &Default::default())
        .await
        .unwrap();
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
}

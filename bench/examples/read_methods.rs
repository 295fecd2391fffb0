//! nats-server's and the reader's CPU per message for several ways of reading a
//! stream whole: `cargo run --release -p bench --example read_methods`.
//!
//! Writes `N` (1,000,000) messages of `SIZE` (1,415, the replay's events' mean) bytes
//! on `SUBJECTS` (100,000) subjects, with headers `HDR`: `msgid` (a `Nats-Msg-Id`, as
//! events carry; the default), `small` (one short header), `three` (a message id,
//! `traceparent` and `tracestate`) or `none`. Then reads them whole with each of
//! `METHODS`: `ordered` (async-nats's ordered consumer, pulls of 500), `pullN` (a pull
//! consumer without acks, pulls of N), `push` (a push consumer with flow control); a
//! `_busy` suffix keeps a spinning thread on one core meanwhile. It first prints which headers nats-server stores with a message
//! published with a message id and an expected subject sequence (both, on 2.9).
use async_nats::jetstream::{self, consumer, message::PublishMessage};
use bench::cpu_secs;
use futures::StreamExt;
use std::time::Instant;
use system_tests::Nats;

fn syscw(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let g = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (g("syscw:"), g("syscr:"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = std::env::var("SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1415);
    let subjects: usize = std::env::var("SUBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let hdr = std::env::var("HDR").unwrap_or("msgid".into());
    println!("{n} messages of {size} B on {subjects} subjects, headers {hdr}");
    let nats = Nats::start();
    let npid = nats.pid().unwrap();
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            allow_direct: true,
            ..Default::default()
        })
        .await?;
    {
        let m = PublishMessage::build()
            .payload("x".into())
            .message_id("abc")
            .expected_last_subject_sequence(0);
        js.send_publish("raw.probe", m).await?.await?;
        let got = stream.direct_get_last_for_subject("raw.probe").await?;
        println!("stored headers of a message published with a msg id and an expected subject sequence: {:?}", got.headers);
        stream.purge().await?;
    }
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        let mut m = PublishMessage::build().payload(payload.clone());
        match hdr.as_str() {
            "msgid" => m = m.message_id(uuid::Uuid::new_v4().to_string()),
            "small" => m = m.header("A", "1"),
            "three" => {
                m = m
                    .message_id(uuid::Uuid::new_v4().to_string())
                    .header(
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    )
                    .header("tracestate", "bench=1")
            }
            _ => {}
        }
        acks.push_back(js.send_publish(format!("raw.{}", i % subjects), m).await?);
        if acks.len() > 4096 {
            acks.pop_front().unwrap().await?;
        }
    }
    for a in acks {
        a.await?;
    }
    let methods: Vec<String> = std::env::var("METHODS")
        .unwrap_or("ordered,ordered_busy,pull5000,pull1000,push".into())
        .split(',')
        .map(String::from)
        .collect();
    for method in methods {
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            method.ends_with("_busy"),
        ));
        let spinner = {
            let busy = busy.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
                x
            })
        };
        let (c0, n0, (w0, r0)) = (cpu_secs(std::process::id()), cpu_secs(npid), syscw(npid));
        let started = Instant::now();
        let mut read = 0usize;
        let mut bytes = 0usize;
        match method.trim_end_matches("_busy") {
            "ordered" => {
                let c = stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        deliver_policy: consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await?;
                let mut m = c.messages().await?;
                while read < n {
                    let msg = m.next().await.expect("msg")?;
                    bytes += msg.payload.len();
                    read += 1;
                }
            }
            p if p.starts_with("pull") => {
                let batch: usize = p[4..].parse()?;
                let c = stream
                    .create_consumer(consumer::pull::Config {
                        deliver_policy: consumer::DeliverPolicy::All,
                        ack_policy: consumer::AckPolicy::None,
                        ..Default::default()
                    })
                    .await?;
                let mut m = c.stream().max_messages_per_batch(batch).messages().await?;
                while read < n {
                    let msg = m.next().await.expect("msg")?;
                    bytes += msg.payload.len();
                    read += 1;
                }
            }
            "push" => {
                let inbox = client.new_inbox();
                let mut sub = client.subscribe(inbox.clone()).await?;
                let _c = stream
                    .create_consumer(consumer::push::Config {
                        deliver_subject: inbox,
                        deliver_policy: consumer::DeliverPolicy::All,
                        ack_policy: consumer::AckPolicy::None,
                        flow_control: true,
                        idle_heartbeat: std::time::Duration::from_secs(5),
                        ..Default::default()
                    })
                    .await?;
                while read < n {
                    let msg = sub.next().await.expect("msg");
                    if msg.payload.is_empty() {
                        if let Some(r) = msg.reply {
                            client.publish(r, bytes::Bytes::new()).await?;
                        }
                        continue;
                    }
                    bytes += msg.payload.len();
                    read += 1;
                }
            }
            other => anyhow::bail!("unknown {other}"),
        }
        let secs = started.elapsed().as_secs_f64();
        busy.store(false, std::sync::atomic::Ordering::Relaxed);
        spinner.join().ok();
        let (c1, n1, (w1, r1)) = (cpu_secs(std::process::id()), cpu_secs(npid), syscw(npid));
        let client_cpu = c1 - c0 - if method.ends_with("_busy") { secs } else { 0.0 };
        println!(
            "{method:14} {:8.0} msg/s  {secs:5.2} s  client {:4.2} µs/msg  nats {:4.2} µs/msg  nats writes/1000 msg {:6.1} reads/1000 {:6.1} ({bytes} B)",
            read as f64 / secs,
            client_cpu / n as f64 * 1e6,
            (n1 - n0) / n as f64 * 1e6,
            (w1 - w0) as f64 / n as f64 * 1000.0,
            (r1 - r0) as f64 / n as f64 * 1000.0,
        );
    }
    Ok(())
}

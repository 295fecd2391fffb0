//! How fast stored events decode: every line of the frozen fixture log, many times,
//! then its DNS check alone, whole and with its records deferred (as the replay reads).
//! `cargo run --release -p email-domain-events --example decode_speed`
use email_domain_events::Event;
use std::time::Instant;

/// Mean µs per call of `f` over `n` calls.
fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let log = include_str!("../../tests/fixtures/events-v1.jsonl");
    let lines: Vec<&[u8]> = log.lines().map(str::as_bytes).collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let rounds = 200_000 / lines.len().max(1);
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for l in &lines {
            let e = Event::from_json(l).expect("fixture events decode");
            n += e.version as usize & 1;
        }
    }
    let took = start.elapsed();
    let events = rounds * lines.len();
    println!(
        "{events} events ({} bytes each on average) in {:.3} s: {:.2} µs/event, {:.0} MB/s ({n})",
        bytes / lines.len(),
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / events as f64,
        (bytes * rounds) as f64 / took.as_secs_f64() / 1e6
    );

    // The check as this service writes it (fields in the struct's order).
    let check = lines
        .iter()
        .find(|l| l.windows(13).any(|w| w == b"\"dns_checked\""))
        .expect("the fixture has a check");
    let check = Event::from_json(check).unwrap().to_json();
    let whole = per_call(300_000, || {
        std::hint::black_box(Event::from_json(&check).unwrap());
    });
    let deferred = per_call(300_000, || {
        std::hint::black_box(Event::from_json_deferring_records(&check).unwrap());
    });
    println!(
        "a DNS check of {} bytes: {whole:.2} µs whole, {deferred:.2} µs with its records deferred",
        check.len()
    );
}

//! How fast stored events decode: every line of the frozen fixture log, many times.
//! `cargo run --release -p email-domain-events --example decode_speed`
use email_domain_events::Event;
use std::time::Instant;

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
}

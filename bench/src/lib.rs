//! What `make bench` and its examples share: reading the CPU a process used, and an
//! ordered-consumer read of a whole stream (the raw baseline's read).
#![forbid(unsafe_code)]

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::time::Instant;

/// CPU time a process has used (user + system), from /proc.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ
}

/// CPU time used by every process named `comm` (e.g. all Postgres backends).
pub fn cpu_secs_of(comm: &str) -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(cpu_secs)
        .sum()
}

/// Reads the first `n` messages of `stream` with an ordered consumer (each dropped
/// unread): messages/s.
pub async fn ordered_read(stream: &jetstream::stream::Stream, n: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    for _ in 0..n {
        messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the ordered read ended early"))??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

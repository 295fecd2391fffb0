//! Leader leases in a KV bucket: one active instance of a service (the command
//! handler keeps per-domain order that way; the provider worker keeps one shared
//! rate limit), and a standby that takes over when the lease runs out.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Serialize, Deserialize)]
struct LeaseValue {
    holder: String,
    /// Where the holder runs (host:pid), for operators (`domainctl status`).
    #[serde(default)]
    name: String,
    expires_at_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Clone)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
}

/// Held while the lease is ours; `lost()` resolves when it is not any more.
pub struct LeaseGuard {
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    pub async fn lost(&mut self) {
        while !*self.lost.borrow_and_update() {
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    pub fn new(kv: kv::Store, key: &str, ttl: Duration) -> Self {
        Lease {
            kv,
            key: key.to_string(),
            holder: uuid::Uuid::new_v4().to_string(),
            ttl,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Tries once; `Some(revision)` when the lease is now ours.
    async fn try_take(&self) -> anyhow::Result<Option<u64>> {
        let value = serde_json::to_vec(&LeaseValue {
            holder: self.holder.clone(),
            name: crate::partitions::instance_name(),
            expires_at_ms: now_ms() + self.ttl.as_millis() as i64,
        })?;
        match self.kv.entry(&self.key).await? {
            None => Ok(self.kv.create(&self.key, value.into()).await.ok()),
            Some(entry) => {
                let current: Option<LeaseValue> = serde_json::from_slice(&entry.value).ok();
                let free = match &current {
                    None => true,
                    Some(c) => c.holder == self.holder || c.expires_at_ms < now_ms(),
                };
                if free {
                    Ok(self
                        .kv
                        .update(&self.key, value.into(), entry.revision)
                        .await
                        .ok())
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Waits until the lease is ours (or `shutdown` fires: `None`), then keeps renewing it.
    pub async fn acquire(&self, shutdown: &crate::Shutdown) -> Option<LeaseGuard> {
        let mut logged = false;
        let revision = loop {
            if shutdown.is_triggered() {
                return None;
            }
            match self.try_take().await {
                Ok(Some(rev)) => break rev,
                Ok(None) => {
                    if !logged {
                        tracing::info!(lease = %self.key, "standing by: another instance holds the lease");
                        logged = true;
                    }
                }
                Err(e) => tracing::warn!(lease = %self.key, error = %e, "lease check failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 4) => {}
                _ = shutdown.wait() => return None,
            }
        };
        tracing::info!(lease = %self.key, "lease taken: this instance is active");
        let (tx, rx) = watch::channel(false);
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut revision = revision;
            let mut last_renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(me.ttl / 3).await;
                let value = serde_json::to_vec(&LeaseValue {
                    holder: me.holder.clone(),
                    name: crate::partitions::instance_name(),
                    expires_at_ms: now_ms() + me.ttl.as_millis() as i64,
                })
                .expect("lease value");
                match me.kv.update(&me.key, value.into(), revision).await {
                    Ok(r) => {
                        revision = r;
                        last_renewed = tokio::time::Instant::now();
                    }
                    Err(e) => {
                        // A transient error is fine while the lease is still valid.
                        if last_renewed.elapsed() >= me.ttl * 2 / 3
                            || matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision)
                        {
                            tracing::warn!(lease = %me.key, error = %e, "lease lost");
                            let _ = tx.send(true);
                            return;
                        }
                    }
                }
            }
        });
        Some(LeaseGuard { lost: rx, task })
    }

    /// Gives the lease up at once (a clean shutdown), so a standby need not wait out the TTL.
    pub async fn release(&self) {
        if let Ok(Some(entry)) = self.kv.entry(&self.key).await {
            if let Ok(v) = serde_json::from_slice::<LeaseValue>(&entry.value) {
                if v.holder == self.holder {
                    let expired = serde_json::to_vec(&LeaseValue {
                        holder: v.holder,
                        name: v.name,
                        expires_at_ms: 0,
                    })
                    .expect("lease value");
                    let _ = self
                        .kv
                        .update(&self.key, expired.into(), entry.revision)
                        .await;
                }
            }
        }
    }
}

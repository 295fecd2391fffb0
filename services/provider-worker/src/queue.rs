//! Provider work taken in turn between tenants, people first.
//!
//! Every provider call of the deployment shares one rate limit (`PROVIDER_RATE_LIMIT`,
//! 4 a second on a real account). Taken first come, first served, one tenant's burst
//! of 1,000 registrations put every other tenant's domain behind four minutes of its
//! calls. The worker now reads ahead (up to [`READ_AHEAD`] items per class) and takes
//! what it has read in the shared fair order (`runtime::fair`): interactive work
//! before background work, tenants in turn, each tenant's items in order.
//!
//! Items wait here longer than the work consumers' ack wait when the rate limit is
//! low, so every [`KEEP_ALIVE`] the server is told those still waiting are in
//! progress. An item a killed worker held comes back after the ack wait, as before.

use crate::WorkItem;
use async_nats::jetstream::{self, AckKind};
use email_domain_events::TenantId;
use futures::StreamExt;
use runtime::fair::{Class, FairQueue};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Work items read ahead per class (the work consumers' window).
pub const READ_AHEAD: usize = 10_000;
/// How often items still waiting are reported in progress (below the ack wait).
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// A work item read and not yet taken.
pub struct Held {
    pub msg: jetstream::Message,
    pub item: WorkItem,
    since: Instant,
}

#[derive(Default)]
pub struct Waiting {
    queue: Mutex<FairQueue<TenantId, Held>>,
    ready: Notify,
}

impl Waiting {
    fn queue(&self) -> std::sync::MutexGuard<'_, FairQueue<TenantId, Held>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, msg: jetstream::Message, item: WorkItem) {
        let class = if item.interactive {
            Class::Interactive
        } else {
            Class::Background
        };
        let tenant = item.tenant_id;
        self.queue().push(
            class,
            tenant,
            Held {
                msg,
                item,
                since: Instant::now(),
            },
        );
        self.ready.notify_one();
    }

    /// The next item in fair order, once there is one. Cancel-safe: an item is taken
    /// only when this returns.
    pub async fn take(&self) -> Held {
        loop {
            let notified = self.ready.notified();
            if let Some(held) = self.queue().pop() {
                return held;
            }
            notified.await;
        }
    }

    /// Reads both work consumers into the queue until one ends.
    pub async fn read(
        &self,
        mut interactive: jetstream::consumer::pull::Stream,
        mut background: jetstream::consumer::pull::Stream,
    ) -> anyhow::Result<()> {
        loop {
            let msg = tokio::select! {
                Some(m) = interactive.next() => m,
                Some(m) = background.next() => m,
                else => anyhow::bail!("the provider work consumers ended"),
            };
            let Ok(msg) = msg else { continue };
            match serde_json::from_slice::<WorkItem>(&msg.payload) {
                Ok(item) => self.push(msg, item),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable work item dropped");
                    let _ = msg.ack_with(AckKind::Term).await;
                }
            }
        }
    }

    /// Every [`KEEP_ALIVE`], tells the server the items waiting that long are in
    /// progress, so none is handed out again while it waits for its turn.
    pub async fn keep_alive(&self) {
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let waiting: Vec<jetstream::Message> = self
                .queue()
                .iter()
                .filter(|h| h.since.elapsed() >= KEEP_ALIVE)
                .map(|h| h.msg.clone())
                .collect();
            for msg in waiting {
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        }
    }
}

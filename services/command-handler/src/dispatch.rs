//! Which lane runs next, and on how many workers.
//!
//! Commands are spread over lanes by domain name, and a lane handles one command at a
//! time (per-domain order). Letting every lane run at once made every command slow
//! under load: with 256 lanes busy on one tenant's burst, each command shared the two
//! cores with 255 others, so a quiet tenant's command took as long as 256 commands
//! divided by the throughput (Little's law: ~0.3 s at 800 commands/s), however fairly
//! its lane picked it.
//!
//! So a fixed number of workers run the lanes, and lanes with work wait for a worker in
//! a [`FairQueue`] keyed by the tenant of the command they would run next: people
//! before background work, tenants in turn. A quiet tenant's command then waits for
//! one worker to free up, not for a tenant's backlog, and runs with few others beside it.

use crate::fair::{Class, FairQueue};
use crate::lane::{Lane, Work};
use email_domain_events::TenantId;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One lane: its commands, and its caches while no worker holds it.
struct Slot {
    queue: FairQueue<TenantId, Work>,
    /// `None` while a worker runs it.
    lane: Option<Lane>,
    /// Waiting in `ready` (at most once).
    ready: bool,
}

struct State {
    slots: Vec<Slot>,
    /// Lanes with work and no worker, in the order workers take them.
    ready: FairQueue<TenantId, usize>,
    closed: bool,
}

/// The lanes and their ready queue; cloned into the consumer and each worker.
#[derive(Clone)]
pub struct Dispatcher {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

pub fn class_of(work: &Work) -> Class {
    if work.cmd.command_type.is_public() {
        Class::Interactive
    } else {
        Class::Background
    }
}

impl Dispatcher {
    pub fn new(lanes: impl IntoIterator<Item = Lane>) -> Dispatcher {
        let slots = lanes
            .into_iter()
            .map(|lane| Slot {
                queue: FairQueue::default(),
                lane: Some(lane),
                ready: false,
            })
            .collect();
        Dispatcher {
            state: Arc::new(Mutex::new(State {
                slots,
                ready: FairQueue::default(),
                closed: false,
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lanes(&self) -> usize {
        self.state().slots.len()
    }

    /// Queues a command on lane `idx`.
    pub fn push(&self, idx: usize, work: Work) {
        let class = class_of(&work);
        queued(class).inc();
        let tenant = work.cmd.tenant_id;
        let mut state = self.state();
        state.slots[idx].queue.push(class, tenant, work);
        if state.mark_ready(idx) {
            drop(state);
            self.wake.notify_one();
        }
    }

    /// No more commands: workers finish what is queued, then end.
    pub fn close(&self) {
        self.state().closed = true;
        self.wake.notify_waiters();
    }

    /// Takes the next ready lane with its next command; `None` once closed and empty.
    async fn take(&self) -> Option<(usize, Lane, Work)> {
        loop {
            let notified = self.wake.notified();
            {
                let mut state = self.state();
                if let Some(taken) = state.take_ready() {
                    return Some(taken);
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Gives the lane back; it queues again if it has more work.
    fn give_back(&self, idx: usize, lane: Lane) {
        let mut state = self.state();
        state.slots[idx].lane = Some(lane);
        if state.mark_ready(idx) {
            drop(state);
            self.wake.notify_one();
        }
    }

    /// One worker: runs ready lanes one command at a time until closed.
    pub async fn work(self) {
        while let Some((idx, mut lane, work)) = self.take().await {
            lane.handle(work).await;
            self.give_back(idx, lane);
        }
        // Another worker may be waiting for the close.
        self.wake.notify_waiters();
    }
}

impl State {
    /// Puts lane `idx` in the ready queue if it has work, no worker and is not there
    /// yet, under the tenant and class of the command it would run next.
    fn mark_ready(&mut self, idx: usize) -> bool {
        let slot = &mut self.slots[idx];
        if slot.ready || slot.lane.is_none() {
            return false;
        }
        let Some((class, tenant)) = slot.queue.peek().map(|(c, t)| (c, *t)) else {
            return false;
        };
        slot.ready = true;
        self.ready.push(class, tenant, idx);
        true
    }

    fn take_ready(&mut self) -> Option<(usize, Lane, Work)> {
        while let Some(idx) = self.ready.pop() {
            let slot = &mut self.slots[idx];
            slot.ready = false;
            // A ready lane always has work and no worker (see `mark_ready`).
            if slot.lane.is_some() {
                if let Some(work) = slot.queue.pop() {
                    queued(class_of(&work)).dec();
                    return Some((idx, slot.lane.take()?, work));
                }
            }
        }
        None
    }
}

fn queued(class: Class) -> runtime::ops::IntGauge {
    let label = match class {
        Class::Interactive => "interactive",
        Class::Background => "background",
    };
    runtime::ops::HANDLER_QUEUED.with_label_values(&[label])
}

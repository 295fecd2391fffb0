//! Which lane runs next, and on how many workers.
//!
//! Commands are spread over lanes by domain name, and a lane handles one command at a
//! time (per-domain order). Letting every lane run at once made every command slow
//! under load: with 256 lanes busy on one tenant's burst, each command shared the two
//! cores with 255 others, so a quiet tenant's command took as long as 256 commands
//! divided by the throughput (Little's law: ~0.3 s at 800 commands/s), however fairly
//! its lane picked it.
//!
//! So a fixed number of workers run the lanes. A lane keeps its commands per tenant
//! and class, and each such queue has one turn in a [`FairQueue`]: people before
//! background work, tenants in turn. A worker takes the next turn whose lane is free
//! and runs that tenant's oldest command in the lane (a turn whose lane is busy waits
//! for the lane). A quiet tenant's command then waits for its lane's current command
//! and a free worker, not for a tenant's backlog, and runs with few others beside it.
//! One tenant's commands in one lane (so for one domain) keep their arrival order.

use crate::lane::{Lane, Work};
use async_nats::jetstream::{self, AckKind};
use email_domain_events::TenantId;
use runtime::fair::{Class, FairQueue, Pace};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a command may wait in a lane before the server is told it is in progress
/// (well within the partition consumer's ack wait).
pub const KEEP_ALIVE: Duration = Duration::from_secs(120);

/// Commands of one tenant and class in one lane, in arrival order.
type Key = (Class, TenantId);

/// One lane: its commands, and its caches while no worker holds it.
struct Slot<L, W> {
    queues: HashMap<Key, VecDeque<W>>,
    /// `None` while a worker runs it.
    lane: Option<L>,
    /// Turns that came up while a worker ran the lane: queued again when it is free.
    parked: Vec<Key>,
}

/// A turn in the ready queue: lane `idx` has commands of this tenant and class.
/// Each non-empty queue of a slot has exactly one turn, in `ready` or `parked`.
#[derive(Debug, Clone, Copy)]
struct Turn {
    idx: usize,
    key: Key,
}

/// The turn logic, generic over the lane and the command so it is tested without IO.
struct State<L, W> {
    slots: Vec<Slot<L, W>>,
    /// Turns in the order workers take them: people first, tenants in turn.
    ready: FairQueue<TenantId, Turn>,
    /// How fast fleet work (scheduled re-checks) may start.
    pace: Pace,
    closed: bool,
    /// Partitions given up: a command of theirs still arriving is not queued (it stays
    /// unacknowledged for the next owner), so none runs here after the handover.
    given_up: std::collections::HashSet<u32>,
}

/// The lanes and their ready queue; cloned into the consumer and each worker.
#[derive(Clone)]
pub struct Dispatcher {
    state: Arc<Mutex<State<Lane, Work>>>,
    wake: Arc<Notify>,
}

pub fn class_of(work: &Work) -> Class {
    Class::of(work.cmd.command_type)
}

impl Dispatcher {
    /// `fleet_rate`: scheduled re-checks started a second at most (`None`: unlimited).
    pub fn new(lanes: impl IntoIterator<Item = Lane>, fleet_rate: Option<u32>) -> Dispatcher {
        let slots = lanes
            .into_iter()
            .map(|lane| Slot {
                queues: HashMap::new(),
                lane: Some(lane),
                parked: Vec::new(),
            })
            .collect();
        Dispatcher {
            state: Arc::new(Mutex::new(State::new(
                slots,
                Pace::new(fleet_rate, Instant::now()),
            ))),
            wake: Arc::new(Notify::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<Lane, Work>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lanes(&self) -> usize {
        self.state().slots.len()
    }

    /// Queues a command on lane `idx`.
    /// Queues a command on lane `idx`, unless its partition was given up meanwhile.
    pub fn push(&self, idx: usize, work: Work) {
        let key = (class_of(&work), work.cmd.tenant_id);
        let opened = {
            let mut state = self.state();
            if state.given_up.contains(&work.partition) {
                return;
            }
            queued(key.0).inc();
            state.push(idx, key, work)
        };
        if opened {
            self.wake.notify_one();
        }
    }

    /// The partition is this instance's (again): its commands are queued.
    pub fn take_up(&self, partition: u32) {
        self.state().given_up.remove(&partition);
    }

    /// Forgets the queued (not yet started) commands of a partition this instance no
    /// longer owns: unacknowledged, they go to its next owner. How many.
    pub fn drop_partition(&self, partition: u32) -> usize {
        let dropped = {
            let mut state = self.state();
            state.given_up.insert(partition);
            state.drop_where(|w| w.partition == partition)
        };
        for w in &dropped {
            queued(class_of(w)).dec();
        }
        dropped.len()
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
            let paced_until = {
                let mut state = self.state();
                let now = Instant::now();
                if let Some((idx, lane, work)) = state.take_ready(now) {
                    queued(class_of(&work)).dec();
                    return Some((idx, lane, work));
                }
                if state.closed {
                    return None;
                }
                state.fleet_paced_until(now)
            };
            match paced_until {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Gives the lane back; the turns that came up meanwhile queue again.
    fn give_back(&self, idx: usize, lane: Lane) {
        let woken = self.state().give_back(idx, lane);
        for _ in 0..woken {
            self.wake.notify_one();
        }
    }

    /// Every [`KEEP_ALIVE`], tells the server that commands waiting that long are in
    /// progress (below the consumer's ack wait, so none is handed out again).
    pub async fn keep_alive(self) {
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let waiting = self.state().waiting_longer_than(KEEP_ALIVE);
            for msg in waiting {
                let _ = msg.ack_with(AckKind::Progress).await;
            }
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

impl<L> State<L, Work> {
    /// The messages of commands queued for longer than `age`.
    fn waiting_longer_than(&self, age: Duration) -> Vec<jetstream::Message> {
        self.slots
            .iter()
            .flat_map(|s| s.queues.values().flatten())
            .filter(|w| w.received.elapsed() >= age)
            .map(|w| w.msg.clone())
            .collect()
    }
}

impl<L, W> State<L, W> {
    fn new(slots: Vec<Slot<L, W>>, pace: Pace) -> Self {
        State {
            slots,
            ready: FairQueue::default(),
            pace,
            closed: false,
            given_up: Default::default(),
        }
    }

    /// Queues `work` on lane `idx`; true when it opened a new turn (wake a worker).
    fn push(&mut self, idx: usize, key: Key, work: W) -> bool {
        let queue = self.slots[idx].queues.entry(key).or_default();
        let first = queue.is_empty();
        queue.push_back(work);
        if first {
            self.ready.push(key.0, key.1, Turn { idx, key });
        }
        first
    }

    /// The next turn whose lane is free, with the lane and the turn's oldest command.
    /// A turn whose lane a worker holds is parked until the lane is given back; fleet
    /// work waits for its pace.
    fn take_ready(&mut self, now: Instant) -> Option<(usize, L, W)> {
        while let Some(Turn { idx, key }) = self.ready.pop_paced(self.pace.ready(now)) {
            let slot = &mut self.slots[idx];
            // A turn whose commands were dropped (their partition moved away).
            let Some(queue) = slot.queues.get_mut(&key) else {
                continue;
            };
            if slot.lane.is_none() {
                slot.parked.push(key);
                continue;
            }
            let Some(work) = queue.pop_front() else {
                slot.queues.remove(&key);
                continue;
            };
            let lane = slot.lane.take().expect("the lane is free");
            if key.0 == Class::Fleet {
                self.pace.spend(now);
            }
            if queue.is_empty() {
                slot.queues.remove(&key);
            } else {
                // The tenant's next command in this lane waits for its next turn.
                self.ready.push(key.0, key.1, Turn { idx, key });
            }
            return Some((idx, lane, work));
        }
        None
    }

    /// When fleet work that waits only for its pace may start (`None`: none waits so).
    fn fleet_paced_until(&self, now: Instant) -> Option<Instant> {
        if !self.ready.fleet_waiting() {
            return None;
        }
        self.pace.ready_at(now)
    }

    /// Takes every queued command `gone` says, keeping the order of the rest.
    fn drop_where(&mut self, gone: impl Fn(&W) -> bool) -> Vec<W> {
        let mut dropped = Vec::new();
        for slot in &mut self.slots {
            for queue in slot.queues.values_mut() {
                let (out, keep): (VecDeque<W>, VecDeque<W>) =
                    std::mem::take(queue).into_iter().partition(|w| gone(w));
                *queue = keep;
                dropped.extend(out);
            }
            slot.queues.retain(|_, q| !q.is_empty());
        }
        dropped
    }

    /// Returns the lane; its parked turns queue again. How many turns were queued.
    fn give_back(&mut self, idx: usize, lane: L) -> usize {
        let slot = &mut self.slots[idx];
        slot.lane = Some(lane);
        let parked = std::mem::take(&mut slot.parked);
        let n = parked.len();
        for key in parked {
            self.ready.push(key.0, key.1, Turn { idx, key });
        }
        n
    }
}

fn queued(class: Class) -> runtime::ops::IntGauge {
    runtime::ops::HANDLER_QUEUED.with_label_values(&[class.as_str()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn tenant(n: u128) -> TenantId {
        TenantId(Uuid::from_u128(n))
    }

    fn state(lanes: usize) -> State<usize, String> {
        paced_state(lanes, None, Instant::now())
    }

    fn paced_state(lanes: usize, fleet_rate: Option<u32>, start: Instant) -> State<usize, String> {
        State::new(
            (0..lanes)
                .map(|i| Slot {
                    queues: HashMap::new(),
                    lane: Some(i),
                    parked: Vec::new(),
                })
                .collect(),
            Pace::new(fleet_rate, start),
        )
    }

    const X: u128 = 1;
    const Y: u128 = 2;

    fn push(s: &mut State<usize, String>, lane: usize, t: u128, class: Class, what: &str) {
        s.push(lane, (class, tenant(t)), what.to_string());
    }

    #[test]
    fn a_quiet_tenants_command_runs_next_whatever_another_tenant_queued_in_every_lane() {
        let mut s = state(4);
        for i in 0..100 {
            push(&mut s, i % 4, X, Class::Interactive, &format!("x{i}"));
        }
        push(&mut s, 3, Y, Class::Interactive, "y");
        let (lane, _, first) = s.take_ready(Instant::now()).unwrap();
        assert_eq!(first, "x0");
        let (_, _, second) = s.take_ready(Instant::now()).unwrap();
        assert_eq!(second, "y", "y waits for one of x's turns, not x's backlog");
        let _ = lane;
    }

    #[test]
    fn a_turn_whose_lane_is_busy_waits_for_the_lane_and_then_goes_first() {
        let mut s = state(2);
        push(&mut s, 0, X, Class::Interactive, "x0");
        push(&mut s, 0, X, Class::Interactive, "x1");
        push(&mut s, 1, X, Class::Interactive, "x-other");
        let (lane, held, x0) = s.take_ready(Instant::now()).unwrap();
        assert_eq!((lane, x0.as_str()), (0, "x0"));
        push(&mut s, 0, Y, Class::Interactive, "y");
        // Lane 0 is busy: its turns are parked, the other lane runs meanwhile.
        let (other, held_other, next) = s.take_ready(Instant::now()).unwrap();
        assert_eq!((other, next.as_str()), (1, "x-other"));
        assert!(
            s.take_ready(Instant::now()).is_none(),
            "nothing else can run while lane 0 is held"
        );
        assert_eq!(s.give_back(0, held), 2, "x1's and y's turns queue again");
        s.give_back(1, held_other);
        let order: Vec<String> = std::iter::from_fn(|| {
            let (idx, l, w) = s.take_ready(Instant::now())?;
            s.give_back(idx, l);
            Some(w)
        })
        .collect();
        // Round robin had reached y before x again: y goes first once the lane is free.
        assert_eq!(order, ["y", "x1"]);
    }

    #[test]
    fn one_lane_runs_one_command_at_a_time_and_keeps_a_tenants_order() {
        let mut s = state(1);
        for i in 0..5 {
            push(&mut s, 0, X, Class::Interactive, &format!("x{i}"));
            push(&mut s, 0, Y, Class::Interactive, &format!("y{i}"));
        }
        let mut order = Vec::new();
        while let Some((idx, lane, work)) = s.take_ready(Instant::now()) {
            assert!(
                s.take_ready(Instant::now()).is_none(),
                "a second command of a held lane"
            );
            order.push(work);
            s.give_back(idx, lane);
        }
        let of = |t: char| -> Vec<&String> { order.iter().filter(|w| w.starts_with(t)).collect() };
        assert_eq!(of('x'), ["x0", "x1", "x2", "x3", "x4"]);
        assert_eq!(of('y'), ["y0", "y1", "y2", "y3", "y4"]);
        assert_eq!(order.len(), 10);
    }

    #[test]
    fn given_queued_commands_of_a_partition_when_dropped_then_the_rest_run_in_order_and_no_lane_is_lost(
    ) {
        let mut s = state(2);
        for i in 0..6 {
            push(
                &mut s,
                i % 2,
                X,
                Class::Interactive,
                &format!("p{}-x{i}", i % 3),
            );
        }
        push(&mut s, 0, Y, Class::Interactive, "p1-y");
        let mut dropped = s.drop_where(|w| w.starts_with("p1"));
        dropped.sort();
        assert_eq!(dropped, ["p1-x1", "p1-x4", "p1-y"]);
        let mut order = Vec::new();
        while let Some((idx, lane, work)) = s.take_ready(Instant::now()) {
            order.push(work);
            s.give_back(idx, lane);
        }
        order.sort();
        assert_eq!(order, ["p0-x0", "p0-x3", "p2-x2", "p2-x5"]);
        // Both lanes came back: new work still runs.
        push(&mut s, 0, Y, Class::Interactive, "later0");
        push(&mut s, 1, Y, Class::Interactive, "later1");
        assert!(s.take_ready(Instant::now()).is_some() && s.take_ready(Instant::now()).is_some());
    }

    #[test]
    fn a_person_goes_before_background_work_of_every_lane() {
        let mut s = state(3);
        for i in 0..30 {
            push(&mut s, i % 3, X, Class::Background, &format!("recheck{i}"));
        }
        push(&mut s, 2, Y, Class::Interactive, "click");
        let (_, _, first) = s.take_ready(Instant::now()).unwrap();
        assert_eq!(first, "click");
    }

    #[test]
    fn given_a_fleet_of_rechecks_when_paced_then_they_start_no_faster_than_the_pace_and_people_are_not_held(
    ) {
        let start = Instant::now();
        let mut s = paced_state(4, Some(10), start);
        for i in 0..40 {
            push(&mut s, i % 4, X, Class::Fleet, &format!("recheck{i}"));
        }
        let (idx, lane, first) = s.take_ready(start).unwrap();
        assert_eq!(first, "recheck0");
        s.give_back(idx, lane);
        assert!(
            s.take_ready(start).is_none(),
            "the next re-check waits for its pace"
        );
        assert_eq!(
            s.fleet_paced_until(start),
            Some(start + Duration::from_millis(100))
        );
        push(&mut s, 1, Y, Class::Interactive, "click");
        let (idx, lane, next) = s.take_ready(start).unwrap();
        assert_eq!(
            next, "click",
            "a person's command does not wait for the pace"
        );
        s.give_back(idx, lane);
        let (_, _, later) = s.take_ready(start + Duration::from_millis(100)).unwrap();
        assert_eq!(later, "recheck1");
    }
}

//! The order work is taken in: fair between tenants, people first. The command
//! handler's lanes and intake take commands in it; the provider worker its calls.
//!
//! A lane used to take its commands first come, first served, so one tenant's burst
//! of 20,000 registrations put every other tenant's click behind ~80 of them in each
//! lane. Now each lane keeps a queue per tenant in two classes, and
//! - takes commands a person is waiting for (the public commands and operator
//!   commands) before background work (pre-flight, provider results), but one
//!   background command after every [`INTERACTIVE_PER_BACKGROUND`] interactive one,
//!   so background work keeps pace and is never starved;
//! - takes fleet work (scheduled re-checks, which nobody is waiting for and which come
//!   due by the thousand after an outage) where background work may go, taking turns
//!   with it, but only as fast as a [`Pace`] allows: a fleet's re-checks then share
//!   the machine with people's commands instead of filling it;
//! - within a class, takes the tenants in turn (round robin), one command each;
//! - within a tenant and class, keeps arrival order (stream order), so one tenant's
//!   commands for one domain keep their publish order.
//!
//! Pure: no IO, no clock; tested below.

use email_domain_events::command::CommandType;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Interactive commands taken in a row before a waiting background one gets a turn.
/// One: people's commands and background work alternate while both wait. A person's
/// command still goes before everything queued earlier but the one background
/// command beside it. With eight, a tenant's burst of registrations piled up their
/// follow-ups (two each: the provider's answer and the pre-flight), which then
/// flooded the projections when the burst ended and held another tenant's row back
/// (`make bench` P6: row p99 104 ms with eight, 61 ms with one).
pub const INTERACTIVE_PER_BACKGROUND: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A person is waiting (public and operator commands).
    Interactive,
    /// Nobody is waiting on this command itself, but it follows from one (a
    /// registration's provider answer and pre-flight).
    Background,
    /// The fleet's own upkeep: scheduled re-checks, paced.
    Fleet,
}

impl Class {
    /// Public commands (a person sent them) are interactive; scheduled re-checks are
    /// fleet work; the services' other commands are background work.
    pub fn of(command_type: CommandType) -> Class {
        if command_type.is_public() {
            Class::Interactive
        } else if command_type == CommandType::Recheck {
            Class::Fleet
        } else {
            Class::Background
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Background => "background",
            Class::Fleet => "fleet",
        }
    }
}

/// How fast fleet work may start: one command every `interval`, and up to `burst`
/// of unused time saved up (so a quiet spell lets a few go at once). Pure: the caller
/// passes the time.
#[derive(Debug, Clone)]
pub struct Pace {
    interval: Duration,
    burst: Duration,
    /// When the next command may start (`None`: unlimited).
    next: Option<Instant>,
}

impl Pace {
    /// At most `per_second` commands a second; `None` (or 0) is unlimited.
    pub fn new(per_second: Option<u32>, now: Instant) -> Pace {
        let interval = per_second
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs(1) / r);
        Pace {
            interval: interval.unwrap_or_default(),
            burst: interval.map_or(Duration::ZERO, |i| (i * 8).min(PACE_BURST)),
            next: interval.map(|_| now),
        }
    }

    /// Whether a command may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// A command started at `now`.
    pub fn spend(&mut self, now: Instant) {
        if let Some(next) = &mut self.next {
            let earliest = now.checked_sub(self.burst).unwrap_or(now);
            *next = (*next).max(earliest) + self.interval;
        }
    }

    /// When the next command may start (`None`: now, or unlimited).
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        self.next.filter(|next| *next > now)
    }
}

/// The most unused pace saved up.
const PACE_BURST: Duration = Duration::from_millis(20);

/// One class: a FIFO per key, and the keys with work in turn order.
#[derive(Debug)]
struct Turns<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    turn: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, T> Default for Turns<K, T> {
    fn default() -> Self {
        Turns {
            queues: HashMap::new(),
            turn: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, T> Turns<K, T> {
    fn push(&mut self, key: K, item: T) {
        let queue = self.queues.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.turn.push_back(key);
        }
        queue.push_back(item);
    }

    fn pop(&mut self) -> Option<T> {
        let key = self.turn.pop_front()?;
        let queue = self.queues.get_mut(&key)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turn.push_back(key);
        }
        item
    }

    fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.queues.values().flatten()
    }
}

/// The commands a lane holds, keyed by tenant.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    interactive: Turns<K, T>,
    background: Turns<K, T>,
    fleet: Turns<K, T>,
    /// Interactive commands taken since the last background or fleet one.
    streak: u32,
    /// The last turn off the interactive class went to fleet work.
    fleet_last: bool,
    /// Items queued, all classes.
    len: usize,
}

impl<K: Hash + Eq + Clone, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        FairQueue {
            interactive: Turns::default(),
            background: Turns::default(),
            fleet: Turns::default(),
            streak: 0,
            fleet_last: false,
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    pub fn push(&mut self, class: Class, key: K, item: T) {
        self.len += 1;
        match class {
            Class::Interactive => self.interactive.push(key, item),
            Class::Background => self.background.push(key, item),
            Class::Fleet => self.fleet.push(key, item),
        }
    }

    /// The next command to handle, fleet work included.
    pub fn pop(&mut self) -> Option<T> {
        self.pop_paced(true)
    }

    /// The next command to handle; fleet work only if `fleet_may_start`.
    pub fn pop_paced(&mut self, fleet_may_start: bool) -> Option<T> {
        let item = self.next(fleet_may_start);
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    fn next(&mut self, fleet_may_start: bool) -> Option<T> {
        let background_due = self.streak >= INTERACTIVE_PER_BACKGROUND;
        if !self.interactive.is_empty() && !background_due {
            self.streak += 1;
            return self.interactive.pop();
        }
        let fleet = fleet_may_start && !self.fleet.is_empty();
        let take_fleet = fleet && (!self.fleet_last || self.background.is_empty());
        if take_fleet || !self.background.is_empty() {
            self.streak = 0;
            self.fleet_last = take_fleet;
            return if take_fleet {
                self.fleet.pop()
            } else {
                self.background.pop()
            };
        }
        self.streak += 1;
        self.interactive.pop()
    }

    /// Whether fleet work is waiting (for its pace, when nothing else is).
    pub fn fleet_waiting(&self) -> bool {
        !self.fleet.is_empty()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.interactive.is_empty() && self.background.is_empty() && self.fleet.is_empty()
    }

    /// Everything queued, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.interactive
            .iter()
            .chain(self.background.iter())
            .chain(self.fleet.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut FairQueue<&'static str, String>) -> Vec<String> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn a_quiet_tenants_command_goes_next_however_much_another_tenant_queued() {
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push(Class::Interactive, "x", format!("x{i}"));
        }
        q.push(Class::Interactive, "y", "y0".to_string());
        assert_eq!(q.pop().as_deref(), Some("x0"));
        assert_eq!(
            q.pop().as_deref(),
            Some("y0"),
            "y waits for one of x's, not 100"
        );
        assert_eq!(q.len(), 99);
        assert_eq!(q.iter().count(), 99);
    }

    #[test]
    fn one_tenants_commands_keep_their_arrival_order() {
        let mut q = FairQueue::default();
        for i in 0..5 {
            q.push(Class::Interactive, "x", format!("x{i}"));
            q.push(Class::Interactive, "y", format!("y{i}"));
        }
        let order = drain(&mut q);
        let of = |t: &str| -> Vec<String> {
            order.iter().filter(|s| s.starts_with(t)).cloned().collect()
        };
        assert_eq!(of("x"), ["x0", "x1", "x2", "x3", "x4"]);
        assert_eq!(of("y"), ["y0", "y1", "y2", "y3", "y4"]);
    }

    #[test]
    fn tenants_take_turns_one_command_each() {
        let mut q = FairQueue::default();
        for i in 0..3 {
            q.push(Class::Interactive, "x", format!("x{i}"));
        }
        q.push(Class::Interactive, "y", "y0".to_string());
        q.push(Class::Interactive, "z", "z0".to_string());
        assert_eq!(drain(&mut q), ["x0", "y0", "z0", "x1", "x2"]);
    }

    #[test]
    fn a_person_goes_before_background_work_queued_earlier() {
        let mut q = FairQueue::default();
        for i in 0..50 {
            q.push(Class::Background, "x", format!("recheck{i}"));
        }
        q.push(Class::Interactive, "y", "click".to_string());
        assert_eq!(q.pop().as_deref(), Some("click"));
    }

    #[test]
    fn background_work_is_slowed_but_never_starved() {
        let mut q = FairQueue::default();
        for i in 0..100 {
            q.push(Class::Interactive, "x", format!("i{i}"));
        }
        q.push(Class::Background, "x", "b0".to_string());
        let order = drain(&mut q);
        let at = order.iter().position(|s| s == "b0").unwrap();
        assert_eq!(at, INTERACTIVE_PER_BACKGROUND as usize);
    }

    #[test]
    fn an_empty_queue_has_nothing_to_give() {
        let mut q: FairQueue<&str, String> = FairQueue::default();
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        q.push(Class::Background, "x", "b".into());
        assert!(!q.is_empty());
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[test]
    fn scheduled_rechecks_are_fleet_work_and_a_registrations_follow_ups_background() {
        assert_eq!(Class::of(CommandType::Recheck), Class::Fleet);
        assert_eq!(Class::of(CommandType::ProviderResult), Class::Background);
        assert_eq!(Class::of(CommandType::Preflight), Class::Background);
        assert_eq!(Class::of(CommandType::RefreshStatus), Class::Interactive);
    }

    #[test]
    fn given_fleet_work_waiting_when_its_pace_does_not_allow_then_nothing_of_it_is_taken() {
        let mut q = FairQueue::default();
        q.push(Class::Fleet, "x", "recheck".to_string());
        assert_eq!(q.pop_paced(false), None);
        assert!(q.fleet_waiting());
        assert_eq!(q.pop_paced(true).as_deref(), Some("recheck"));
        assert!(!q.fleet_waiting());
    }

    #[test]
    fn given_fleet_and_background_work_then_they_take_turns_after_people() {
        let mut q = FairQueue::default();
        for i in 0..3 {
            q.push(Class::Fleet, "x", format!("f{i}"));
            q.push(Class::Background, "x", format!("b{i}"));
        }
        q.push(Class::Interactive, "y", "click".to_string());
        assert_eq!(drain(&mut q), ["click", "f0", "b0", "f1", "b1", "f2", "b2"]);
    }

    #[test]
    fn given_fleet_work_held_by_its_pace_then_background_work_goes_on() {
        let mut q = FairQueue::default();
        q.push(Class::Fleet, "x", "f0".to_string());
        q.push(Class::Background, "x", "b0".to_string());
        q.push(Class::Background, "x", "b1".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop_paced(false)).collect();
        assert_eq!(order, ["b0", "b1"]);
        assert_eq!(q.pop_paced(true).as_deref(), Some("f0"));
    }

    #[test]
    fn given_a_pace_of_ten_a_second_then_commands_start_a_tenth_of_a_second_apart() {
        let start = Instant::now();
        let mut pace = Pace::new(Some(10), start);
        assert!(pace.ready(start));
        pace.spend(start);
        assert!(!pace.ready(start + Duration::from_millis(99)));
        assert_eq!(
            pace.ready_at(start),
            Some(start + Duration::from_millis(100))
        );
        assert!(pace.ready(start + Duration::from_millis(100)));
    }

    #[test]
    fn given_a_quiet_spell_then_the_pace_saves_up_only_a_short_burst() {
        let start = Instant::now();
        let mut pace = Pace::new(Some(1000), start);
        let later = start + Duration::from_secs(60);
        let mut started = 0;
        while pace.ready(later) {
            pace.spend(later);
            started += 1;
        }
        assert_eq!(
            started, 9,
            "the one due now and 8 ms saved up at 1,000 a second, not 60 s of it"
        );
    }

    #[test]
    fn an_unlimited_pace_is_always_ready() {
        let now = Instant::now();
        let mut pace = Pace::new(None, now);
        pace.spend(now);
        assert!(pace.ready(now));
        assert_eq!(pace.ready_at(now), None);
        assert!(Pace::new(Some(0), now).ready(now));
    }
}

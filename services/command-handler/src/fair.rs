//! The order a lane (and the intake) takes its commands in: fair between tenants,
//! people first.
//!
//! A lane used to take its commands first come, first served, so one tenant's burst
//! of 20,000 registrations put every other tenant's click behind ~80 of them in each
//! lane. Now each lane keeps a queue per tenant in two classes, and
//! - takes commands a person is waiting for (the public commands and operator
//!   commands) before background work (scheduled re-checks, pre-flight, provider
//!   results), but at least one background command after every
//!   [`INTERACTIVE_PER_BACKGROUND`] interactive ones, so background work is slowed,
//!   never starved;
//! - within a class, takes the tenants in turn (round robin), one command each;
//! - within a tenant and class, keeps arrival order (stream order), so one tenant's
//!   commands for one domain keep their publish order.
//!
//! Pure: no IO, no clock; tested below.

use email_domain_events::command::CommandType;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Interactive commands taken in a row before a waiting background one gets a turn.
pub const INTERACTIVE_PER_BACKGROUND: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A person is waiting (public and operator commands).
    Interactive,
    /// Nobody is waiting on this command itself.
    Background,
}

impl Class {
    /// Public commands (a person sent them) are interactive; the services' own are not.
    pub fn of(command_type: CommandType) -> Class {
        if command_type.is_public() {
            Class::Interactive
        } else {
            Class::Background
        }
    }
}

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

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}

/// The commands a lane holds, keyed by tenant.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    interactive: Turns<K, T>,
    background: Turns<K, T>,
    /// Interactive commands taken since the last background one.
    streak: u32,
}

impl<K: Hash + Eq + Clone, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        FairQueue {
            interactive: Turns::default(),
            background: Turns::default(),
            streak: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, T> FairQueue<K, T> {
    pub fn push(&mut self, class: Class, key: K, item: T) {
        match class {
            Class::Interactive => self.interactive.push(key, item),
            Class::Background => self.background.push(key, item),
        }
    }

    /// The next command to handle.
    pub fn pop(&mut self) -> Option<T> {
        if self.background_next() {
            self.streak = 0;
            return self.background.pop();
        }
        self.streak += 1;
        self.interactive.pop()
    }

    fn background_next(&self) -> bool {
        let background_due = self.streak >= INTERACTIVE_PER_BACKGROUND;
        self.interactive.is_empty() || (background_due && !self.background.is_empty())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.interactive.len() + self.background.len()
    }

    pub fn is_empty(&self) -> bool {
        self.interactive.is_empty() && self.background.is_empty()
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
}

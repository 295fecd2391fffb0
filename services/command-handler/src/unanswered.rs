//! The public commands the intake has moved and no handler has answered yet: the
//! intake moves only while there are fewer than a limit, so a burst waits at the
//! intake in fair order instead of in the partition streams and the handlers' queues,
//! which take whatever comes first.
//!
//! An answer is the command's outcome. A command that gets none (dead-lettered by
//! the handler, or an outcome this instance missed) stops counting after a while, so
//! nothing lost holds the intake for good. Pure: the caller passes the time.

use email_domain_events::CommandId;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Unanswered {
    /// Moved commands in move order (answered ones are skipped when reached).
    order: VecDeque<(Instant, CommandId)>,
    open: HashSet<CommandId>,
    limit: usize,
    forget_after: Duration,
}

impl Unanswered {
    pub fn new(limit: usize, forget_after: Duration) -> Self {
        Unanswered {
            order: VecDeque::new(),
            open: HashSet::new(),
            limit,
            forget_after,
        }
    }

    pub fn moved(&mut self, id: CommandId, now: Instant) {
        if self.open.insert(id) {
            self.order.push_back((now, id));
        }
    }

    pub fn answered(&mut self, id: CommandId) {
        self.open.remove(&id);
    }

    /// Whether another command may move at `now`.
    pub fn has_room(&mut self, now: Instant) -> bool {
        while let Some((at, id)) = self.order.front() {
            let forgotten = now.saturating_duration_since(*at) >= self.forget_after;
            if self.open.contains(id) && !forgotten {
                break;
            }
            self.open.remove(id);
            self.order.pop_front();
        }
        self.open.len() < self.limit
    }

    /// When the oldest unanswered command stops counting (`None`: none waits).
    pub fn forgotten_at(&self) -> Option<Instant> {
        self.order
            .iter()
            .find(|(_, id)| self.open.contains(id))
            .map(|(at, _)| *at + self.forget_after)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> CommandId {
        CommandId(Uuid::from_u128(n))
    }

    #[test]
    fn given_the_limit_moved_when_one_is_answered_then_one_more_may_move() {
        let now = Instant::now();
        let mut u = Unanswered::new(2, Duration::from_secs(5));
        u.moved(id(1), now);
        assert!(u.has_room(now));
        u.moved(id(2), now);
        assert!(!u.has_room(now));
        u.answered(id(2));
        assert!(u.has_room(now));
        assert_eq!(u.len(), 1);
    }

    #[test]
    fn given_a_command_never_answered_then_it_stops_counting_after_a_while() {
        let now = Instant::now();
        let mut u = Unanswered::new(1, Duration::from_secs(5));
        u.moved(id(1), now);
        assert!(!u.has_room(now + Duration::from_millis(4_999)));
        assert_eq!(u.forgotten_at(), Some(now + Duration::from_secs(5)));
        assert!(u.has_room(now + Duration::from_secs(5)));
        assert_eq!(u.len(), 0);
        assert_eq!(u.forgotten_at(), None);
    }

    #[test]
    fn an_answer_to_a_command_not_moved_changes_nothing() {
        let now = Instant::now();
        let mut u = Unanswered::new(1, Duration::from_secs(5));
        u.answered(id(9));
        u.moved(id(1), now);
        u.answered(id(9));
        assert!(!u.has_room(now));
    }

    #[test]
    fn the_same_command_moved_twice_counts_once() {
        let now = Instant::now();
        let mut u = Unanswered::new(2, Duration::from_secs(5));
        u.moved(id(1), now);
        u.moved(id(1), now);
        assert_eq!(u.len(), 1);
        u.answered(id(1));
        assert!(u.has_room(now));
        assert_eq!(u.len(), 0);
    }
}

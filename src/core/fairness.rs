//! Round-robin across keys, first in first out within a key: how scarce work
//! (key generation, checks) is shared between tenants, so that one namespace's
//! bulk import never starves another's single new domain, and within a namespace
//! the first applied is served first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Items queued by key, taken one key at a time in turn.
#[derive(Debug)]
pub struct RoundRobin<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// Keys with queued items, in the order they are served next.
    turn: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, T> Default for RoundRobin<K, T> {
    fn default() -> Self {
        RoundRobin {
            queues: HashMap::new(),
            turn: VecDeque::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, T> RoundRobin<K, T> {
    /// Queues `item` behind the others of `key`.
    pub fn push(&mut self, key: K, item: T) {
        let queue = self.queues.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.turn.push_back(key);
        }
        queue.push_back(item);
    }

    /// The next item: the oldest of the key whose turn it is; that key then goes
    /// to the back of the turn.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let key = self.turn.pop_front()?;
        let queue = self
            .queues
            .get_mut(&key)
            .expect("a key in turn has a queue");
        let item = queue.pop_front().expect("a key in turn has items");
        if queue.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turn.push_back(key.clone());
        }
        Some((key, item))
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_take_turns_and_each_key_is_first_in_first_out() {
        let mut q = RoundRobin::default();
        for i in 0..4 {
            q.push("bulk", i);
        }
        q.push("other", 100);
        q.push("third", 200);
        let order: Vec<(&str, i32)> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [
                ("bulk", 0),
                ("other", 100),
                ("third", 200),
                ("bulk", 1),
                ("bulk", 2),
                ("bulk", 3)
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_newcomer_is_served_within_one_round() {
        let mut q = RoundRobin::default();
        for i in 0..1000 {
            q.push("bulk", i);
        }
        assert_eq!(q.pop(), Some(("bulk", 0)));
        q.push("new", -1);
        // At most one more of each key ahead of it: here, one of the bulk.
        assert_eq!(q.pop(), Some(("bulk", 1)));
        assert_eq!(q.pop(), Some(("new", -1)));
        assert_eq!(q.len(), 998);
    }
}

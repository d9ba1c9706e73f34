//! A set of shard-local wakers keyed by registration, so a future that goes
//! away removes its waker instead of leaving it behind: a long-running
//! service polls such futures millions of times.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::task::Waker;

/// Wakers waiting for one shard-local event.
#[derive(Debug, Default)]
pub struct WaiterSet {
    wakers: RefCell<BTreeMap<u64, Waker>>,
    next: Cell<u64>,
}

impl WaiterSet {
    /// Registers `waker` under `key` (a new key when `None`); returns the key.
    pub fn register(&self, key: Option<u64>, waker: &Waker) -> u64 {
        let key = key.unwrap_or_else(|| {
            let k = self.next.get();
            self.next.set(k + 1);
            k
        });
        let mut wakers = self.wakers.borrow_mut();
        match wakers.get_mut(&key) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => *w = waker.clone(),
            None => {
                wakers.insert(key, waker.clone());
            }
        }
        key
    }

    /// Forgets a registration.
    pub fn remove(&self, key: u64) {
        self.wakers.borrow_mut().remove(&key);
    }

    /// Wakes and forgets every registered waker.
    pub fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        wakers.into_values().for_each(Waker::wake);
    }

    /// Number of registered wakers.
    pub fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.wakers.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_registering_does_not_grow_and_remove_forgets() {
        let set = WaiterSet::default();
        let k = set.register(None, Waker::noop());
        for _ in 0..1000 {
            assert_eq!(set.register(Some(k), Waker::noop()), k);
        }
        assert_eq!(set.len(), 1);
        let k2 = set.register(None, Waker::noop());
        assert_ne!(k, k2);
        set.remove(k);
        set.remove(k2);
        assert!(set.is_empty());
    }
}

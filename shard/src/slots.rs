//! Per-shard slots: values a program keeps on each shard under a numeric
//! key it chooses, found again by work that arrives from other shards
//! (`submit_to`, `invoke_on_all`), which can carry the key but not the
//! value (it is `!Send`).
//!
//! This is how a server's runner owns each service's per-shard state and
//! hands it to the service, instead of every service keeping a
//! thread-local singleton of its own (which also allows several instances
//! of one service in a process: each has its own key). The slots belong
//! to the shard's context: they are emptied when the shard stops.
//!
//! ```
//! use std::rc::Rc;
//! let seen = shard::run_single(|| async {
//!     shard::slots::put(7, Rc::new(41u32));
//!     shard::slots::get::<u32>(7).map(|v| *v + 1)
//! })
//! .expect("runtime");
//! assert_eq!(seen, Some(42));
//! ```

use std::any::Any;
use std::rc::Rc;

use crate::context;

/// Keeps `value` on this shard under `key`, replacing what was there.
///
/// # Panics
/// Off a shard thread.
pub fn put<T: 'static>(key: u64, value: Rc<T>) {
    context::with(|c| c.slots.borrow_mut().insert(key, value as Rc<dyn Any>));
}

/// The value kept on this shard under `key`, if it is a `T`.
///
/// # Panics
/// Off a shard thread.
pub fn get<T: 'static>(key: u64) -> Option<Rc<T>> {
    let value = context::with(|c| c.slots.borrow().get(&key).cloned())?;
    value.downcast::<T>().ok()
}

/// Removes what this shard keeps under `key` (if anything).
pub fn remove(key: u64) {
    let old = context::try_with(|c| c.slots.borrow_mut().remove(&key));
    // Dropped outside the borrow: its drop may use the slots again.
    drop(old);
}

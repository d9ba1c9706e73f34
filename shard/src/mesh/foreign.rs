//! A value that must be dropped on the shard that made it (one whose drop
//! gives something back to that shard's state, say) but may travel to
//! other shards meanwhile: the idea of Seastar's `foreign_ptr`. Dropped on
//! another shard, it is sent home over the mesh and dropped there.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::context;
use crate::mesh::Msg;

/// A value with a home shard. See the module docs.
pub struct Foreign<T: Send + 'static> {
    value: Option<T>,
    home: usize,
}

impl<T: Send + fmt::Debug + 'static> fmt::Debug for Foreign<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Foreign").field("home", &self.home).field("value", &self.value).finish()
    }
}

impl<T: Send + 'static> Foreign<T> {
    /// Wraps `value`, with the current shard as its home.
    pub fn new(value: T) -> Foreign<T> {
        Foreign { value: Some(value), home: context::with(|c| c.id) }
    }

    /// The shard the value goes back to.
    pub fn home(&self) -> usize {
        self.home
    }

    /// Takes the value out; the caller becomes responsible for where it
    /// is dropped.
    pub fn into_inner(mut self) -> T {
        match self.value.take() {
            Some(v) => v,
            None => unreachable!("the value is only taken by into_inner or drop"),
        }
    }
}

impl<T: Send + 'static> Deref for Foreign<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.value {
            Some(v) => v,
            None => unreachable!("the value is only taken by into_inner or drop"),
        }
    }
}

impl<T: Send + 'static> DerefMut for Foreign<T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.value {
            Some(v) => v,
            None => unreachable!("the value is only taken by into_inner or drop"),
        }
    }
}

impl<T: Send + 'static> Drop for Foreign<T> {
    fn drop(&mut self) {
        let Some(value) = self.value.take() else { return };
        let home = self.home;
        let mut value = Some(value);
        context::try_with(|c| {
            if c.id == home {
                return;
            }
            let Some(v) = value.take() else { return };
            let msg = Msg::Run(Box::new(move || drop(v)));
            if let Err(msg) = c.mesh.try_push(home, msg) {
                // Ring full: a task waits for room instead of blocking here.
                let ctx = context::current();
                c.executor.spawn("foreign-drop", async move { ctx.mesh.send(home, msg).await }).detach();
            }
        });
        // On the home shard, or off any shard (the runtime is gone):
        // dropped here.
        drop(value);
    }
}

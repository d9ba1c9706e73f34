//! Shard groups: the shards one service runs on (HAProxy's thread groups,
//! brpc's worker tags), so that one service's load cannot take another's
//! cores. A group is only a set of shard indices: the mesh, the wake-ups
//! and every cross-shard call work between any two shards, inside a group
//! or across groups (the loom model checks a batch flushed to parked shards
//! of another group), and these methods are the cross-shard API restricted
//! to the members.
//!
//! ```
//! let members = shard::Builder::new().shards(3).pin(false).build().expect("plan").run(|| async {
//!     let group = shard::Group::new(vec![2, 0]).expect("a group");
//!     group.map_reduce(|| async { shard::shard_id() }, Vec::new(), |mut v, id| { v.push(id); v }).await
//! });
//! assert_eq!(members.expect("runtime").expect("answers"), vec![0, 2]);
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{fold, gather_on, SubmitError};

/// A non-empty, ordered set of shards. Cheap to clone and `Send`, so
/// cross-shard work can carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    members: Arc<[usize]>,
}

/// A group that cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// No shard listed.
    #[error("a group needs at least one shard")]
    Empty,
    /// A shard the runtime does not have.
    #[error("shard {shard} does not exist (the runtime has {count}: 0-{last})", last = count.saturating_sub(1))]
    NoSuchShard {
        /// The shard asked for.
        shard: usize,
        /// How many the runtime has.
        count: usize,
    },
}

impl Group {
    /// The group of `members` (sorted, duplicates dropped).
    pub fn new(mut members: Vec<usize>) -> Result<Group, GroupError> {
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Err(GroupError::Empty);
        }
        Ok(Group { members: members.into() })
    }

    /// Every shard of a runtime of `count` shards.
    pub fn all(count: usize) -> Group {
        Group { members: (0..count.max(1)).collect() }
    }

    /// Checks the group against a runtime of `count` shards.
    pub fn check(&self, count: usize) -> Result<(), GroupError> {
        match self.members.iter().find(|&&s| s >= count) {
            Some(&shard) => Err(GroupError::NoSuchShard { shard, count }),
            None => Ok(()),
        }
    }

    /// The members, in order.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// How many shards.
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The `i`th member (`i` taken modulo the group's size, so a hash
    /// modulo `len()` maps straight to a member).
    pub fn member(&self, i: usize) -> usize {
        self.members[i % self.members.len()]
    }

    /// The position of `shard` in the group, if it is a member.
    pub fn index_of(&self, shard: usize) -> Option<usize> {
        self.members.binary_search(&shard).ok()
    }

    /// Runs `f` on every member in parallel; answers in member order.
    pub async fn invoke<F, Fut, T>(&self, f: F) -> Vec<Result<T, SubmitError>>
    where
        F: Fn() -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        gather_on(self.members.iter().copied(), f, None).await
    }

    /// [`crate::map_reduce`] over the members, in member order.
    pub async fn map_reduce<M, Fut, T, R>(
        &self,
        map: M,
        init: R,
        reduce: impl FnMut(R, T) -> R,
    ) -> Result<R, SubmitError>
    where
        M: Fn() -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        fold(gather_on(self.members.iter().copied(), map, None).await, init, reduce)
    }

    /// [`crate::broadcast`] over the members: each member's answer or
    /// error, in member order, slow ones timed out at `deadline`.
    pub async fn broadcast<F, Fut, T>(&self, f: F, deadline: Duration) -> Vec<Result<T, SubmitError>>
    where
        F: Fn() -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        gather_on(self.members.iter().copied(), f, Some(Instant::now() + deadline)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_sorted_sets_checked_against_the_runtime() {
        let g = Group::new(vec![3, 1, 3]).unwrap();
        assert_eq!(g.members(), &[1, 3]);
        assert_eq!(
            (g.len(), g.member(0), g.member(3), g.index_of(3), g.index_of(2)),
            (2, 1, 3, Some(1), None)
        );
        assert_eq!(g.check(4), Ok(()));
        assert_eq!(g.check(2), Err(GroupError::NoSuchShard { shard: 3, count: 2 }));
        assert_eq!(Group::new(vec![]), Err(GroupError::Empty));
        assert_eq!(Group::all(3).members(), &[0, 1, 2]);
    }
}

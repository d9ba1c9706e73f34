//! Types whose meaning depends on the shard thread they were made on are
//! `!Send` (and `!Sync`) by construction: an operation's slot index only
//! means something on the ring that issued it, a provided buffer belongs
//! to its shard's ring. These assertions fail to compile if one of them
//! ever becomes `Send` again (they were, before the ops held their shard).

use static_assertions::assert_not_impl_any;

use shard::reactor::{BufRing, MultiOp, NextCompletion, Op, ProvidedBuf};

assert_not_impl_any!(Op<Vec<u8>>: Send, Sync);
assert_not_impl_any!(Op<()>: Send, Sync);
assert_not_impl_any!(MultiOp<()>: Send, Sync);
assert_not_impl_any!(MultiOp<Box<libc::msghdr>>: Send, Sync);
assert_not_impl_any!(NextCompletion<'static, ()>: Send, Sync);
assert_not_impl_any!(BufRing: Send, Sync);
assert_not_impl_any!(ProvidedBuf: Send, Sync);

// The futures the `ops` functions return hold an operation across their
// await, so they are `!Send` too; that is checked by the compile-fail
// examples in `shard::reactor::op`'s docs (run by `cargo test --doc`).

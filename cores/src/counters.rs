//! Counter sets declared once.
//!
//! A service's counters are plain integers owned by each shard (no
//! atomics on the hot path), gathered from every shard and merged for
//! reports. [`counter_set!`](crate::counter_set) declares a set once, one
//! line per counter, and from that line come the struct field, its
//! cross-shard merge, and the [`Field`] every exposition walks (the
//! Prometheus family, its label, its help). A new counter is one line.
//!
//! ```
//! cores::counter_set! {
//!     /// A listener's counters.
//!     pub struct Listener {
//!         accepted: Counter("app_accepted_total") "Connections accepted.",
//!         refused_full: Counter("app_refused_total", reason = "full") "Connections refused.",
//!         refused_down: Counter("app_refused_total", reason = "down") "Connections refused.",
//!         open: Gauge("app_open_connections") "Connections open.",
//!     }
//! }
//! let mut a = Listener { accepted: 2, open: 1, ..Default::default() };
//! a.merge(&Listener { accepted: 3, refused_down: 1, ..Default::default() });
//! assert_eq!((a.accepted, a.refused_down, a.open), (5, 1, 1));
//! assert_eq!(Listener::FIELDS[1].label, Some(("reason", "full")));
//! assert_eq!(a.values(), [5, 0, 1, 1]);
//! ```

/// How a counter moves, and so how shards' values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Only grows (a Prometheus counter); shards' values add up.
    Counter,
    /// A level now (a gauge); shards' levels add up.
    Gauge,
    /// A 0/1 state as each shard sees it (a gauge); across shards it is
    /// 1 when any shard's is.
    Flag,
    /// A time (unix seconds) each shard keeps, such as its last flush (a
    /// gauge); across shards the latest.
    Newest,
}

impl Measure {
    /// Folds another shard's value into `into`.
    pub fn merge(self, into: &mut u64, other: u64) {
        match self {
            Measure::Counter | Measure::Gauge => *into += other,
            Measure::Flag | Measure::Newest => *into = (*into).max(other),
        }
    }
}

/// One counter of a set, as expositions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The struct field's name (`accepted`), also the Graphite gauge's last
    /// component and the status report's key.
    pub name: &'static str,
    /// Counter, gauge or flag.
    pub measure: Measure,
    /// The Prometheus family (`appliance_forward_accepted_total`). Several
    /// fields may share one, told apart by their label; they are declared
    /// next to each other.
    pub family: &'static str,
    /// The label that tells this field apart within its family
    /// (`reason="over_limit"`), if any.
    pub label: Option<(&'static str, &'static str)>,
    /// One line of help.
    pub help: &'static str,
}

/// Values that fold another shard's into themselves.
pub trait Merge {
    /// Adds `other` (another shard's, or a sum of shards') into `self`.
    fn merge_from(&mut self, other: &Self);
}

impl Merge for u64 {
    fn merge_from(&mut self, other: &u64) {
        *self += other;
    }
}

impl<const N: usize> Merge for [u64; N] {
    fn merge_from(&mut self, other: &[u64; N]) {
        for (a, b) in self.iter_mut().zip(other) {
            *a += b;
        }
    }
}

/// Element by element; a longer `other` (a shard that has seen more
/// entries, as after a reload added an upstream) extends `self`.
impl<T: Merge + Default + Clone> Merge for Vec<T> {
    fn merge_from(&mut self, other: &Vec<T>) {
        if self.len() < other.len() {
            self.resize(other.len(), T::default());
        }
        for (a, b) in self.iter_mut().zip(other) {
            a.merge_from(b);
        }
    }
}

/// Declares a counter set: a struct of `u64` counters, each with its
/// measure, Prometheus family (and optional `label = "value"`) and help,
/// then optionally other fields that merge themselves ([`Merge`]: nested
/// sets, per-entry vectors, histograms).
///
/// The struct gets `FIELDS` (the counters in declaration order),
/// `values()` (theirs, in that order) and `merge` (the counters by their
/// [`Measure`], the other fields by [`Merge`]). See the
/// [module](crate::counters) for an example.
#[macro_export]
macro_rules! counter_set {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])*
               $field:ident : $measure:ident ( $family:literal $(, $lk:ident = $lv:literal)? ) $help:literal , )*
        }
        $( with {
            $( $(#[doc = $xdoc:literal])* $xfield:ident : $xty:ty , )*
        } )?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        $vis struct $name {
            $( #[doc = $help] $(#[doc = $doc])* pub $field: u64, )*
            $($( $(#[doc = $xdoc])* pub $xfield: $xty, )*)?
        }

        impl $name {
            /// Every counter, in declaration order.
            pub const FIELDS: &'static [$crate::counters::Field] = &[$(
                $crate::counters::Field {
                    name: stringify!($field),
                    measure: $crate::counters::Measure::$measure,
                    family: $family,
                    label: $crate::counter_set!(@label $($lk = $lv)?),
                    help: $help,
                },
            )*];

            /// The counters' values, in [`Self::FIELDS`] order.
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$field, )*]
            }

            /// Adds another shard's counters into these.
            pub fn merge(&mut self, other: &$name) {
                $( $crate::counters::Measure::$measure.merge(&mut self.$field, other.$field); )*
                $($( $crate::counters::Merge::merge_from(&mut self.$xfield, &other.$xfield); )*)?
            }
        }

        impl $crate::counters::Merge for $name {
            fn merge_from(&mut self, other: &$name) {
                self.merge(other);
            }
        }
    };
    (@label) => { None };
    (@label $lk:ident = $lv:literal) => { Some((stringify!($lk), $lv)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::counter_set! {
        /// A set with every kind of field.
        pub struct Inner {
            hits: Counter("t_hits_total") "Hits.",
            up: Flag("t_up") "Up.",
        }
    }

    crate::counter_set! {
        /// A set with nested sets, vectors and arrays.
        pub struct Outer {
            ok: Counter("t_results_total", result = "ok") "Results.",
            failed: Counter("t_results_total", result = "failed") "Results.",
            level: Gauge("t_level") "Level.",
        }
        with {
            /// Nested.
            inner: Inner,
            /// Per entry.
            entries: Vec<Inner>,
            /// A histogram.
            buckets: [u64; 3],
        }
    }

    #[test]
    fn the_declaration_yields_fields_values_and_merge() {
        assert_eq!(Outer::FIELDS.iter().map(|f| f.name).collect::<Vec<_>>(), ["ok", "failed", "level"]);
        assert_eq!(Outer::FIELDS[1].family, "t_results_total");
        assert_eq!(Outer::FIELDS[1].label, Some(("result", "failed")));
        assert_eq!(Outer::FIELDS[2].label, None);
        assert_eq!(Inner::FIELDS[1].measure, Measure::Flag);

        let mut a = Outer {
            ok: 1,
            level: 2,
            inner: Inner { hits: 1, up: 1 },
            entries: vec![Inner { hits: 1, up: 0 }],
            buckets: [1, 0, 0],
            ..Default::default()
        };
        let b = Outer {
            failed: 4,
            level: 3,
            inner: Inner { hits: 2, up: 1 },
            entries: vec![Inner { hits: 5, up: 1 }, Inner { hits: 7, up: 0 }],
            buckets: [0, 2, 1],
            ..Default::default()
        };
        a.merge(&b);
        assert_eq!(a.values(), [1, 4, 5]);
        assert_eq!(a.inner.values(), [3, 1], "a flag is 1 when any shard's is");
        assert_eq!(a.entries, [Inner { hits: 6, up: 1 }, Inner { hits: 7, up: 0 }]);
        assert_eq!(a.buckets, [1, 2, 1]);
    }

    #[test]
    fn measures_merge_as_documented() {
        let mut v = 1;
        Measure::Counter.merge(&mut v, 2);
        assert_eq!(v, 3);
        Measure::Gauge.merge(&mut v, 2);
        assert_eq!(v, 5);
        let mut flag = 0;
        Measure::Flag.merge(&mut flag, 1);
        Measure::Flag.merge(&mut flag, 0);
        assert_eq!(flag, 1);
        let mut last = 1_700_000_010;
        Measure::Newest.merge(&mut last, 1_700_000_000);
        assert_eq!(last, 1_700_000_010);
    }
}

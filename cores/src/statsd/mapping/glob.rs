//! Glob mappings as statsd_exporter's FSM (`pkg/mapper/fsm/fsm.go`) finds
//! them, quirks included, and its `$n` templates (`fsm/formatter.go`).
//!
//! A glob is a list of dot-separated components, each either `*` (the whole
//! component, whatever it is, empty included) or literal text. A name
//! matches when it has exactly as many components and each literal is
//! equal. The globs form a trie per metric class (a glob with
//! `match_metric_type` is only in that class's trie); the search tries a
//! literal child before the `*` child.
//!
//! With ordering (the default), every path is searched and the matching
//! glob earliest in the file wins. With `glob_disable_ordering: true`, the
//! first match in literal-before-`*` order wins, and the search only goes
//! back to try a `*` after a literal failed when the set of globs needs it
//! (Go's `TestIfNeedBacktracking`, reproduced in [`needs_backtracking`]).
//!
//! Go's trie has two quirks that are kept, since they decide which mapping
//! a name gets:
//! - a mapping is only attached to a trie state the glob *creates*: a glob
//!   that is a prefix of an earlier one (`a.b` after `a.b.c`) or repeats an
//!   earlier one (for the same class) never matches;
//! - a repeated glob still moves the earlier state's rank to its own place
//!   in the file, so the earlier mapping loses against globs in between.

use std::collections::HashMap;

use super::MetricClass;

/// One trie state.
#[derive(Debug, Clone, Default)]
struct State {
    children: HashMap<String, usize>,
    /// Components still to come on the globs through this state.
    min_left: usize,
    max_left: usize,
    /// The mapping (index in the file) a name ending here gets.
    mapping: Option<usize>,
    /// The rank among globs: lower wins when ordering is on.
    rank: usize,
}

/// The glob mappings of a file.
#[derive(Debug, Clone)]
pub(super) struct Trie {
    states: Vec<State>,
    /// The start state of each class.
    roots: [usize; 3],
    ordering_disabled: bool,
    backtracking: bool,
    globs: usize,
    longest: usize,
}

fn class_index(class: MetricClass) -> usize {
    match class {
        MetricClass::Counter => 0,
        MetricClass::Gauge => 1,
        MetricClass::Observer => 2,
    }
}

impl Trie {
    pub(super) fn new(ordering_disabled: bool) -> Trie {
        Trie {
            states: vec![State::default(); 3],
            roots: [0, 1, 2],
            ordering_disabled,
            backtracking: !ordering_disabled,
            globs: 0,
            longest: 0,
        }
    }

    /// Adds the glob of mapping `mapping`; returns its number of `*`.
    pub(super) fn add(&mut self, glob: &str, class: Option<MetricClass>, mapping: usize) -> usize {
        let parts: Vec<&str> = glob.split('.').collect();
        self.longest = self.longest.max(parts.len());
        let roots: Vec<usize> = match class {
            Some(c) => vec![self.roots[class_index(c)]],
            None => self.roots.to_vec(),
        };
        for root in roots {
            let mut at = root;
            for (i, part) in parts.iter().enumerate() {
                let left = parts.len() - i - 1;
                at = match self.states[at].children.get(*part) {
                    Some(&next) => {
                        let s = &mut self.states[next];
                        s.min_left = s.min_left.min(left);
                        s.max_left = s.max_left.max(left);
                        next
                    }
                    None => {
                        let next = self.states.len();
                        let last = left == 0;
                        let mapping = last.then_some(mapping);
                        self.states.push(State {
                            min_left: left,
                            max_left: left,
                            mapping,
                            ..State::default()
                        });
                        self.states[at].children.insert((*part).to_string(), next);
                        next
                    }
                };
            }
            self.states[at].rank = self.globs;
        }
        self.globs += 1;
        parts.iter().filter(|p| **p == "*").count()
    }

    /// Called once all globs are in, with them in file order.
    pub(super) fn finish(&mut self, globs: &[&str]) {
        self.backtracking = !self.ordering_disabled || needs_backtracking(globs);
    }

    /// The mapping `name` gets and the components its `*`s took.
    pub(super) fn find<'n>(&self, name: &'n str, class: MetricClass) -> Option<(usize, Vec<&'n str>)> {
        let fields: Vec<&str> = name.split('.').collect();
        if fields.len() > self.longest {
            return None;
        }
        let mut search = Search { trie: self, caps: vec![""; fields.len()], fields, best: None };
        search.descend(self.roots[class_index(class)], 0, 0);
        let (state, caps) = search.best?;
        Some((self.states[state].mapping?, caps))
    }
}

/// A depth-first walk in Go's order: literal child first, then `*`.
struct Search<'t, 'n> {
    trie: &'t Trie,
    fields: Vec<&'n str>,
    /// Go's capture array: one slot per component, filled by position.
    caps: Vec<&'n str>,
    best: Option<(usize, Vec<&'n str>)>,
}

impl Search<'_, '_> {
    /// From `state`, consume component `i`; `cap` is the next capture slot.
    /// True when the search is over.
    fn descend(&mut self, state: usize, i: usize, cap: usize) -> bool {
        let here = &self.trie.states[state];
        if here.children.is_empty() {
            return false;
        }
        let field = self.fields[i];
        let left = self.fields.len() - i - 1;
        let fits = |s: &usize| {
            let s = &self.trie.states[*s];
            (s.min_left..=s.max_left).contains(&left)
        };
        let literal = here.children.get(field).copied().filter(fits);
        let star = here.children.get("*").copied().filter(fits);
        match (literal, star) {
            (Some(l), star) => {
                if self.arrive(l, i, cap) {
                    return true;
                }
                match star {
                    Some(s) if self.trie.backtracking => self.take(s, i, cap),
                    _ => false,
                }
            }
            (None, Some(s)) => self.take(s, i, cap),
            (None, None) => false,
        }
    }

    /// Through a `*`: component `i` is capture `cap`.
    fn take(&mut self, state: usize, i: usize, cap: usize) -> bool {
        self.caps[cap] = self.fields[i];
        self.arrive(state, i, cap + 1)
    }

    fn arrive(&mut self, state: usize, i: usize, cap: usize) -> bool {
        let here = &self.trie.states[state];
        if here.mapping.is_some() && i + 1 == self.fields.len() {
            if self.trie.ordering_disabled {
                self.best = Some((state, self.caps.clone()));
                return true;
            }
            let better = self.best.as_ref().is_none_or(|(b, _)| self.trie.states[*b].rank > here.rank);
            if better {
                self.best = Some((state, self.caps.clone()));
            }
            return false;
        }
        if i + 1 >= self.fields.len() {
            return false;
        }
        self.descend(state, i + 1, cap)
    }
}

/// Go's `TestIfNeedBacktracking` for unordered globs: a glob with a `*`
/// needs it when another glob of as many components shares the text before
/// one of its `*`s, unless one of the two covers the other.
pub(super) fn needs_backtracking(globs: &[&str]) -> bool {
    let mut by_len: HashMap<usize, Vec<&str>> = HashMap::new();
    for g in globs {
        by_len.entry(g.split('.').count()).or_default().push(g);
    }
    by_len.values().filter(|group| group.len() > 1).any(|group| {
        group.iter().enumerate().any(|(i, r1)| {
            let others = || group.iter().enumerate().filter(move |&(j, _)| j != i).map(|(_, r)| *r);
            let shares_prefix =
                r1.match_indices('*').any(|(at, _)| others().any(|r2| r2.starts_with(&r1[..at])));
            let covers = others().any(|r2| covers(r1, r2) || covers(r2, r1));
            r1.contains('*') && shares_prefix && !covers
        })
    })
}

/// Whether glob `pattern` matches the text `text` whole, `*` taking any run
/// without a `.` (Go compiles the glob to `^...([^.]*)...$` for this).
fn covers(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, ti));
            pi += 1;
        } else if p.get(pi) == Some(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star.filter(|&(_, st)| t[st] != b'.') {
            star = Some((sp, st + 1));
            pi = sp + 1;
            ti = st + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A glob mapping's name or label template, as Go's `TemplateFormatter`
/// builds it: each `$`-reference (`\$\{?[a-zA-Z0-9_$]+\}?`, so `$1_x` is
/// one reference, to nothing) that names a capture 1..=n becomes a slot,
/// any other is removed; Go then fills the slots with `Sprintf`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Template {
    segments: Vec<Segment>,
    /// The capture (0-based) for each valid reference, in the order found.
    args: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Slot,
}

impl Template {
    /// `captures` is the glob's number of `*`.
    pub(super) fn new(template: &str, captures: usize) -> Template {
        let mut segments = vec![Segment::Text(template.to_string())];
        let mut args = Vec::new();
        for (whole, group) in references(template) {
            let valid = group.parse::<usize>().ok().filter(|n| (1..=captures).contains(n));
            // Go replaces every occurrence of the reference's text, one
            // reference after another (so `$1` also eats the front of `$10`).
            segments = segments
                .into_iter()
                .flat_map(|seg| match seg {
                    Segment::Text(t) if valid.is_some() => split_slots(&t, &whole),
                    Segment::Text(t) => vec![Segment::Text(t.replace(&whole, ""))],
                    Segment::Slot => vec![Segment::Slot],
                })
                .collect();
            if let Some(n) = valid {
                args.push(n - 1);
            }
        }
        Template { segments, args }
    }

    /// The template filled from a match's captures. Slots and valid
    /// references can differ in number (see `new`); the extra is shown as
    /// Go's `Sprintf` shows it.
    pub(super) fn format(&self, caps: &[&str]) -> String {
        let arg = |k: usize| caps.get(k).copied().unwrap_or("");
        let mut out = String::new();
        let mut slots = 0;
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Slot => {
                    match self.args.get(slots) {
                        Some(&k) => out.push_str(arg(k)),
                        None => out.push_str("%!s(MISSING)"),
                    }
                    slots += 1;
                }
            }
        }
        if let Some(extra) = self.args.get(slots..).filter(|e| !e.is_empty()) {
            let shown: Vec<String> = extra.iter().map(|&k| format!("string={}", arg(k))).collect();
            out.push_str(&format!("%!(EXTRA {})", shown.join(", ")));
        }
        out
    }
}

/// Splits `text` at each `needle`, a slot in place of each.
fn split_slots(text: &str, needle: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for (k, piece) in text.split(needle).enumerate() {
        if k > 0 {
            out.push(Segment::Slot);
        }
        if !piece.is_empty() {
            out.push(Segment::Text(piece.to_string()));
        }
    }
    out
}

/// Go's `\$\{?([a-zA-Z0-9_\$]+)\}?` over `template`, leftmost and
/// non-overlapping: (whole reference, the part between).
fn references(template: &str) -> Vec<(String, String)> {
    let b = template.as_bytes();
    let body = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let open = usize::from(b.get(i + 1) == Some(&b'{'));
        let start = i + 1 + open;
        let end = start + b[start..].iter().take_while(|&&c| body(c)).count();
        if end == start {
            // With the brace taken there is nothing; without it, `{` is
            // not a body character: no match at this `$`.
            i += 1;
            continue;
        }
        let close = usize::from(b.get(end) == Some(&b'}'));
        out.push((template[i..end + close].to_string(), template[start..end].to_string()));
        i = end + close;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_as_go() {
        let caps = ["a", "b", "c"];
        // (template, number of `*`, result)
        for (tpl, n, want) in [
            ("plain", 2, "plain"),
            ("$1", 2, "a"),
            ("${1}_$2", 2, "a_b"),
            ("$1_foo", 2, ""),
            ("${1}_foo", 2, "a_foo"),
            ("$3", 2, ""),
            ("$0", 2, ""),
            ("$1-$2-$3", 2, "a-b-"),
            ("$1-$2-$3", 3, "a-b-c"),
            ("$1.$1", 2, "a.a"),
            ("$1$2", 2, ""),
            ("${1", 2, "a"),
            ("$1}", 2, "a"),
            ("${x}", 2, ""),
            ("$", 2, "$"),
            ("${", 2, "${"),
            ("$1 $1x", 2, "a %!s(MISSING)x"),
            ("100% $1", 2, "100% a"),
        ] {
            assert_eq!(Template::new(tpl, n).format(&caps), want, "{tpl:?} with {n}");
        }
        let ten: Vec<String> = (1..=10).map(|i| format!("c{i}")).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        assert_eq!(Template::new("$1 $10", 10).format(&ten), "c1 c100");
        assert_eq!(Template::new("${1} ${10}", 10).format(&ten), "c1 c10");
    }

    #[test]
    fn covers_like_the_go_regex() {
        for (p, t, want) in [
            ("a.*", "a.b", true),
            ("a.*", "a.*", true),
            ("a.*.c", "a.b.c", true),
            ("a.*", "a.b.c", false),
            ("*.*", "a.b", true),
            ("a.b", "a.*", false),
            ("a.*", "a.", true),
        ] {
            assert_eq!(covers(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn backtracking_need_as_go() {
        assert!(!needs_backtracking(&["a.b.c"]));
        // One glob needs it: the literal sibling shares the prefix.
        assert!(needs_backtracking(&["backtrack.*.bbb", "backtrack.justatest.aaa"]));
        // Each starred glob covers a sibling: no need.
        assert!(!needs_backtracking(&["noorder.*.*", "noorder.*.bbb", "noorder.ccc.bbb"]));
        assert!(!needs_backtracking(&["x.*", "x.y"]));
        assert!(!needs_backtracking(&["a.*", "b.*.c"]));
    }
}

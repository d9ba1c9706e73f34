//! Run-time changes to a forward's pool (the admin endpoint's upstream
//! API, HAProxy's runtime API is the model): a change makes a new
//! configuration of the service, which is applied on every shard exactly
//! as a reload is (upstreams that stay keep their health, connections and
//! counters). A later SIGHUP re-reads the file, which is the truth again.

use cores::pool::upstream::{AdminState, UpstreamSpec, MAX_WEIGHT};

use super::ForwardConfig;
use crate::services::UpstreamChange;

/// Upstreams a pool may hold when the API adds to it.
pub const MAX_UPSTREAMS: usize = 1024;

impl ForwardConfig {
    /// This configuration with `change` applied, or why it cannot be.
    pub fn changed(&self, change: &UpstreamChange) -> Result<ForwardConfig, String> {
        let mut new = self.clone();
        match change {
            UpstreamChange::Add(spec) => {
                if let Some(u) = self.upstreams.iter().find(|u| u.name == spec.name || u.addr == spec.addr) {
                    return Err(format!("{} is already in the pool (as {})", spec.name, u.name));
                }
                if self.upstreams.len() >= MAX_UPSTREAMS {
                    return Err(format!("the pool holds {MAX_UPSTREAMS} upstreams at most"));
                }
                new.upstreams.push(spec.clone());
                if let Some(sni) = new.sni.as_mut() {
                    // Into the default pool: routes are the file's.
                    sni.pools[0].push(spec.name.clone());
                }
            }
            UpstreamChange::Set { upstream, weight, state } => {
                let u = find(&mut new.upstreams, upstream)?;
                if let Some(w) = *weight {
                    if !(1..=MAX_WEIGHT).contains(&w) {
                        return Err(format!(
                            "weight {w}: must be 1..={MAX_WEIGHT} (drain it to take it out)"
                        ));
                    }
                    u.weight = w;
                }
                if let Some(s) = *state {
                    u.state = s;
                }
            }
            UpstreamChange::Resolved { name, addrs } => {
                let dns = self
                    .names
                    .iter()
                    .find(|n| n.label == *name)
                    .ok_or(format!("no upstream name {name:?}"))?;
                // Another entry's address (a literal, another name) stays
                // that entry's: one upstream per address.
                let others: Vec<_> = self.upstreams.iter().filter(|u| !dns.owns(u)).map(|u| u.addr).collect();
                let mut fresh = dns.specs(addrs);
                fresh.retain(|u| !others.contains(&u.addr));
                if fresh.is_empty() {
                    return Err(format!("{name}: no address of its own in the answer"));
                }
                for u in &mut fresh {
                    // What the operator set through the API survives a new answer.
                    if let Some(old) = self.upstreams.iter().find(|o| o.name == u.name) {
                        (u.weight, u.state) = (old.weight, old.state);
                    }
                }
                let at = new.upstreams.iter().position(|u| dns.owns(u)).unwrap_or(new.upstreams.len());
                new.upstreams.retain(|u| !dns.owns(u));
                let at = at.min(new.upstreams.len());
                new.upstreams.splice(at..at, fresh);
            }
            UpstreamChange::Remove(upstream) => {
                find(&mut new.upstreams, upstream)?;
                new.upstreams.retain(|u| u.name != *upstream);
                if let Some(sni) = new.sni.as_mut() {
                    sni.pools.iter_mut().for_each(|p| p.retain(|e| e != upstream));
                }
                if new.upstreams.is_empty() {
                    return Err(
                        "a forward needs one upstream at least: put the last one in maintenance instead"
                            .into(),
                    );
                }
            }
        }
        Ok(new)
    }
}

fn find<'a>(upstreams: &'a mut [UpstreamSpec], name: &str) -> Result<&'a mut UpstreamSpec, String> {
    let known = upstreams.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
    upstreams
        .iter_mut()
        .find(|u| u.name == name)
        .ok_or_else(|| format!("no upstream {name:?} (the pool: {known:?})"))
}

/// How the status and the API name an upstream's state.
pub(super) fn state_of(spec: &UpstreamSpec) -> &'static str {
    spec.state.as_str()
}

/// Every state, for the metric that shows which one an upstream is in.
pub(super) const STATES: [AdminState; 3] = [AdminState::Ready, AdminState::Drain, AdminState::Maint];

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> ForwardConfig {
        let text = "[[forward]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\n\
                    upstreams = [\"127.0.0.1:9001\", \"127.0.0.1:9002,weight=3\"]\n";
        let cfg = crate::config::FileConfig::parse(text).and_then(|f| f.validate()).expect("config");
        cfg.services[0].as_any().downcast_ref::<ForwardConfig>().expect("forward").clone()
    }

    fn spec(text: &str) -> UpstreamSpec {
        UpstreamSpec::parse(text).expect("spec")
    }

    #[test]
    fn add_set_and_remove() {
        let f = forward();
        let added = f.changed(&UpstreamChange::Add(spec("127.0.0.1:9003,weight=2"))).expect("add");
        assert_eq!(added.upstreams.len(), 3);
        let set = UpstreamChange::Set {
            upstream: "127.0.0.1:9002".into(),
            weight: Some(7),
            state: Some(AdminState::Drain),
        };
        let changed = added.changed(&set).expect("set");
        assert_eq!((changed.upstreams[1].weight, changed.upstreams[1].state), (7, AdminState::Drain));
        let removed = changed.changed(&UpstreamChange::Remove("127.0.0.1:9001".into())).expect("remove");
        let names: Vec<&str> = removed.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:9002", "127.0.0.1:9003"]);
        assert_eq!(f.upstreams.len(), 2, "the running configuration is untouched");
    }

    #[test]
    fn what_cannot_be_done_says_why() {
        let f = forward();
        let dup = f.changed(&UpstreamChange::Add(spec("127.0.0.1:9001,weight=5"))).unwrap_err();
        assert!(dup.contains("already in the pool"), "{dup}");
        let unknown = f.changed(&UpstreamChange::Remove("10.0.0.1:1".into())).unwrap_err();
        assert!(unknown.contains("no upstream") && unknown.contains("127.0.0.1:9001"), "{unknown}");
        let zero = UpstreamChange::Set { upstream: "127.0.0.1:9001".into(), weight: Some(0), state: None };
        assert!(f.changed(&zero).unwrap_err().contains("1..="));
        let one = f.changed(&UpstreamChange::Remove("127.0.0.1:9001".into())).expect("remove");
        let last = one.changed(&UpstreamChange::Remove("127.0.0.1:9002".into())).unwrap_err();
        assert!(last.contains("one upstream at least"), "{last}");
    }

    #[test]
    fn a_new_answer_replaces_the_names_addresses_in_place() {
        let text = "[[forward]]\nlisten = \"127.0.0.1:8080\"\nupstreams = [\"127.0.0.1:80\", \"web.test:80,weight=2\"]\n";
        let resolve =
            |_: &str, _: u16| Ok(vec!["10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip")]);
        let opts: crate::config::ForwardOptions =
            toml::from_str::<crate::config::FileConfig>(text).expect("toml").forward[0].clone();
        let f = opts.validate_with(&crate::config::Source::Flags, &resolve).expect("valid");
        let names = |c: &ForwardConfig| c.upstreams.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&f), ["127.0.0.1:80", "web.test:80/10.0.0.1", "web.test:80/10.0.0.2"]);
        let drained = f
            .changed(&UpstreamChange::Set {
                upstream: "web.test:80/10.0.0.2".into(),
                weight: None,
                state: Some(AdminState::Drain),
            })
            .expect("drain");
        let addrs = ["10.0.0.2", "10.0.0.3", "127.0.0.1"].map(|a| a.parse().expect("ip")).to_vec();
        let again = drained
            .changed(&UpstreamChange::Resolved { name: "web.test:80".into(), addrs })
            .expect("resolved");
        assert_eq!(
            names(&again),
            ["127.0.0.1:80", "web.test:80/10.0.0.2", "web.test:80/10.0.0.3"],
            "not the literal's address"
        );
        assert_eq!((again.upstreams[1].state, again.upstreams[1].weight), (AdminState::Drain, 2), "kept");
        assert_eq!(again.upstreams[2].state, AdminState::Ready);
        let taken = vec!["127.0.0.1".parse().expect("ip")];
        let err = again.changed(&UpstreamChange::Resolved { name: "web.test:80".into(), addrs: taken });
        assert!(err.is_err(), "the literal keeps its address: {err:?}");
    }

    /// With SNI routes, an upstream the API adds joins the default pool
    /// (routes are the file's), and one it removes leaves every pool
    /// (docs/operations.md, "Routing TLS by server name").
    #[test]
    fn api_upstreams_join_the_default_pool() {
        let text = "[[forward]]\nlisten = \"127.0.0.1:443\"\nupstreams = [\"127.0.0.1:1\"]\n\
                    sni_routes = [{ names = [\"a.test\"], upstreams = [\"127.0.0.1:1\", \"127.0.0.1:2\"] }]\n";
        let cfg = crate::config::FileConfig::parse(text).and_then(|f| f.validate()).expect("config");
        let f = cfg.services[0].as_any().downcast_ref::<ForwardConfig>().expect("forward").clone();
        let added = f.changed(&UpstreamChange::Add(spec("127.0.0.1:3"))).expect("add");
        let pools = &added.sni.as_ref().expect("sni").pools;
        assert_eq!(pools[0], ["127.0.0.1:1", "127.0.0.1:3"]);
        assert_eq!(pools[1], ["127.0.0.1:1", "127.0.0.1:2"]);
        let removed = added.changed(&UpstreamChange::Remove("127.0.0.1:1".into())).expect("remove");
        let pools = &removed.sni.as_ref().expect("sni").pools;
        assert!(pools.iter().all(|p| !p.iter().any(|e| e == "127.0.0.1:1")), "{pools:?}");
    }

    /// Upstreams given by name on the command line are kept for
    /// re-resolving too (the DNS thread follows every forward's names).
    #[test]
    fn names_from_flags_are_followed() {
        let opts = crate::config::ForwardOptions {
            upstreams: vec!["localhost:80".into()],
            ..toml::from_str::<crate::config::FileConfig>(
                "[[forward]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"127.0.0.1:1\"]\n",
            )
            .expect("toml")
            .forward[0]
                .clone()
        };
        let f = opts.validate(&crate::config::Source::Flags).expect("localhost resolves");
        assert_eq!(f.names.iter().map(|n| n.label.as_str()).collect::<Vec<_>>(), ["localhost:80"]);
        assert!(f.upstreams.iter().all(|u| u.name.starts_with("localhost:80/")));
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut f = forward();
        f.upstreams = (0..MAX_UPSTREAMS).map(|i| spec(&format!("10.0.{}.{}:80", i / 256, i % 256))).collect();
        let err = f.changed(&UpstreamChange::Add(spec("10.9.9.9:80"))).unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }
}

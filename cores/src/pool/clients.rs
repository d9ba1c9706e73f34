//! Per-client limits: connections open at once and new connections per
//! second for each client address (or address prefix), in one shard's
//! bounded table.
//!
//! A client is its address masked to a prefix (`/32` and `/64` by default:
//! one IPv4 host, one IPv6 subnet, which is what one IPv6 host can spread
//! over). The rate is a token bucket per client: `rate` tokens a second up
//! to `burst`, one per new connection. The table is keyed by outside input,
//! so it is bounded: a client with nothing open and a full bucket carries no
//! state worth keeping and is forgotten when room is needed; when every
//! entry is live, a new client is refused ([`Verdict::TableFull`]), counted
//! by the caller.
//!
//! The table is one shard's. For the limits to hold per client rather than
//! per client and shard, every connection of a client must reach the same
//! shard: the forwarder steers its listening group by client address for
//! that (`netstack::steer::ClientProgram`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// What the limits are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientPolicy {
    /// Connections one client may have open at once (`None`: no cap).
    pub max_conns: Option<u32>,
    /// New connections per second per client (`None`: no rate limit).
    pub rate: Option<f64>,
    /// Tokens a bucket holds: the burst of new connections allowed at once.
    pub burst: u32,
    /// Bits of an IPv4 address that make a client (1-32).
    pub v4_prefix: u8,
    /// Bits of an IPv6 address that make a client (1-128).
    pub v6_prefix: u8,
    /// Clients this table holds at most.
    pub max_clients: usize,
}

/// Whether a new connection may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: call [`ClientTable::release`] when it closes.
    Admit,
    /// The client has `max_conns` open.
    OverConns,
    /// The client's bucket is empty.
    OverRate,
    /// A new client, and every entry of the table is live.
    TableFull,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    active: u32,
    tokens: f64,
    last: Instant,
}

/// One shard's clients; see the module docs.
#[derive(Debug)]
pub struct ClientTable {
    policy: ClientPolicy,
    entries: HashMap<IpAddr, Entry>,
}

impl ClientTable {
    /// An empty table.
    pub fn new(policy: ClientPolicy) -> ClientTable {
        ClientTable { policy, entries: HashMap::new() }
    }

    /// New limits for the clients held (a reload). The prefixes must not
    /// change: the table's keys are masked with them.
    pub fn set_policy(&mut self, policy: ClientPolicy) {
        self.policy =
            ClientPolicy { v4_prefix: self.policy.v4_prefix, v6_prefix: self.policy.v6_prefix, ..policy };
    }

    /// The client `addr` belongs to: the address masked to its prefix
    /// (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn client_of(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.policy.v4_prefix)).into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.client_of(IpAddr::V4(v4)),
                None => IpAddr::V6((u128::from(a) & mask128(self.policy.v6_prefix)).into()),
            },
        }
    }

    /// A new connection from `addr` at `now`.
    pub fn admit(&mut self, addr: IpAddr, now: Instant) -> Verdict {
        let client = self.client_of(addr);
        if !self.entries.contains_key(&client) && self.entries.len() >= self.policy.max_clients {
            self.forget_idle(now);
            if self.entries.len() >= self.policy.max_clients {
                return Verdict::TableFull;
            }
        }
        let policy = self.policy;
        let burst = f64::from(policy.burst.max(1));
        let e = self.entries.entry(client).or_insert(Entry { active: 0, tokens: burst, last: now });
        refill(e, &policy, now);
        if policy.max_conns.is_some_and(|max| e.active >= max) {
            return Verdict::OverConns;
        }
        if policy.rate.is_some() {
            if e.tokens < 1.0 {
                return Verdict::OverRate;
            }
            e.tokens -= 1.0;
        }
        e.active += 1;
        Verdict::Admit
    }

    /// An admitted connection from `addr` closed.
    pub fn release(&mut self, addr: IpAddr) {
        let client = self.client_of(addr);
        if let Some(e) = self.entries.get_mut(&client) {
            e.active = e.active.saturating_sub(1);
        }
    }

    /// Clients held now.
    pub fn clients(&self) -> usize {
        self.entries.len()
    }

    /// Drops every entry with nothing open and a full bucket: forgetting
    /// it changes no future verdict.
    fn forget_idle(&mut self, now: Instant) {
        let policy = self.policy;
        let burst = f64::from(policy.burst.max(1));
        self.entries.retain(|_, e| {
            refill(e, &policy, now);
            e.active > 0 || e.tokens < burst
        });
    }
}

fn refill(e: &mut Entry, policy: &ClientPolicy, now: Instant) {
    if let Some(rate) = policy.rate {
        let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
        e.tokens = (e.tokens + elapsed * rate).min(f64::from(policy.burst.max(1)));
    }
    e.last = now;
}

fn mask32(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(bits.clamp(1, 32))).unwrap_or(0)
}

fn mask128(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits.clamp(1, 128))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> ClientPolicy {
        ClientPolicy { max_conns: None, rate: None, burst: 1, v4_prefix: 32, v6_prefix: 64, max_clients: 100 }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn a_client_is_its_address_masked_to_the_prefix() {
        let t = ClientTable::new(ClientPolicy { v4_prefix: 24, ..policy() });
        assert_eq!(t.client_of(ip("10.1.2.3")), ip("10.1.2.0"));
        assert_eq!(t.client_of(ip("::ffff:10.1.2.3")), ip("10.1.2.0"), "mapped IPv4 is IPv4");
        assert_eq!(t.client_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"), "/64");
        let t = ClientTable::new(ClientPolicy { v4_prefix: 32, v6_prefix: 128, ..policy() });
        assert_eq!(t.client_of(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(t.client_of(ip("2001:db8::6")), ip("2001:db8::6"));
    }

    #[test]
    fn connections_are_capped_per_client_and_released() {
        let mut t = ClientTable::new(ClientPolicy { max_conns: Some(2), ..policy() });
        let now = Instant::now();
        assert_eq!(t.admit(ip("10.0.0.1"), now), Verdict::Admit);
        assert_eq!(t.admit(ip("10.0.0.1"), now), Verdict::Admit);
        assert_eq!(t.admit(ip("10.0.0.1"), now), Verdict::OverConns);
        assert_eq!(t.admit(ip("10.0.0.2"), now), Verdict::Admit, "another client");
        t.release(ip("10.0.0.1"));
        assert_eq!(t.admit(ip("10.0.0.1"), now), Verdict::Admit);
    }

    #[test]
    fn the_rate_is_a_token_bucket() {
        let mut t = ClientTable::new(ClientPolicy { rate: Some(10.0), burst: 3, ..policy() });
        let now = Instant::now();
        let a = ip("10.0.0.1");
        let admitted = (0..10).filter(|_| t.admit(a, now) == Verdict::Admit).count();
        assert_eq!(admitted, 3, "the burst");
        assert_eq!(t.admit(a, now + Duration::from_millis(50)), Verdict::OverRate, "half a token");
        assert_eq!(t.admit(a, now + Duration::from_millis(100)), Verdict::Admit, "one token a tenth");
        let later = now + Duration::from_secs(60);
        let admitted = (0..10).filter(|_| t.admit(a, later) == Verdict::Admit).count();
        assert_eq!(admitted, 3, "never more than the burst");
    }

    #[test]
    fn the_table_is_bounded_and_forgets_only_idle_clients() {
        let mut t = ClientTable::new(ClientPolicy {
            max_clients: 2,
            rate: Some(1.0),
            burst: 1,
            max_conns: Some(5),
            ..policy()
        });
        let now = Instant::now();
        assert_eq!(t.admit(ip("10.0.0.1"), now), Verdict::Admit);
        assert_eq!(t.admit(ip("10.0.0.2"), now), Verdict::Admit);
        assert_eq!(t.admit(ip("10.0.0.3"), now), Verdict::TableFull, "both live");
        t.release(ip("10.0.0.1"));
        assert_eq!(
            t.admit(ip("10.0.0.3"), now),
            Verdict::TableFull,
            "released, but its bucket is not full yet"
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(t.admit(ip("10.0.0.3"), later), Verdict::Admit, "10.0.0.1 forgotten");
        assert_eq!(t.clients(), 2);
    }
}

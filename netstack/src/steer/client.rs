//! The classic BPF program behind steering by client: every connection
//! and datagram from one client address (or prefix) reaches the same
//! socket of the group, so limits kept per shard hold per client.
//!
//! The program reads the source address from the network header
//! (`SKF_NET_OFF`; the kernel has moved past the transport header when it
//! runs a reuseport program), masks it to the client prefix, mixes it and
//! returns it modulo the group's size:
//!
//! ```text
//!     ldb [net+0]; rsh #4; jeq #6, 0, v4
//!     ld [net+8]; and #m0; tax          ; IPv6: the four words of the
//!     ld [net+12]; and #m1; xor x; tax  ; source, masked, folded by xor
//!     ld [net+16]; and #m2; xor x; tax
//!     ld [net+20]; and #m3; xor x; ja mix
//! v4: ld [net+12]; and #m
//! mix: mul #0x9e3779b1; rsh #15; mod #n; ret a
//! ```
//!
//! [`ClientProgram::select`] computes the same index in Rust, for tests
//! and for whoever must know where a client lands.

use std::net::IpAddr;

use super::cbpf::{Insn, ProgramError};

/// `SKF_NET_OFF` (-0x100000) as the unsigned `k` of a load: offsets from
/// the network header.
const NET: u32 = (-0x10_0000i32) as u32;
const MIX: u32 = 0x9e37_79b1;

/// A reuseport program that sends each client (address masked to a
/// prefix) to one socket of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProgram {
    insns: Vec<Insn>,
    sockets: u32,
    v4: u32,
    v6: [u32; 4],
}

impl ClientProgram {
    /// The program for a group of `sockets` sockets, a client being the
    /// first `v4_prefix` bits of an IPv4 source and `v6_prefix` of an IPv6
    /// one.
    pub fn new(sockets: usize, v4_prefix: u8, v6_prefix: u8) -> Result<ClientProgram, ProgramError> {
        let n = match u32::try_from(sockets) {
            Ok(0) => return Err(ProgramError::Empty),
            Ok(n) => n,
            Err(_) => return Err(ProgramError::TooMany(sockets)),
        };
        let v4 = word_mask(v4_prefix.clamp(1, 32), 0);
        let v6 = [0, 1, 2, 3].map(|w| word_mask(v6_prefix.clamp(1, 128), w));
        let mut six = Vec::new();
        for (w, m) in v6.iter().enumerate() {
            six.push(Insn::ld_w(NET + 8 + 4 * w as u32));
            six.push(Insn::and(*m));
            if w > 0 {
                six.push(Insn::XOR_X);
            }
            if w < 3 {
                six.push(Insn::TAX);
            }
        }
        // Over the IPv4 branch's two instructions to the mix.
        six.push(Insn::ja(2));
        // 15 instructions: the 8-bit jump offset holds them.
        let skip_six = six.len() as u8;
        let mut insns = vec![Insn::ld_b(NET), Insn::rsh(4), Insn::jeq(6, 0, skip_six)];
        insns.extend(six);
        insns.extend([Insn::ld_w(NET + 12), Insn::and(v4)]);
        insns.extend([Insn::mul(MIX), Insn::rsh(15), Insn::modulo(n), Insn::RET_A]);
        Ok(ClientProgram { insns, sockets: n, v4, v6 })
    }

    /// The instructions, as handed to the kernel.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The socket a client at `addr` lands on (what the program computes).
    pub fn select(&self, addr: IpAddr) -> u32 {
        let a = match addr {
            IpAddr::V4(a) => u32::from(a) & self.v4,
            IpAddr::V6(a) => {
                let o = a.octets();
                let word =
                    |w: usize| u32::from_be_bytes([o[4 * w], o[4 * w + 1], o[4 * w + 2], o[4 * w + 3]]);
                (0..4).fold(0, |acc, w| acc ^ (word(w) & self.v6[w]))
            }
        };
        (a.wrapping_mul(MIX) >> 15) % self.sockets
    }
}

/// The mask of word `w` (0-3) of an address whose first `bits` bits count.
fn word_mask(bits: u8, w: u32) -> u32 {
    let bits_here = u32::from(bits).saturating_sub(32 * w).min(32);
    u32::MAX.checked_shl(32 - bits_here).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_the_prefix() {
        assert_eq!(word_mask(32, 0), u32::MAX);
        assert_eq!(word_mask(24, 0), 0xffff_ff00);
        assert_eq!([0, 1, 2, 3].map(|w| word_mask(64, w)), [u32::MAX, u32::MAX, 0, 0]);
        assert_eq!([0, 1, 2, 3].map(|w| word_mask(72, w)), [u32::MAX, u32::MAX, 0xff00_0000, 0]);
    }

    #[test]
    fn one_client_one_socket_and_clients_spread() {
        let p = ClientProgram::new(4, 32, 64).unwrap();
        let first = p.select("10.0.0.1".parse().unwrap());
        assert!(first < 4);
        let v6 = |s: &str| p.select(s.parse().unwrap());
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff"), "one /64, one socket");
        let mut seen = [0u32; 4];
        for i in 0..=255u8 {
            seen[p.select(IpAddr::from([10, 0, 0, i])) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 32), "a /24 spreads over every socket: {seen:?}");
    }

    #[test]
    fn the_program_is_well_formed() {
        let p = ClientProgram::new(3, 32, 64).unwrap();
        let insns = p.instructions();
        // The v4 branch lands on its load, `ja` on the mix.
        let v4 = insns.iter().position(|i| *i == Insn::ld_w(NET + 12)).unwrap();
        let last_v4_load = insns.iter().rposition(|i| *i == Insn::ld_w(NET + 12)).unwrap();
        assert_eq!(3 + usize::from(insns[2].jf), last_v4_load, "jf of the version test");
        assert!(v4 < last_v4_load, "IPv6's second word is read at the same offset first");
        assert_eq!(insns.last(), Some(&Insn::RET_A));
        assert_eq!(ClientProgram::new(0, 32, 64), Err(ProgramError::Empty));
    }
}

//! The classic BPF program behind [`Steering::Cpu`](super::Steering::Cpu).
//!
//! A reuseport CBPF program returns an index into the group's socket array;
//! the kernel uses that socket, or falls back to its 4-tuple hash when the
//! index is out of range (`>=` the number of sockets in the group). The
//! program built here loads the CPU that is processing the packet
//! (`SKF_AD_OFF + SKF_AD_CPU`, an ancillary load that works for any packet)
//! and translates it into the index of the shard pinned to that CPU.
//!
//! Shapes (`n` sockets, `c_i` the CPU of shard `i`):
//!
//! - identity mapping (`c_i == i`), [`Unmapped::Hash`]: `ld cpu; ret a`.
//!   A CPU without a shard returns an index `>= n`, which is the hash fallback.
//! - identity mapping, [`Unmapped::Modulo`]: `ld cpu; mod #n; ret a`.
//! - any other mapping: `ld cpu`, then per shard `jeq #c_i, 0, 1; ret #i`,
//!   then the fallback (`ret #0xffffffff` for hash, `mod #n; ret a` for
//!   modulo). Each compare only ever jumps over its own `ret`, so the 8-bit
//!   jump offsets of classic BPF never limit the number of shards; the
//!   4096-instruction limit does ([`MAX_MAPPED_SHARDS`]).

use std::collections::HashMap;
use std::io;

use thiserror::Error;

// Opcode parts from include/uapi/linux/filter.h and bpf_common.h.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_MOD: u16 = 0x90;
const BPF_MISC: u16 = 0x07;
const BPF_B: u16 = 0x10;
const BPF_MUL: u16 = 0x20;
const BPF_AND: u16 = 0x50;
const BPF_RSH: u16 = 0x70;
const BPF_XOR: u16 = 0xa0;
const BPF_X: u16 = 0x08;
const BPF_JA: u16 = 0x00;
const BPF_TAX: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_A: u16 = 0x10;
/// `SKF_AD_OFF + SKF_AD_CPU` (-0x1000 + 36) as the unsigned `k` of a load.
const SKF_AD_CPU_OFFSET: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32;
/// `BPF_MAXINSNS`: the kernel rejects longer classic programs.
const MAX_INSNS: usize = 4096;

/// The most shards a non-identity mapping can hold: `1 + 2n + 2 <= 4096`.
pub const MAX_MAPPED_SHARDS: usize = (MAX_INSNS - 3) / 2;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if the condition holds.
    pub jt: u8,
    /// Jump offset if it does not.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

impl Insn {
    /// `A = cpu` (the CPU processing the packet).
    pub const LOAD_CPU: Insn = Insn { code: BPF_LD | BPF_W | BPF_ABS, jt: 0, jf: 0, k: SKF_AD_CPU_OFFSET };
    /// `return A`.
    pub const RET_A: Insn = Insn { code: BPF_RET | BPF_A, jt: 0, jf: 0, k: 0 };

    /// `if A == k goto +jt else goto +jf`.
    pub const fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code: BPF_JMP | BPF_JEQ | BPF_K, jt, jf, k }
    }

    /// `return k`.
    pub const fn ret(k: u32) -> Insn {
        Insn { code: BPF_RET | BPF_K, jt: 0, jf: 0, k }
    }

    /// `A %= k` (`k` must not be 0; the kernel rejects that).
    pub const fn modulo(k: u32) -> Insn {
        Insn { code: BPF_ALU | BPF_MOD | BPF_K, jt: 0, jf: 0, k }
    }

    /// `X = A`.
    pub const TAX: Insn = Insn { code: BPF_MISC | BPF_TAX, jt: 0, jf: 0, k: 0 };
    /// `A ^= X`.
    pub const XOR_X: Insn = Insn { code: BPF_ALU | BPF_XOR | BPF_X, jt: 0, jf: 0, k: 0 };

    /// `A = the byte at k` (absolute, or from an `SKF_*_OFF` base).
    pub const fn ld_b(k: u32) -> Insn {
        Insn { code: BPF_LD | BPF_B | BPF_ABS, jt: 0, jf: 0, k }
    }

    /// `A = the big-endian word at k`.
    pub const fn ld_w(k: u32) -> Insn {
        Insn { code: BPF_LD | BPF_W | BPF_ABS, jt: 0, jf: 0, k }
    }

    /// `A &= k`.
    pub const fn and(k: u32) -> Insn {
        Insn { code: BPF_ALU | BPF_AND | BPF_K, jt: 0, jf: 0, k }
    }

    /// `A *= k` (wrapping, 32 bits).
    pub const fn mul(k: u32) -> Insn {
        Insn { code: BPF_ALU | BPF_MUL | BPF_K, jt: 0, jf: 0, k }
    }

    /// `A >>= k`.
    pub const fn rsh(k: u32) -> Insn {
        Insn { code: BPF_ALU | BPF_RSH | BPF_K, jt: 0, jf: 0, k }
    }

    /// `goto +k`.
    pub const fn ja(k: u32) -> Insn {
        Insn { code: BPF_JMP | BPF_JA, jt: 0, jf: 0, k }
    }
}

/// Where packets processed on a CPU that runs no shard go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unmapped {
    /// The kernel's 4-tuple hash over all sockets (the program returns an
    /// out-of-range index). The default: traffic from a CPU without a shard
    /// (housekeeping or IRQ-only cores) spreads over every shard instead of
    /// piling onto one.
    #[default]
    Hash,
    /// Socket `cpu % n`: deterministic, so every flow first seen on that CPU
    /// lands on the same shard.
    Modulo,
}

/// A CPU-to-shard mapping that cannot become a program.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProgramError {
    /// No shards.
    #[error("a reuseport group needs at least one socket to steer to")]
    Empty,
    /// Two shards on one CPU: the first would take every packet of that CPU
    /// and the second would only get what other CPUs' fallback gives it.
    #[error("CPU {cpu} is mapped to both shard {first} and shard {second}")]
    DuplicateCpu {
        /// The CPU.
        cpu: u32,
        /// The first shard pinned to it.
        first: usize,
        /// The second shard pinned to it.
        second: usize,
    },
    /// More shards than a classic program can compare against.
    #[error("{0} shards exceed the {MAX_MAPPED_SHARDS} a classic BPF lookup can map")]
    TooMany(usize),
}

impl From<ProgramError> for io::Error {
    fn from(e: ProgramError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// A reuseport program that sends each packet to the shard pinned to the
/// CPU processing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuProgram {
    insns: Vec<Insn>,
    sockets: u32,
}

impl CpuProgram {
    /// Builds the program for a group whose socket `i` belongs to the shard
    /// pinned to CPU `shard_cpus[i]`.
    pub fn new(shard_cpus: &[u32], unmapped: Unmapped) -> Result<CpuProgram, ProgramError> {
        let n = check_mapping(shard_cpus)?;
        let identity = shard_cpus.iter().zip(0u32..).all(|(&cpu, i)| cpu == i);
        let mut insns = vec![Insn::LOAD_CPU];
        if !identity {
            for (cpu, index) in shard_cpus.iter().zip(0u32..) {
                insns.push(Insn::jeq(*cpu, 0, 1));
                insns.push(Insn::ret(index));
            }
        }
        match (unmapped, identity) {
            // The CPU itself is the index; one >= n is the hash fallback.
            (Unmapped::Hash, true) => insns.push(Insn::RET_A),
            (Unmapped::Hash, false) => insns.push(Insn::ret(u32::MAX)),
            (Unmapped::Modulo, _) => insns.extend([Insn::modulo(n), Insn::RET_A]),
        }
        Ok(CpuProgram { insns, sockets: n })
    }

    /// The instructions, as handed to the kernel.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The number of sockets the program was built for.
    pub fn sockets(&self) -> u32 {
        self.sockets
    }

    /// What the kernel selects for a packet processed on `cpu`, by running
    /// the program: `Some(index)` of the socket, or `None` for the 4-tuple
    /// hash fallback. For logs, plans and tests.
    pub fn select(&self, cpu: u32) -> Option<u32> {
        let mut a = 0u32;
        let mut pc = 0usize;
        // Programs built here only jump forwards, so this ends within
        // `insns.len()` steps; the bound is a guard, not a requirement.
        for _ in 0..self.insns.len() {
            let insn = self.insns[pc];
            pc += 1;
            match insn.code {
                c if c == Insn::LOAD_CPU.code && insn.k == SKF_AD_CPU_OFFSET => a = cpu,
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == insn.k { insn.jt } else { insn.jf });
                }
                c if c == BPF_ALU | BPF_MOD | BPF_K => a %= insn.k,
                c if c == BPF_RET | BPF_K => return in_range(insn.k, self.sockets),
                c if c == BPF_RET | BPF_A => return in_range(a, self.sockets),
                _ => break,
            }
        }
        None
    }
}

fn in_range(index: u32, sockets: u32) -> Option<u32> {
    (index < sockets).then_some(index)
}

/// Validates the mapping and returns the number of sockets.
fn check_mapping(shard_cpus: &[u32]) -> Result<u32, ProgramError> {
    if shard_cpus.is_empty() {
        return Err(ProgramError::Empty);
    }
    if shard_cpus.len() > MAX_MAPPED_SHARDS {
        return Err(ProgramError::TooMany(shard_cpus.len()));
    }
    let mut seen = HashMap::with_capacity(shard_cpus.len());
    for (second, &cpu) in shard_cpus.iter().enumerate() {
        if let Some(first) = seen.insert(cpu, second) {
            return Err(ProgramError::DuplicateCpu { cpu, first, second });
        }
    }
    // Bounded by MAX_MAPPED_SHARDS above.
    Ok(shard_cpus.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_cpu_is_the_ancillary_offset() {
        // filter.txt: SKF_AD_OFF = -4096, SKF_AD_CPU = 36; `ld [k]` is 0x20.
        assert_eq!(Insn::LOAD_CPU, Insn { code: 0x20, jt: 0, jf: 0, k: 0xffff_f024 });
        assert_eq!(Insn::RET_A.code, 0x16);
        assert_eq!(Insn::ret(3).code, 0x06);
        assert_eq!(Insn::jeq(1, 0, 1).code, 0x15);
        assert_eq!(Insn::modulo(2).code, 0x94);
    }

    #[test]
    fn identity_mapping_returns_the_cpu() {
        let p = CpuProgram::new(&[0, 1, 2], Unmapped::Hash).unwrap();
        assert_eq!(p.instructions(), [Insn::LOAD_CPU, Insn::RET_A]);
        assert_eq!((p.select(2), p.select(3)), (Some(2), None));

        let p = CpuProgram::new(&[0, 1, 2], Unmapped::Modulo).unwrap();
        assert_eq!(p.instructions(), [Insn::LOAD_CPU, Insn::modulo(3), Insn::RET_A]);
        assert_eq!((p.select(1), p.select(4)), (Some(1), Some(1)));
    }

    #[test]
    fn swapped_mapping_is_a_compare_chain() {
        let p = CpuProgram::new(&[1, 0], Unmapped::Hash).unwrap();
        let expected = [
            Insn::LOAD_CPU,
            Insn::jeq(1, 0, 1),
            Insn::ret(0),
            Insn::jeq(0, 0, 1),
            Insn::ret(1),
            Insn::ret(u32::MAX),
        ];
        assert_eq!(p.instructions(), expected);
        assert_eq!([p.select(0), p.select(1), p.select(2)], [Some(1), Some(0), None]);
    }

    #[test]
    fn sparse_mapping_with_modulo_fallback() {
        let p = CpuProgram::new(&[4, 6], Unmapped::Modulo).unwrap();
        let expected = [
            Insn::LOAD_CPU,
            Insn::jeq(4, 0, 1),
            Insn::ret(0),
            Insn::jeq(6, 0, 1),
            Insn::ret(1),
            Insn::modulo(2),
            Insn::RET_A,
        ];
        assert_eq!(p.instructions(), expected);
        assert_eq!(
            [p.select(4), p.select(6), p.select(5), p.select(0)],
            [Some(0), Some(1), Some(1), Some(0)]
        );
    }

    #[test]
    fn single_shard_on_another_cpu() {
        let p = CpuProgram::new(&[1], Unmapped::Hash).unwrap();
        assert_eq!(p.instructions(), [Insn::LOAD_CPU, Insn::jeq(1, 0, 1), Insn::ret(0), Insn::ret(u32::MAX)]);
    }

    #[test]
    fn bad_mappings_are_rejected() {
        assert_eq!(CpuProgram::new(&[], Unmapped::Hash), Err(ProgramError::Empty));
        assert_eq!(
            CpuProgram::new(&[3, 5, 3], Unmapped::Hash),
            Err(ProgramError::DuplicateCpu { cpu: 3, first: 0, second: 2 })
        );
        let too_many: Vec<u32> = (1..=MAX_MAPPED_SHARDS as u32 + 1).collect();
        assert_eq!(CpuProgram::new(&too_many, Unmapped::Hash), Err(ProgramError::TooMany(too_many.len())));
        let most: Vec<u32> = (1..=MAX_MAPPED_SHARDS as u32).collect();
        // The longest shape (modulo fallback) fits; one more shard would not.
        let len = CpuProgram::new(&most, Unmapped::Modulo).unwrap().instructions().len();
        assert!(len <= MAX_INSNS && len + 2 > MAX_INSNS, "{len}");
    }
}

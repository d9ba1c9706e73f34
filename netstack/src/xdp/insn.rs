//! eBPF instructions (`struct bpf_insn`) and their encodings: what the
//! XDP program is assembled from ([`super::program`]) and what the loader
//! hands the kernel ([`super::bpf`]).

/// A register, `r0` to `r10` (`r10` is the read-only frame pointer).
pub type Reg = u8;

// Opcode parts (include/uapi/linux/bpf_common.h and bpf.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const OP_JA: u8 = 0x00;
/// `BPF_PSEUDO_MAP_FD`: the `src` of an `ld_imm64` whose immediate is a
/// map's fd, which the kernel replaces with the map's address.
pub(crate) const PSEUDO_MAP_FD: u8 = 1;

/// Width of a load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B = 0x10,
    /// 2 bytes.
    H = 0x08,
    /// 4 bytes.
    W = 0x00,
    /// 8 bytes.
    DW = 0x18,
}

/// An arithmetic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    /// `dst += src`.
    Add = 0x00,
    /// `dst -= src`.
    Sub = 0x10,
    /// `dst |= src`.
    Or = 0x40,
    /// `dst &= src`.
    And = 0x50,
    /// `dst <<= src`.
    Lsh = 0x60,
    /// `dst >>= src` (logical).
    Rsh = 0x70,
    /// `dst = src`.
    Mov = 0xb0,
}

/// A jump condition (unsigned unless noted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jmp {
    /// `==`.
    Eq = 0x10,
    /// `>`.
    Gt = 0x20,
    /// `>=`.
    Ge = 0x30,
    /// `!=`.
    Ne = 0x50,
    /// `<`.
    Lt = 0xa0,
    /// `<=`.
    Le = 0xb0,
}

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and
/// source registers in one byte (4 bits each), a signed offset and a
/// signed immediate. `repr(C)` so a slice of them is what `BPF_PROG_LOAD`
/// reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        // C bit-fields fill from the low bits on little-endian targets and
        // from the high bits on big-endian ones; `dst_reg` comes first.
        let regs =
            if cfg!(target_endian = "little") { (src << 4) | (dst & 0xf) } else { (dst << 4) | (src & 0xf) };
        Insn { code, regs, off, imm }
    }

    /// `dst op= imm` on 64 bits (the immediate is sign-extended).
    pub const fn alu64_imm(op: Alu, dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | op as u8 | SRC_K, dst, 0, 0, imm)
    }

    /// `dst op= src` on 64 bits.
    pub const fn alu64_reg(op: Alu, dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | op as u8 | SRC_X, dst, src, 0, 0)
    }

    /// `dst = imm` (sign-extended to 64 bits).
    pub const fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src`.
    pub const fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu64_reg(Alu::Mov, dst, src)
    }

    /// `dst = *(size *)(src + off)`, zero-extended.
    pub const fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub const fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(CLASS_STX | MODE_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub const fn st(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::new(CLASS_ST | MODE_MEM | size as u8, dst, 0, off, imm)
    }

    /// `if dst op imm goto +off` (64-bit compare, `imm` sign-extended).
    pub const fn jmp_imm(op: Jmp, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP | op as u8 | SRC_K, dst, 0, off, imm)
    }

    /// `if dst op src goto +off` (64-bit compare).
    pub const fn jmp_reg(op: Jmp, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_JMP | op as u8 | SRC_X, dst, src, off, 0)
    }

    /// `if (u32)dst op (u32)imm goto +off` (compares the low 32 bits).
    pub const fn jmp32_imm(op: Jmp, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP32 | op as u8 | SRC_K, dst, 0, off, imm)
    }

    /// `goto +off`.
    pub const fn ja(off: i16) -> Insn {
        Insn::new(CLASS_JMP | OP_JA, 0, 0, off, 0)
    }

    /// `r0 = helper(r1, ..., r5)`; clobbers `r1`-`r5`.
    pub const fn call(helper: i32) -> Insn {
        Insn::new(CLASS_JMP | OP_CALL, 0, 0, 0, helper)
    }

    /// `return r0`.
    pub const fn exit() -> Insn {
        Insn::new(CLASS_JMP | OP_EXIT, 0, 0, 0, 0)
    }

    /// `dst = &map` for the map whose descriptor is `fd`: a two-slot
    /// `ld_imm64` the kernel rewrites with the map's address at load.
    pub const fn ld_map_fd(dst: Reg, fd: i32) -> [Insn; 2] {
        let first = Insn::new(CLASS_LD | MODE_IMM | Size::DW as u8, dst, PSEUDO_MAP_FD, 0, fd);
        [first, Insn::new(0, 0, 0, 0, 0)]
    }

    /// The opcode.
    pub const fn code(&self) -> u8 {
        self.code
    }

    /// The destination register.
    pub const fn dst(&self) -> Reg {
        if cfg!(target_endian = "little") {
            self.regs & 0xf
        } else {
            self.regs >> 4
        }
    }

    /// The source register.
    pub const fn src(&self) -> Reg {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0xf
        }
    }

    /// The same instruction with jump offset `off` (a jump whose target
    /// became known after it was emitted).
    pub(crate) const fn with_off(mut self, off: i16) -> Insn {
        self.off = off;
        self
    }

    /// The offset (jumps: relative to the next instruction).
    pub const fn off(&self) -> i16 {
        self.off
    }

    /// The immediate.
    pub const fn imm(&self) -> i32 {
        self.imm
    }

    /// The 8 bytes the kernel reads.
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[0] = self.code;
        out[1] = self.regs;
        out[2..4].copy_from_slice(&self.off.to_ne_bytes());
        out[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        out
    }

    /// Whether this is a jump with an offset (not `call` or `exit`).
    pub const fn is_jump(&self) -> bool {
        let class = self.code & 0x07;
        let op = self.code & 0xf0;
        (class == CLASS_JMP || class == CLASS_JMP32) && op != OP_CALL && op != OP_EXIT
    }

    /// Whether this is the first slot of a two-slot `ld_imm64`.
    pub const fn is_wide(&self) -> bool {
        self.code == CLASS_LD | MODE_IMM | Size::DW as u8
    }
}

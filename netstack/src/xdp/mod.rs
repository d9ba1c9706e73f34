//! AF_XDP: datagrams straight from a NIC queue's receive ring, past the
//! kernel's socket path.
//!
//! Three parts, each usable alone:
//!
//! - [`program`]: the XDP program (classic eBPF, assembled here, loaded
//!   with the raw `bpf()` syscall: no clang, ELF loader or nightly
//!   toolchain) that redirects UDP to the service's port into an `XSKMAP`
//!   slot per receive queue and passes everything else (fragments, other
//!   ports, ARP, ICMP, TCP) to the kernel; attached through a BPF link, so
//!   it is gone when the process exits, however it exits.
//! - [`socket`]: an AF_XDP socket bound to one queue of one interface, with
//!   its UMEM (frames in one mapping) and its fill, completion and RX
//!   rings ([`ring`]).
//! - the datagram backend over them (`crate::backend`), which checks every
//!   frame with the crate's wire views (AF_XDP skips the kernel's checks)
//!   and hands payloads to the service like any other backend.
//!
//! Unsafe code lives in [`bpf`] (the syscall and its attribute layouts) and
//! [`ring`] (memory shared with the kernel).

pub mod bpf;
pub mod insn;
pub mod program;
pub mod ring;
pub mod socket;

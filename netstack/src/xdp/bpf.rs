//! The `bpf()` syscall: maps, program loading and links, written against
//! the kernel's ABI (`include/uapi/linux/bpf.h`) rather than through a
//! loader library, because the one program this crate loads is assembled
//! in Rust ([`super::program`]) and needs only five commands.
//!
//! Every command takes a pointer to a `union bpf_attr` and its size. The
//! kernel accepts any size: it zero-extends a shorter block, and a longer
//! one is fine as long as the bytes it does not know are zero. So each
//! command here has its own `#[repr(C)]` struct laid out like its member
//! of the union, padded with zeroes to `ATTR_SIZE` bytes (more than the
//! union is on current kernels), and built from all zeroes so fields we do
//! not set (BTF, tokens, signatures, ...) are "unused" to the kernel.
//!
//! Errors are `io::Error`s whose message names the likely fix (missing
//! capabilities, an interface without native XDP, a program already
//! attached), since the raw errno of a `bpf()` call rarely says which of
//! its many causes applies.
//!
//! Descriptors the kernel returns here are always close-on-exec, so a
//! process spawned while a link is held does not keep the program
//! attached after this one exits.
#![allow(unsafe_code)]

use std::ffi::{c_long, CString};
use std::fmt::Display;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use super::insn::Insn;

// Commands (enum bpf_cmd).
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_LINK_CREATE: u32 = 28;

// Map types (enum bpf_map_type).
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;

/// `BPF_PROG_TYPE_XDP` (enum bpf_prog_type).
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` (enum bpf_attach_type): the expected attach type at load and
/// the attach type of the link.
const BPF_XDP: u32 = 37;

/// `XDP_FLAGS_SKB_MODE` (include/uapi/linux/if_link.h): generic XDP, run
/// on the socket buffer after the driver built it; works on any interface.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver before it allocates
/// a socket buffer; only drivers that implement it.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `BPF_ANY`: create or replace a map element.
pub const BPF_ANY: u64 = 0;

/// `BPF_OBJ_NAME_LEN`: object names hold 15 bytes and a NUL.
const OBJ_NAME_LEN: usize = 16;
/// Bytes in every attribute block passed to the kernel. The union is 144
/// bytes on 6.1 and grows with new fields (log_true_size, tokens,
/// signatures); 192 covers it with room, and the kernel only insists the
/// part it does not know is zero.
const ATTR_SIZE: usize = 192;
/// The license the program is loaded under; GPL-compatible, as
/// "Dual MIT/GPL" is in the kernel's list, so no helper is refused for it.
const LICENSE: &[u8] = b"Dual MIT/GPL\0";
/// Verifier log for the retry of a rejected load (level 1 is the
/// instruction trace up to the error; our program is short).
const LOG_SIZE: usize = 64 * 1024;
/// `BPF_PROG_LOAD` answers EAGAIN when the verifier was interrupted by a
/// signal; it is worth asking again a few times.
const LOAD_ATTEMPTS: usize = 5;

/// `BPF_MAP_CREATE`'s member of `union bpf_attr`.
#[repr(C, align(8))]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
    zero: [u8; ATTR_SIZE - 44],
}

/// `BPF_MAP_*_ELEM`'s member: `key` and `value` are user pointers.
#[repr(C, align(8))]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
    zero: [u8; ATTR_SIZE - 32],
}

/// `BPF_PROG_LOAD`'s member, up to `expected_attach_type`.
#[repr(C, align(8))]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
    zero: [u8; ATTR_SIZE - 72],
}

/// `BPF_LINK_CREATE`'s member, up to `flags` (`target_fd` is the ifindex
/// for XDP).
#[repr(C, align(8))]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    zero: [u8; ATTR_SIZE - 16],
}

/// `BPF_PROG_TEST_RUN`'s member, up to `batch_size`.
#[repr(C, align(8))]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    zero: [u8; ATTR_SIZE - 76],
}

/// An attribute block: one of the structs above. Each has explicit fields
/// for every byte (no implicit padding the kernel would read as garbage)
/// and is exactly [`ATTR_SIZE`] bytes, which the assertions check.
trait Attr {}
impl Attr for MapCreateAttr {}
impl Attr for ElemAttr {}
impl Attr for ProgLoadAttr {}
impl Attr for LinkCreateAttr {}
impl Attr for TestRunAttr {}

const _: () = {
    assert!(std::mem::size_of::<MapCreateAttr>() == ATTR_SIZE);
    assert!(std::mem::size_of::<ElemAttr>() == ATTR_SIZE);
    assert!(std::mem::size_of::<ProgLoadAttr>() == ATTR_SIZE);
    assert!(std::mem::size_of::<LinkCreateAttr>() == ATTR_SIZE);
    assert!(std::mem::size_of::<TestRunAttr>() == ATTR_SIZE);
    assert!(std::mem::size_of::<Insn>() == 8);
};

/// Runs command `cmd` on `attr`, returning the kernel's non-negative result.
///
/// # Safety
///
/// Every user pointer in `attr` must be valid for what `cmd` does with it:
/// readable for the sizes the kernel reads (keys, values, instructions,
/// NUL-terminated strings) and writable for what it writes (lookup values,
/// the verifier log), for the duration of the call.
unsafe fn sys_bpf<A: Attr>(cmd: u32, attr: &mut A) -> io::Result<c_long> {
    let ptr: *mut A = attr;
    // SAFETY: `ptr` points to an initialised, exclusively borrowed block of ATTR_SIZE bytes (the Attr types' size), which the kernel may read and write back into (e.g. log_true_size); the pointers inside it are valid per this function's contract.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd as c_long, ptr, ATTR_SIZE as c_long) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Wraps the descriptor a successful command returned.
fn owned_fd(rc: c_long) -> io::Result<OwnedFd> {
    let raw = i32::try_from(rc).map_err(|_| io::Error::other(format!("bpf() returned {rc}, not a fd")))?;
    // SAFETY: the kernel just installed `raw` in our table for this object and nothing else knows about it, so this is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `err` with `what` and, where one applies, the fix in front.
fn explain(err: io::Error, what: impl Display) -> io::Error {
    if err.raw_os_error() == Some(libc::EPERM) {
        return io::Error::new(
            err.kind(),
            format!("{what}: needs CAP_BPF and CAP_NET_ADMIN (run as root): {err}"),
        );
    }
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// An object name: at most 15 bytes of `[A-Za-z0-9_.]` (what the kernel
/// accepts), NUL-padded.
fn obj_name(name: &str) -> io::Result<[u8; OBJ_NAME_LEN]> {
    let ok = name.len() < OBJ_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !ok {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad BPF object name {name:?}")));
    }
    let mut out = [0u8; OBJ_NAME_LEN];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// The kinds of map the XDP program uses. Their key and value sizes are
/// fixed here, so [`Map`] can size every buffer it hands the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// `BPF_MAP_TYPE_XSKMAP`: key `u32` (receive queue), value `u32` (an
    /// AF_XDP socket's fd on update; not readable from user space).
    XskMap,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` of `u64`: one counter per possible CPU
    /// per index, so the program counts without atomics.
    PerCpuU64Array,
}

impl MapType {
    fn raw(self) -> u32 {
        match self {
            MapType::XskMap => BPF_MAP_TYPE_XSKMAP,
            MapType::PerCpuU64Array => BPF_MAP_TYPE_PERCPU_ARRAY,
        }
    }

    fn value_size(self) -> u32 {
        match self {
            MapType::XskMap => 4,
            MapType::PerCpuU64Array => 8,
        }
    }
}

/// A BPF map (closed on drop; a loaded program that uses it keeps its own
/// reference).
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    kind: MapType,
    max_entries: u32,
}

/// Key size of every map here (`u32` indexes).
const KEY_SIZE: usize = 4;

impl Map {
    /// Creates a map of `kind` with `max_entries` slots, named `name` (as
    /// `bpftool map` shows it).
    pub fn create(kind: MapType, name: &str, max_entries: u32) -> io::Result<Map> {
        let mut attr = MapCreateAttr {
            map_type: kind.raw(),
            key_size: KEY_SIZE as u32,
            value_size: kind.value_size(),
            max_entries,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name: obj_name(name)?,
            zero: [0; ATTR_SIZE - 44],
        };
        // SAFETY: BPF_MAP_CREATE reads no user pointers; the name is inline.
        let rc = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) };
        let rc = rc.map_err(|e| explain(e, format_args!("creating BPF map {name} ({kind:?})")))?;
        Ok(Map { fd: owned_fd(rc)?, kind, max_entries })
    }

    /// The map's descriptor (for the program's `ld_imm64` map references).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The number of slots.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Bytes of one value as user space reads and writes it: the value
    /// size, or for a per-CPU map one 8-byte-aligned value per possible CPU.
    pub fn value_len(&self) -> io::Result<usize> {
        let size = self.kind.value_size() as usize;
        match self.kind {
            MapType::PerCpuU64Array => Ok(size.next_multiple_of(8) * possible_cpus()?),
            MapType::XskMap => Ok(size),
        }
    }

    /// Sets slot `key` to `value` (`value.len()` must be [`Map::value_len`]).
    pub fn update(&self, key: u32, value: &[u8], flags: u64) -> io::Result<()> {
        self.check_value(value.len())?;
        let key = key.to_ne_bytes();
        let mut attr = self.elem_attr(&key, value.as_ptr() as u64, flags);
        // SAFETY: `key` holds the map's 4-byte key and `value` the value_len() bytes the kernel reads for this map; both outlive the call.
        let rc = unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) };
        rc.map(drop).map_err(|e| explain(e, self.slot("updating", &key)))
    }

    /// The value in slot `key` ([`Map::value_len`] bytes), `None` if empty.
    pub fn lookup(&self, key: u32) -> io::Result<Option<Vec<u8>>> {
        let mut value = vec![0u8; self.value_len()?];
        let key = key.to_ne_bytes();
        let mut attr = self.elem_attr(&key, value.as_mut_ptr() as u64, 0);
        // SAFETY: `key` holds the 4-byte key; `value` is writable for value_len() bytes, the most the kernel writes for this map type (per-CPU maps: one aligned value per possible CPU).
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(explain(e, self.slot("reading", &key))),
        }
    }

    /// Empties slot `key`; `Ok(false)` if it was empty (for maps that report it).
    pub fn delete(&self, key: u32) -> io::Result<bool> {
        let key = key.to_ne_bytes();
        let mut attr = self.elem_attr(&key, 0, 0);
        // SAFETY: `key` holds the 4-byte key; delete reads no value.
        match unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(explain(e, self.slot("clearing", &key))),
        }
    }

    /// Slot `key` of a per-CPU `u64` array, summed over CPUs.
    pub fn sum_per_cpu(&self, key: u32) -> io::Result<u64> {
        if self.kind != MapType::PerCpuU64Array {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a per-CPU u64 array"));
        }
        let Some(bytes) = self.lookup(key)? else { return Ok(0) };
        let per_cpu = bytes.chunks_exact(8).map(|c| {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            u64::from_ne_bytes(word)
        });
        Ok(per_cpu.fold(0u64, u64::wrapping_add))
    }

    fn check_value(&self, len: usize) -> io::Result<()> {
        let want = self.value_len()?;
        if len == want {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} map values are {want} bytes, not {len}", self.kind),
            ))
        }
    }

    /// What an element command was doing, for its error.
    fn slot(&self, doing: &str, key: &[u8; KEY_SIZE]) -> String {
        format!("{doing} slot {} of the {:?} map", u32::from_ne_bytes(*key), self.kind)
    }

    fn elem_attr(&self, key: &[u8; KEY_SIZE], value: u64, flags: u64) -> ElemAttr {
        ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key.as_ptr() as u64,
            value,
            flags,
            zero: [0; ATTR_SIZE - 32],
        }
    }
}

/// The number of per-CPU slots the kernel copies for a per-CPU map: one
/// per *possible* CPU (not online), sized here as the highest CPU number in
/// `/sys/devices/system/cpu/possible` plus one (never fewer than the
/// kernel's count of possible CPUs, so lookups cannot overrun).
pub fn possible_cpus() -> io::Result<usize> {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if let Some(&n) = CPUS.get() {
        return Ok(n);
    }
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(PATH).map_err(|e| io::Error::new(e.kind(), format!("{PATH}: {e}")))?;
    let n = parse_cpu_list(&text).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{PATH}: cannot parse {text:?}"))
    })?;
    Ok(*CPUS.get_or_init(|| n))
}

/// The highest CPU of a kernel CPU list ("0-3,5,7-8") plus one.
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut top = None;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next()?;
        let cpu: usize = last.trim().parse().ok()?;
        top = top.max(Some(cpu + 1));
    }
    top
}

/// Loads `insns` as an XDP program named `name`. A rejected program is
/// loaded once more with the verifier's log, whose text ends the error.
pub fn load_xdp_program(insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    let what = format!("loading XDP program {name} ({} instructions)", insns.len());
    let err = match prog_load(insns, name, None) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(explain(e, what)),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    match prog_load(insns, name, Some(&mut log)) {
        // Loaded with the log on (a transient failure the first time).
        Ok(fd) => Ok(fd),
        Err(_) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(err.kind(), format!("{what}: {err}; verifier log:\n{}", text.trim_end())))
        }
    }
}

/// One `BPF_PROG_LOAD`, retried while the verifier reports EAGAIN.
fn prog_load(insns: &[Insn], name: &str, log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: obj_name(name)?,
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
        zero: [0; ATTR_SIZE - 72],
    };
    let mut attempts = LOAD_ATTEMPTS;
    loop {
        // SAFETY: `insns` points to insn_cnt 8-byte `struct bpf_insn`s (Insn is repr(C) with that layout), `license` to a NUL-terminated string, and `log_buf` (if set) to log_size writable bytes; all are borrowed for the whole function.
        match unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) } {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && attempts > 1 => attempts -= 1,
            rc => return owned_fd(rc?),
        }
    }
}

/// Runs the XDP program `prog` once on the frame `data` in the kernel
/// (`BPF_PROG_TEST_RUN`, no interface involved) and returns its action.
/// Maps are the real ones: counters count, and a redirect is only
/// reported (`XDP_REDIRECT`), not carried out.
pub fn test_run_xdp(prog: BorrowedFd<'_>, data: &[u8]) -> io::Result<u32> {
    let data_size_in = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        retval: 0,
        data_size_in,
        data_size_out: 0,
        data_in: data.as_ptr() as u64,
        data_out: 0,
        repeat: 1,
        duration: 0,
        ctx_size_in: 0,
        ctx_size_out: 0,
        ctx_in: 0,
        ctx_out: 0,
        flags: 0,
        cpu: 0,
        batch_size: 0,
        zero: [0; ATTR_SIZE - 76],
    };
    // SAFETY: `data` is readable for data_size_in bytes for the call; no output buffer or context is given (null pointers, zero sizes), so the kernel writes only into `attr` (retval, sizes, duration).
    let rc = unsafe { sys_bpf(BPF_PROG_TEST_RUN, &mut attr) };
    rc.map_err(|e| explain(e, "test-running the XDP program"))?;
    Ok(attr.retval)
}

/// Attaches the XDP program `prog` to interface `ifindex` (of the calling
/// thread's network namespace) with a BPF link, in the mode of `flags`
/// ([`XDP_FLAGS_SKB_MODE`] or [`XDP_FLAGS_DRV_MODE`]). Closing the returned
/// descriptor (dropping it, or the process exiting in any way) detaches it.
pub fn link_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
        zero: [0; ATTR_SIZE - 16],
    };
    // SAFETY: BPF_LINK_CREATE for XDP reads no user pointers.
    match unsafe { sys_bpf(BPF_LINK_CREATE, &mut attr) } {
        Ok(rc) => owned_fd(rc),
        Err(e) => Err(link_error(e, ifindex, flags)),
    }
}

/// Why attaching failed, in terms of what to do about it.
fn link_error(err: io::Error, ifindex: u32, flags: u32) -> io::Error {
    let native = flags & XDP_FLAGS_DRV_MODE != 0;
    let mode = if native { "native" } else { "generic" };
    let what = format!("attaching XDP ({mode}) to interface {ifindex}");
    if !interface_exists(ifindex) {
        let msg = format!("{what}: no interface with that index in this thread's network namespace ({err})");
        return io::Error::new(io::ErrorKind::NotFound, msg);
    }
    let hint = match err.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::EINVAL) if native => {
            "the interface has no native XDP (its driver does not support it; try generic mode)"
        }
        Some(libc::EBUSY | libc::EEXIST) => {
            "another XDP program is attached to the interface (in this or the other mode); detach it first"
        }
        Some(libc::ERANGE) => "the interface's MTU is too large for single-buffer XDP; lower it",
        Some(libc::ENOSPC) => {
            "for veth, the receiving end needs at least as many rx queues as its peer has tx queues"
        }
        _ => return explain(err, what),
    };
    io::Error::new(err.kind(), format!("{what}: {hint}: {err}"))
}

/// Whether `ifindex` names an interface in the calling thread's namespace.
fn interface_exists(ifindex: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` is writable for IF_NAMESIZE bytes, the most if_indextoname writes.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    !found.is_null()
}

/// The index of interface `name` in the calling thread's network namespace
/// (`if_nametoindex`, which asks the kernel through a socket, so unlike
/// `/sys/class/net` it follows a thread that joined another namespace).
pub fn if_nametoindex(name: &str) -> io::Result<u32> {
    let invalid =
        || io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not an interface name"));
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE {
        return Err(invalid());
    }
    let c_name = CString::new(name).map_err(|_| invalid())?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index != 0 {
        return Ok(index);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENODEV) {
        let msg = format!("no network interface named {name:?} in this thread's network namespace");
        return Err(io::Error::new(io::ErrorKind::NotFound, msg));
    }
    Err(io::Error::new(err.kind(), format!("looking up interface {name:?}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_give_the_highest_cpu_plus_one() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(9));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn object_names_are_checked() {
        assert_eq!(&obj_name("xsk_map").unwrap()[..8], b"xsk_map\0");
        assert!(obj_name("sixteen_chars_xx").is_err());
        assert!(obj_name("no-dash").is_err());
    }

    #[test]
    fn unknown_interfaces_are_named_in_the_error() {
        let err = if_nametoindex("nope0").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope0"), "{err}");
        assert!(if_nametoindex("").is_err());
        assert!(if_nametoindex("a_name_too_long_for_linux").is_err());
    }
}

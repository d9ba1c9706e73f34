//! Signals, delivered synchronously to one thread.
//!
//! `Signals::block` masks SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGUSR2 in the calling
//! thread before any other thread starts, so every thread inherits the mask
//! and no shard is ever interrupted. One thread then takes them one by one
//! with `sigwait` and turns them into actions (drain, stop now, reload).
#![allow(unsafe_code)]

use std::io;

/// A signal the appliance acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Interrupt,
    /// Polite stop: drain.
    Terminate,
    /// Reload configuration.
    Hangup,
    /// Stop now.
    Quit,
    /// Start a successor (binary upgrade), SIGUSR2.
    User2,
}

/// The blocked signal set; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Signals {
    set: SigSet,
}

#[derive(Clone, Copy)]
struct SigSet(libc::sigset_t);

impl std::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigSet")
    }
}

const HANDLED: [libc::c_int; 5] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR2];

impl Signals {
    /// Blocks the handled signals in this thread (and threads it starts).
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for sig in HANDLED {
            // SAFETY: as above; `sig` is a valid signal number.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
        // SAFETY: `set` is initialised; the old mask is not wanted (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Signals { set: SigSet(set) })
    }

    /// Waits for the next handled signal.
    pub fn wait(&self) -> Signal {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: the set is initialised and blocked in this thread, and `sig` is a valid out-pointer.
            let rc = unsafe { libc::sigwait(&self.set.0, &mut sig) };
            if rc != 0 {
                continue;
            }
            match sig {
                libc::SIGINT => return Signal::Interrupt,
                libc::SIGTERM => return Signal::Terminate,
                libc::SIGHUP => return Signal::Hangup,
                libc::SIGQUIT => return Signal::Quit,
                libc::SIGUSR2 => return Signal::User2,
                _ => continue,
            }
        }
    }
}

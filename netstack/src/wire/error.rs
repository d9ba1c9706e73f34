//! The error shared by the packet-header views (Ethernet, IPv4, IPv6, UDP).
//!
//! Each variant names the layer, so a message read in a log says which
//! header of a frame was wrong, not only how. The PROXY protocol has its own
//! error ([`crate::wire::proxy::ProxyError`]) because it also has to say
//! "incomplete, read more".

use std::fmt;

/// The header a [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet II frame header.
    Ethernet,
    /// IPv4 header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// UDP header.
    Udp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ethernet => "ethernet",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Udp => "udp",
        })
    }
}

/// Why a packet header could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header, or than the length a header field announces.
    #[error("{layer}: truncated: {needed} bytes needed, buffer has {got} (drop the packet)")]
    Truncated {
        /// The header being read.
        layer: Layer,
        /// Bytes the header or its length field requires.
        needed: usize,
        /// Bytes the buffer holds.
        got: usize,
    },
    /// A length field is smaller than the header it must at least cover.
    #[error("{layer}: length field {value} is below the minimum {min} (drop the packet)")]
    BadLength {
        /// The header being read.
        layer: Layer,
        /// The length the field holds, in bytes.
        value: usize,
        /// The smallest valid length, in bytes.
        min: usize,
    },
    /// The IP version nibble is not the version this view reads.
    #[error("{layer}: version field is {got}, expected {expected} (check the ethertype)")]
    BadVersion {
        /// The header being read.
        layer: Layer,
        /// The version found.
        got: u8,
        /// The version this view reads.
        expected: u8,
    },
    /// The checksum stored in the header does not match the bytes it covers.
    #[error("{layer}: checksum mismatch (corrupt packet, or a NIC offload left it unfilled)")]
    Checksum {
        /// The header being read.
        layer: Layer,
    },
    /// A representation is too long for the length field it must be written into.
    #[error("{layer}: {len} bytes do not fit the length field (at most {max})")]
    TooLong {
        /// The header being written.
        layer: Layer,
        /// The length that was asked for.
        len: usize,
        /// The largest length the field can carry.
        max: usize,
    },
}

impl Error {
    /// The header the error is about.
    pub fn layer(&self) -> Layer {
        match *self {
            Self::Truncated { layer, .. }
            | Self::BadLength { layer, .. }
            | Self::BadVersion { layer, .. }
            | Self::Checksum { layer }
            | Self::TooLong { layer, .. } => layer,
        }
    }
}

/// `Ok` when `got >= needed`: the check every `new_checked` and `emit` starts with.
pub(crate) fn need(layer: Layer, needed: usize, got: usize) -> Result<(), Error> {
    if got < needed {
        Err(Error::Truncated { layer, needed, got })
    } else {
        Ok(())
    }
}

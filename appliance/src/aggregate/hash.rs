//! One 64-bit hash for everything that must agree across shards and
//! processes: key ownership, relay choice and set members. FNV-1a over the
//! bytes, then the murmur3 finaliser so every output bit depends on every
//! input bit (HyperLogLog reads the high bits; ownership takes a modulus).
//! Not keyed: statsd input is trusted to the extent that a sender flooding
//! one shard on purpose only slows that shard.

/// The hash of `bytes`.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    fmix64(h)
}

/// Continues `h` with `bytes` (for keys made of several parts).
pub fn hash64_with(h: u64, bytes: &[u8]) -> u64 {
    let mut x = h ^ 0x9e37_79b9_7f4a_7c15;
    for &b in bytes {
        x ^= u64::from(b);
        x = x.wrapping_mul(0x0100_0000_01b3);
    }
    fmix64(x)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Fixed values: hashes must not change between releases, or keys
        // would move between relays.
        assert_eq!(hash64(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_ne!(hash64(b"a"), hash64(b"b"));
        assert_ne!(hash64_with(hash64(b"a"), b"b"), hash64_with(hash64(b"ab"), b""));
        // Low bits balance over 2 and 4 buckets.
        let mut buckets = [0u32; 4];
        for i in 0..4000u32 {
            buckets[(hash64(format!("key.{i}").as_bytes()) % 4) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (850..1150).contains(&b)), "{buckets:?}");
    }
}

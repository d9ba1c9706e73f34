//! One 64-bit hash for everything that must agree across shards and
//! processes: the aggregator's key ownership, relay choice and set
//! members, and Maglev's table and client keys (seeded, with
//! [`hash64_with`]). Eight bytes
//! per step (xor, multiply by an odd constant, rotate; the last word
//! zero-padded), then one more step with the length (so zero padding
//! cannot make two lengths collide), then the murmur3 finaliser so every output bit depends on
//! every input bit (HyperLogLog reads the high bits; ownership takes a
//! modulus). A key is hashed once per line and the table reuses the hash,
//! so this is on the per-line path: word steps cost a quarter of what the
//! byte-at-a-time FNV-1a it replaced did (`cargo bench -p appliance --bench
//! ingest`). Not keyed: statsd input is trusted to the extent that a
//! sender flooding one shard on purpose only slows that shard.

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL: u64 = 0xbf58_476d_1ce4_e5b9;
const WITH: u64 = 0x94d0_49bb_1331_11eb;

/// The hash of `bytes`.
pub fn hash64(bytes: &[u8]) -> u64 {
    fmix64(step(absorb(SEED, bytes), bytes.len() as u64))
}

/// Continues `h` with `bytes` (for keys made of several parts).
pub fn hash64_with(h: u64, bytes: &[u8]) -> u64 {
    fmix64(step(absorb(h ^ WITH, bytes), bytes.len() as u64))
}

fn absorb(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = step(h, u64::from_le_bytes(word));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(word));
    }
    h
}

fn step(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(MUL).rotate_left(31)
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

    /// Literal values, not recomputed from the code under test: hashes
    /// must not change between releases, or keys would move between
    /// shards and relays of a mixed-version tier. (`hash64`, then
    /// `hash64_with(7, ..)`.)
    const PINNED: [(&[u8], (u64, u64)); 6] = [
        (b"", (0xB70D39A67B950FDA, 0x2A7AA6584D8834E1)),
        (b"a", (0x59B71E9A6EBEB2EF, 0xB8506E6F686A6A61)),
        (b"lg.c.42", (0xF8CB50ADD1C00A58, 0x9960BEDB5B221324)),
        (b"12345678", (0x3F2F6369860D9A5A, 0x41337DF1BA0CFABA)),
        (b"abcdefghi", (0x6700DDE0D7BE74A3, 0x9228C00BD4DE7953)),
        (b"api.requests.count,env:prod,host:web-1", (0x5B9B0DC8851F5374, 0x3E26CFEAA7D65A40)),
    ];

    #[test]
    fn stable_and_spread() {
        for (key, (plain, seeded)) in PINNED {
            assert_eq!(hash64(key), plain, "{:?}", String::from_utf8_lossy(key));
            assert_eq!(hash64_with(7, key), seeded, "{:?}", String::from_utf8_lossy(key));
        }
        assert_ne!(hash64(b"a"), hash64(b"b"));
        // Zero padding of the last word does not make keys collide, also
        // where the first bytes differ by the lengths' difference (a
        // length mixed in before the data allowed that).
        for (a, b) in [
            (&b"a"[..], &b"a\0"[..]),
            (b"12345678", b"12345678\0"),
            (b"a", b"b\0"),
            (b"0x", b"1x\0"),
            (b"abcdefghi", b"bbcdefghi\0"),
        ] {
            assert_ne!(hash64(a), hash64(b), "{a:?} {b:?}");
            assert_ne!(hash64_with(7, a), hash64_with(7, b), "{a:?} {b:?}");
        }
        assert_ne!(hash64_with(7, b"abcde"), hash64_with(7, b"abcdf\0"));
        assert_ne!(hash64_with(hash64(b"a"), b"b"), hash64_with(hash64(b"ab"), b""));
        // Low bits balance over 2 and 4 buckets.
        let mut buckets = [0u32; 4];
        for i in 0..4000u32 {
            buckets[(hash64(format!("key.{i}").as_bytes()) % 4) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (850..1150).contains(&b)), "{buckets:?}");
    }
}

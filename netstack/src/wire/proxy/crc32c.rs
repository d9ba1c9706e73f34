//! CRC-32C (Castagnoli), the checksum of the PROXY v2 `CRC32C` TLV
//! (RFC 4960 appendix B). Table-driven, one byte at a time: headers are a
//! few hundred bytes, so a slicing or SIMD version would not pay for itself.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82f6_3b78;

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// A running CRC-32C, so a header can be summed in pieces (the TLV value
/// that holds the checksum counts as zeros).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Self(!0)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

/// The CRC-32C of `bytes` in one go (the codec only needs the running form).
#[cfg(test)]
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(bytes);
    crc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // The standard check input for CRC catalogues.
        assert_eq!(checksum(b"123456789"), 0xe306_9283);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn rfc3720_vectors() {
        // iSCSI (RFC 3720 B.4) uses the same CRC: 32 bytes of zeros, of ones,
        // and an incrementing sequence.
        assert_eq!(checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(checksum(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(checksum(&inc), 0x46dd_794e);
    }

    #[test]
    fn pieces_equal_whole() {
        let data: Vec<u8> = (0u8..=255).cycle().take(1000).collect();
        let mut crc = Crc32c::new();
        crc.update(&data[..333]);
        crc.update(&data[333..]);
        assert_eq!(crc.finish(), checksum(&data));
    }
}

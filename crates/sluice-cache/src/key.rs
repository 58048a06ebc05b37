//! The cache key: a stable 128-bit hash of the full key string.

use std::fmt;

/// A cache key: the 128-bit hash of the full key string (method, URL and whatever else the
/// HTTP layer puts in it), as [`CacheKey::of`] computes it.
///
/// The hash is stable across restarts and Rust versions (the disk tier names its files
/// after it) but it is not collision-resistant against an attacker, so every tier stores
/// the full key string and [`crate::Store`] compares it on each hit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 16]);

const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV_PRIME: u128 = 0x0000000001000000000000000000013b;
const HEX: &[u8; 16] = b"0123456789abcdef";

impl CacheKey {
    /// Hashes a full key string: 128-bit FNV-1a, then a final mix so that every input bit
    /// reaches both halves (FNV alone spreads the last bytes poorly). The result is part of
    /// the disk format: changing it orphans every stored file.
    pub fn of(key: &str) -> Self {
        let mut h = FNV_OFFSET;
        for &b in key.as_bytes() {
            h ^= u128::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        // Each step is invertible given the other half, so no entropy is lost.
        let mut hi = (h >> 64) as u64;
        let mut lo = h as u64;
        lo = fmix64(lo ^ hi.rotate_left(32));
        hi = fmix64(hi ^ lo);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_be_bytes());
        out[8..].copy_from_slice(&lo.to_be_bytes());
        Self(out)
    }

    /// The key as 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 32 lowercase hex digits (the form [`CacheKey::to_hex`] writes).
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }

    /// The low 64 bits, to pick a shard.
    pub(crate) fn low64(self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(b)
    }
}

/// The value of one lowercase hex digit.
pub(crate) fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// MurmurHash3's 64-bit finaliser: every input bit flips each output bit with probability
/// close to one half.
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    k
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable() {
        // Pinned: the disk tier names files after it, so a change orphans every file.
        assert_eq!(CacheKey::of("").to_hex(), "b3c1a2154fe5e62d289638c535d7dca0");
        assert_eq!(CacheKey::of("GET https://example.com/").to_hex(), "d74a6a4852b917e0dddb6cc9fb9c206f");
        let a = CacheKey::of("GET https://example.com/");
        assert_eq!(a, CacheKey::of("GET https://example.com/"));
        assert_ne!(a, CacheKey::of("GET https://example.com/a"));
        assert_ne!(CacheKey::of("ab"), CacheKey::of("ba"));
    }

    #[test]
    fn hex_round_trips() {
        let k = CacheKey::of("x");
        assert_eq!(k.to_hex().len(), 32);
        assert_eq!(CacheKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(format!("{k}"), k.to_hex());
        assert_eq!(CacheKey::from_hex(&k.to_hex().to_uppercase()), None, "only the canonical form");
        assert_eq!(CacheKey::from_hex("abc"), None);
        assert_eq!(CacheKey::from_hex("zz000000000000000000000000000000"), None);
    }

    #[test]
    fn low_bits_spread_over_shards() {
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[(CacheKey::of(&format!("/item/{i}")).low64() % 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
    }
}

//! Hashes, random secrets, password hashing off the async threads, and TOTP.

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng as _;
use sha2::{Digest, Sha224, Sha256};

use crate::api::ApiError;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Hex SHA-256, how refresh tokens are stored.
pub fn sha256_hex(data: &str) -> String {
    hex(&Sha256::digest(data.as_bytes()))
}

/// SHA-256 raw bytes.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// The stored form of an email or SMS one-time code: hex SHA-224 of address and code.
pub fn otp_hash(address: &str, otp: &str) -> String {
    hex(&Sha224::digest(format!("{address}{otp}").as_bytes()))
}

/// A random alphanumeric string of `len` characters.
pub fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random string of `len` decimal digits.
pub fn random_digits(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..len).map(|_| rng.random::<u8>()).collect()
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hashes a password with bcrypt on the blocking pool.
pub async fn hash_password(password: &str, cost: u32) -> Result<String, ApiError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// A bcrypt hash checked against when a user does not exist, so unknown and
/// known emails cost the same time.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Checks a password against a stored bcrypt hash on the blocking pool; a
/// missing or malformed hash never matches.
pub async fn verify_password(
    password: &str,
    hash: Option<&str>,
    cost: u32,
) -> Result<bool, ApiError> {
    let password = password.to_owned();
    let stored = hash.filter(|h| h.starts_with("$2")).map(str::to_owned);
    tokio::task::spawn_blocking(move || match stored {
        Some(h) => bcrypt::verify(password, &h).unwrap_or(false),
        None => {
            let dummy =
                DUMMY_HASH.get_or_init(|| bcrypt::hash("not a password", cost).unwrap_or_default());
            let _ = bcrypt::verify(password, dummy);
            false
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// RFC 4648 base32 without padding.
pub fn base32_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (padding and case ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.trim_end_matches('=').chars() {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The 6-digit TOTP code (SHA-1, 30 s steps) of `secret` at `unix_secs`.
pub fn totp_code(secret: &[u8], unix_secs: u64) -> String {
    hotp(secret, unix_secs / 30)
}

fn hotp(secret: &[u8], counter: u64) -> String {
    let Ok(mut mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let code = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!("{:06}", code % 1_000_000)
}

/// True when `code` is the TOTP of `secret` now, one step before or one after.
pub fn totp_matches(secret: &[u8], code: &str, unix_secs: u64) -> bool {
    let step = unix_secs / 30;
    [step.saturating_sub(1), step, step + 1]
        .iter()
        .any(|s| constant_time_eq(&hotp(secret, *s), code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_the_rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        // RFC 6238 appendix B, SHA-1, last six digits.
        assert_eq!(totp_code(secret, 59), "287082");
        assert_eq!(totp_code(secret, 1_111_111_109), "081804");
        assert_eq!(totp_code(secret, 2_000_000_000), "279037");
        assert!(totp_matches(secret, "287082", 59 + 30));
        assert!(!totp_matches(secret, "287082", 59 + 90));
    }

    #[test]
    fn base32_round_trips() {
        let data = random_bytes(20);
        assert_eq!(base32_decode(&base32_encode(&data)).unwrap(), data);
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn otp_hash_is_sha224_hex() {
        assert_eq!(otp_hash("", "").len(), 56);
        assert_eq!(
            otp_hash("", ""),
            "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
        );
    }
}

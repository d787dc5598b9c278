//! The text format of API keys and refresh tokens (docs/api-keys.md "Format").
//!
//! `<prefix><id>_<secret><check>`, in the style of GitHub's tokens:
//! - `prefix` is `kg_` (API key) or `kgr_` (refresh token), so scanners find leaks;
//! - `id` is 16 characters `[0-9a-v]` (80 random bits): the credential's public
//!   identifier, stored beside its MAC, so an unknown id is refused by a lookup;
//! - `secret` is 43 base64url characters (32 bytes from the hardware RNG);
//! - `check` is 6 base64url characters: the first 4 bytes of SHA-256 over everything
//!   before it. It is not secret; it lets a typo or random garbage be refused by a hash.
//!
//! Only a well-formed string with a known id ever costs a hardware MAC. The format
//! before this one (`<prefix>` + 43 characters) is still recognised as [`Parsed::Legacy`]
//! until no credential of that form can be live any more.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Length of the public identifier.
pub const ID_LEN: usize = 16;
/// Base64url characters of 32 secret bytes.
pub const SECRET_CHARS: usize = 43;
/// Base64url characters of the 4-byte checksum.
pub const CHECK_CHARS: usize = 6;
/// Random bytes behind the identifier (80 bits, 16 characters of 5 bits).
pub const ID_BYTES: usize = 10;
/// Random bytes behind the secret.
pub const SECRET_BYTES: usize = 32;

const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// What a presented string is, by its shape alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The current format with a valid checksum; `id` names the record.
    Current { id: &'a str },
    /// The format before public ids: prefix and 43 base64url characters.
    Legacy,
}

/// Why a string is not a credential of the expected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a credential of this kind")]
    Malformed,
    #[error("the checksum does not match")]
    BadChecksum,
}

impl FormatError {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            FormatError::Malformed => "malformed",
            FormatError::BadChecksum => "bad_checksum",
        }
    }
}

fn base64url(s: &[u8]) -> bool {
    s.iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

fn checksum(body: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
    URL_SAFE_NO_PAD.encode(&d.as_ref()[..4])
}

/// Total length of a current-format credential with `prefix`.
pub const fn current_len(prefix: &str) -> usize {
    prefix.len() + ID_LEN + 1 + SECRET_CHARS + CHECK_CHARS
}

/// Classifies `s` as a credential with `prefix`, in software only.
pub fn parse<'a>(prefix: &str, s: &'a str) -> Result<Parsed<'a>, FormatError> {
    let Some(rest) = s.strip_prefix(prefix) else {
        return Err(FormatError::Malformed);
    };
    if rest.len() == SECRET_CHARS && base64url(rest.as_bytes()) {
        return Ok(Parsed::Legacy);
    }
    if s.len() != current_len(prefix) {
        return Err(FormatError::Malformed);
    }
    let b = rest.as_bytes();
    let (id, after) = b.split_at(ID_LEN);
    if !id.iter().all(|c| ID_ALPHABET.contains(c)) || after.first() != Some(&b'_') {
        return Err(FormatError::Malformed);
    }
    if !base64url(&after[1..]) {
        return Err(FormatError::Malformed);
    }
    // Every byte is ASCII by now, so these slices fall on character boundaries.
    let split = s.len() - CHECK_CHARS;
    let (body, check) = (s.get(..split), s.get(split..));
    match (body, check) {
        (Some(body), Some(check)) if checksum(body) == check => Ok(Parsed::Current {
            id: rest.get(..ID_LEN).ok_or(FormatError::Malformed)?,
        }),
        (Some(_), Some(_)) => Err(FormatError::BadChecksum),
        _ => Err(FormatError::Malformed),
    }
}

/// The public identifier made from `ID_BYTES` random bytes.
pub fn encode_id(random: &[u8]) -> String {
    // 80 bits, 5 at a time, most significant first.
    let mut acc: u128 = 0;
    for b in random.iter().take(ID_BYTES) {
        acc = (acc << 8) | u128::from(*b);
    }
    (0..ID_LEN)
        .rev()
        .map(|i| char::from(ID_ALPHABET[((acc >> (i * 5)) & 31) as usize]))
        .collect()
}

/// Writes `<prefix><id>_<secret><check>` into `out` (which should have capacity
/// [`current_len`], so the secret is never copied by a reallocation).
pub fn encode_into(out: &mut String, prefix: &str, id: &str, secret: &[u8]) {
    out.push_str(prefix);
    out.push_str(id);
    out.push('_');
    URL_SAFE_NO_PAD.encode_string(secret, out);
    let check = checksum(out);
    out.push_str(&check);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(prefix: &str) -> String {
        let mut s = String::with_capacity(current_len(prefix));
        encode_into(
            &mut s,
            prefix,
            &encode_id(&[7u8; ID_BYTES]),
            &[0xfbu8; SECRET_BYTES],
        );
        s
    }

    #[test]
    fn a_made_credential_parses_to_its_id() {
        let s = make("kg_");
        assert_eq!(s.len(), current_len("kg_"));
        let id = encode_id(&[7u8; ID_BYTES]);
        assert_eq!(parse("kg_", &s), Ok(Parsed::Current { id: &id }));
        // The secret's base64url may contain `_`; the fixed layout still finds the id.
        assert!(s[3 + ID_LEN + 1..].contains('_') || s[3 + ID_LEN + 1..].contains('-'));
    }

    #[test]
    fn any_changed_character_breaks_the_checksum_or_the_shape() {
        let s = make("kgr_");
        for i in 4..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert!(parse("kgr_", &t).is_err(), "position {i}: {t}");
        }
    }

    #[test]
    fn legacy_and_garbage() {
        let legacy = format!("kg_{}", "A".repeat(43));
        assert_eq!(parse("kg_", &legacy), Ok(Parsed::Legacy));
        for junk in [
            "",
            "kg_",
            "kgr_x",
            "kg_nope",
            &"kg_é".repeat(20),
            &make("kgr_"),
        ] {
            assert_eq!(parse("kg_", junk), Err(FormatError::Malformed), "{junk}");
        }
    }

    #[test]
    fn ids_use_the_whole_alphabet_and_differ_with_their_bytes() {
        assert_eq!(encode_id(&[0u8; ID_BYTES]), "0".repeat(ID_LEN));
        assert_eq!(encode_id(&[0xffu8; ID_BYTES]), "v".repeat(ID_LEN));
        assert_ne!(encode_id(&[1u8; ID_BYTES]), encode_id(&[2u8; ID_BYTES]));
    }
}

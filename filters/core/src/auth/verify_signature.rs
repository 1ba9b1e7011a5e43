//! The protobuf messages of Envoy's `verify_signature` foreign function,
//! which checks RSA and ECDSA signatures with the host's BoringSSL: a
//! `VerifySignatureArguments` in (hash_function = 1, public_key = 2 as
//! SubjectPublicKeyInfo DER, signature = 3, text = 4, public_key_pem = 5),
//! a `VerifySignatureResult` out (result = 1, error = 2).
//!
//! One codec for both sides: the filter encodes arguments and reads the
//! result; the harness, playing Envoy, reads arguments and encodes results.
//! Just the wire format these messages use: varints and length-delimited
//! fields.

/// The arguments for `hash` (`sha256`, `sha384`, `sha512`), a DER public key,
/// the signature and the signed text.
pub fn encode_arguments(
    hash: &str,
    public_key_der: &[u8],
    signature: &[u8],
    text: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(public_key_der.len() + signature.len() + text.len() + 32);
    put_bytes(&mut out, 1, hash.as_bytes());
    put_bytes(&mut out, 2, public_key_der);
    put_bytes(&mut out, 3, signature);
    put_bytes(&mut out, 4, text);
    out
}

/// A result: whether the signature verified, and why not.
pub fn encode_result(valid: bool, error: Option<&str>) -> Vec<u8> {
    let mut out = vec![0x08, u8::from(valid)];
    if let Some(e) = error {
        put_bytes(&mut out, 2, e.as_bytes());
    }
    out
}

/// `result` of a `VerifySignatureResult`; anything unreadable is `false`.
pub fn decode_result(bytes: &[u8]) -> bool {
    let mut valid = false;
    let mut b = bytes;
    while !b.is_empty() {
        let Some((tag, rest)) = varint(b) else {
            return false;
        };
        b = rest;
        match (tag >> 3, tag & 7) {
            (1, 0) => match varint(b) {
                Some((v, rest)) => {
                    valid = v == 1;
                    b = rest;
                }
                None => return false,
            },
            (_, 0) => match varint(b) {
                Some((_, rest)) => b = rest,
                None => return false,
            },
            (_, 2) => match length_delimited(b) {
                Some((_, rest)) => b = rest,
                None => return false,
            },
            _ => return false,
        }
    }
    valid
}

/// (field number, bytes) of every length-delimited field, varint fields
/// skipped; `None` if malformed.
pub fn decode_fields(mut b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (tag, rest) = varint(b)?;
        b = rest;
        match tag & 7 {
            0 => b = varint(b)?.1,
            2 => {
                let (value, rest) = length_delimited(b)?;
                out.push((tag >> 3, value));
                b = rest;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut n = bytes.len() as u64;
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, b.get(i + 1..)?));
        }
    }
    None
}

/// A length prefix and that many bytes; `None` when they are not all there.
fn length_delimited(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = varint(b)?;
    let len = usize::try_from(len).ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_with_long_fields() {
        let key = vec![7u8; 300]; // a two-byte length
        let args = encode_arguments("sha256", &key, b"sig", b"header.payload");
        let fields = decode_fields(&args).expect("well formed");
        assert_eq!(
            fields,
            vec![
                (1, &b"sha256"[..]),
                (2, &key[..]),
                (3, &b"sig"[..]),
                (4, &b"header.payload"[..])
            ]
        );
    }

    #[test]
    fn results_round_trip_and_unreadable_ones_are_false() {
        assert!(decode_result(&encode_result(true, None)));
        assert!(!decode_result(&encode_result(false, Some("bad signature"))));
        // An error field before the result, as another encoder may order them.
        let mut reordered = Vec::new();
        put_bytes(&mut reordered, 2, b"note");
        reordered.extend_from_slice(&[0x08, 1]);
        assert!(decode_result(&reordered));
        for bad in [&[0x08][..], &[0x08, 0x80], &[0x12, 5, b'a'], &[0x0b, 1]] {
            assert!(!decode_result(bad), "{bad:?}");
        }
        // A length past the end, even one that would overflow, is refused.
        let huge = [
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x08, 1,
        ];
        assert!(!decode_result(&huge));
        assert_eq!(decode_fields(&huge), None);
        assert!(!decode_result(&[]), "no result is not a valid signature");
    }
}

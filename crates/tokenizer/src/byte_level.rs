//! GPT-2's byte-level alphabet: every byte maps to a printable character so that BPE can work on
//! strings; decoding maps the characters back to bytes.

use std::sync::OnceLock;

/// Character → byte, for the 256 characters of the alphabet.
fn table() -> &'static std::collections::HashMap<char, u8> {
    static T: OnceLock<std::collections::HashMap<char, u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut map = std::collections::HashMap::with_capacity(256);
        let mut extra = 0u32;
        for b in 0..=255u8 {
            let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
            let c = if printable {
                char::from(b)
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("valid char")
            };
            map.insert(c, b);
        }
        map
    })
}

/// The bytes of a byte-level token text. Characters outside the alphabet (tokens added as plain
/// text) keep their own UTF-8 bytes.
pub fn decode(token: &str) -> Vec<u8> {
    let t = table();
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match t.get(&c) {
            Some(&b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn space_and_newline() {
        assert_eq!(super::decode("Ġhello"), b" hello");
        assert_eq!(super::decode("Ċ"), b"\n");
        assert_eq!(super::decode("Ã©"), "é".as_bytes());
    }
}

//! PEM armor: writing it in exactly Go's `pem.Encode` form, and reading
//! blocks out of a file.
//!
//! Writing is done here rather than with the `pem` crate so the output is
//! byte-for-byte what cosign writes: `-----BEGIN <label>-----`, standard
//! base64 in 64-column lines, `\n` line endings, no headers, trailing
//! newline. Reading uses the `pem` crate; block contents are moved into
//! [`Zeroizing`] buffers because private key files are read through here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::Error;

/// One PEM block as read from a file.
pub(crate) struct Block {
    pub(crate) label: String,
    /// True if the block has RFC 1421 headers such as `Proc-Type`.
    pub(crate) proc_type: Option<String>,
    pub(crate) contents: Zeroizing<Vec<u8>>,
}

/// True if `data` looks like PEM rather than raw DER.
pub(crate) fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Parses every PEM block in `data`.
///
/// Fails with [`Error::Malformed`] on broken framing or base64, and if no
/// block is found at all.
pub(crate) fn parse_blocks(data: &[u8]) -> Result<Vec<Block>, Error> {
    let pems = pem::parse_many(data).map_err(|e| Error::malformed_by("PEM data", e))?;
    if pems.is_empty() {
        return Err(Error::malformed_because(
            "PEM data",
            "no complete -----BEGIN/-----END block found",
        ));
    }
    Ok(pems
        .into_iter()
        .map(|p| Block {
            label: p.tag().to_owned(),
            proc_type: p.headers().get("Proc-Type").map(str::to_owned),
            contents: Zeroizing::new(p.into_contents()),
        })
        .collect())
}

/// Encodes `der` as a PEM block the way Go's `pem.EncodeToMemory` does.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 output is ASCII, so byte chunks are char boundaries.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_go_layout() {
        let pem = encode("TEST", &[0u8; 100]);
        let lines: Vec<&str> = pem.split('\n').collect();
        assert_eq!(lines[0], "-----BEGIN TEST-----");
        // 100 bytes = 136 base64 characters = 64 + 64 + 8.
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 8);
        assert_eq!(lines[4], "-----END TEST-----");
        assert_eq!(lines[5], "");
        assert_eq!(lines.len(), 6);
        // Exact multiple of 48 bytes: no empty line.
        let pem = encode("TEST", &[0u8; 48]);
        assert_eq!(pem.lines().count(), 3);
        let pem = encode("TEST", &[]);
        assert_eq!(pem, "-----BEGIN TEST-----\n-----END TEST-----\n");
    }

    #[test]
    fn parse_round_trip_and_errors() {
        let data = [7u8; 99];
        let blocks = parse_blocks(encode("X Y", &data).as_bytes()).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "X Y");
        assert_eq!(&blocks[0].contents[..], &data[..]);
        assert!(matches!(
            parse_blocks(b"nothing here"),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            parse_blocks(b"-----BEGIN X-----\n!!!!\n-----END X-----\n"),
            Err(Error::Malformed { .. })
        ));
        assert!(looks_like_pem(b"junk\n-----BEGIN X-----"));
        assert!(!looks_like_pem(&[0x30, 0x59]));
    }
}

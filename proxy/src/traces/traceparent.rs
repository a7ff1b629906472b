//! The W3C Trace Context `traceparent` header (version `00`): read strictly, written into a
//! fixed buffer. Anything that is not exactly `00-<32 hex>-<16 hex>-<2 hex>` in lower case,
//! with non-zero ids, is no parent at all.

/// Length of a version-00 `traceparent` value.
pub const LEN: usize = 55;

/// A parsed `traceparent`: the caller's trace, its span, and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id: sekisho's span's parent (never all zero).
    pub parent_id: [u8; 8],
    /// The trace flags; bit 0 is `sampled`, the others are kept but mean nothing here.
    pub flags: u8,
}

impl TraceParent {
    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Reads a `traceparent` value. Only version `00` is read (a later version, or `ff`, is no
/// parent): exactly 55 bytes, lower-case hex, dashes where they belong, non-zero ids.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    let value: &[u8; LEN] = value.try_into().ok()?;
    let [b'0', b'0', b'-', rest @ ..] = value else {
        return None;
    };
    let (trace, rest) = rest.split_at(32);
    let (dash, rest) = rest.split_first()?;
    let (parent, rest) = rest.split_at(16);
    let [b'-', f1, f2] = rest else {
        return None;
    };
    if *dash != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    decode(trace, &mut trace_id)?;
    decode(parent, &mut parent_id)?;
    let mut flags = [0u8; 1];
    decode(&[*f1, *f2], &mut flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags: flags[0],
    })
}

/// Writes `00-<trace id>-<span id>-<01 or 00>`.
pub fn format(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; LEN] {
    let mut out = [b'-'; LEN];
    let flags = [u8::from(sampled)];
    // Each field's hex, with the dash after it left in place.
    let fields: [&[u8]; 4] = [&[0], trace_id, span_id, &flags];
    let mut slots = out.iter_mut();
    for field in fields {
        for byte in field {
            for nibble in [byte >> 4, byte & 0xf] {
                if let Some(slot) = slots.next() {
                    *slot = hex_digit(nibble);
                }
            }
        }
        slots.next();
    }
    out
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn encode(bytes: &[u8], out: &mut [u8]) {
    let nibbles = bytes.iter().flat_map(|b| [b >> 4, b & 0xf]);
    for (slot, nibble) in out.iter_mut().zip(nibbles) {
        *slot = hex_digit(nibble);
    }
}

/// The lower-case hex digit of a nibble.
fn hex_digit(nibble: u8) -> u8 {
    b"0123456789abcdef"
        .get(usize::from(nibble & 0xf))
        .copied()
        .unwrap_or(b'0')
}

/// Lower-case hex `text` into `out` (half as long); `None` on any other byte.
fn decode(text: &[u8], out: &mut [u8]) -> Option<()> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let [hi, lo] = pair else {
            return None;
        };
        *byte = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn good_values_are_read() {
        let parsed = parse(GOOD.as_bytes()).expect("the W3C example");
        assert_eq!(
            parsed.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            parsed.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(parsed.sampled());
        for (value, sampled, flags) in [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                false,
                0,
            ),
            // Unknown flags are kept; only bit 0 means something.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                true,
                3,
            ),
            (
                "00-00000000000000000000000000000001-0000000000000001-fe",
                false,
                0xfe,
            ),
        ] {
            let parsed = parse(value.as_bytes()).unwrap_or_else(|| panic!("{value}"));
            assert_eq!(
                (parsed.sampled(), parsed.flags),
                (sampled, flags),
                "{value}"
            );
        }
    }

    #[test]
    fn anything_else_is_no_parent() {
        for value in [
            "",
            "00",
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Other versions: ff is forbidden, later ones are not read.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
            // Version 00 is exactly 55 bytes.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            " 00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            // Wrong separators, short fields, non-hex.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(value.as_bytes()), None, "{value:?}");
        }
        // Non-ASCII bytes of the right length.
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[10] = 0xc3;
        assert_eq!(parse(&bytes), None);
    }

    #[test]
    fn what_is_written_reads_back() {
        let parsed = parse(GOOD.as_bytes()).expect("good");
        let written = format(&parsed.trace_id, &parsed.parent_id, true);
        assert_eq!(&written[..], GOOD.as_bytes());
        let unsampled = format(&parsed.trace_id, &parsed.parent_id, false);
        assert!(unsampled.ends_with(b"-00"));
        assert_eq!(parse(&unsampled).map(|p| p.sampled()), Some(false));
    }
}

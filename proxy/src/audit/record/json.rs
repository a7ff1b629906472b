//! A small JSON object writer for the records written once per request: keys are known
//! constants, values are escaped exactly as `serde_json` escapes them (so a record written here
//! and one written by serde's derive are the same bytes), and nothing is allocated.

use std::fmt;

/// One JSON object being written into a buffer; `,` between members is its business.
pub(super) struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Object<'o> {
    /// Writes `{`, then whatever `fill` adds, then `}`.
    pub(super) fn write(out: &'o mut Vec<u8>, fill: impl FnOnce(&mut Object<'_>)) {
        out.push(b'{');
        let mut object = Object { out, first: true };
        fill(&mut object);
        object.out.push(b'}');
    }

    /// `"key":` (after a `,` unless it is the first member). Keys are constants that need no
    /// escaping.
    fn key(&mut self, key: &'static str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string member.
    pub(super) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    /// A string member, when there is one.
    pub(super) fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// An integer member.
    pub(super) fn number(&mut self, key: &'static str, value: impl itoa::Integer) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// An integer member, when there is one.
    pub(super) fn opt_number(&mut self, key: &'static str, value: Option<impl itoa::Integer>) {
        if let Some(value) = value {
            self.number(key, value);
        }
    }

    /// `true` or `false`.
    pub(super) fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A string member holding `value`'s `Display` text (escaped like any string).
    pub(super) fn display(&mut self, key: &'static str, value: &dyn fmt::Display) {
        self.key(key);
        self.out.push(b'"');
        // Writing into a Vec cannot fail; a `Display` that reports an error (none of the types
        // written here does) would leave what it wrote so far.
        let _ = fmt::write(&mut Escaping(self.out), format_args!("{value}"));
        self.out.push(b'"');
    }

    /// A nested object member.
    pub(super) fn object(&mut self, key: &'static str, fill: impl FnOnce(&mut Object<'_>)) {
        self.key(key);
        Object::write(self.out, fill);
    }

    /// An array member of objects, one per item.
    pub(super) fn objects<T>(
        &mut self,
        key: &'static str,
        items: impl IntoIterator<Item = T>,
        mut fill: impl FnMut(&mut Object<'_>, T),
    ) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            Object::write(self.out, |o| fill(o, item));
        }
        self.out.push(b']');
    }

    /// An array member of strings holding `Display` texts.
    pub(super) fn displays(&mut self, key: &'static str, items: &[&dyn fmt::Display]) {
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.push(b'"');
            let _ = fmt::write(&mut Escaping(self.out), format_args!("{item}"));
            self.out.push(b'"');
        }
        self.out.push(b']');
    }

    /// A member whose value serde writes (the rare parts of a record).
    pub(super) fn serialized<T: serde::Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.key(key);
        serde_json::to_writer(&mut *self.out, value)
    }
}

/// `value` as a JSON string.
fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    escape(out, value);
    out.push(b'"');
}

/// What `serde_json` escapes, and how: `"` and `\` with a backslash, the control characters
/// below 0x20 as `\b \t \n \f \r` or `\u00xx` (lowercase hex). Everything else, non-ASCII
/// included, is written as it is.
fn escape(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none of them needs escaping (nearly all of a record).
        if let Some(word) = bytes
            .get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            && !needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let b = bytes.get(i).copied().unwrap_or_default();
        i += 1;
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        let at = i - 1;
        out.extend_from_slice(bytes.get(start..at).unwrap_or_default());
        start = i;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let digit = |n: u8| HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', digit(b >> 4), digit(b)]);
            }
        }
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

/// Whether any of the eight bytes in `word` is a control character, `"` or `\\` (the bytes JSON
/// escapes), by the usual word-at-a-time tests: a byte below 0x20 borrows out of `byte - 0x20`, and
/// an equal byte is zero after the XOR. Bytes of 0x80 and above never count (`!word` masks them).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space
        | zero_byte(word ^ (ONES * u64::from(b'"')))
        | zero_byte(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// A `fmt::Write` that escapes what it is given into a JSON string's body.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, value);
        out
    }

    #[test]
    fn escapes_what_serde_json_escapes() {
        for value in [
            "",
            "plain",
            "quote \" and backslash \\",
            "\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} ",
            "\u{7f} / é 日本 🦀",
            "ends with \\",
        ] {
            assert_eq!(
                written(value),
                serde_json::to_vec(value).unwrap(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn the_word_test_finds_every_byte_json_escapes_in_every_position() {
        for byte in 0..=u8::MAX {
            let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
            for at in 0..8 {
                for filler in [b'a', 0x7f, 0xff, 0x20] {
                    let mut word = [filler; 8];
                    if let Some(slot) = word.get_mut(at) {
                        *slot = byte;
                    }
                    assert_eq!(
                        needs_escape(u64::from_le_bytes(word)),
                        escaped,
                        "byte {byte:#04x} at {at} among {filler:#04x}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(value in any::<String>()) {
            prop_assert_eq!(written(&value), serde_json::to_vec(&value).unwrap());
        }
    }

    #[test]
    fn members_are_separated_and_nested() {
        let mut out = Vec::new();
        Object::write(&mut out, |o| {
            o.str("a", "x");
            o.opt_str("skipped", None);
            o.number("n", u64::MAX);
            o.number("i", -5_i64);
            o.bool("b", false);
            o.object("o", |o| o.display("ip", &std::net::Ipv6Addr::LOCALHOST));
            o.objects("list", ["g1", "g\"2"], |o, name| o.str("name", name));
            o.displays("ips", &[&std::net::Ipv4Addr::new(10, 0, 0, 1)]);
            o.objects("empty", std::iter::empty::<&str>(), |o, name| {
                o.str("name", name)
            });
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"x","n":18446744073709551615,"i":-5,"b":false,"o":{"ip":"::1"},"list":[{"name":"g1"},{"name":"g\"2"}],"ips":["10.0.0.1"],"empty":[]}"#
        );
    }
}

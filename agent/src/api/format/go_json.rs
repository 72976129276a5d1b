//! JSON written the way Go's `encoding/json` writes it: compact (`json.Marshal`) or indented
//! (`json.MarshalIndent(v, "", "  ")`), with `<`, `>`, `&`, U+2028 and U+2029 escaped.
//!
//! serde_json already agrees with Go on everything else nodetrace emits (field order is struct
//! order, `\b` `\f` `\n` `\r` `\t` short escapes, other control characters as lower-case `\u00xx`).

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter, Serializer};
use std::io::{self, Write};

/// `json.Marshal(value)`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    write_with(value, GoFormatter(CompactFormatter))
}

/// `json.MarshalIndent(value, "", "  ")`.
pub fn to_vec_pretty<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    write_with(value, GoFormatter(PrettyFormatter::with_indent(b"  ")))
}

fn write_with<T: Serialize + ?Sized, F: Formatter>(
    value: &T,
    formatter: GoFormatter<F>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(1024);
    let mut serializer = Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// Wraps a serde_json formatter and adds Go's HTML-safe string escaping.
struct GoFormatter<F>(F);

fn go_escape(ch: char) -> Option<&'static str> {
    match ch {
        '<' => Some("\\u003c"),
        '>' => Some("\\u003e"),
        '&' => Some("\\u0026"),
        '\u{2028}' => Some("\\u2028"),
        '\u{2029}' => Some("\\u2029"),
        _ => None,
    }
}

impl<F: Formatter> Formatter for GoFormatter<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut plain_from = 0;
        for (at, ch) in fragment.char_indices() {
            if let Some(escaped) = go_escape(ch) {
                writer.write_all(&fragment.as_bytes()[plain_from..at])?;
                writer.write_all(escaped.as_bytes())?;
                plain_from = at + ch.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }

    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_key(writer)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html_characters_like_go() {
        let out = to_vec(&"a<b>&c\u{2028}").expect("serializes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#""a\u003cb\u003e\u0026c\u2028""#
        );
    }

    #[test]
    fn control_characters_match_go() {
        let out = to_vec(&"\u{8}\u{c}\n\r\t\u{1}\"\\/").expect("serializes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#""\b\f\n\r\t\u0001\"\\/""#
        );
    }

    #[test]
    fn pretty_matches_marshal_indent() {
        let value = serde_json::json!({"a": [1, 2], "b": [], "c": {}});
        let out = to_vec_pretty(&value).expect("serializes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": [],\n  \"c\": {}\n}"
        );
    }
}

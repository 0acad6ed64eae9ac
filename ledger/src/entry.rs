//! Entries and their canonical encoding.
//!
//! A stored entry is a JSON object with exactly the keys `actor`, `body`,
//! `index`, `kind`, `prev` and `time`. Its canonical form is compact JSON
//! (no whitespace) with the keys of every object, at every depth, sorted by
//! their UTF-8 bytes. The canonical form is what is written to
//! `entries.jsonl`, what is hashed, and what a verifier re-creates to catch
//! any change of even one byte.
//!
//! The ordering is done here rather than left to `serde_json`'s map type, so
//! the encoding does not change if another crate in the build turns on
//! `serde_json/preserve_order`.

use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of entry 0: 64 zeros.
pub const ZERO_HASH_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller asks the ledger to record. The ledger adds `index` and `prev`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryDraft {
    /// What happened, e.g. `grant.issued` or `query.refused`. Must not be empty.
    pub kind: String,
    /// Who did it (a user, a service, a key id).
    pub actor: String,
    /// When it happened, as RFC 3339 text chosen by the caller; not interpreted.
    pub time: String,
    /// Details of the event. Any JSON value; numbers must survive a
    /// print-and-parse round trip (integers and ordinary floats do).
    pub body: Value,
}

/// A stored entry, as read back from `entries.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the ledger, counting from 0.
    pub index: u64,
    /// Lowercase hex SHA-256 of the previous entry's canonical bytes;
    /// [`ZERO_HASH_HEX`] for entry 0.
    pub prev: String,
    /// As given in the draft.
    pub time: String,
    /// As given in the draft.
    pub kind: String,
    /// As given in the draft.
    pub actor: String,
    /// As given in the draft.
    pub body: Value,
}

/// Why bytes are not a valid canonical entry, or a draft cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The line is not JSON.
    #[error("not valid JSON ({detail}); each line must be one JSON object")]
    NotJson {
        /// What the JSON parser reported.
        detail: String,
    },
    /// The line is JSON but not an object.
    #[error(
        "not a JSON object; each line must be one object with actor, body, index, kind, prev and time"
    )]
    NotObject,
    /// A required key is absent.
    #[error("key `{field}` is missing; entries need actor, body, index, kind, prev and time")]
    MissingField {
        /// The absent key.
        field: &'static str,
    },
    /// A key the format does not have.
    #[error("key `{field}` is not part of the entry format; remove it")]
    UnknownField {
        /// The extra key.
        field: String,
    },
    /// A key holds the wrong JSON type.
    #[error("key `{field}` must be {expected}")]
    WrongType {
        /// The key.
        field: &'static str,
        /// What it must hold.
        expected: &'static str,
    },
    /// `prev` is not 64 lowercase hex characters.
    #[error("`prev` must be 64 lowercase hex characters, found {found:?}")]
    BadPrev {
        /// The value found.
        found: String,
    },
    /// The line parses but is not byte-for-byte the canonical encoding.
    #[error(
        "bytes differ from the canonical encoding (compact JSON, sorted keys); the line was edited"
    )]
    NotCanonical,
    /// A draft's `kind` is empty.
    #[error("kind is empty; name the event, e.g. `grant.issued`")]
    EmptyKind,
    /// A draft holds a number that would read back differently.
    #[error(
        "the body holds a number that does not read back as written (e.g. an integer beyond 64 bits); store it as a string"
    )]
    NumberNotStable,
}

impl Entry {
    /// Builds the entry that follows `prev` at position `index`.
    pub fn from_draft(index: u64, prev: &Hash, draft: EntryDraft) -> Entry {
        Entry {
            index,
            prev: hex::encode(prev),
            time: draft.time,
            kind: draft.kind,
            actor: draft.actor,
            body: draft.body,
        }
    }

    /// The entry as a JSON object (before canonical ordering).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("index".into(), Value::from(self.index));
        m.insert("prev".into(), Value::from(self.prev.clone()));
        m.insert("time".into(), Value::from(self.time.clone()));
        m.insert("kind".into(), Value::from(self.kind.clone()));
        m.insert("actor".into(), Value::from(self.actor.clone()));
        m.insert("body".into(), self.body.clone());
        Value::Object(m)
    }

    /// The canonical bytes of the entry, without the trailing newline.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_json(&self.to_value())
    }

    /// SHA-256 of the canonical bytes: the value the next entry's `prev` holds.
    pub fn hash(&self) -> Hash {
        sha256(&self.canonical_bytes())
    }

    /// Parses one line of `entries.jsonl` (without its newline), insisting
    /// that it is exactly the canonical encoding of the entry it holds.
    pub fn parse_line(line: &[u8]) -> Result<Entry, EntryError> {
        let value: Value = serde_json::from_slice(line).map_err(|e| EntryError::NotJson {
            detail: e.to_string(),
        })?;
        let entry = Entry::from_value(&value)?;
        if canonical_json(&value) != line {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    fn from_value(value: &Value) -> Result<Entry, EntryError> {
        const FIELDS: [&str; 6] = ["actor", "body", "index", "kind", "prev", "time"];
        let m = value.as_object().ok_or(EntryError::NotObject)?;
        if let Some(extra) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(EntryError::UnknownField {
                field: extra.clone(),
            });
        }
        let get = |field: &'static str| m.get(field).ok_or(EntryError::MissingField { field });
        let string = |field: &'static str| -> Result<String, EntryError> {
            get(field)?
                .as_str()
                .map(str::to_owned)
                .ok_or(EntryError::WrongType {
                    field,
                    expected: "a string",
                })
        };
        let index = get("index")?.as_u64().ok_or(EntryError::WrongType {
            field: "index",
            expected: "a non-negative integer",
        })?;
        let prev = string("prev")?;
        if prev.len() != 64 || !prev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(EntryError::BadPrev { found: prev });
        }
        Ok(Entry {
            index,
            prev,
            time: string("time")?,
            kind: string("kind")?,
            actor: string("actor")?,
            body: get("body")?.clone(),
        })
    }

    /// Checks what a fresh draft must satisfy and returns the canonical
    /// bytes: they must read back as this very entry, so a verifier can
    /// re-create them.
    pub(crate) fn encode_checked(&self) -> Result<Vec<u8>, EntryError> {
        if self.kind.is_empty() {
            return Err(EntryError::EmptyKind);
        }
        let bytes = self.canonical_bytes();
        // Lines the fast reader accepts hold only strings, integers,
        // booleans, nulls, arrays and objects, which read back exactly.
        if fast_index_and_prev(&bytes).is_some() {
            return Ok(bytes);
        }
        match Entry::parse_line(&bytes) {
            Ok(back) if back == *self => Ok(bytes),
            _ => Err(EntryError::NumberNotStable),
        }
    }
}

/// A draft checked and encoded ahead of time, so that giving it its place
/// in the ledger (index and `prev`) only splices two fields into bytes.
///
/// The canonical encoding sorts keys, so the line is always
/// `{"actor":…,"body":…,"index":N,"kind":…,"prev":"…","time":…}`: the
/// parts before `index`, between `index` and `prev`, and after `prev` do not
/// depend on the entry's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDraft {
    /// `{"actor":…,"body":…,"index":`
    head: Vec<u8>,
    /// `,"kind":…,"prev":"`
    middle: Vec<u8>,
    /// `","time":…}`
    tail: Vec<u8>,
}

impl PreparedDraft {
    /// Checks `draft` as [`Entry::encode_checked`] does and splits its
    /// canonical encoding around `index` and `prev`.
    pub fn new(draft: EntryDraft) -> Result<PreparedDraft, EntryError> {
        let probe = Entry::from_draft(0, &[0; 32], draft);
        // Only `kind`, `prev` and `time` (strings, whose quotes inside are
        // escaped) follow the top-level `index`, so the last match is it.
        let bytes = probe.encode_checked()?;
        let index_at = rfind(&bytes, b",\"index\":0,\"kind\":").ok_or(EntryError::NotCanonical)?;
        let head = bytes[..index_at + b",\"index\":".len()].to_vec();
        let after_index = index_at + b",\"index\":0".len();
        let prev_key = format!(",\"prev\":\"{ZERO_HASH_HEX}\",\"time\":");
        let prev_at = rfind(&bytes, prev_key.as_bytes()).ok_or(EntryError::NotCanonical)?;
        let middle = bytes[after_index..prev_at + b",\"prev\":\"".len()].to_vec();
        let tail = bytes[prev_at + b",\"prev\":\"".len() + 64..].to_vec();
        Ok(PreparedDraft { head, middle, tail })
    }

    /// Length of the line this draft becomes at `index`, without newline.
    pub fn line_len(&self, index: u64) -> usize {
        self.head.len() + decimal_len(index) + self.middle.len() + 64 + self.tail.len()
    }

    /// Appends the canonical line of this draft at `index` after `prev`
    /// (no newline) to `out`.
    pub fn write_line(&self, index: u64, prev: &Hash, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = index;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
        out.extend_from_slice(&self.middle);
        let mut hex_buf = [0u8; 64];
        // Encoding 32 bytes into 64 cannot fail.
        hex::encode_to_slice(prev, &mut hex_buf).unwrap_or_default();
        out.extend_from_slice(&hex_buf);
        out.extend_from_slice(&self.tail);
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Reads `index` and `prev` from a line that is certainly a canonical
/// entry, without building a JSON tree: `Some` only when
/// [`Entry::parse_line`] would accept the line with these values. Anything
/// unusual (floats, escaped object keys, non-`\u00xx` escapes, deep
/// nesting) gives `None`, and the caller falls back to `parse_line`, which
/// then decides. So the fast path never accepts what the full one refuses.
pub(crate) fn fast_index_and_prev(line: &[u8]) -> Option<(u64, Hash)> {
    std::str::from_utf8(line).ok()?;
    let mut p = Scan { b: line, i: 0 };
    p.lit(b"{\"actor\":")?;
    p.string()?;
    p.lit(b",\"body\":")?;
    p.value(0)?;
    p.lit(b",\"index\":")?;
    let index = p.unsigned()?;
    p.lit(b",\"kind\":")?;
    p.string()?;
    p.lit(b",\"prev\":\"")?;
    let hex_at = p.i;
    let prev = lower_hex_32(line.get(hex_at..hex_at + 64)?)?;
    p.i += 64;
    p.lit(b"\",\"time\":")?;
    p.string()?;
    p.lit(b"}")?;
    (p.i == line.len()).then_some((index, prev))
}

/// Value of each lowercase hex digit (the only hex entries hold, in hashes
/// and `\u00XX` escapes); 0xff for every other byte.
const NIBBLE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut d = 0;
    while d < 16 {
        table[b"0123456789abcdef"[d] as usize] = d as u8;
        d += 1;
    }
    table
};

/// Lowercase hex digit `d`'s value.
fn lower_hex_digit(d: u8) -> Option<u8> {
    Some(NIBBLE[usize::from(d)]).filter(|&v| v != 0xff)
}

/// Decodes 64 lowercase hex digits (the only form entries hold) in one
/// pass; `None` for anything else.
fn lower_hex_32(text: &[u8]) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= high | low;
        *byte = high << 4 | low;
    }
    // Only 0xff has the high bit set among the table's values.
    (bad & 0x80 == 0).then_some(out)
}

/// Nesting deeper than this goes to the full parser (whose limit is 128).
const FAST_MAX_DEPTH: usize = 64;

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn lit(&mut self, text: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + text.len())? == text {
            self.i += text.len();
            Some(())
        } else {
            None
        }
    }

    /// A string in canonical escaping; returns its raw bytes between the
    /// quotes and whether it held an escape.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.lit(b"\"")?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Most string bytes need no look: skip whole runs of 16 that
            // hold no quote, backslash or control character at once.
            while let Some(chunk) = self.b.get(self.i..self.i + 16) {
                if chunk.iter().fold(true, |plain, &c| {
                    plain & (c >= 0x20 && c != b'"' && c != b'\\')
                }) {
                    self.i += 16;
                } else {
                    break;
                }
            }
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some((start, self.i - 1, escaped)),
                b'\\' => {
                    escaped = true;
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let digits = self.b.get(self.i..self.i + 4)?;
                            self.i += 4;
                            if digits[0] != b'0' || digits[1] != b'0' {
                                return None;
                            }
                            let v = lower_hex_digit(digits[2])? * 16 + lower_hex_digit(digits[3])?;
                            // Only control characters without a short form.
                            if v >= 0x20 || matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// A non-negative integer without leading zeros that fits in u64.
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in digits {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        Some(n)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > FAST_MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            b'0'..=b'9' => self.unsigned().map(|_| ()),
            b'-' => {
                self.i += 1;
                let n = self.unsigned()?;
                // "-0" prints back as "0"; below i64::MIN becomes a float.
                (n != 0 && n <= 1 << 63).then_some(())
            }
            b'[' => {
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.i += 1;
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                let mut last: Option<(usize, usize)> = None;
                loop {
                    let (s, e, escaped) = self.string()?;
                    if escaped {
                        return None;
                    }
                    if let Some((ls, le)) = last
                        && self.b[ls..le] >= self.b[s..e]
                    {
                        return None;
                    }
                    last = Some((s, e));
                    self.lit(b":")?;
                    self.value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compact JSON with the keys of every object sorted by their UTF-8 bytes.
///
/// Strings are escaped as `serde_json` does: `"`, `\` and control characters
/// only, with `\b \f \n \r \t` short forms and `\u00xx` (lowercase) for the
/// rest; everything else, including non-ASCII, is written as UTF-8.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(&m[key], out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft(body: Value) -> EntryDraft {
        EntryDraft {
            kind: "test.kind".into(),
            actor: "alice".into(),
            time: "2025-01-02T03:04:05Z".into(),
            body,
        }
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"z": [true, null, {"y": 2, "x": "s"}], "c": -1.5}});
        assert_eq!(
            canonical_json(&v),
            br#"{"a":{"c":-1.5,"z":[true,null,{"x":"s","y":2}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_strings_match_serde_json_escaping() {
        let s: String = (0u8..0x80).map(char::from).collect::<String>() + "é€😀";
        let v = Value::String(s);
        assert_eq!(canonical_json(&v), serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn entry_round_trips_through_its_line() {
        let e = Entry::from_draft(7, &[0xab; 32], draft(json!({"rows": 3, "note": "a\nb"})));
        let bytes = e.encode_checked().unwrap();
        assert_eq!(Entry::parse_line(&bytes).unwrap(), e);
        assert!(
            bytes.starts_with(
                br#"{"actor":"alice","body":{"note":"a\nb","rows":3},"index":7,"kind""#
            )
        );
    }

    #[test]
    fn refuses_lines_that_are_not_canonical() {
        let e = Entry::from_draft(0, &[0; 32], draft(json!({"a": 1})));
        let good = String::from_utf8(e.canonical_bytes()).unwrap();
        let spaced = good.replacen(':', ": ", 1);
        assert_eq!(
            Entry::parse_line(spaced.as_bytes()),
            Err(EntryError::NotCanonical)
        );
        let reordered = serde_json::to_string(&e).unwrap();
        assert_eq!(
            Entry::parse_line(reordered.as_bytes()),
            Err(EntryError::NotCanonical)
        );
        let dup = good.replacen(
            "{\"actor\":\"alice\",",
            "{\"actor\":\"bob\",\"actor\":\"alice\",",
            1,
        );
        assert_eq!(
            Entry::parse_line(dup.as_bytes()),
            Err(EntryError::NotCanonical)
        );
    }

    #[test]
    fn refuses_wrong_shapes() {
        assert_eq!(Entry::parse_line(b"[]"), Err(EntryError::NotObject));
        assert!(matches!(
            Entry::parse_line(b"{"),
            Err(EntryError::NotJson { .. })
        ));
        let e = Entry::from_draft(0, &[0; 32], draft(json!(null)));
        let mut v = e.to_value();
        v["extra"] = json!(1);
        assert!(matches!(
            Entry::parse_line(&canonical_json(&v)),
            Err(EntryError::UnknownField { .. })
        ));
        let mut v = e.to_value();
        v["prev"] = json!(ZERO_HASH_HEX.to_uppercase().replace('0', "A"));
        assert!(matches!(
            Entry::parse_line(&canonical_json(&v)),
            Err(EntryError::BadPrev { .. })
        ));
        let mut v = e.to_value();
        v["index"] = json!(-1);
        assert!(matches!(
            Entry::parse_line(&canonical_json(&v)),
            Err(EntryError::WrongType { field: "index", .. })
        ));
        let mut v = e.to_value();
        v.as_object_mut().unwrap().remove("time");
        assert_eq!(
            Entry::parse_line(&canonical_json(&v)),
            Err(EntryError::MissingField { field: "time" })
        );
    }

    #[test]
    fn stores_extreme_numbers_exactly_and_refuses_an_empty_kind() {
        let body = json!({"max": u64::MAX, "min": i64::MIN, "f": 0.1, "g": 1e300, "z": -0.0});
        let e = Entry::from_draft(0, &[0; 32], draft(body));
        let bytes = e.encode_checked().unwrap();
        assert_eq!(Entry::parse_line(&bytes).unwrap(), e);
        let mut d = draft(json!(1));
        d.kind.clear();
        assert_eq!(
            Entry::from_draft(0, &[0; 32], d).encode_checked(),
            Err(EntryError::EmptyKind)
        );
    }

    #[test]
    fn prepared_draft_splices_to_the_canonical_line() {
        let d = draft(
            json!({"a": 1, "index": 0, "kind": {"a": 1, "index": 0, "kind": 2, "prev": ZERO_HASH_HEX, "time": 1}, "x": ",\"index\":0,\"kind\":"}),
        );
        let p = PreparedDraft::new(d.clone()).unwrap();
        for (index, prev) in [
            (0u64, [0u8; 32]),
            (9, [0xff; 32]),
            (10, [1; 32]),
            (u64::MAX, [0x5a; 32]),
        ] {
            let mut out = Vec::new();
            p.write_line(index, &prev, &mut out);
            let want = Entry::from_draft(index, &prev, d.clone()).canonical_bytes();
            assert_eq!(out, want);
            assert_eq!(p.line_len(index), want.len());
        }
        let mut bad = d;
        bad.kind.clear();
        assert_eq!(PreparedDraft::new(bad), Err(EntryError::EmptyKind));
    }

    #[test]
    fn fast_reader_agrees_with_the_full_parser_or_defers_to_it() {
        let bodies = [
            json!(null),
            json!({"a": [1, -2, 0, true, false, null, "x\u{1}\u{7f}\"\\\n\té"], "b": {}, "c": []}),
            json!({"max": u64::MAX, "min": i64::MIN, "f": 0.5, "deep": [[[[{"k": "v"}]]]]}),
            json!("\u{0}\u{8}\u{c}\u{1f}"),
            json!({"a\nb": 1}),
            json!({"\u{e9}": 1, "z": 2}),
        ];
        let mut lines = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let e = Entry::from_draft(i as u64 * 1000, &[i as u8 * 17; 32], draft(body));
            lines.push(e.canonical_bytes());
        }
        let mut accepted = 0;
        for line in &lines {
            let full = Entry::parse_line(line).unwrap();
            if let Some((index, prev)) = fast_index_and_prev(line) {
                accepted += 1;
                assert_eq!((index, hex::encode(prev)), (full.index, full.prev));
            }
            // Every single-byte change: the fast reader may only accept
            // what the full parser accepts, with the same values.
            let mut copy = line.clone();
            for pos in 0..copy.len() {
                for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
                    copy[pos] ^= mask;
                    if let Some((index, prev)) = fast_index_and_prev(&copy) {
                        let full = Entry::parse_line(&copy).unwrap_or_else(|e| {
                            panic!(
                                "fast accepted, full refused ({e}): {}",
                                String::from_utf8_lossy(&copy)
                            )
                        });
                        assert_eq!((index, hex::encode(prev)), (full.index, full.prev));
                    }
                    copy[pos] ^= mask;
                }
            }
        }
        assert!(
            accepted >= 4,
            "the fast reader should accept ordinary lines"
        );
    }
}

//! A record as clients see it: `id`, the readable fields in schema order, `version`,
//! timestamps, and `expand` when relations were expanded. Hidden fields and fields whose
//! read rule denies are left out; a `fields=` projection keeps only the named keys.

use ferrobase_schema::Resource;
use ferrobase_store::Record;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Serializes one record of `resource` without building an intermediate map.
pub struct RecordJson<'a> {
    /// The record's resource.
    pub resource: &'a Resource,
    /// The record.
    pub record: &'a Record,
    /// Only these keys (`fields=`), when given.
    pub only: Option<&'a [String]>,
    /// Expanded relations of this record, by field name.
    pub expand: Option<&'a Map<String, Value>>,
    /// Per field, whether the caller may read it (from the field rules); without it only
    /// hidden fields are left out.
    pub readable: Option<&'a [bool]>,
}

impl<'a> RecordJson<'a> {
    /// The plain representation of a record.
    pub fn new(resource: &'a Resource, record: &'a Record) -> Self {
        Self {
            resource,
            record,
            only: None,
            expand: None,
            readable: None,
        }
    }

    fn wanted(&self, key: &str) -> bool {
        self.only.is_none_or(|only| only.iter().any(|k| k == key))
    }
}

/// One member of a record's JSON object.
enum Member<'a> {
    Text(&'a str),
    Value(&'a Value),
    Version(i64),
    Expand(&'a Map<String, Value>),
}

impl<'a> RecordJson<'a> {
    /// The members of the record's object, in order: `id`, the readable fields in schema
    /// order, `version`, the timestamps, `expand`.
    fn members<E>(
        &self,
        mut put: impl FnMut(&'a str, Member<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.wanted("id") {
            put("id", Member::Text(&self.record.id))?;
        }
        for (i, (field, value)) in self
            .resource
            .fields
            .iter()
            .zip(&self.record.values)
            .enumerate()
        {
            let readable = match self.readable {
                Some(mask) => mask.get(i).copied().unwrap_or(false),
                None => !field.hidden,
            };
            if readable && self.wanted(&field.name) {
                put(&field.name, Member::Value(value))?;
            }
        }
        if self.wanted("version") {
            put("version", Member::Version(self.record.version))?;
        }
        if let Some(at) = &self.record.created_at
            && self.wanted("created_at")
        {
            put("created_at", Member::Text(at))?;
        }
        if let Some(at) = &self.record.updated_at
            && self.wanted("updated_at")
        {
            put("updated_at", Member::Text(at))?;
        }
        if let Some(expand) = self.expand {
            put("expand", Member::Expand(expand))?;
        }
        Ok(())
    }

    /// Appends the record's JSON to `out`: the same bytes as serializing it with
    /// `serde_json`, written without a serializer in between (lists write 20 or more
    /// records per answer, and most of their text needs no escaping).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let _ = self.members(|key, member| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Keys are field names (lower-case letters, digits and underscores, as the
            // schema requires) or the fixed ones: nothing to escape.
            debug_assert!(!key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match member {
                Member::Text(text) => write_json_str(out, text),
                Member::Value(Value::String(text)) => write_json_str(out, text),
                Member::Version(v) => write_json_value(out, &v),
                Member::Value(value) => write_json_value(out, value),
                Member::Expand(map) => write_json_value(out, map),
            }
            Ok::<(), std::convert::Infallible>(())
        });
        out.push(b'}');
    }
}

/// Appends `value` as `serde_json` writes it.
fn write_json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing JSON values to memory cannot fail: their map keys are strings.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it (control
/// characters, `"` and `\`; everything else as is). Text with nothing to escape, nearly
/// all of it, is copied whole after a check the compiler runs 16 bytes at a time.
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // Branch-free per byte, so that the check of a 16-byte chunk is a few vector
    // instructions (a padded last chunk measured slower than the byte loop).
    let needs_escape = |b: u8| u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\');
    let bytes = text.as_bytes();
    let (chunks, rest) = bytes.as_chunks::<16>();
    let escape = chunks
        .iter()
        .any(|chunk| chunk.iter().fold(0, |any, &b| any | needs_escape(b)) != 0)
        || rest.iter().any(|&b| needs_escape(b) != 0);
    if escape {
        write_json_value(out, text);
    } else {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    }
}

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        self.members(|key, member| match member {
            Member::Text(text) => map.serialize_entry(key, text),
            Member::Value(value) => map.serialize_entry(key, value),
            Member::Version(v) => map.serialize_entry(key, &v),
            Member::Expand(expand) => map.serialize_entry(key, expand),
        })?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = (0u8..=0x7f).map(|b| char::from(b).to_string()).collect();
        texts.extend(
            [
                "",
                "plain text that is longer than sixteen bytes",
                "sixteen bytes ok",
                "quote \" after sixteen bytes....",
                "back\\slash",
                "tab\tand newline\n",
                "\u{7f} delete, é, 漢字, 🦀",
                "0123456789abcdef\u{1}",
            ]
            .map(str::to_owned),
        );
        for text in &texts {
            let mut ours = Vec::new();
            write_json_str(&mut ours, text);
            assert_eq!(
                ours,
                serde_json::to_vec(text).expect("a string serializes"),
                "{text:?}"
            );
        }
    }
}

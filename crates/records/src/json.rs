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

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if self.wanted("id") {
            map.serialize_entry("id", &self.record.id)?;
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
                map.serialize_entry(&field.name, value)?;
            }
        }
        if self.wanted("version") {
            map.serialize_entry("version", &self.record.version)?;
        }
        if let Some(at) = &self.record.created_at
            && self.wanted("created_at")
        {
            map.serialize_entry("created_at", at)?;
        }
        if let Some(at) = &self.record.updated_at
            && self.wanted("updated_at")
        {
            map.serialize_entry("updated_at", at)?;
        }
        if let Some(expand) = self.expand {
            map.serialize_entry("expand", expand)?;
        }
        map.end()
    }
}

//! A record as clients see it: `id`, the readable fields in schema order, `version`,
//! timestamps. Hidden fields and fields whose read rule denies are left out.

use ferrobase_schema::Resource;
use ferrobase_store::Record;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Serializes one record of `resource` without building an intermediate map.
pub(crate) struct RecordJson<'a> {
    pub resource: &'a Resource,
    pub record: &'a Record,
}

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &self.record.id)?;
        for (field, value) in self.resource.fields.iter().zip(&self.record.values) {
            // Field read rules are evaluated once identities exist; until then only
            // public ones reveal the field.
            let readable = !field.hidden && field.read.as_ref().is_none_or(|r| r.is_public());
            if readable {
                map.serialize_entry(&field.name, value)?;
            }
        }
        map.serialize_entry("version", &self.record.version)?;
        if let Some(at) = &self.record.created_at {
            map.serialize_entry("created_at", at)?;
        }
        if let Some(at) = &self.record.updated_at {
            map.serialize_entry("updated_at", at)?;
        }
        map.end()
    }
}

/// A list of records of one resource.
pub(crate) struct RecordsJson<'a> {
    pub resource: &'a Resource,
    pub records: &'a [Record],
}

impl Serialize for RecordsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.records.iter().map(|record| RecordJson {
            resource: self.resource,
            record,
        }))
    }
}

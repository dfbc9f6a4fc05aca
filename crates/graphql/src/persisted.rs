//! Persisted documents (`graphql/*.graphql`), named as Apollo's automatic persisted
//! queries name them: `extensions.persistedQuery.sha256Hash`, the hex SHA-256 of the
//! file's exact bytes. With `[graphql] persisted_only`, nothing else runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The persisted documents of a project.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    documents: HashMap<String, Arc<str>>,
    only: bool,
}

/// Why a request's document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistedError {
    /// No document has this hash (Apollo clients then send the text, where allowed).
    NotFound,
    /// The text sent does not have the hash sent.
    Mismatch,
    /// Only persisted documents run here, and the request named none.
    Required,
    /// The request has neither a document nor a hash.
    Missing,
}

impl std::fmt::Display for PersistedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotFound => "PersistedQueryNotFound",
            Self::Mismatch => "the query's SHA-256 is not the sha256Hash sent",
            Self::Required => {
                "only persisted documents run on this server: send extensions.persistedQuery.sha256Hash"
            }
            Self::Missing => "the request has no query",
        })
    }
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Persisted {
    /// Reads `dir/*.graphql` (a missing directory holds none); `only` refuses every other
    /// document.
    pub fn load(dir: &Path, only: bool) -> Result<Self, String> {
        let mut documents = HashMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Persisted { documents, only });
            }
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
                continue;
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Err(e) = async_graphql::parser::parse_query(&text) {
                return Err(format!("{}: {e}", path.display()));
            }
            documents.insert(hex_sha256(&text), Arc::from(text));
        }
        Ok(Persisted { documents, only })
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The document a request runs: the persisted one its hash names, or (unless only
    /// persisted documents run) the text it sent, checked against its hash if it sent
    /// one.
    pub fn resolve(&self, query: &str, hash: Option<&str>) -> Result<Arc<str>, PersistedError> {
        match hash {
            Some(hash) => {
                let hash = hash.to_ascii_lowercase();
                if let Some(document) = self.documents.get(&hash) {
                    if !query.is_empty() && **document != *query {
                        return Err(PersistedError::Mismatch);
                    }
                    return Ok(document.clone());
                }
                if self.only || query.is_empty() {
                    return Err(PersistedError::NotFound);
                }
                if hex_sha256(query) != hash {
                    return Err(PersistedError::Mismatch);
                }
                Ok(Arc::from(query))
            }
            None if self.only => Err(PersistedError::Required),
            None if query.is_empty() => Err(PersistedError::Missing),
            None => Ok(Arc::from(query)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_by_hash_and_refuses_others_when_only() {
        let dir = tempfile::tempdir().expect("dir");
        let text = "query One { posts { totalCount } }\n";
        std::fs::write(dir.path().join("one.graphql"), text).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let hash = hex_sha256(text);
        let only = Persisted::load(dir.path(), true).expect("load");
        assert_eq!(only.len(), 1);
        assert_eq!(&*only.resolve("", Some(&hash)).expect("known"), text);
        assert_eq!(
            only.resolve("{ a }", None),
            Err(PersistedError::Required),
            "text alone"
        );
        assert_eq!(
            only.resolve("{ a }", Some(&hex_sha256("{ a }"))),
            Err(PersistedError::NotFound),
            "an unknown hash, even with its text"
        );
        assert_eq!(
            only.resolve("{ b }", Some(&hash)),
            Err(PersistedError::Mismatch)
        );
        let open = Persisted::load(dir.path(), false).expect("load");
        assert_eq!(&*open.resolve("{ a }", None).expect("text"), "{ a }");
        assert_eq!(
            &*open
                .resolve("{ a }", Some(&hex_sha256("{ a }")))
                .expect("text with its hash"),
            "{ a }"
        );
        assert_eq!(
            open.resolve("", Some(&hex_sha256("{ a }"))),
            Err(PersistedError::NotFound)
        );
    }

    #[test]
    fn a_broken_document_is_reported() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("bad.graphql"), "query {").expect("write");
        let err = Persisted::load(dir.path(), true).expect_err("broken");
        assert!(err.contains("bad.graphql"), "{err}");
    }
}

//! GraphQL generated from `schema.toml` (SPEC §10): one object type per resource, single
//! reads and Relay connections, relations as fields loaded one query per level for a
//! whole page, mutations and subscriptions, all on the record service and the realtime
//! service, so the rules, validation, errors and events are those of REST.
//!
//! The transport (HTTP, WebSocket) lives in the `http` crate; this crate builds the
//! schema and runs operations for a caller.
#![forbid(unsafe_code)]

mod admit;
mod build;
mod load;
mod names;
mod persisted;
mod subscribe;

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dynamic;
use ferrobase_access::Identity;
use ferrobase_realtime::{Realtime, RealtimeError};
use ferrobase_records::{RecordError, Records};

pub use names::{Names, singular};
pub use persisted::{Persisted, PersistedError};

/// What the transport says about an error of the record or realtime service: the REST
/// error code, the message, and the details (for validation, `{"fields": {...}}`). The
/// `http` crate maps each error once, for REST and GraphQL alike.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The REST error code (`NOT_FOUND`, `VALIDATION_FAILED`, ...).
    pub code: String,
    /// The message.
    pub message: String,
    /// The REST error's `details`.
    pub details: Option<serde_json::Value>,
}

/// An error of a service, for [`Problems`] to describe.
#[derive(Debug)]
pub enum Failure {
    /// The record service refused or failed.
    Record(RecordError),
    /// The realtime service refused or failed.
    Realtime(RealtimeError),
}

/// Describes failures as the REST API would.
pub type Problems = Arc<dyn Fn(Failure) -> Problem + Send + Sync>;

/// The services operations run on.
#[derive(Clone)]
pub struct Services {
    /// The record service.
    pub records: Records,
    /// The realtime service, for subscriptions (none: subscriptions are refused).
    pub realtime: Option<Realtime>,
    /// How failures are described.
    pub problems: Problems,
}

/// Limits and switches (from `[graphql]`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Deepest selection.
    pub max_depth: usize,
    /// Most fields an operation selects, each counted once.
    pub max_complexity: usize,
    /// Most records one operation loads.
    pub max_records: usize,
    /// Whether the schema can be introspected.
    pub introspection: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_depth: 10,
            max_complexity: 1000,
            max_records: 10_000,
            introspection: true,
        }
    }
}

/// The caller of one operation, in the operation's data.
pub struct Call {
    /// Who is asking (with the user record loaded when rules need it).
    pub identity: Identity,
    /// Records loaded so far, against [`Options::max_records`].
    loaded: std::sync::atomic::AtomicUsize,
    /// For subscriptions: when the credential expires, and the client's address (the
    /// per-user connection limit of anonymous callers).
    pub expires: Option<time::OffsetDateTime>,
    /// See [`Call::expires`].
    pub client: String,
    /// Errors of nullable fields, which answer null (the schema engine would otherwise
    /// null the whole answer): added to the response's errors. `None` where nothing
    /// drains them (operations over the WebSocket): such errors fail their field's
    /// parent instead.
    errors: Option<Arc<std::sync::Mutex<Vec<async_graphql::ServerError>>>>,
}

/// Who the operations of one WebSocket connection act for: each operation gets a
/// [`Call`] of its own from it (its own record budget).
#[derive(Debug, Clone)]
pub struct CallTemplate {
    /// The caller (with the user record loaded when rules need it).
    pub identity: Identity,
    /// When the credential expires.
    pub expires: Option<time::OffsetDateTime>,
    /// The client's address key.
    pub client: String,
}

impl CallTemplate {
    fn call(&self) -> Call {
        Call {
            errors: None,
            ..Call::new(self.identity.clone(), self.expires, self.client.clone())
        }
    }
}

/// Gives every operation without a [`Call`] of its own one from the connection's
/// [`CallTemplate`].
struct PerOperation;

impl async_graphql::extensions::ExtensionFactory for PerOperation {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(PerOperation)
    }
}

#[async_graphql::async_trait::async_trait]
impl async_graphql::extensions::Extension for PerOperation {
    async fn prepare_request(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        request: async_graphql::Request,
        next: async_graphql::extensions::NextPrepareRequest<'_>,
    ) -> async_graphql::ServerResult<async_graphql::Request> {
        let has_call = request.data.contains_key(&std::any::TypeId::of::<Call>());
        let request = match ctx.data_opt::<CallTemplate>() {
            Some(template) if !has_call => request.data(template.call()),
            _ => request,
        };
        next.run(ctx, request).await
    }
}

impl Call {
    /// A call by `identity`.
    pub fn new(identity: Identity, expires: Option<time::OffsetDateTime>, client: String) -> Self {
        Call {
            identity,
            loaded: std::sync::atomic::AtomicUsize::new(0),
            expires,
            client,
            errors: Some(Arc::default()),
        }
    }
}

/// Queries one operation may need (each connection, relation, single read and count
/// takes one per level): more is refused before anything runs.
pub const MAX_STATEMENTS: u64 = 50;

/// The generated GraphQL API of one schema.
#[derive(Clone)]
pub struct Graphql {
    /// For requests that bring their own [`Call`] (HTTP).
    schema: dynamic::Schema,
    /// For WebSocket connections: each operation gets a [`Call`] from the connection's
    /// [`CallTemplate`].
    per_operation: dynamic::Schema,
    loaders: Arc<admit::Loaders>,
    limits: admit::Limits,
    /// Documents parsed and sized before, by text (clients send the same few).
    parsed: Arc<std::sync::Mutex<HashMap<Arc<str>, Parsed>>>,
}

/// A document parsed once, and what [`Graphql::admit`] said of it.
#[derive(Clone)]
pub struct Parsed {
    /// The document.
    pub document: async_graphql::parser::types::ExecutableDocument,
    /// Why it may not run, if so.
    pub refused: Option<String>,
}

/// Documents kept parsed, and the longest kept.
const PARSED_ENTRIES: usize = 512;
const PARSED_LENGTH: usize = 16 * 1024;

impl Graphql {
    /// Builds the API of `schema`; `services` are needed to run operations, not to print
    /// the SDL. Fails with every naming conflict listed.
    pub fn build(
        schema: &ferrobase_schema::Schema,
        options: &Options,
        services: Option<Services>,
    ) -> Result<Self, String> {
        let loaders = Arc::new(build::loaders(schema));
        let limits = admit::Limits {
            fields: options.max_complexity as u64,
            records: options.max_records as u64,
            statements: MAX_STATEMENTS,
        };
        let per_operation = build::schema(schema, options, services.clone(), true)?;
        build::schema(schema, options, services, false).map(|schema| Graphql {
            schema,
            per_operation,
            loaders,
            limits,
            parsed: Arc::default(),
        })
    }

    /// `query` parsed (from the cache when it was parsed before) and sized.
    pub fn parse(&self, query: &str) -> Result<Parsed, async_graphql::parser::Error> {
        let cacheable = query.len() <= PARSED_LENGTH;
        if cacheable
            && let Some(hit) = self
                .parsed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(query)
        {
            return Ok(hit.clone());
        }
        let document = async_graphql::parser::parse_query(query)?;
        let refused = self.admit(&document).err();
        let parsed = Parsed { document, refused };
        if cacheable {
            let mut cache = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= PARSED_ENTRIES {
                cache.clear();
            }
            cache.insert(Arc::from(query), parsed.clone());
        }
        Ok(parsed)
    }

    /// Refuses a document whose fields (fragments expanded), records (page sizes
    /// multiplied through the nesting) or queries exceed the limits, before it runs
    /// (the message says which).
    pub fn admit(
        &self,
        document: &async_graphql::parser::types::ExecutableDocument,
    ) -> Result<(), String> {
        admit::admit(document, &self.loaders, self.limits)
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }

    /// The executable schema for WebSocket connections (operations take their [`Call`]
    /// from the connection's [`CallTemplate`]).
    pub fn websocket_schema(&self) -> &dynamic::Schema {
        &self.per_operation
    }

    /// Runs one request for `call`.
    pub async fn execute(
        &self,
        request: async_graphql::Request,
        call: Call,
    ) -> async_graphql::Response {
        let errors = call.errors.clone().unwrap_or_default();
        let mut response = self.schema.execute(request.data(call)).await;
        let mut soft = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
        if !soft.is_empty() {
            soft.append(&mut response.errors);
            response.errors = soft;
        }
        // One failed load answers every node of its page with the same error: report
        // it once.
        let mut seen = std::collections::HashSet::new();
        response
            .errors
            .retain(|e| seen.insert((e.message.clone(), e.locations.clone())));
        response
    }
}

/// The kind and name of the operation a request runs, for the request log: `query
/// PostPage`, or `query` when unnamed. `None` when the document does not parse.
pub fn operation_label(query: &str, operation_name: Option<&str>) -> Option<String> {
    let document = async_graphql::parser::parse_query(query).ok()?;
    operation_label_of(&document, operation_name)
}

/// [`operation_label`] of a parsed document; `None` when it has no such operation.
pub fn operation_label_of(
    document: &async_graphql::parser::types::ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<String> {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let (name, operation) = match &document.operations {
        DocumentOperations::Single(op) => (None, op),
        DocumentOperations::Multiple(ops) => match operation_name {
            Some(wanted) => {
                let (name, op) = ops.iter().find(|(n, _)| n.as_str() == wanted)?;
                (Some(name.as_str().to_owned()), op)
            }
            None if ops.len() == 1 => {
                let (name, op) = ops.iter().next()?;
                (Some(name.as_str().to_owned()), op)
            }
            None => return None,
        },
    };
    let kind = match operation.node.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    Some(match name {
        Some(name) => format!("{kind} {name}"),
        None => kind.to_owned(),
    })
}

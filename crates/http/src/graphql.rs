//! GraphQL over HTTP and WebSocket at `/api/v1/graphql` (SPEC §10): `POST` runs any
//! operation, `GET` runs queries (and shows the query page to browsers), a WebSocket
//! upgrade speaks `graphql-transport-ws` for subscriptions. Operations run on
//! [`ferrobase_graphql`], which runs them on the record and realtime services.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocket as GqlWebSocket, WebSocketProtocols as Protocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequest, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, extract::ws::rejection::WebSocketUpgradeRejection};
use ferrobase_graphql::{Call, CallTemplate, Failure, PersistedError, Problem};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::boundary::LoggedOperation;
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Credential, CredentialExpiry, Identity, Via, bearer_caller, origin_allowed};
use crate::realtime::{Recheck, client, expiry, recheck};
use crate::state::AppState;

/// Every failure of the services described once, as REST describes it.
pub(crate) fn problems() -> ferrobase_graphql::Problems {
    Arc::new(|failure| {
        let e = match failure {
            Failure::Record(e) => ApiError::from(e),
            Failure::Realtime(e) => ApiError::from(e),
        };
        Problem {
            code: e.code.to_owned(),
            message: e.message,
            details: e.details,
        }
    })
}

/// One GraphQL request as the client sent it.
struct Incoming {
    query: String,
    variables: Option<Value>,
    operation_name: Option<String>,
    hash: Option<String>,
}

fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

impl Incoming {
    fn from_json(map: &Map<String, Value>) -> Result<Self, ApiError> {
        for key in map.keys() {
            if !matches!(
                key.as_str(),
                "query" | "variables" | "operationName" | "extensions"
            ) {
                return Err(ApiError::bad_request(format!(
                    "unknown key '{key}'; a GraphQL request has query, variables, operationName and extensions"
                )));
            }
        }
        let variables = match map.get("variables") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(ApiError::bad_request("variables must be an object")),
        };
        let hash = match map.get("extensions") {
            None | Some(Value::Null) => None,
            Some(Value::Object(ext)) => ext
                .get("persistedQuery")
                .and_then(|p| p.get("sha256Hash"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            Some(_) => return Err(ApiError::bad_request("extensions must be an object")),
        };
        Ok(Incoming {
            query: text(map, "query")?.unwrap_or_default(),
            variables,
            operation_name: text(map, "operationName")?,
            hash,
        })
    }

    fn from_query_string(raw: &str) -> Result<Self, ApiError> {
        let mut map = Map::new();
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            let value = match key.as_ref() {
                "variables" | "extensions" => serde_json::from_str(&value)
                    .map_err(|_| ApiError::bad_request(format!("{key} must be a JSON object")))?,
                _ => Value::String(value.into_owned()),
            };
            if map.insert(key.to_string(), value).is_some() {
                return Err(ApiError::bad_request(format!(
                    "{key} is given more than once"
                )));
            }
        }
        Self::from_json(&map)
    }
}

/// A GraphQL error answer (HTTP 200, as GraphQL over `application/json` answers
/// errors), with a REST code.
fn graphql_error(code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    json_response(StatusCode::OK, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Gives every error a code: the services' errors have theirs; the document's own
/// (syntax, validation, limits) get `BAD_REQUEST` or `QUERY_TOO_COMPLEX`.
fn code_errors(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if has_code {
            continue;
        }
        let code = if error.message.contains("too deep") || error.message.contains("too complex") {
            "QUERY_TOO_COMPLEX"
        } else if error.message.starts_with("internal:") {
            "INTERNAL"
        } else {
            "BAD_REQUEST"
        };
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}

/// `GET /api/v1/graphql`: a WebSocket upgrade (subscriptions), the query page for a
/// browser, or a query in the query string.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    expires: Option<Extension<CredentialExpiry>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Some(graphql) = state.graphql.clone() else {
        return Err(ApiError::not_found("GraphQL is not enabled on this server"));
    };
    if let Ok(upgrade) = upgrade {
        return websocket(state, graphql, identity, peer, headers, upgrade).await;
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let raw = raw.unwrap_or_default();
    if raw.is_empty() && wants_html {
        return Ok(crate::graphql_page::page());
    }
    let incoming = Incoming::from_query_string(&raw)?;
    run(
        &state, &graphql, identity, expires, &headers, peer, incoming, true,
    )
    .await
}

/// `POST /api/v1/graphql`: any operation, as JSON.
pub(crate) async fn post(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    expires: Option<Extension<CredentialExpiry>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(graphql) = state.graphql.clone() else {
        return Err(ApiError::not_found("GraphQL is not enabled on this server"));
    };
    let headers = req.headers().clone();
    let JsonObject(body) = JsonObject::from_request(req, &state).await?;
    let incoming = Incoming::from_json(&body)?;
    run(
        &state, &graphql, identity, expires, &headers, peer, incoming, false,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: &AppState,
    graphql: &ferrobase_graphql::Graphql,
    identity: Identity,
    expires: Option<Extension<CredentialExpiry>>,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    incoming: Incoming,
    by_get: bool,
) -> Result<Response, ApiError> {
    let query = match state
        .graphql_documents
        .resolve(&incoming.query, incoming.hash.as_deref())
    {
        Ok(query) => query,
        Err(PersistedError::NotFound) => {
            return Ok(graphql_error(
                "PERSISTED_QUERY_NOT_FOUND",
                &PersistedError::NotFound.to_string(),
            ));
        }
        Err(e @ PersistedError::Required) => {
            return Err(ApiError::forbidden_with(e.to_string()));
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    let mut request = async_graphql::Request::new(query.to_string());
    if let Some(name) = &incoming.operation_name {
        request = request.operation_name(name);
    }
    // Parsed once, here (or taken from the documents parsed before): the log names the
    // operation, its cost is judged, and GET may run only queries (a GET must never
    // write: no CSRF token guards it). The schema executes this parse.
    let (label, refused) = match graphql.parse(&query) {
        Ok(parsed) => {
            let label = ferrobase_graphql::operation_label_of(
                &parsed.document,
                incoming.operation_name.as_deref(),
            );
            request.set_parsed_query(parsed.document);
            (label, parsed.refused)
        }
        Err(_) => (None, None),
    };
    if let Some(e) = refused {
        let mut res = graphql_error("QUERY_TOO_COMPLEX", &e);
        res.extensions_mut().insert(LoggedOperation(
            label.unwrap_or_else(|| "invalid".to_owned()),
        ));
        return Ok(res);
    }
    if by_get && !label.as_deref().is_some_and(|l| l.starts_with("query")) {
        let parses = label.is_some() || graphql.parse(&query).is_ok();
        if parses {
            let mut res = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "GET runs queries only; send mutations with POST",
            )
            .into_response();
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            return Ok(res);
        }
    }
    let identity = state.records.with_user(identity).await?;
    let call = Call::new(
        identity,
        expiry(expires),
        client(state, headers, peer.map(|Extension(c)| c.0)),
    );
    if let Some(variables) = incoming.variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    let mut response = graphql.execute(request, call).await;
    code_errors(&mut response);
    let body = serde_json::to_string(&response).map_err(ApiError::internal)?;
    let mut res = json_response(StatusCode::OK, body);
    res.extensions_mut().insert(LoggedOperation(
        label.unwrap_or_else(|| "invalid".to_owned()),
    ));
    Ok(res)
}

/// How long a WebSocket client has to send `connection_init`, and how often the server
/// pings.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

async fn websocket(
    state: AppState,
    graphql: ferrobase_graphql::Graphql,
    identity: Identity,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // A browser sends the session cookie with a WebSocket handshake from any site: the
    // page must be this site's (or an allowed origin's).
    if matches!(identity.caller().map(|c| &c.via), Some(Via::Cookie { .. }))
        && !origin_allowed(&state, &headers)
    {
        return Err(ApiError::forbidden_with(
            "cross-site WebSocket refused: Origin is not this site",
        ));
    }
    let peer = peer.map(|Extension(c)| c.0);
    let client = client(&state, &headers, peer);
    let quota_key = crate::identity::client_key_of(&state, &headers, peer);
    let handshake = Acting {
        credential: Credential::of(&state, &headers),
        identity,
    };
    Ok(upgrade
        .protocols(["graphql-transport-ws"])
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(256 * 1024)
        .on_upgrade(move |socket| session(state, graphql, handshake, (client, quota_key), socket)))
}

/// Who a connection acts for, and by which credential (checked again every heartbeat).
struct Acting {
    identity: Identity,
    credential: Credential,
}

/// The caller a `connection_init` payload names (`{"token": ...}`), or the handshake's.
async fn init_call(
    state: &AppState,
    handshake: &Acting,
    client: String,
    payload: &Value,
) -> Result<(CallTemplate, Acting), ApiError> {
    let token = payload.get("token").and_then(Value::as_str);
    let (identity, expires, credential) = match token {
        Some(token) => {
            let (caller, expires) = bearer_caller(state, token).await?;
            (
                Identity(Some(caller)),
                expires,
                Credential::Bearer(token.to_owned()),
            )
        }
        None => (
            handshake.identity.clone(),
            None,
            handshake.credential.clone(),
        ),
    };
    let identity = state.records.with_user(identity).await?;
    let call = CallTemplate {
        identity: identity.clone(),
        expires: expires.and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok()),
        client,
    };
    Ok((
        call,
        Acting {
            identity,
            credential,
        },
    ))
}

/// The `type` and `id` of a protocol message.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
}

fn envelope(text: &str) -> Envelope {
    serde_json::from_str(text).unwrap_or(Envelope {
        kind: None,
        id: None,
    })
}

/// A close frame; its reason cut to the 123 bytes a frame can carry.
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

/// Messages a client may have in flight to the engine before the connection counts as
/// flooding it.
const IN_FLIGHT: usize = 64;

/// A `subscribe` message made ready to run: its document resolved (persisted documents),
/// parsed and admitted (cost limits), or the error message to answer instead.
fn screen(
    state: &AppState,
    graphql: &ferrobase_graphql::Graphql,
    id: &str,
    mut message: Map<String, Value>,
) -> Result<String, String> {
    let refuse = |code: &str, text: String| {
        serde_json::json!({
            "id": id, "type": "error",
            "payload": [{ "message": text, "extensions": { "code": code } }],
        })
        .to_string()
    };
    let payload = match message.get_mut("payload") {
        Some(Value::Object(p)) => p,
        _ => {
            return Err(refuse(
                "BAD_REQUEST",
                "subscribe needs a payload object".into(),
            ));
        }
    };
    let query = payload
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let hash = payload
        .get("extensions")
        .and_then(|e| e.get("persistedQuery"))
        .and_then(|p| p.get("sha256Hash"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let query = match state.graphql_documents.resolve(&query, hash.as_deref()) {
        Ok(query) => query,
        Err(e @ PersistedError::NotFound) => {
            return Err(refuse("PERSISTED_QUERY_NOT_FOUND", e.to_string()));
        }
        Err(e @ PersistedError::Required) => return Err(refuse("FORBIDDEN", e.to_string())),
        Err(e) => return Err(refuse("BAD_REQUEST", e.to_string())),
    };
    // A document that does not parse is the engine's to report, in its own words.
    if let Ok(parsed) = graphql.parse(&query)
        && let Some(e) = parsed.refused
    {
        return Err(refuse("QUERY_TOO_COMPLEX", e));
    }
    payload.insert("query".into(), Value::String(query.to_string()));
    Ok(Value::Object(message).to_string())
}

/// One `graphql-transport-ws` connection.
async fn session(
    state: AppState,
    graphql: ferrobase_graphql::Graphql,
    handshake: Acting,
    (client, quota_key): (String, String),
    mut socket: WebSocket,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(IN_FLIGHT);
    let input =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    // Who the connection acts for once `connection_init` is accepted.
    let acting: Arc<std::sync::Mutex<Option<Acting>>> = Arc::default();
    let init_state = state.clone();
    let handshake = Arc::new(handshake);
    let init_acting = acting.clone();
    let output = GqlWebSocket::new(
        graphql.websocket_schema().clone(),
        input,
        Protocols::GraphQLWS,
    )
    .on_connection_init(move |payload| {
        let state = init_state.clone();
        let handshake = handshake.clone();
        let client = client.clone();
        let acting = init_acting.clone();
        async move {
            match init_call(&state, &handshake, client, &payload).await {
                Ok((template, who)) => {
                    *acting.lock().unwrap_or_else(|p| p.into_inner()) = Some(who);
                    let mut data = async_graphql::Data::default();
                    // Each operation gets a Call of its own from this.
                    data.insert(template);
                    Ok(data)
                }
                Err(e) => Err(async_graphql::Error::new(format!(
                    "{}: {}",
                    e.code, e.message
                ))),
            }
        }
    })
    // The server pings (below); a quiet client is not a dead one.
    .keepalive_timeout(None);
    let mut output = std::pin::pin!(output);
    let mut shutting_down = state.realtime.shutting_down();
    let opened = tokio::time::Instant::now();
    let mut initialised = false;
    let mut acknowledged = false;
    let mut active: HashSet<String> = HashSet::new();
    // Operations the client completed: the engine's own `complete` for them follows.
    let mut completed: HashSet<String> = HashSet::new();
    let mut heartbeat = tokio::time::interval(state.settings.realtime.heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                let Ok(Value::Object(message)) = serde_json::from_str::<Value>(&text) else {
                    let _ = write(&mut socket, close(4400, "Invalid message")).await;
                    break;
                };
                let kind = message.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
                let id = message.get("id").and_then(Value::as_str).map(str::to_owned);
                let forward = match (kind.as_str(), id) {
                    ("connection_init", _) => {
                        initialised = true;
                        Some(text)
                    }
                    ("subscribe", _) if !acknowledged => {
                        let _ = write(&mut socket, close(4401, "Unauthorized")).await;
                        break;
                    }
                    ("subscribe", Some(id)) => {
                        if active.contains(&id) {
                            let reason = format!("Subscriber for {id} already exists");
                            let _ = write(&mut socket, close(4409, &reason)).await;
                            break;
                        }
                        // Each operation counts against the caller's quota, as a POST would.
                        let quota = acting
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .as_ref()
                            .and_then(|a| a.identity.caller().map(|c| format!("user:{}", c.id)))
                            .unwrap_or_else(|| quota_key.clone());
                        let screened = match crate::ratelimit::charge_operation(&state, &quota).await {
                            Ok(()) => screen(&state, &graphql, &id, message),
                            Err(text) => Err(serde_json::json!({
                                "id": id, "type": "error",
                                "payload": [{ "message": text, "extensions": { "code": "RATE_LIMITED" } }],
                            })
                            .to_string()),
                        };
                        match screened {
                            Ok(text) => {
                                log_operation(&text);
                                active.insert(id);
                                Some(text)
                            }
                            Err(refusal) => {
                                if !write(&mut socket, Message::Text(refusal.into())).await {
                                    break;
                                }
                                None
                            }
                        }
                    }
                    ("complete", Some(id)) => {
                        if active.remove(&id) {
                            completed.insert(id);
                        }
                        Some(text)
                    }
                    _ => Some(text),
                };
                // The engine takes messages as it can: a client that keeps it further
                // behind than this is flooding it.
                if let Some(text) = forward
                    && tx.try_send(text).is_err()
                {
                    let _ = write(&mut socket, close(1008, "too many messages in flight")).await;
                    break;
                }
            }
            out = output.next() => {
                let message = match out {
                    Some(WsMessage::Text(t)) => {
                        if let Envelope { kind: Some(kind), id } = envelope(&t) {
                            match (kind.as_str(), id) {
                                ("connection_ack", _) => acknowledged = true,
                                ("complete" | "error", Some(id)) if !completed.remove(&id) => {
                                    active.remove(&id);
                                }
                                _ => {}
                            }
                        }
                        Message::Text(t.into())
                    }
                    Some(WsMessage::Close(code, reason)) => {
                        // A refused connection_init is 4403 Forbidden in the protocol.
                        let refused = initialised
                            && acting.lock().unwrap_or_else(|p| p.into_inner()).is_none();
                        let code = if code == 1002 && refused { 4403 } else { code };
                        let _ = write(&mut socket, close(code, &reason)).await;
                        break;
                    }
                    None => break,
                };
                if !write(&mut socket, message).await {
                    break;
                }
            }
            () = tokio::time::sleep_until(opened + INIT_TIMEOUT), if !initialised => {
                let _ = write(&mut socket, close(4408, "Connection initialisation timeout")).await;
                break;
            }
            _ = heartbeat.tick() => {
                // Signing out, a revoked key or session, a deleted user or a changed role
                // ends the connection: the client reconnects with what it has now.
                let current = acting.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|a| (a.credential.clone(), a.identity.clone()));
                if let Some((credential, identity)) = current
                    && !matches!(recheck(&state, &credential, &identity).await, Recheck::Same)
                {
                    let _ = write(&mut socket, close(4403, "Forbidden: the credential ended or changed; reconnect")).await;
                    break;
                }
                // The protocol's ping keeps idle connections (and their proxies) open.
                if acknowledged && !write(&mut socket, Message::Text(r#"{"type":"ping"}"#.into())).await {
                    break;
                }
            }
            _ = shutting_down.changed() => {
                if *shutting_down.borrow() {
                    let _ = write(&mut socket, close(1001, "the server is shutting down; reconnect")).await;
                    break;
                }
            }
        }
    }
}

/// One request-log line per subscription operation a WebSocket client starts.
fn log_operation(text: &str) {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let payload = message.get("payload");
    let query = payload
        .and_then(|p| p.get("query"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = payload
        .and_then(|p| p.get("operationName"))
        .and_then(Value::as_str);
    let label = ferrobase_graphql::operation_label(query, name);
    tracing::info!(
        target: "ferrobase::request",
        method = "WS",
        route = "/api/v1/graphql",
        operation = label.as_deref().unwrap_or("invalid"),
        id = message.get("id").and_then(|v| v.as_str()),
        "operation"
    );
}

async fn write(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

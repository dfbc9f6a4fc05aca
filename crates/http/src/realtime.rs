//! Realtime transports (SPEC §10): Server-Sent Events per resource at
//! `GET /api/v1/{resource}/events` and the WebSocket protocol at `GET /api/v1/realtime`.
//! Both only carry what [`ferrobase_realtime`] decides: who sees which event, shaped how.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, extract::ws::rejection::WebSocketUpgradeRejection};
use ferrobase_realtime::{Close, Connection, Out, RealtimeError, Start, SubscribeRequest};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::identity::{
    Caller, Credential, CredentialExpiry, Identity, Via, bearer_caller, client_ip, origin_allowed,
};
use crate::state::AppState;

/// Each refusal once: the status and code of every [`RealtimeError`].
impl From<RealtimeError> for ApiError {
    fn from(e: RealtimeError) -> Self {
        match e {
            RealtimeError::Record(e) => e.into(),
            e @ RealtimeError::TooManyConnectionsForUser { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", e.to_string())
            }
            e @ (RealtimeError::NodeFull
            | RealtimeError::ShuttingDown
            | RealtimeError::NotReady) => Self::unavailable(e.to_string()),
            e @ RealtimeError::TooManySubscriptions { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE",
                e.to_string(),
            ),
            e @ RealtimeError::DuplicateSubscription(_) => Self::bad_request(e.to_string()),
            e @ RealtimeError::UnknownSubscription(_) => Self::not_found(e.to_string()),
        }
    }
}

/// What checking a connection's credential again found.
pub(crate) enum Recheck {
    /// Still the same caller.
    Same,
    /// Still valid, but the caller changed (role, user record): judge as this one now.
    Changed(Identity),
    /// Gone: logged out, revoked, expired, the user deleted.
    Ended,
}

fn same_caller(a: &Caller, b: &Caller) -> bool {
    a.id == b.id && a.role == b.role && a.user == b.user
}

/// Checks the credential of a connection acting for `current` again.
pub(crate) async fn recheck(
    state: &AppState,
    credential: &Credential,
    current: &Identity,
) -> Recheck {
    let Some(caller) = current.caller() else {
        return Recheck::Same;
    };
    let now = match credential.caller(state).await {
        Ok(Some(now)) => now,
        Ok(None) => return Recheck::Ended,
        Err(e) if matches!(e.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            return Recheck::Ended;
        }
        // The database or Redis failing is no reason to end anyone's stream.
        Err(_) => return Recheck::Same,
    };
    if now.id != caller.id {
        return Recheck::Ended;
    }
    match state.records.with_user(Identity(Some(now))).await {
        Ok(identity) => match identity.caller() {
            Some(now) if same_caller(now, caller) => Recheck::Same,
            Some(_) => Recheck::Changed(identity),
            None => Recheck::Ended,
        },
        Err(_) => Recheck::Same,
    }
}

/// The key of the caller's connection limit when anonymous: its address.
pub(crate) fn client(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    client_ip(state, headers, peer).map_or_else(|| "ip:unknown".into(), |ip| format!("ip:{ip}"))
}

pub(crate) fn expiry(expires: Option<Extension<CredentialExpiry>>) -> Option<OffsetDateTime> {
    expires.and_then(|Extension(CredentialExpiry(at))| OffsetDateTime::from_unix_timestamp(at).ok())
}

/// `GET /api/v1/{resource}/events?filter=&after=`: the resource's record events the
/// caller may see, as Server-Sent Events. `Last-Event-ID` (or `after`) resumes.
pub(crate) async fn sse(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    expires: Option<Extension<CredentialExpiry>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut filter = None;
    let mut after = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "filter" => filter = Some(value.into_owned()),
            "after" => after = Some(position(&value).ok_or_else(|| bad_position("after"))?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter '{}' (an event stream takes filter and after)",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().ok().and_then(position);
        after = Some(last.ok_or_else(|| bad_position("Last-Event-ID"))?);
    }
    let identity = state.records.with_user(identity).await?;
    let credential = Credential::of(&state, &headers);
    let client = client(&state, &headers, peer.map(|Extension(c)| c.0));
    let mut conn = state
        .realtime
        .connect(identity, expiry(expires), &client, "sse")?;
    let subscribed = conn
        .subscribe(SubscribeRequest {
            name: None,
            resource,
            filter,
            record_id: None,
            after,
        })
        .await?;
    let stream = SseStream {
        conn,
        next_check: tokio::time::Instant::now() + state.settings.realtime.heartbeat,
        last_id: after.unwrap_or(0),
        credential,
        state: state.clone(),
        replay: None,
        pending: std::collections::VecDeque::new(),
        done: false,
    };
    let stream = stream.start(subscribed.start);
    let stream = futures_util::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|e| (Ok::<Event, Infallible>(e), s))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.settings.realtime.heartbeat))
        .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    // Proxies that buffer responses (nginx) would hold the events back.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn position(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|n| *n >= 0)
}

fn bad_position(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} must be the seq of an event (a whole number from 0)"
    ))
}

/// One SSE connection's stream: replayed events first, then the live ones.
struct SseStream {
    conn: Connection,
    /// Checked again every heartbeat: the stream ends when it no longer names the
    /// caller it was opened for.
    credential: Credential,
    next_check: tokio::time::Instant,
    /// The last position the client was given (event ids, a reset, an id-only event).
    last_id: i64,
    state: AppState,
    replay: Option<(i64, i64)>,
    pending: std::collections::VecDeque<Event>,
    done: bool,
}

fn control(name: &str, message: &str) -> Event {
    Event::default()
        .event(name)
        .data(json!({ "message": message }).to_string())
}

impl SseStream {
    fn start(mut self, start: Start) -> Self {
        match start {
            Start::Live => {}
            Start::Replay { after, upto } => self.replay = Some((after, upto)),
            // With an id: a reconnect resumes from here instead of asking again.
            Start::Reset { at } => {
                self.last_id = at;
                self.pending.push_back(
                    control(
                        "reset",
                        "the position is older than the event log keeps: refetch, then go on",
                    )
                    .id(at.to_string()),
                );
            }
        }
        self
    }

    fn event(&mut self, out: Out) -> Event {
        self.last_id = self.last_id.max(out.seq);
        Event::default().id(out.seq.to_string()).data(&*out.data)
    }

    /// How long until the credential expires (`None`: it does not).
    fn expires_in(&self) -> Option<Duration> {
        self.conn.who().expires_in(self.state.clock.now())
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if self.expires_in().is_some_and(|d| d.is_zero()) {
                self.done = true;
                return Some(control(
                    "expired",
                    "the access token has expired: refresh it and reconnect with Last-Event-ID",
                ));
            }
            if let Some((after, upto)) = self.replay {
                match self.conn.replay(None, after, upto).await {
                    Ok(Some((outs, next))) => {
                        self.replay = (next < upto).then_some((next, upto));
                        for out in outs {
                            let event = self.event(out);
                            self.pending.push_back(event);
                        }
                    }
                    Ok(None) => self.replay = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot replay realtime events");
                        self.done = true;
                    }
                }
                continue;
            }
            let heartbeat = self.state.settings.realtime.heartbeat;
            if tokio::time::Instant::now() >= self.next_check {
                self.next_check = tokio::time::Instant::now() + heartbeat;
                if !matches!(self.credential, Credential::None) {
                    match recheck(&self.state, &self.credential, &self.conn.who().identity).await {
                        Recheck::Same => {}
                        // A stream judges for the caller it was opened for: a changed
                        // caller reconnects (EventSource does so by itself).
                        Recheck::Changed(_) | Recheck::Ended => {
                            self.done = true;
                            return Some(control(
                                "expired",
                                "the credential no longer grants this stream: sign in again and reconnect with Last-Event-ID",
                            ));
                        }
                    }
                }
                // A quiet stream (its filter passed nothing) still moves its position:
                // an id without data sets EventSource's lastEventId and fires nothing,
                // so a reconnect resumes from here instead of replaying, or resetting.
                if let Some(at) = self.conn.idle_position()
                    && at > self.last_id
                {
                    self.last_id = at;
                    return Some(Event::default().id(at.to_string()));
                }
            }
            // Wake up for the next heartbeat's checks, and for the credential's expiry
            // (which a test may reach by moving the clock).
            let wake = match self.expires_in() {
                Some(d) => self.next_check.min(tokio::time::Instant::now() + d),
                None => self.next_check,
            };
            let timer = tokio::time::sleep_until(wake);
            tokio::select! {
                out = self.conn.next() => match out {
                    // An event that arrives after the credential expired is not its.
                    Ok(_) if self.expires_in().is_some_and(|d| d.is_zero()) => continue,
                    Ok(out) => return Some(self.event(out)),
                    Err(Close::Shutdown) => {
                        self.done = true;
                        return Some(control("shutdown", "the server is shutting down: reconnect with Last-Event-ID"));
                    }
                    Err(Close::Overflow) => {
                        self.done = true;
                        return Some(Event::default().comment(
                            "overflow: this stream fell a whole buffer behind; reconnect with Last-Event-ID",
                        ));
                    }
                },
                () = timer => {}
            }
        }
    }
}

/// `GET /api/v1/realtime`: the WebSocket protocol (JSON text messages).
pub(crate) async fn websocket(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    expires: Option<Extension<CredentialExpiry>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade
        .map_err(|e| ApiError::bad_request(format!("this endpoint speaks WebSocket only: {e}")))?;
    // A browser sends the session cookie with a WebSocket handshake from any site: the
    // page must be this site's (or an allowed origin's).
    if matches!(identity.caller().map(|c| &c.via), Some(Via::Cookie { .. }))
        && !origin_allowed(&state, &headers)
    {
        return Err(ApiError::forbidden_with(
            "cross-site WebSocket refused: Origin is not this site",
        ));
    }
    let identity = state.records.with_user(identity).await?;
    let credential = Credential::of(&state, &headers);
    let client = client(&state, &headers, peer.map(|Extension(c)| c.0));
    let conn = state
        .realtime
        .connect(identity, expiry(expires), &client, "websocket")?;
    // Small buffers: tungstenite's default 128 KiB each would make idle connections
    // expensive; client messages are small and every server message is flushed.
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| Session::new(state, conn, socket, credential).run()))
}

/// One WebSocket connection.
struct Session {
    state: AppState,
    conn: Connection,
    socket: WebSocket,
    /// The last `seq` sent per subscription (resumed from after a fresh `auth`).
    positions: HashMap<Option<String>, i64>,
    expired: bool,
    /// Messages the client may still send now (refilled over time): subscribing takes
    /// the hub's registry lock, so a flood of them must not be free.
    allowance: f64,
    refilled: tokio::time::Instant,
    /// The credential the connection acts by, checked again every heartbeat.
    credential: Credential,
}

/// How long one message may take to go out before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages a WebSocket client may send per second, and in one burst.
const MESSAGES_PER_SECOND: f64 = 50.0;
const MESSAGE_BURST: f64 = 100.0;

fn error_message(id: Option<&str>, e: &ApiError) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), "error".into());
    if let Some(id) = id {
        m.insert("id".into(), id.into());
    }
    m.insert("code".into(), e.code.into());
    m.insert("message".into(), e.message.clone().into());
    if let Some(details) = &e.details {
        m.insert("details".into(), details.clone());
    }
    Value::Object(m)
}

/// A subscription id: what the client chose, within reason.
fn subscription_id(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(s.clone()),
        _ => Err(ApiError::bad_request(
            "id must be a string of 1 to 64 characters",
        )),
    }
}

impl Session {
    fn new(state: AppState, conn: Connection, socket: WebSocket, credential: Credential) -> Self {
        Self {
            state,
            conn,
            socket,
            positions: HashMap::new(),
            expired: false,
            allowance: MESSAGE_BURST,
            refilled: tokio::time::Instant::now(),
            credential,
        }
    }

    async fn send(&mut self, message: Value) -> bool {
        self.write(Message::Text(message.to_string().into())).await
    }

    /// Writes one message; a client that takes none for a minute is gone.
    async fn write(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn send_out(&mut self, out: Out) -> bool {
        let Out {
            seq,
            subscription,
            data,
        } = out;
        self.positions
            .insert(subscription.as_deref().map(str::to_owned), seq);
        let id = serde_json::to_string(subscription.as_deref().unwrap_or_default())
            .unwrap_or_else(|_| "\"\"".into());
        // `data` is `{"op":...,"record":...}`: spliced, not parsed again.
        let text = format!(
            "{{\"type\":\"event\",\"subscription\":{id},\"seq\":{seq},{}",
            data.get(1..).unwrap_or("}")
        );
        self.write(Message::Text(text.into())).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }

    fn expires_in(&self) -> Option<Duration> {
        self.conn.who().expires_in(self.state.clock.now())
    }

    async fn run(mut self) {
        let heartbeat = self.state.settings.realtime.heartbeat;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            if !self.expired && self.expires_in().is_some_and(|d| d.is_zero()) {
                self.expired = true;
                self.conn.pause();
                let e = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "TOKEN_EXPIRED",
                    "the access token has expired: send {\"type\":\"auth\",\"token\":...} with a fresh one to go on",
                );
                if !self.send(error_message(None, &e)).await {
                    return;
                }
            }
            let wait = match (self.expired, self.expires_in()) {
                (false, Some(d)) => d.min(heartbeat),
                _ => heartbeat,
            };
            tokio::select! {
                message = self.socket.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if !self.handle(text.as_str()).await {
                            return;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let e = ApiError::bad_request("send JSON text messages");
                        if !self.send(error_message(None, &e)).await {
                            return;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                },
                out = self.conn.next() => match out {
                    // Not sent once the credential expired: resumed after a fresh
                    // `auth` from the last seq sent, under the new credential.
                    Ok(_) if self.expired || self.expires_in().is_some_and(|d| d.is_zero()) => {}
                    Ok(out) => {
                        if !self.send_out(out).await {
                            return;
                        }
                    }
                    Err(Close::Shutdown) => {
                        let _ = self.send(json!({"type": "shutdown", "message": "the server is shutting down: reconnect and resume with after"})).await;
                        self.close(1001, "server shutting down").await;
                        return;
                    }
                    Err(Close::Overflow) => {
                        let e = ApiError::unavailable("this connection fell a whole buffer behind: reconnect and resume each subscription with after");
                        let _ = self.send(error_message(None, &e)).await;
                        self.close(1013, "buffer overflow").await;
                        return;
                    }
                },
                _ = ping.tick() => {
                    if !self.write(Message::Ping(Vec::new().into())).await {
                        return;
                    }
                    if !self.expired && !self.recheck().await {
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Checks the credential again: a changed caller is judged as it is now; an ended
    /// one gets `UNAUTHORIZED` and no events until a fresh `auth`. False when the
    /// connection is gone.
    async fn recheck(&mut self) -> bool {
        let identity = self.conn.who().identity.clone();
        match recheck(&self.state, &self.credential, &identity).await {
            Recheck::Same => true,
            Recheck::Changed(identity) => {
                let expires = self.conn.who().expires;
                self.act_for(identity, expires).await
            }
            Recheck::Ended => {
                self.expired = true;
                self.conn.pause();
                let e = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "the credential no longer grants this connection (signed out, revoked or changed): send a fresh auth message to go on",
                );
                self.send(error_message(None, &e)).await
            }
        }
    }

    /// Handles one client message; false when the connection is gone.
    async fn handle(&mut self, text: &str) -> bool {
        let now = tokio::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * MESSAGES_PER_SECOND;
        self.allowance = (self.allowance + earned).min(MESSAGE_BURST);
        self.refilled = now;
        if self.allowance < 1.0 {
            let e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("at most {MESSAGES_PER_SECOND} messages a second; this one was ignored"),
            );
            return self.send(error_message(None, &e)).await;
        }
        self.allowance -= 1.0;
        let message: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => {
                let e = ApiError::bad_request("messages are JSON objects with a type");
                return self.send(error_message(None, &e)).await;
            }
        };
        let id = message.get("id").and_then(Value::as_str).map(str::to_owned);
        let outcome = match message.get("type").and_then(Value::as_str) {
            Some("auth") => self.auth(&message).await,
            Some("subscribe") => self.subscribe(&message).await,
            Some("unsubscribe") => self.unsubscribe(&message).await,
            Some("ping") => Ok(self.send(json!({"type": "pong"})).await),
            _ => Err(ApiError::bad_request(
                "type must be auth, subscribe, unsubscribe or ping",
            )),
        };
        match outcome {
            Ok(alive) => alive,
            Err(e) => self.send(error_message(id.as_deref(), &e)).await,
        }
    }

    fn only(message: &Map<String, Value>, keys: &[&str]) -> Result<(), ApiError> {
        match message.keys().find(|k| !keys.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(ApiError::bad_request(format!(
                "unknown member '{}' (this message takes {})",
                k.chars().take(64).collect::<String>(),
                keys.join(", ")
            ))),
        }
    }

    async fn auth(&mut self, message: &Map<String, Value>) -> Result<bool, ApiError> {
        Self::only(message, &["type", "token"])?;
        let token = message
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::bad_request("token must be an access token or an API key"))?;
        let (caller, expires) = bearer_caller(&self.state, token).await?;
        if self
            .conn
            .who()
            .identity
            .caller()
            .is_some_and(|c| c.id != caller.id)
        {
            return Err(ApiError::forbidden_with(
                "a connection stays with one user; open another connection for another",
            ));
        }
        let identity = self.state.records.with_user(Identity(Some(caller))).await?;
        self.conn.rekey(&identity)?;
        self.credential = Credential::Bearer(token.to_owned());
        let expires = expires.and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok());
        self.expired = false;
        if !self.send(json!({"type": "ack", "of": "auth"})).await {
            return Ok(false);
        }
        Ok(self.act_for(identity, expires).await)
    }

    /// Makes every subscription again for `identity`, each resumed from the last seq
    /// sent, and sends what each owes (a replay, a reset) or why it was refused. False
    /// when the connection is gone.
    async fn act_for(&mut self, identity: Identity, expires: Option<OffsetDateTime>) -> bool {
        let positions = self.positions.clone();
        let outcomes = self
            .conn
            .reauthenticate(identity, expires, &positions)
            .await;
        for (name, outcome) in outcomes {
            let alive = match outcome {
                Ok(subscribed) => self.begin(name.as_deref(), subscribed.start).await,
                Err(e) => {
                    let e = ApiError::from(e);
                    self.send(error_message(name.as_deref(), &e)).await
                }
            };
            if !alive {
                return false;
            }
        }
        true
    }

    async fn subscribe(&mut self, message: &Map<String, Value>) -> Result<bool, ApiError> {
        Self::only(
            message,
            &["type", "id", "resource", "filter", "recordId", "after"],
        )?;
        let id = subscription_id(message.get("id"))?;
        let text = |key: &str| -> Result<Option<String>, ApiError> {
            match message.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
            }
        };
        let resource =
            text("resource")?.ok_or_else(|| ApiError::bad_request("resource is required"))?;
        let after = match message.get("after") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad_position("after"))?,
            ),
        };
        if self.expired {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TOKEN_EXPIRED",
                "the access token has expired: send a fresh auth message first",
            ));
        }
        let subscribed = self
            .conn
            .subscribe(SubscribeRequest {
                name: Some(id.clone()),
                resource,
                filter: text("filter")?,
                record_id: text("recordId")?,
                after,
            })
            .await?;
        if !self
            .send(json!({"type": "ack", "of": "subscribe", "id": id}))
            .await
        {
            return Ok(false);
        }
        Ok(self.begin(Some(&id), subscribed.start).await)
    }

    /// Sends what a subscription owes before its live events: a replay or a reset.
    async fn begin(&mut self, name: Option<&str>, start: Start) -> bool {
        match start {
            Start::Live => true,
            Start::Reset { at } => {
                self.positions.insert(name.map(str::to_owned), at);
                self.send(json!({"type": "reset", "subscription": name, "seq": at}))
                    .await
            }
            Start::Replay { mut after, upto } => loop {
                match self.conn.replay(name, after, upto).await {
                    Ok(Some((outs, next))) => {
                        for out in outs {
                            if !self.send_out(out).await {
                                return false;
                            }
                        }
                        after = next;
                    }
                    Ok(None) => return true,
                    Err(e) => {
                        let e = ApiError::from(e);
                        return self.send(error_message(name, &e)).await;
                    }
                }
            },
        }
    }

    async fn unsubscribe(&mut self, message: &Map<String, Value>) -> Result<bool, ApiError> {
        Self::only(message, &["type", "id"])?;
        let id = subscription_id(message.get("id"))?;
        self.conn.unsubscribe(Some(&id)).await?;
        self.positions.remove(&Some(id.clone()));
        Ok(self
            .send(json!({"type": "ack", "of": "unsubscribe", "id": id}))
            .await)
    }
}

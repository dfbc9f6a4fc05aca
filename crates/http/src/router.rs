//! Every route of the server, in one place.

use std::time::Duration;

use axum::Router;
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{api_keys, email, jwks, mfa, oauth, passkeys, session};
use crate::boundary::{boundary, method_not_allowed, not_found};
use crate::cache::read_cache;
use crate::idempotency::idempotency;
use crate::identity::authenticate;
use crate::metrics::metrics;
use crate::records::{batch, create, delete as delete_record, get as get_one, list, update};
use crate::state::AppState;
use crate::{graphql, jobs, ops, realtime};

/// The complete application router.
pub fn router(state: AppState) -> Router {
    let idempotent = || from_fn_with_state(state.clone(), idempotency);
    // The read cache wraps the two reads only when it is configured: no hop otherwise.
    let reads = state.read_cache.is_some();
    let list_get = if reads {
        get(list::list.layer(from_fn_with_state(state.clone(), read_cache)))
    } else {
        get(list::list)
    };
    let one_get = if reads {
        get(get_one::get.layer(from_fn_with_state(state.clone(), read_cache)))
    } else {
        get(get_one::get)
    };
    let api = Router::new()
        .route("/api/v1/auth/register", post(session::register))
        .route("/api/v1/auth/login", post(session::login))
        .route("/api/v1/auth/refresh", post(session::refresh))
        .route("/api/v1/auth/logout", post(session::logout))
        .route("/api/v1/auth/me", get(session::me))
        .route("/api/v1/auth/password", post(session::change_password))
        .route(
            "/api/v1/auth/mfa/totp",
            post(mfa::begin).delete(mfa::disable),
        )
        .route("/api/v1/auth/mfa", get(mfa::status))
        .route("/api/v1/auth/mfa/totp/confirm", post(mfa::confirm))
        .route("/api/v1/auth/mfa/verify", post(mfa::verify))
        .route("/api/v1/auth/oauth/exchange", post(oauth::exchange))
        .route("/api/v1/auth/oauth/{provider}", get(oauth::start))
        .route(
            "/api/v1/auth/oauth/{provider}/callback",
            get(oauth::callback).post(oauth::callback),
        )
        .route("/api/v1/auth/identities", get(oauth::identities))
        .route("/api/v1/auth/identities/{provider}", delete(oauth::unlink))
        .route("/api/v1/auth/passkeys", get(passkeys::list))
        .route("/api/v1/auth/passkeys/{id}", delete(passkeys::remove))
        .route(
            "/api/v1/auth/passkeys/register/start",
            post(passkeys::register_start),
        )
        .route(
            "/api/v1/auth/passkeys/register/finish",
            post(passkeys::register_finish),
        )
        .route(
            "/api/v1/auth/passkeys/login/start",
            post(passkeys::login_start),
        )
        .route(
            "/api/v1/auth/passkeys/login/finish",
            post(passkeys::login_finish),
        )
        .route(
            "/api/v1/auth/verify-email/request",
            post(email::verify_request),
        )
        .route(
            "/api/v1/auth/verify-email/confirm",
            post(email::verify_confirm),
        )
        .route(
            "/api/v1/auth/password-reset/request",
            post(email::reset_request),
        )
        .route(
            "/api/v1/auth/password-reset/confirm",
            post(email::reset_confirm),
        )
        .route(
            "/api/v1/auth/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route("/api/v1/auth/api-keys/{id}", delete(api_keys::revoke))
        .route("/api/v1/batch", post(batch::batch.layer(idempotent())))
        .route("/api/v1/jobs", post(jobs::enqueue))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/events", get(jobs::events))
        .route("/api/v1/jobs/{id}/progress", post(jobs::progress))
        .route("/api/v1/jobs/{id}/complete", post(jobs::complete))
        .route("/api/v1/jobs/{id}/fail", post(jobs::fail))
        .route("/api/v1/admin/jobs", get(jobs::list))
        .route("/api/v1/admin/jobs/{id}", delete(jobs::delete))
        .route("/api/v1/admin/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/admin/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/admin/queues", get(jobs::queues))
        .route("/api/v1/admin/webhooks/deliveries", get(jobs::deliveries))
        .route(
            "/api/v1/admin/webhooks/deliveries/{id}",
            get(jobs::delivery),
        )
        .route(
            "/api/v1/admin/webhooks/deliveries/{id}/redeliver",
            post(jobs::redeliver),
        )
        .route("/api/v1/realtime", get(realtime::websocket))
        .route("/api/v1/graphql", get(graphql::get).post(graphql::post))
        .route(
            "/api/v1/{resource}",
            list_get.post(create::create.layer(idempotent())),
        )
        .route("/api/v1/{resource}/events", get(realtime::sse))
        .route(
            "/api/v1/{resource}/{id}",
            one_get.patch(update::update).delete(delete_record::delete),
        )
        // Authentication, then rate limiting (who the caller is decides whose quota a
        // request counts against), in one middleware.
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    let mut app = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/docs", get(crate::docs::page))
        .route("/docs/docs.js", get(crate::docs::script))
        .route("/docs/docs.css", get(crate::docs::style))
        .route("/api/v1/graphql/page.js", get(crate::graphql_page::script))
        .route("/api/v1/graphql/page.css", get(crate::graphql_page::style))
        .merge(api);
    let settings = &state.settings;
    if settings.metrics.enabled && settings.metrics.addr.is_none() {
        app = app.route("/metrics", get(metrics));
    }
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), boundary));
    // CORS and compression sit outside the boundary: error bodies rendered there get
    // CORS headers (browsers must be able to read them) and are compressed like the rest.
    let app = match cors(&state) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    let app = if settings.server.compression {
        app.layer(CompressionLayer::new().gzip(true).br(true))
    } else {
        app
    };
    // Outermost: a body left unread by any refusal is drained, so the client reads it.
    app.layer(axum::middleware::map_request(
        |req: axum::extract::Request| async move { crate::wire::drain_unread(req) },
    ))
    .with_state(state)
}

/// The router of a separate metrics listener (`[metrics] addr`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), boundary))
        .with_state(state)
}

/// The CORS layer of the configured allow-list; none when no origin is allowed.
fn cors(state: &AppState) -> Option<CorsLayer> {
    let settings = &state.settings.cors;
    if settings.allowed_origins.is_empty() {
        return None;
    }
    let origins = if settings.allowed_origins.iter().any(|o| o == "*") {
        // Settings refuse `*` with credentials, and in production.
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            settings
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                name("idempotency-key"),
                name("x-csrf-token"),
                name("x-request-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                name("ratelimit-limit"),
                name("ratelimit-remaining"),
                name("ratelimit-reset"),
                name("ratelimit-policy"),
                name("x-request-id"),
                name("idempotent-replayed"),
            ])
            .allow_credentials(settings.allow_credentials)
            .max_age(Duration::from_secs(settings.max_age.as_secs())),
    )
}

//! Every route of the server, in one place.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};

use crate::auth::{api_keys, jwks, session};
use crate::boundary::{boundary, method_not_allowed, not_found};
use crate::identity::authenticate;
use crate::ops;
use crate::records::{create, delete as delete_record, get as get_one, list, update};
use crate::state::AppState;

/// The complete application router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/auth/register", post(session::register))
        .route("/api/v1/auth/login", post(session::login))
        .route("/api/v1/auth/refresh", post(session::refresh))
        .route("/api/v1/auth/logout", post(session::logout))
        .route("/api/v1/auth/me", get(session::me))
        .route("/api/v1/auth/password", post(session::change_password))
        .route(
            "/api/v1/auth/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route("/api/v1/auth/api-keys/{id}", delete(api_keys::revoke))
        .route("/api/v1/{resource}", get(list::list).post(create::create))
        .route(
            "/api/v1/{resource}/{id}",
            get(get_one::get)
                .patch(update::update)
                .delete(delete_record::delete),
        )
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), boundary))
        .with_state(state)
}

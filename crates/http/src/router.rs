//! Every route of the server, in one place.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;

use crate::boundary::{boundary, method_not_allowed, not_found};
use crate::ops;
use crate::records::{create, delete, get as get_one, list, update};
use crate::state::AppState;

/// The complete application router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/api/v1/{resource}", get(list::list).post(create::create))
        .route(
            "/api/v1/{resource}/{id}",
            get(get_one::get)
                .patch(update::update)
                .delete(delete::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), boundary))
        .with_state(state)
}

//! The routes and the layers around them: request ids and tracing, metrics, authentication,
//! the request timeout, the body limit and CORS.

mod assistants;
mod ops;
mod runs;
mod threads;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::auth::{ANONYMOUS_USER, Principal};
use crate::error::ApiError;
use crate::server::{AppState, Cors};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/assistants/search", post(assistants::search))
        .route("/assistants/{assistant_id}", get(assistants::get))
        .route("/assistants/{assistant_id}/schemas", get(assistants::schemas))
        .route("/threads", post(threads::create))
        .route("/threads/search", post(threads::search))
        .route("/threads/{thread_id}", get(threads::get).patch(threads::patch).delete(threads::delete))
        .route("/threads/{thread_id}/state", get(threads::state).post(threads::update_state))
        .route("/threads/{thread_id}/history", get(threads::history_get).post(threads::history))
        .route("/threads/{thread_id}/analytics", get(threads::analytics))
        .route("/threads/{thread_id}/runs", get(runs::list).post(runs::create))
        .route("/threads/{thread_id}/runs/stream", post(runs::stream))
        .route("/threads/{thread_id}/runs/wait", post(runs::wait))
        .route("/threads/{thread_id}/runs/{run_id}", get(runs::get).delete(runs::delete))
        .route("/threads/{thread_id}/runs/{run_id}/cancel", post(runs::cancel))
        .route("/threads/{thread_id}/runs/{run_id}/join", get(runs::join))
        .route("/threads/{thread_id}/runs/{run_id}/stream", get(runs::join_stream))
        .route("/runs", post(runs::create_stateless))
        .route("/runs/stream", post(runs::stream_stateless))
        .route("/runs/wait", post(runs::wait_stateless))
        .route("/users/me/analytics", get(threads::user_analytics))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), time_limit))
        .route_layer(middleware::from_fn(label_route));
    let open = Router::new()
        .route("/ok", get(ops::ok))
        .route("/ready", get(ops::ready))
        .route("/info", get(ops::info))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn(label_route));
    let mut router = api
        .merge(open)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe));
    if let Some(cors) = cors_layer(&state.cors) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

fn cors_layer(cors: &Cors) -> Option<CorsLayer> {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([REQUEST_ID, HeaderName::from_static("content-location")]);
    match cors {
        Cors::Disabled => None,
        Cors::AnyOrigin => Some(base.allow_origin(Any)),
        Cors::Origins(origins) => {
            let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
            Some(base.allow_origin(AllowOrigin::list(origins)))
        }
    }
}

/// A request id (the caller's `x-request-id`, else a new one) in a span around the request
/// and on the response; the request counted by route and status.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let method = req.method().clone();
    let span = tracing::info_span!("http.request", request.id = %id, method = %method, path = %req.uri().path(), status = tracing::field::Empty);
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, value);
    }
    let mut response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = response.status().as_u16();
    span.record("status", status);
    let route = response.extensions().get::<Route>().map_or("unmatched", |route| route.0.as_str());
    state.metrics.request(method.as_str(), route, status);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The route a request matched (its pattern, not its path), for the metrics.
#[derive(Debug, Clone)]
struct Route(String);

async fn label_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|path| Route(path.as_str().to_owned()));
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// Checks the API key and puts the caller's [`Principal`] in the request.
async fn authenticate(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let principal = match &state.keys {
        Some(keys) => match keys.authenticate(req.headers()) {
            Some(principal) => principal,
            None => return ApiError::unauthorized().into_response(),
        },
        None => match lgadk_core::UserId::parse(ANONYMOUS_USER) {
            Ok(user) => Principal { user, admin: false },
            Err(err) => return ApiError::from(err).into_response(),
        },
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Answers 504 when a request takes longer than the limit; streams, joins and waits last as
/// long as their run.
async fn time_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.ends_with("/stream") || path.ends_with("/join") || path.ends_with("/wait") {
        return next.run(req).await;
    }
    match tokio::time::timeout(state.limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "the request timed out").into_response(),
    }
}

//! The chat page at `/`: plain HTML, CSS and JavaScript from `assets/`, compiled into the binary so
//! `frugal serve MODEL` needs no files beside it. The page talks to the same server's `/v1` routes,
//! so it is public; an API key, where the server wants one, is entered in the page.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("../assets/chat.html");
const JS: &str = include_str!("../assets/chat.js");
const CSS: &str = include_str!("../assets/chat.css");

/// Only this origin's scripts, styles and requests: the page renders model output, and this keeps
/// anything that slips past its escaping from running or reaching elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes, for any router state (they read none).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/chat.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route(
            "/chat.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
}

/// `no-cache` (revalidate, not "never store"): a new binary's page replaces the old one at once.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

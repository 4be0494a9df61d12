//! CORS for browser front-ends on other origins (`--cors-origins`): preflight requests answered
//! before routing and authentication, and the allow headers on every answer. Closed by default.

use axum::http::{HeaderValue, Method};
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// The layer for these origins (`*`: any), or `None` when no origin is allowed. Credentials are
/// never allowed: the API authenticates with a header the page sets, not with cookies.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers(AllowHeaders::any())
            .expose_headers([axum::http::header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

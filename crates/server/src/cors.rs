//! CORS for browser front-ends on other origins (`--cors-origins`): preflight requests answered
//! before routing and authentication, and the allow headers on every answer. Closed by default.

use axum::http::{HeaderValue, Method};
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// The layer for these origins (`*`: any; `localhost`: any port of this machine, as
/// llama-server's keyword), or `None` when no origin is allowed. Credentials are
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
        let listed: Vec<String> = origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect();
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let origin = origin.to_str().unwrap_or("");
            listed
                .iter()
                .any(|o| o == origin || (o == "localhost" && is_local(origin)))
        })
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

/// An http(s) origin on this machine (`localhost`, `127.0.0.1` or `[::1]`, any port).
fn is_local(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
        None => rest.split(':').next().map(str::to_string),
    };
    let port_ok = |after: &str| {
        after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    match host.as_deref() {
        Some(h @ ("localhost" | "127.0.0.1" | "[::1]")) => port_ok(&rest[h.len()..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn localhost_means_this_machine_on_any_port() {
        for o in [
            "http://localhost",
            "http://localhost:8080",
            "https://127.0.0.1:3000",
            "http://[::1]",
            "http://[::1]:3000",
        ] {
            assert!(is_local(o), "{o}");
        }
        for o in [
            "http://localhost.evil.com",
            "http://127.0.0.1.evil.com",
            "localhost",
            "ftp://localhost",
            "http://localhost:",
            "http://evil.com?localhost",
            "http://[::1]x",
        ] {
            assert!(!is_local(o), "{o}");
        }
    }
}

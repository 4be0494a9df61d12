//! Request ids: a request's `x-request-id` header (a gateway's, or the client's) or, without
//! one, an id made here. The request's tracing span carries it (`http{request=…}`), so do its
//! engine log lines (`request=…`), and the response echoes it in `x-request-id`. OpenAI's chat
//! and completion ids end with it (`chatcmpl-<id>`), as vLLM's do; the other APIs keep ids of
//! their own, which stored responses need unique.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";
/// Longer ids are refused: they end up in every log line and response id of the request.
const MAX_LEN: usize = 128;

/// The request's id, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub String);

impl RequestId {
    /// The header's id, checked (visible ASCII, at most [`MAX_LEN`] bytes: it goes into logs
    /// and JSON as it is); without the header, a new one.
    fn of(headers: &HeaderMap) -> Result<RequestId, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(RequestId(crate::routes::request_id()));
        };
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
            return Err(ApiError::invalid(format!(
                "The {HEADER} header must be 1 to {MAX_LEN} visible ASCII characters \
                 (no spaces); this one has {} bytes.",
                bytes.len()
            )));
        }
        Ok(RequestId(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// The middleware: reads or makes the id, runs the request inside a span carrying it, and
/// echoes it in the response.
pub(crate) async fn tag(mut req: Request, next: Next) -> Response {
    let id = match RequestId::of(req.headers()) {
        Ok(id) => id,
        // In the shape of the API the request was for.
        Err(e) if crate::routes::is_anthropic(req.uri().path()) => {
            return crate::anthropic::AnthropicError(e).into_response()
        }
        Err(e) => return e.into_response(),
    };
    let span = tracing::info_span!("http", request = %id.0);
    let value = HeaderValue::from_str(&id.0);
    req.extensions_mut().insert(id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(v) = value {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn a_given_id_is_kept_and_a_missing_one_made() {
        let id = RequestId::of(&with(b"gw-7f3a/42")).unwrap();
        assert_eq!(id.0, "gw-7f3a/42");
        let made = RequestId::of(&HeaderMap::new()).unwrap();
        assert!(!made.0.is_empty() && made.0.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(made, RequestId::of(&HeaderMap::new()).unwrap());
    }

    #[test]
    fn unusable_ids_are_refused_with_the_rule() {
        for bad in [&b""[..], b"has space", &[b'a'; 129], b"caf\xc3\xa9"] {
            let e = RequestId::of(&with(bad)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(e.body()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("x-request-id"));
        }
        assert!(RequestId::of(&with(&[b'a'; 128])).is_ok());
    }

    /// Log lines written to a buffer.
    #[derive(Clone, Default)]
    struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_request_span_names_the_id_in_log_lines_and_the_response_echoes_it() {
        use axum::routing::get;
        use tower::ServiceExt;
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let app = axum::Router::new()
            .route(
                "/",
                get(|| async {
                    tracing::info!("handled");
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn(tag));
        let req = Request::builder()
            .uri("/")
            .header(HEADER, "gw-9")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(app.oneshot(req)).unwrap()
        });
        assert_eq!(response.headers()[HEADER], "gw-9");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("http{request=gw-9}") && text.contains("handled"),
            "{text}"
        );
    }
}

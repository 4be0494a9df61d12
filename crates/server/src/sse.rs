//! Server-sent events for every streaming API: a bounded queue between the task that writes a
//! response's events and the client that reads them, so a client that stops reading holds the
//! stream for at most the write timeout, and one that leaves ends it.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::Value;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Events a stream holds for a client that has not read them yet; when they are all waiting,
/// the stream waits for the client, at most the write timeout.
const STREAM_BUFFER: usize = 32;

/// The writing end of one streamed response.
pub struct SseSink {
    tx: mpsc::Sender<Event>,
    write_timeout: Duration,
    /// The response id, for the log line when the client stops reading.
    id: String,
}

impl SseSink {
    /// Queues an event; false when the client has gone, or has read nothing for the write
    /// timeout (then the stream ends).
    pub async fn send_event(&self, event: Event) -> bool {
        match tokio::time::timeout(self.write_timeout, self.tx.send(event)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::info!(
                    "{}: the client read nothing for {:?}; cancelling the request",
                    self.id,
                    self.write_timeout
                );
                false
            }
        }
    }

    /// A `data:` event holding JSON.
    pub async fn send(&self, v: &Value) -> bool {
        self.send_event(Event::default().data(v.to_string())).await
    }

    /// A named event (`event: NAME`) holding JSON, as Anthropic's and the Responses API's
    /// streams are.
    pub async fn send_named(&self, name: &str, v: &Value) -> bool {
        self.send_event(Event::default().event(name).data(v.to_string()))
            .await
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A streaming response whose events `write` produces on its own task. Returning from `write`
/// ends the stream; when the client goes, `write`'s sends fail and it should return (dropping
/// what it reads from cancels the request's sequences).
pub fn sse_response<F, Fut>(id: String, write_timeout: Duration, write: F) -> Response
where
    F: FnOnce(SseSink) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Event>(STREAM_BUFFER);
    // In the request's span: the stream's log lines name its request too.
    let writer = write(SseSink {
        tx,
        write_timeout,
        id,
    });
    tokio::spawn(writer.in_current_span());
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

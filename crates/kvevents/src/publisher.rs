//! The ZeroMQ side, as vLLM's `ZmqEventPublisher`: a PUB socket sending each batch as the
//! frames `[topic, sequence number (8 bytes, big-endian), msgpack payload]`, bound when the
//! endpoint has a wildcard (`tcp://*:5557`) and connected otherwise (to a router that binds);
//! optionally a ROUTER socket where a subscriber that missed batches asks for them again from a
//! sequence number on. Sockets live on a thread of their own: the engine hands batches over a
//! bounded queue and never waits (a full queue drops the batch and counts it).

use crate::event::{encode_batch, KvEvent};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use zeromq::{PubSocket, RouterSocket, Socket, SocketEvent, SocketRecv, SocketSend, ZmqMessage};

/// Batches waiting for the socket thread before new ones are dropped.
const QUEUE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// `tcp://*:PORT` (bind) or `tcp://HOST:PORT` (connect).
    pub endpoint: String,
    /// A ROUTER endpoint to bind for replay requests, if any.
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    pub buffer_steps: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("KV events endpoint {endpoint}: {msg}")]
    Socket { endpoint: String, msg: String },
}

/// Publishes batches of events; shared by every model of the server (each with its topic).
pub struct Publisher {
    queue: Option<mpsc::Sender<(String, Vec<u8>)>>,
    dropped: AtomicU64,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Opens the sockets (an endpoint that cannot be bound is an error here, at startup) on the
    /// thread that then sends. Callable from async code: the thread has its own runtime.
    pub fn start(config: PublisherConfig) -> Result<Self, PublisherError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sent = Arc::new(AtomicU64::new(0));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let endpoint = config.endpoint.clone();
        let thread = std::thread::Builder::new()
            .name("kv-events".into())
            .spawn({
                let sent = sent.clone();
                move || socket_thread(&config, rx, &sent, &opened_tx)
            })
            .map_err(|e| socket_error(&endpoint, e))?;
        match opened_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(socket_error(&endpoint, "the socket thread ended")),
        }
        Ok(Publisher {
            queue: Some(tx),
            dropped: AtomicU64::new(0),
            sent,
            thread: Some(thread),
        })
    }

    /// Queues one batch under `topic`; never waits.
    pub fn publish(&self, topic: &str, events: &[KvEvent]) {
        if events.is_empty() {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let payload = encode_batch(ts, events);
        let queue = self.queue.as_ref().expect("open until dropped");
        if queue.try_send((topic.to_string(), payload)).is_err() {
            let n = self.dropped.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!("KV events: {n} batches dropped (the socket thread is behind)");
            }
        }
    }

    /// Batches sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Batches dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

impl Drop for Publisher {
    /// Sends what is queued, then closes the sockets.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The socket thread's body: its own runtime, the sockets opened (the outcome told to
/// `opened`), then [`serve`] until the queue closes.
fn socket_thread(
    config: &PublisherConfig,
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    sent: &AtomicU64,
    opened: &std::sync::mpsc::Sender<Result<(), PublisherError>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return drop(opened.send(Err(socket_error(&config.endpoint, e)))),
    };
    rt.block_on(async {
        match open(config).await {
            Ok((publish, replay)) => {
                let _ = opened.send(Ok(()));
                serve(publish, replay, rx, config, sent).await;
            }
            Err(e) => drop(opened.send(Err(e))),
        }
    });
}

fn socket_error(endpoint: &str, e: impl std::fmt::Display) -> PublisherError {
    PublisherError::Socket {
        endpoint: endpoint.to_string(),
        msg: e.to_string(),
    }
}

/// ZeroMQ's wildcard host (`*`, or `::`) as an address the socket library binds.
fn bind_address(endpoint: &str) -> Option<String> {
    let rest = endpoint.strip_prefix("tcp://")?;
    let (host, port) = rest.rsplit_once(':')?;
    match host {
        "*" => Some(format!("tcp://0.0.0.0:{port}")),
        "::" | "[::]" | "[*]" => Some(format!("tcp://[::]:{port}")),
        _ => None,
    }
}

async fn open(
    config: &PublisherConfig,
) -> Result<(PubSocket, Option<RouterSocket>), PublisherError> {
    let endpoint = &config.endpoint;
    if !endpoint.starts_with("tcp://") {
        return Err(socket_error(
            endpoint,
            "only tcp:// endpoints are supported",
        ));
    }
    let mut publish = PubSocket::new();
    match bind_address(endpoint) {
        Some(addr) => publish
            .bind(&addr)
            .await
            .map_err(|e| socket_error(endpoint, e))?,
        // Connecting waits for the router, which may start later: the socket thread does it.
        None => zeromq::Endpoint::from_str(endpoint).map_err(|e| socket_error(endpoint, e))?,
    };
    let replay = match &config.replay_endpoint {
        None => None,
        Some(ep) => {
            let mut router = RouterSocket::new();
            let addr = bind_address(ep).unwrap_or_else(|| ep.clone());
            router.bind(&addr).await.map_err(|e| socket_error(ep, e))?;
            Some(router)
        }
    };
    Ok((publish, replay))
}

/// The PUB socket's connection to a router that binds (`tcp://HOST:PORT`), as libzmq keeps it:
/// tried again with a growing delay until the router is there, and again whenever it goes away.
/// Batches published meanwhile reach nobody, as with libzmq (the replay socket has them).
struct Link {
    /// `None` when the socket binds.
    endpoint: Option<String>,
    connected: bool,
    next_try: tokio::time::Instant,
    delay: Duration,
    events: futures_channel::mpsc::Receiver<SocketEvent>,
}

impl Link {
    const FIRST_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(10);

    fn new(publish: &mut PubSocket, endpoint: &str) -> Self {
        Link {
            endpoint: bind_address(endpoint)
                .is_none()
                .then(|| endpoint.to_string()),
            connected: false,
            next_try: tokio::time::Instant::now(),
            delay: Self::FIRST_DELAY,
            events: publish.monitor(),
        }
    }

    /// Connects if it is time to try.
    async fn maintain(&mut self, publish: &mut PubSocket) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        if self.connected || tokio::time::Instant::now() < self.next_try {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(2), publish.connect(endpoint)).await {
            Ok(Ok(())) => {
                tracing::info!("KV events: connected to {endpoint}");
                self.connected = true;
                self.delay = Self::FIRST_DELAY;
            }
            failed => {
                if self.delay == Self::FIRST_DELAY {
                    let why = failed.map_or("timed out".to_string(), |r| {
                        r.err().map_or(String::new(), |e| e.to_string())
                    });
                    tracing::warn!("KV events: cannot connect to {endpoint} ({why}); retrying");
                }
                self.next_try = tokio::time::Instant::now() + self.delay;
                self.delay = (self.delay * 2).min(Self::MAX_DELAY);
            }
        }
    }

    /// Waits until the next connection attempt is due, or for the router to go away.
    async fn wait(&mut self) {
        match (&self.endpoint, self.connected) {
            (None, _) => std::future::pending().await,
            (Some(_), false) => tokio::time::sleep_until(self.next_try).await,
            (Some(endpoint), true) => loop {
                match self.events.next().await {
                    Some(SocketEvent::Disconnected(_)) | None => {
                        tracing::warn!("KV events: {endpoint} went away; reconnecting");
                        self.connected = false;
                        self.next_try = tokio::time::Instant::now();
                        return;
                    }
                    Some(_) => {}
                }
            },
        }
    }
}

/// The socket thread: sends each queued batch with the next sequence number, keeps the last
/// `keep` for replay, answers replay requests and keeps a connecting socket connected, until
/// the queue closes.
async fn serve(
    mut publish: PubSocket,
    mut replay: Option<RouterSocket>,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    config: &PublisherConfig,
    sent: &AtomicU64,
) {
    let mut link = Link::new(&mut publish, &config.endpoint);
    let mut kept: VecDeque<(u64, String, Vec<u8>)> = VecDeque::new();
    let mut seq = 0u64;
    loop {
        link.maintain(&mut publish).await;
        tokio::select! {
            batch = rx.recv() => {
                let Some((topic, payload)) = batch else { break };
                let mut msg = ZmqMessage::from(topic.clone().into_bytes());
                msg.push_back(seq.to_be_bytes().to_vec().into());
                msg.push_back(payload.clone().into());
                if let Err(e) = publish.send(msg).await {
                    tracing::warn!("KV events: send failed: {e}");
                }
                sent.fetch_add(1, Relaxed);
                if config.buffer_steps > 0 {
                    if kept.len() == config.buffer_steps {
                        kept.pop_front();
                    }
                    kept.push_back((seq, topic, payload));
                }
                seq += 1;
            }
            request = recv_replay(&mut replay) => {
                if let (Some(router), Ok(request)) = (&mut replay, request) {
                    answer_replay(router, request, &kept).await;
                }
            }
            () = link.wait() => {}
        }
    }
}

async fn recv_replay(replay: &mut Option<RouterSocket>) -> zeromq::ZmqResult<ZmqMessage> {
    match replay {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// A replay request is `[identity, "", start sequence (8 bytes, big-endian)]`; the answer is
/// each kept batch from there as `[identity, "", sequence, payload]`, then
/// `[identity, "", -1, ""]`.
async fn answer_replay(
    router: &mut RouterSocket,
    request: ZmqMessage,
    kept: &VecDeque<(u64, String, Vec<u8>)>,
) {
    let frames = request.into_vec();
    let [identity, _, start] = frames.as_slice() else {
        tracing::warn!(
            "KV events: a replay request of {} frames ignored",
            frames.len()
        );
        return;
    };
    let Ok(start) = <[u8; 8]>::try_from(start.as_ref()).map(u64::from_be_bytes) else {
        tracing::warn!("KV events: a replay request without an 8-byte sequence ignored");
        return;
    };
    let reply = |seq: [u8; 8], payload: Vec<u8>| {
        let mut m = ZmqMessage::from(identity.clone());
        m.push_back(Vec::new().into());
        m.push_back(seq.to_vec().into());
        m.push_back(payload.into());
        m
    };
    for (seq, _, payload) in kept.iter().filter(|(s, _, _)| *s >= start) {
        if router
            .send(reply(seq.to_be_bytes(), payload.clone()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = router.send(reply((-1i64).to_be_bytes(), Vec::new())).await;
}

//! The publisher over real sockets, as a router sees it: a bound PUB endpoint (`tcp://*:PORT`,
//! the pods' side in deploy/k8s) and the replay endpoint, through the `zeromq` crate's own SUB
//! and DEALER sockets. (`scripts/kv_events_test.py` checks the connecting side with libzmq.)

use frugal_kvevents::{encode_batch, KvEvent, Publisher, PublisherConfig};
use std::time::Duration;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").port()
}

fn removed(hash: u64) -> Vec<KvEvent> {
    vec![KvEvent::BlockRemoved {
        block_hashes: vec![hash],
        medium: "CPU",
    }]
}

#[test]
fn a_bound_publisher_sends_vllms_frames_and_replays_them() {
    let (port, replay_port) = (free_port(), free_port());
    let publisher = Publisher::start(PublisherConfig {
        endpoint: format!("tcp://*:{port}"),
        replay_endpoint: Some(format!("tcp://*:{replay_port}")),
        buffer_steps: 100,
    })
    .expect("bound");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut sub = SubSocket::new();
        sub.connect(&format!("tcp://127.0.0.1:{port}"))
            .await
            .expect("connect");
        sub.subscribe("kv@").await.expect("subscribe");
        // A subscription takes a moment to reach the publisher: publish until one arrives.
        let mut first = None;
        for hash in 0..100u64 {
            publisher.publish("kv@pod@model", &removed(hash));
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
                first = Some(m.into_vec());
                break;
            }
        }
        let frames = first.expect("a batch within 10 s");
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].as_ref(), b"kv@pod@model");
        let seq = u64::from_be_bytes(frames[1].as_ref().try_into().expect("8 bytes"));
        // The payload is vLLM's batch for the events sent (the timestamp aside).
        let expected = encode_batch(0.0, &removed(seq));
        assert_eq!(frames[2].len(), expected.len());
        // `[` (1 byte), then `ts` as a float64 (9 bytes).
        assert_eq!(
            frames[2][10..],
            expected[10..],
            "after ts everything is equal"
        );

        let mut dealer = DealerSocket::new();
        dealer
            .connect(&format!("tcp://127.0.0.1:{replay_port}"))
            .await
            .expect("connect");
        let mut ask = ZmqMessage::from(Vec::<u8>::new());
        ask.push_back(seq.to_be_bytes().to_vec().into());
        dealer.send(ask).await.expect("send");
        let replayed = dealer.recv().await.expect("replay").into_vec();
        assert_eq!(replayed[1].as_ref(), frames[1].as_ref(), "the same batch");
        assert_eq!(replayed[2].as_ref(), frames[2].as_ref());
        let end = dealer.recv().await.expect("end").into_vec();
        assert_eq!(end[1].as_ref(), (-1i64).to_be_bytes());
    });
    assert!(publisher.sent() > 0);
    assert_eq!(publisher.dropped(), 0);
}

#[test]
fn endpoints_that_cannot_work_are_errors_at_start() {
    let port = free_port();
    let config = |endpoint: String| PublisherConfig {
        endpoint,
        replay_endpoint: None,
        buffer_steps: 0,
    };
    let first = Publisher::start(config(format!("tcp://*:{port}"))).expect("bound");
    let taken = Publisher::start(config(format!("tcp://*:{port}")));
    assert!(taken.is_err(), "a port in use");
    for bad in ["ipc:///tmp/kv", "tcp://", "5557", "tcp://host-without-port"] {
        let e = Publisher::start(config(bad.to_string())).err();
        assert!(e.is_some(), "{bad} was accepted");
        assert!(
            e.unwrap().to_string().contains(bad),
            "the error names {bad}"
        );
    }
    drop(first);
}

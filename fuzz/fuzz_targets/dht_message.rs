//! Arbitrary bytes as a DHT / peer-sync message: decoding must reject or accept cleanly, and an
//! accepted message must be handled by a DHT node (as a request, and as an answer to a pending
//! lookup) without panicking or breaking its bounds.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vx6_core::NodeId;
use vx6_core::dht::message::Body;
use vx6_core::dht::{Contact, Dht, DhtConfig, Message, Purpose};
use vx6_core::resolve::Target;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<Target>();
    }
    // The same bytes as a datagram on the node's UDP port.
    let _ = vx6_core::dht::datagram::decode(data, &NodeId::from_bytes([1; 32]));
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    assert_eq!(Message::decode(&msg.encode().expect("bounds were checked")), Ok(msg.clone()));
    let now = *EPOCH.get_or_init(Instant::now);
    let unix = 1_800_000_000;
    let peer = Contact {
        id: NodeId::from_bytes([2; 32]),
        addr: SocketAddr::from(([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 4433)),
    };
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default());
    dht.add_contact(peer, now);
    match msg.body {
        Body::Request(r) => {
            let _ = dht.handle_request(now, unix, peer, r);
        }
        Body::Response(r) => {
            let _ = dht.start(now, NodeId::from_bytes([7; 32]), Purpose::FindValue);
            if let Some(out) = dht.poll_outgoing() {
                dht.handle_response(now, unix, peer, out.txid, r);
            }
            dht.handle_timeout(now + Duration::from_secs(5));
            while dht.poll_result().is_some() {}
        }
    }
    assert!(dht.table().check_invariants().is_ok());
});

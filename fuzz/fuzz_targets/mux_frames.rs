//! Arbitrary bytes as the decrypted byte stream of a TCP session: the frame decoder and the
//! multiplexer's handling of every frame (flow control, stream limits, resets) must never panic,
//! and a violation must close the session rather than corrupt it.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vx6_core::session::StreamRead;
use vx6_core::session::mux::{Mux, MuxConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut mux = Mux::new(now, split & 1 == 0, MuxConfig { max_peer_streams: 8 });
    let local = mux.open_stream(now);
    // Feed in two pieces so frames straddle reads.
    let cut = usize::from(split).min(rest.len());
    mux.handle_input(now, &rest[..cut]);
    mux.handle_input(now + Duration::from_millis(1), &rest[cut..]);
    while mux.poll_event().is_some() {}
    while let Some(id) = mux.accept_stream() {
        let mut guard = 0;
        while let StreamRead::Data(_) = mux.read(now, id, 4096) {
            guard += 1;
            if guard > 10_000 {
                break;
            }
        }
        let _ = mux.write(id, b"reply");
        let _ = mux.finish(id);
    }
    if let Some(id) = local {
        let _ = mux.write(id, &[0; 1000]);
        mux.reset(id, 7);
    }
    mux.handle_timeout(now + Duration::from_secs(60));
    while mux.poll_output().is_some() {}
});

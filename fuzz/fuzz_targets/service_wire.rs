//! Arbitrary bytes as the first bytes of a service stream (request and response), as a
//! known_peers file, and as a destination (`username.service`, `[NODEID@]ADDR/SERVICE`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::destination::Destination;
use vx6_core::pins::Pins;
use vx6_core::service::{OpenRequest, OpenResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((req, used))) = OpenRequest::decode(data) {
        assert_eq!(&req.encode()[..], &data[..used]);
    }
    let _ = OpenResponse::decode(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(pins) = Pins::parse(text)
    {
        assert_eq!(Pins::parse(&pins.to_text()), Ok(pins));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(dest) = text.parse::<Destination>()
    {
        assert_eq!(dest.to_string().parse::<Destination>(), Ok(dest));
    }
});

//! Arbitrary bytes into the record body parser, past the signature check that guards it in
//! production: first byte is the kind, the rest the body. A body that parses must be canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::record::fuzz_decode_body;

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, body)) = data.split_first() {
        let _ = fuzz_decode_body(kind, body);
    }
});

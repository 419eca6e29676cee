//! Arbitrary bytes as the start of a circuit stream (a framed `Create`), as the answer on it (a
//! framed `Reply`) and as the plaintext of an onion layer (an `Instruction`): decoding must
//! reject or accept cleanly, what it accepts keeps the stated bounds, and re-encoding a decoded
//! value decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::relay::control::{
    Create, Instruction, MAX_CONTROL_LEN, MAX_HOPS, MAX_REASON_LEN, Reply,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((create, used))) = Create::decode(data) {
        assert!(used <= data.len() && used <= 3 + MAX_CONTROL_LEN);
        // Every shorter prefix of the frame waits for more bytes.
        assert_eq!(Create::decode(&data[..used - 1]), Ok(None));
        let bytes = create.encode();
        assert!(bytes.len() <= used, "postcard's encoding is the shortest");
        assert_eq!(Create::decode(&bytes), Ok(Some((create, bytes.len()))));
    }
    if let Ok(Some((reply, used))) = Reply::decode(data) {
        assert!(used <= data.len() && used <= 2 + MAX_CONTROL_LEN);
        assert_eq!(Reply::decode(&data[..used - 1]), Ok(None));
        match &reply {
            Reply::Created { limits, .. } => assert!(limits.len() <= MAX_HOPS),
            Reply::Refused { reason, .. } => assert!(reason.len() <= MAX_REASON_LEN),
        }
        let bytes = reply.encode();
        assert!(bytes.len() <= used);
        assert_eq!(Reply::decode(&bytes), Ok(Some((reply, bytes.len()))));
    }
    if let Ok(inst) = Instruction::decode(data) {
        let bytes = inst.encode();
        assert!(bytes.len() <= data.len());
        assert_eq!(Instruction::decode(&bytes), Ok(inst));
    }
});

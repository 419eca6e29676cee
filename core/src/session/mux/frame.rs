//! Frames of the TCP stream multiplexer, version 1 (docs/PROTOCOL.md).
//!
//! ```text
//! length: u24 BE | type: u8 | flags: u8 | stream: u32 BE | payload: length bytes
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 9;
/// Largest payload a frame may carry; larger is a protocol error.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// `FIN` flag on a DATA frame: the sender will send no more on this stream.
pub const FLAG_FIN: u8 = 0x1;
/// `ACK` flag on a PING frame: this is the reply.
pub const FLAG_ACK: u8 = 0x2;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream bytes; the first DATA on an unknown peer-initiated id opens the stream.
    Data {
        /// Stream id (odd: opened by the TLS client, even: by the server; never 0).
        stream: u32,
        /// Last frame of this direction.
        fin: bool,
        /// The bytes.
        payload: Bytes,
    },
    /// More credit: the receiver may be sent `increment` more bytes. Stream 0 is the session.
    Window {
        /// Stream id, or 0 for the whole session.
        stream: u32,
        /// Additional bytes allowed.
        increment: u32,
    },
    /// Abort a stream in both directions.
    Reset {
        /// Stream id.
        stream: u32,
        /// Application error code.
        code: u32,
    },
    /// Liveness and RTT probe; answered with the same opaque bytes and `ack`.
    Ping {
        /// This is the reply.
        ack: bool,
        /// Echoed back unchanged.
        opaque: u64,
    },
    /// The sender is closing the session.
    GoAway {
        /// Why.
        code: u32,
    },
}

const TYPE_DATA: u8 = 0;
const TYPE_WINDOW: u8 = 1;
const TYPE_RESET: u8 = 2;
const TYPE_PING: u8 = 3;
const TYPE_GOAWAY: u8 = 4;

/// A frame the decoder refuses. Any of these ends the session: the byte stream is untrustworthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Payload longer than [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// A type byte no frame has.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// Fixed-size payload of the wrong size, or a field out of range.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// Appends a DATA frame (no FIN) for `payload` without building a [`Frame`] first, so the bytes
/// are copied once, straight into the output.
pub fn encode_data(stream: u32, payload: &[u8], out: &mut BytesMut) {
    debug_assert!(
        payload.len() <= MAX_PAYLOAD,
        "encoder given an oversized payload"
    );
    out.reserve(HEADER_LEN + payload.len());
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(TYPE_DATA);
    out.put_u8(0);
    out.put_u32(stream);
    out.put_slice(payload);
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let (ty, flags, stream, len) = match self {
            Frame::Data {
                stream,
                fin,
                payload,
            } => (
                TYPE_DATA,
                if *fin { FLAG_FIN } else { 0 },
                *stream,
                payload.len(),
            ),
            Frame::Window { stream, .. } => (TYPE_WINDOW, 0, *stream, 4),
            Frame::Reset { stream, .. } => (TYPE_RESET, 0, *stream, 4),
            Frame::Ping { ack, .. } => (TYPE_PING, if *ack { FLAG_ACK } else { 0 }, 0, 8),
            Frame::GoAway { .. } => (TYPE_GOAWAY, 0, 0, 4),
        };
        debug_assert!(len <= MAX_PAYLOAD, "encoder given an oversized payload");
        out.reserve(HEADER_LEN + len);
        out.put_uint(len as u64, 3);
        out.put_u8(ty);
        out.put_u8(flags);
        out.put_u32(stream);
        match self {
            Frame::Data { payload, .. } => out.put_slice(payload),
            Frame::Window { increment, .. } => out.put_u32(*increment),
            Frame::Reset { code, .. } | Frame::GoAway { code } => out.put_u32(*code),
            Frame::Ping { opaque, .. } => out.put_u64(*opaque),
        }
    }

    /// Takes one frame off the front of `buf` if a whole one is there. `Ok(None)` means more
    /// bytes are needed; an error means the stream is corrupt.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        let (ty, flags) = (buf[3], buf[4]);
        if !matches!(ty, TYPE_DATA..=TYPE_GOAWAY) {
            return Err(FrameError::UnknownType(ty));
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(5);
        let stream = buf.get_u32();
        let mut payload = buf.split_to(len);
        let fixed = |payload: &BytesMut, want: usize, what| {
            if payload.len() == want {
                Ok(())
            } else {
                Err(FrameError::Malformed(what))
            }
        };
        Ok(Some(match ty {
            TYPE_DATA => {
                if stream == 0 {
                    return Err(FrameError::Malformed("DATA on stream 0"));
                }
                Frame::Data {
                    stream,
                    fin: flags & FLAG_FIN != 0,
                    payload: payload.freeze(),
                }
            }
            TYPE_WINDOW => {
                fixed(&payload, 4, "WINDOW")?;
                Frame::Window {
                    stream,
                    increment: payload.get_u32(),
                }
            }
            TYPE_RESET => {
                fixed(&payload, 4, "RESET")?;
                if stream == 0 {
                    return Err(FrameError::Malformed("RESET on stream 0"));
                }
                Frame::Reset {
                    stream,
                    code: payload.get_u32(),
                }
            }
            TYPE_PING => {
                fixed(&payload, 8, "PING")?;
                Frame::Ping {
                    ack: flags & FLAG_ACK != 0,
                    opaque: payload.get_u64(),
                }
            }
            _ => {
                fixed(&payload, 4, "GOAWAY")?;
                Frame::GoAway {
                    code: payload.get_u32(),
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                1u32..,
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..2000)
            )
                .prop_map(|(stream, fin, p)| Frame::Data {
                    stream,
                    fin,
                    payload: p.into()
                }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(stream, increment)| Frame::Window { stream, increment }),
            (1u32.., any::<u32>()).prop_map(|(stream, code)| Frame::Reset { stream, code }),
            (any::<bool>(), any::<u64>()).prop_map(|(ack, opaque)| Frame::Ping { ack, opaque }),
            any::<u32>().prop_map(|code| Frame::GoAway { code }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_split(frames in proptest::collection::vec(frame(), 1..10), cut in any::<prop::sample::Index>()) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            // Feed the bytes in two pieces, as TCP may deliver them.
            let cut = cut.index(wire.len() + 1);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                out.push(f);
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = Frame::decode(&mut buf) {}
        }
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1][..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::TooLong(0xff_ffff)));
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 0, 0, 0, 0, 1][..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::UnknownType(9)));
        let mut buf = BytesMut::from(&[0, 0, 2, TYPE_WINDOW, 0, 0, 0, 0, 1, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf),
            Err(FrameError::Malformed("WINDOW"))
        );
        let mut buf = BytesMut::from(&[0, 0, 0, TYPE_DATA, 0, 0, 0, 0, 0][..]);
        assert!(Frame::decode(&mut buf).is_err());
    }
}

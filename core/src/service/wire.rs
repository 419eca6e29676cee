//! The first bytes of every service stream, version 1 (docs/PROTOCOL.md):
//!
//! ```text
//! client → owner:  version: u8 = 1 | name_len: u8 | service name (name_len bytes)
//! owner → client:  code: u8 (0 = accepted) | reason_len: u8 | reason (UTF-8)
//! ```
//!
//! The client may send application bytes right after its request (no round trip is spent
//! waiting); the owner reads none of them until the target is connected.

use crate::names::{MAX_LABEL_LEN, ServiceName};

/// Version byte of the request.
pub const SERVICE_STREAM_VERSION: u8 = 1;

/// Why an owner refused a stream; the wire byte is the discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RefusalCode {
    /// The peer may not use this service (or it does not exist; the two are not told apart).
    AccessDenied = 1,
    /// The local target refused or failed the connection.
    TargetUnavailable = 2,
    /// The request was malformed or of an unknown version.
    BadRequest = 3,
    /// The owner is at a limit.
    Overloaded = 4,
}

impl RefusalCode {
    fn from_byte(b: u8) -> Option<Self> {
        [
            Self::AccessDenied,
            Self::TargetUnavailable,
            Self::BadRequest,
            Self::Overloaded,
        ]
        .into_iter()
        .find(|c| *c as u8 == b)
    }

    /// Short text for logs and errors.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AccessDenied => "access denied",
            Self::TargetUnavailable => "service unavailable",
            Self::BadRequest => "bad request",
            Self::Overloaded => "owner overloaded",
        }
    }
}

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The service, by name.
    pub service: ServiceName,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenResponse {
    /// Bytes now flow to the target.
    Accepted,
    /// Refused, with a code and a human reason.
    Refused {
        /// Machine-readable reason.
        code: RefusalCode,
        /// Human-readable detail (at most 255 bytes).
        reason: String,
    },
}

/// Why bytes are not a valid request or response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Unknown request version.
    #[error("service stream version {0} is not supported")]
    Version(u8),
    /// The service name is invalid.
    #[error("bad service name: {0}")]
    Name(#[from] crate::names::NameError),
    /// Length out of range.
    #[error("service name length {0} out of range")]
    Length(u8),
    /// Unknown response code.
    #[error("unknown response code {0}")]
    Code(u8),
}

impl OpenRequest {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let name = self.service.as_str().as_bytes();
        let mut out = Vec::with_capacity(2 + name.len());
        out.push(SERVICE_STREAM_VERSION);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out
    }

    /// Parses a request from the front of `buf`: `Ok(None)` needs more bytes, else the request
    /// and how many bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        let [version, len, rest @ ..] = buf else {
            if let Some(&v) = buf.first()
                && v != SERVICE_STREAM_VERSION
            {
                return Err(WireError::Version(v));
            }
            return Ok(None);
        };
        if *version != SERVICE_STREAM_VERSION {
            return Err(WireError::Version(*version));
        }
        let len = *len;
        if len == 0 || usize::from(len) > MAX_LABEL_LEN {
            return Err(WireError::Length(len));
        }
        let Some(name) = rest.get(..usize::from(len)) else {
            return Ok(None);
        };
        let name = std::str::from_utf8(name).map_err(|_| WireError::Length(len))?;
        Ok(Some((
            Self {
                service: name.parse()?,
            },
            2 + usize::from(len),
        )))
    }
}

impl OpenResponse {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Accepted => vec![0, 0],
            Self::Refused { code, reason } => {
                let mut end = reason.len().min(255);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let mut out = vec![*code as u8, end as u8];
                out.extend_from_slice(&reason.as_bytes()[..end]);
                out
            }
        }
    }

    /// Parses a response from the front of `buf`, like [`OpenRequest::decode`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        let [code, len, rest @ ..] = buf else {
            return Ok(None);
        };
        let Some(reason) = rest.get(..usize::from(*len)) else {
            return Ok(None);
        };
        let used = 2 + usize::from(*len);
        if *code == 0 {
            return Ok(Some((Self::Accepted, used)));
        }
        let code = RefusalCode::from_byte(*code).ok_or(WireError::Code(*code))?;
        Ok(Some((
            Self::Refused {
                code,
                reason: String::from_utf8_lossy(reason).into_owned(),
            },
            used,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_round_trips_and_tolerates_any_split(name in "[a-z]([a-z0-9-]{0,30}[a-z0-9])?", extra in proptest::collection::vec(any::<u8>(), 0..10)) {
            let req = OpenRequest { service: name.parse().unwrap() };
            let mut bytes = req.encode();
            let len = bytes.len();
            for cut in 0..len {
                prop_assert_eq!(OpenRequest::decode(&bytes[..cut]), Ok(None));
            }
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(OpenRequest::decode(&bytes), Ok(Some((req, len))));
        }

        #[test]
        fn response_round_trips(reason in "\\PC{0,300}", code in 1u8..=4) {
            let code = RefusalCode::from_byte(code).unwrap();
            let resp = OpenResponse::Refused { code, reason: reason.clone() };
            let bytes = resp.encode();
            let (decoded, used) = OpenResponse::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            let OpenResponse::Refused { code: c, reason: r } = decoded else { panic!() };
            prop_assert_eq!(c, code);
            prop_assert!(reason.starts_with(&r));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = OpenRequest::decode(&bytes);
            let _ = OpenResponse::decode(&bytes);
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        assert_eq!(OpenRequest::decode(&[2]), Err(WireError::Version(2)));
        assert_eq!(OpenRequest::decode(&[1, 0]), Err(WireError::Length(0)));
        assert_eq!(OpenRequest::decode(&[1, 40]), Err(WireError::Length(40)));
        assert!(matches!(
            OpenRequest::decode(&[1, 3, b'S', b'S', b'H']),
            Err(WireError::Name(_))
        ));
        assert_eq!(OpenResponse::decode(&[9, 0]), Err(WireError::Code(9)));
    }
}

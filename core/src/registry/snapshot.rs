//! The registry's file format: a checksummed, versioned list of signed records.
//!
//! ```text
//! magic "VX6R" | version: u16 LE | checksum: blake3(payload), 32 bytes | payload
//! payload (version 1) = postcard { records: Vec<Vec<u8>> }, each an encoded SignedRecord
//! ```
//!
//! The checksum catches torn or bit-rotted files; every record is still re-verified on load, so a
//! file written by someone else cannot smuggle in a record its owner never signed.

use serde::{Deserialize, Serialize};

use super::{Registry, RegistryLimits};
use crate::record::SignedRecord;

const MAGIC: &[u8; 4] = b"VX6R";
/// Registry file format version this code writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 32;

#[derive(Serialize, Deserialize)]
struct PayloadV1 {
    records: Vec<Vec<u8>>,
}

/// Why bytes are not a registry file. Every variant means the file is corrupt or foreign.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Shorter than the header.
    #[error("file is truncated ({0} bytes)")]
    Truncated(usize),
    /// Does not start with the magic bytes.
    #[error("not a VX6 registry file (bad magic)")]
    BadMagic,
    /// A format version this code does not read.
    #[error("registry format version {0} is not supported (this build reads {SNAPSHOT_VERSION})")]
    UnsupportedVersion(u16),
    /// The payload does not match its checksum.
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// The payload matches its checksum but does not parse.
    #[error("payload does not parse: {0}")]
    Payload(#[from] postcard::Error),
}

/// What loading found besides the records it kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records loaded into the registry.
    pub loaded: usize,
    /// Records that expired while the file sat on disk.
    pub expired: usize,
    /// Records that failed verification or a merge rule (counted, dropped).
    pub invalid: usize,
}

impl Registry {
    /// Serializes every record held into the registry file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = PayloadV1 {
            records: self.iter().map(|r| r.as_bytes().to_vec()).collect(),
        };
        // Serializing Vec<Vec<u8>> into a Vec cannot fail: no type here can refuse to serialize.
        let payload = postcard::to_allocvec(&payload).expect("in-memory serialization");
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(blake3::hash(&payload).as_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Parses a registry file, re-verifying every record at `unix_now` under `limits`.
    pub fn from_bytes(
        bytes: &[u8],
        limits: RegistryLimits,
        unix_now: u64,
    ) -> Result<(Registry, LoadReport), LoadError> {
        if bytes.len() < HEADER_LEN {
            return Err(LoadError::Truncated(bytes.len()));
        }
        let (header, payload) = bytes.split_at(HEADER_LEN);
        if &header[..4] != MAGIC {
            return Err(LoadError::BadMagic);
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != SNAPSHOT_VERSION {
            return Err(LoadError::UnsupportedVersion(version));
        }
        if blake3::hash(payload).as_bytes() != &header[6..38] {
            return Err(LoadError::ChecksumMismatch);
        }
        let (parsed, rest): (PayloadV1, _) = postcard::take_from_bytes(payload)?;
        if !rest.is_empty() {
            return Err(LoadError::Payload(postcard::Error::DeserializeBadEncoding));
        }
        let mut registry = Registry::new(limits);
        let mut report = LoadReport::default();
        for raw in &parsed.records {
            let Ok(record) = SignedRecord::decode(raw) else {
                report.invalid += 1;
                continue;
            };
            match registry.insert(record, unix_now) {
                Ok(_) => report.loaded += 1,
                Err(super::Rejected::Freshness(crate::record::FreshnessError::Expired {
                    ..
                })) => report.expired += 1,
                Err(_) => report.invalid += 1,
            }
        }
        Ok((registry, report))
    }
}

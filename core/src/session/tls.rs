//! TLS 1.3 identities for sessions: each node presents a self-signed certificate for its Ed25519
//! key, and each side accepts a peer only by the key in that certificate (libp2p-tls is the
//! precedent). Certificate names and chains carry no meaning here; the key is the identity.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{Identity, NodeId, PublicKey};

/// ALPN protocol id of VX6 sessions, version 1.
pub const ALPN: &[u8] = b"vx6/1";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate could not be generated.
    #[error("generating the node certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The node's certificate and key, ready for rustls.
pub struct NodeCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl NodeCertificate {
    /// Makes the self-signed certificate for `identity`. Deterministic: no clock, no randomness
    /// (Ed25519 signatures are deterministic and rcgen derives the serial from the key).
    pub fn new(identity: &Identity) -> Result<Self, TlsSetupError> {
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&identity.secret_bytes());
        let key = PrivatePkcs8KeyDer::from(pkcs8);
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)?;
        let cert = rcgen::CertificateParams::new(vec!["vx6".to_owned()])?.self_signed(&key_pair)?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key,
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Extracts and validates the Ed25519 key of a peer's end-entity certificate.
pub fn peer_key(cert: &CertificateDer<'_>) -> Result<PublicKey, rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::General("peer certificate does not parse".into()))?;
    let spki = parsed.subject_public_key_info();
    let key_bytes: [u8; 32] = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| rustls::Error::General("peer certificate key is not Ed25519".into()))?;
    PublicKey::from_bytes(&key_bytes)
        .map_err(|e| rustls::Error::General(format!("peer certificate key: {e}")))
}

/// Where a dial's verifier records the node it met when that was not the expected one, so the
/// session layer can report a key mismatch as such (rustls and quinn carry verifier errors on as
/// text or alert codes, which are not to be branched on).
#[derive(Debug, Clone, Default)]
pub struct PeerMismatch(Arc<OnceLock<NodeId>>);

impl PeerMismatch {
    /// The node that answered instead of the expected one, if the handshake failed for that.
    pub fn seen(&self) -> Option<NodeId> {
        self.0.get().copied()
    }
}

/// Accepts a server only if its certificate's key is `expected` (when set), and only TLS 1.3
/// Ed25519 handshake signatures by that key.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<NodeId>,
    mismatch: PeerMismatch,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn check(
        &self,
        cert: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "peer sent a certificate chain".into(),
            ));
        }
        let node = peer_key(cert)?.node_id();
        match self.expected {
            Some(expected) if expected != node => {
                let _ = self.mismatch.0.set(node);
                Err(rustls::Error::General(format!(
                    "peer is node {node}, expected {expected}"
                )))
            }
            _ => Ok(()),
        }
    }
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not used by VX6".into())
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The provider with TLS 1.3 suites ordered AES-128-GCM, ChaCha20-Poly1305, AES-256-GCM.
/// rustls lists AES-256 first; AES-128 is as secure for our purposes and markedly cheaper per
/// byte, and the bulk of VX6's CPU time is record encryption. The client's order decides.
fn prefer_aes128(provider: &CryptoProvider) -> CryptoProvider {
    use rustls::CipherSuite as C;
    let rank = |s: &rustls::SupportedCipherSuite| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        C::TLS13_AES_256_GCM_SHA384 => 2,
        _ => 3,
    };
    let mut p = provider.clone();
    p.cipher_suites.sort_by_key(rank);
    p
}

/// Builds rustls configurations for one node.
pub struct TlsFactory {
    provider: Arc<CryptoProvider>,
    cert: NodeCertificate,
}

impl TlsFactory {
    /// A factory for `identity`'s certificate, using `provider` for all cryptography and
    /// randomness (a simulation passes a provider with seeded randomness).
    pub fn new(identity: &Identity, provider: Arc<CryptoProvider>) -> Result<Self, TlsSetupError> {
        Ok(Self {
            cert: NodeCertificate::new(identity)?,
            provider: Arc::new(prefer_aes128(&provider)),
        })
    }

    fn verifier(&self, expected: Option<NodeId>, mismatch: PeerMismatch) -> Arc<PeerVerifier> {
        Arc::new(PeerVerifier {
            expected,
            mismatch,
            algorithms: self.provider.signature_verification_algorithms,
        })
    }

    /// Client configuration for one dial: the server must be `expected` if given; with `None`
    /// any valid key is accepted and the caller checks or pins it after the handshake. A server
    /// with another key is recorded in `mismatch`.
    pub fn client(
        &self,
        expected: Option<NodeId>,
        mismatch: &PeerMismatch,
    ) -> Result<rustls::ClientConfig, TlsSetupError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier(expected, mismatch.clone()))
            .with_client_auth_cert(self.cert.chain.clone(), self.cert.key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Server configuration: every client must present a valid node certificate (its key is
    /// its identity, checked against access lists above this layer).
    pub fn server(&self) -> Result<rustls::ServerConfig, TlsSetupError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(self.verifier(None, PeerMismatch::default()))
            .with_single_cert(self.cert.chain.clone(), self.cert.key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

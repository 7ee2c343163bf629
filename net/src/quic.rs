//! QUIC and TLS set-up: node identities, certificate pins, transport limits and the channel
//! binding.
//!
//! TLS 1.3 only, rustls with the ring provider, ALPN [`ALPN`], no 0-RTT (a 0-RTT request
//! could be replayed). A server's identity is a self-signed Ed25519 certificate made from its
//! node key; it is made deterministically, so one node key always gives the same certificate
//! and the same [`CertPin`]. A client trusts exactly one certificate: the one whose SHA-256
//! is pinned. There is no WebPKI, no name check and no expiry check: the pin is the trust.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_core::digest::{DigestParseError, Sha256Hash};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::proto::{ALPN, ChannelBinding};

/// The exporter label of the channel binding (RFC 5705 / RFC 8446 §7.5), with an empty
/// context and 32 bytes of output.
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-enigm-ota/1 request binding";

/// The name a client asks for and a certificate carries. It is never checked (the pin is),
/// and clients send no SNI.
pub const SERVER_NAME: &str = "enigm-ota.invalid";

/// A node's long-term Ed25519 secret key (its 32-byte seed), from which its TLS certificate
/// is made. Peers can use the same key for their libp2p identity.
#[derive(Clone)]
pub struct NodeKey([u8; 32]);

/// A node's TLS identity: the certificate made from its [`NodeKey`] and the key itself.
#[derive(Clone)]
pub struct Identity {
    certificate: CertificateDer<'static>,
    pkcs8: Arc<[u8]>,
    public_key: [u8; 32],
    pin: CertPin,
}

/// The secret behind a server endpoint's stateless resets (RFC 9000 §10.3): the reset token
/// of each connection id the endpoint issues is an HMAC-SHA256 of the id under a key derived
/// from it. A server that keeps this secret across restarts (in its data directory, see
/// [`ResetSecret::load_or_create`]) answers a packet of a connection it lost in a crash with a
/// stateless reset the client recognises, so the client's connection fails at once (with
/// `quinn::ConnectionError::Reset`) instead of after the idle timeout.
#[derive(Clone, PartialEq, Eq)]
pub struct ResetSecret([u8; 32]);

/// The length of a connection id a server issues: 8 random bytes, as quinn's default.
const CID_LEN: usize = 8;

/// The file a server keeps its [`ResetSecret`] in could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResetSecretError {
    /// Reading, writing or syncing the file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file exists but does not hold exactly 32 bytes (damaged or not ours). It is not
    /// replaced silently: remove it to make a new one.
    #[error(
        "{path} holds {len} bytes, not the 32 of a stateless-reset secret; remove it to make a new one"
    )]
    BadLength {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        len: u64,
    },
}

/// The SHA-256 of a certificate's DER encoding: what a client pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertPin(pub Sha256Hash);

/// The QUIC transport limits of one endpoint. Both ends use the same defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportLimits {
    /// Requests (bidirectional streams) the peer may have open on one connection at once.
    pub max_concurrent_streams: u32,
    /// A connection with no packets for this long is closed.
    pub idle_timeout: Duration,
    /// Send a keep-alive when idle this long (`None`: never). Clients keep connections alive;
    /// servers leave it to clients.
    pub keep_alive_interval: Option<Duration>,
    /// Bytes the peer may send on one stream ahead of what is read (per-stream flow control).
    pub stream_receive_window: u32,
    /// Bytes the peer may send on all streams ahead of what is read (connection flow control).
    pub receive_window: u32,
    /// Bytes this end buffers for sending, unacknowledged, on one connection.
    pub send_window: u64,
}

/// The local TLS or QUIC configuration could not be built (our side's fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The certificate could not be made from the node key.
    #[error("making the node certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The TLS configuration has no cipher suite QUIC can start with.
    #[error("TLS configuration: {0}")]
    CipherSuite(#[source] NoInitialCipherSuite),
    /// The idle timeout does not fit QUIC's encoding.
    #[error("idle timeout {0:?} is out of range")]
    IdleTimeout(Duration),
}

impl NodeKey {
    /// The key with this seed (as stored in a node's data directory).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(seed)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        use rand_core::RngCore as _;
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        Self(seed)
    }

    /// The seed, to store the key.
    pub fn seed(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as a PKCS#8 v1 document (RFC 8410), as rcgen and rustls take it.
    fn pkcs8(&self) -> Vec<u8> {
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(&PREFIX);
        out.extend_from_slice(&self.0);
        out
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl ResetSecret {
    /// A new random secret from the operating system's generator.
    pub fn generate() -> Self {
        use rand_core::RngCore as _;
        let mut secret = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut secret);
        Self(secret)
    }

    /// The secret with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads the secret from `path` (exactly 32 raw bytes), or, if there is no such file,
    /// makes one: a new random secret written to `path.tmp` with mode 0600, synced, renamed
    /// over `path`, and the directory synced, so that a crash leaves either no file or a whole
    /// one. A file of another length is an error, never replaced.
    pub fn load_or_create(path: &Path) -> Result<Self, ResetSecretError> {
        let io = |what, source| ResetSecretError::Io {
            what,
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                // The length is checked before anything is read.
                if meta.len() != 32 {
                    return Err(ResetSecretError::BadLength {
                        path: path.to_owned(),
                        len: meta.len(),
                    });
                }
                let bytes = std::fs::read(path).map_err(|e| io("reading", e))?;
                let bytes: [u8; 32] =
                    bytes
                        .try_into()
                        .map_err(|b: Vec<u8>| ResetSecretError::BadLength {
                            path: path.to_owned(),
                            len: b.len() as u64,
                        })?;
                return Ok(Self(bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", e)),
        }
        let secret = Self::generate();
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| io("creating", e))?;
        file.write_all(&secret.0).map_err(|e| io("writing", e))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| io("renaming into", e))?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing the directory of", e))?;
        }
        Ok(secret)
    }

    /// The quinn endpoint configuration whose stateless-reset key is derived from this secret
    /// (HMAC-SHA256 with the key `HMAC(secret, "enigm-ota/1 stateless reset")`), issuing
    /// random 8-byte connection ids. Two endpoints made from one secret give every
    /// connection id the same reset token.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let reset_key = ring::hmac::sign(&derive, b"enigm-ota/1 stateless reset");
        let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            reset_key.as_ref(),
        )));
        config.cid_generator(|| Box::new(RandomCids));
        config
    }
}

impl fmt::Debug for ResetSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetSecret(..)")
    }
}

/// Random connection ids of [`CID_LEN`] bytes. They carry no check value, so a restarted
/// server treats any short-header packet of the right id length as one of a lost connection
/// and answers it with a stateless reset (at most one per 20 ms, quinn's default, and always
/// smaller than the packet that incited it).
#[derive(Debug)]
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use rand_core::RngCore as _;
        let mut bytes = [0u8; CID_LEN];
        rand_core::OsRng.fill_bytes(&mut bytes);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

impl Identity {
    /// The identity of a node: a self-signed Ed25519 certificate for [`SERVER_NAME`], valid
    /// from 1975 to 4096, serial and key identifier derived from the public key. Ed25519
    /// signatures are deterministic, so the same key always gives the same certificate.
    pub fn from_node_key(key: &NodeKey) -> Result<Self, ConfigError> {
        let pkcs8 = key.pkcs8();
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(ConfigError::Certificate)?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .map_err(ConfigError::Certificate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "enigm-ota node");
        params.not_before = rcgen::date_time_ymd(1975, 1, 1);
        params.not_after = rcgen::date_time_ymd(4096, 1, 1);
        let certificate = params
            .self_signed(&key_pair)
            .map_err(ConfigError::Certificate)?;
        let certificate = certificate.der().clone();
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(key_pair.public_key_raw());
        Ok(Self {
            pin: CertPin::of_certificate(&certificate),
            certificate,
            pkcs8: pkcs8.into(),
            public_key,
        })
    }

    /// The pin a client configures to trust this identity.
    pub fn pin(&self) -> CertPin {
        self.pin
    }

    /// The certificate, DER-encoded.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// The node's Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("pin", &self.pin)
            .field("public_key", &hex::encode(self.public_key))
            .finish_non_exhaustive()
    }
}

impl CertPin {
    /// The pin of a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Self {
        Self(Sha256Hash::of(der))
    }
}

impl fmt::Debug for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertPin({})", self.0.to_hex())
    }
}

impl fmt::Display for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for CertPin {
    type Err = DigestParseError;

    /// 64 lowercase hex characters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl Default for TransportLimits {
    /// Tuned for LAN and loopback rates with room for a long-haul uplink:
    ///
    /// - 32 concurrent requests per connection: enough for a device to keep several
    ///   `GetBlobs` in flight, small enough that a client holding every stream open costs a
    ///   server little (each stream is bounded by the windows below and by timeouts).
    /// - Windows of 2 MiB per stream and 16 MiB per connection: a stream window of 2 MiB keeps
    ///   a single `GetBlobs` from stalling on flow control at loopback and LAN rates, and
    ///   several streams share the connection window. The send window matches the connection
    ///   window so a sender can fill what the receiver offers.
    /// - 30 s idle timeout with 10 s keep-alives (clients only).
    fn default() -> Self {
        Self {
            max_concurrent_streams: 32,
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            stream_receive_window: 2 * 1024 * 1024,
            receive_window: 16 * 1024 * 1024,
            send_window: 16 * 1024 * 1024,
        }
    }
}

impl TransportLimits {
    /// The quinn transport configuration for these limits. No unidirectional streams and no
    /// datagrams: the protocol uses neither.
    pub fn transport_config(&self) -> Result<TransportConfig, ConfigError> {
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(
                IdleTimeout::try_from(self.idle_timeout)
                    .map_err(|_| ConfigError::IdleTimeout(self.idle_timeout))?,
            ))
            .keep_alive_interval(self.keep_alive_interval)
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .datagram_receive_buffer_size(None);
        Ok(transport)
    }
}

/// The quinn server configuration for `identity`: TLS 1.3 only, ALPN [`ALPN`], no client
/// certificates, no 0-RTT.
pub fn server_config(
    identity: &Identity,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, ConfigError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.pkcs8.to_vec()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![identity.certificate.clone()], key)
        .map_err(ConfigError::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(ConfigError::CipherSuite)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(limits.transport_config()?));
    Ok(config)
}

/// The quinn client configuration that trusts exactly the certificate pinned by `pin`.
pub fn client_config(
    pin: CertPin,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, ConfigError> {
    pinned_client_config(pin, limits).map(|(config, _)| config)
}

/// The channel binding of an established connection: 32 bytes of TLS exporter output with
/// [`CHANNEL_BINDING_LABEL`] and an empty context. Both ends get the same value; no other
/// connection gets it. `None` if the handshake has not completed.
pub fn channel_binding(connection: &quinn::Connection) -> Option<ChannelBinding> {
    let mut out = [0u8; 32];
    connection
        .export_keying_material(&mut out, CHANNEL_BINDING_LABEL, b"")
        .ok()?;
    Some(ChannelBinding(out))
}

/// Where the pin verifier leaves the certificate it refused, so that the client can report
/// a typed error rather than a TLS alert.
pub(crate) type PinMismatchSlot = Arc<Mutex<Option<CertPin>>>;

pub(crate) fn pinned_client_config(
    pin: CertPin,
    limits: &TransportLimits,
) -> Result<(quinn::ClientConfig, PinMismatchSlot), ConfigError> {
    let provider = provider();
    let mismatch = PinMismatchSlot::default();
    let verifier = PinVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
        mismatch: mismatch.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_sni = false;
    tls.enable_early_data = false;
    let crypto = QuicClientConfig::try_from(tls).map_err(ConfigError::CipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(limits.transport_config()?));
    Ok((config, mismatch))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the pinned certificate, and checks the handshake signature against it.
#[derive(Debug)]
struct PinVerifier {
    pin: CertPin,
    algorithms: WebPkiSupportedAlgorithms,
    mismatch: PinMismatchSlot,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertPin::of_certificate(end_entity);
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut slot) = self.mismatch.lock() {
            *slot = Some(presented);
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never reached: only TLS 1.3 is enabled.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Send and receive buffer asked for every QUIC endpoint's UDP socket. The kernel's default
/// (about 208 KiB on Linux) overflows when one socket carries many connections: a burst of
/// datagrams larger than the receive buffer is dropped before the endpoint reads it (seen as
/// `RcvbufErrors`), and packets queued below the socket count against its send buffer until
/// they leave, so a full one stalls every connection on that socket. Dropped datagrams cost a
/// retransmission and halve a congestion window.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Binds the UDP socket of a QUIC endpoint at `addr` (dual-stack for an IPv6 address), asking
/// for [`SOCKET_BUFFER`] bytes of send and receive buffer. The kernel caps what it grants at
/// `net.core.wmem_max` / `net.core.rmem_max`; a smaller grant is not an error, and is logged
/// once per process with the setting to raise.
///
/// # Errors
/// When the socket cannot be made or bound.
pub fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    static SMALL: std::sync::Once = std::sync::Once::new();
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Not every system allows dual-stack sockets; an IPv6-only one still works for IPv6.
        let _ = socket.set_only_v6(false);
    }
    // Asking more than the cap is not an error on Linux: the grant is capped.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let granted = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    // Linux reports twice what it grants (the doubling covers its bookkeeping).
    if granted.0 < SOCKET_BUFFER || granted.1 < SOCKET_BUFFER {
        SMALL.call_once(|| {
            tracing::info!(
                asked = SOCKET_BUFFER,
                receive = granted.0,
                send = granted.1,
                "UDP socket buffers are smaller than asked: bursts may be dropped under load \
                 (raise net.core.rmem_max and net.core.wmem_max to at least {SOCKET_BUFFER})"
            );
        });
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_key_gives_one_certificate() {
        let key = NodeKey::from_seed([7; 32]);
        let a = Identity::from_node_key(&key).unwrap();
        let b = Identity::from_node_key(&key).unwrap();
        assert_eq!(a.certificate_der(), b.certificate_der());
        assert_eq!(a.pin(), b.pin());
        let other = Identity::from_node_key(&NodeKey::from_seed([8; 32])).unwrap();
        assert_ne!(a.pin(), other.pin());
        assert_ne!(a.public_key(), other.public_key());
        // The public key is the RFC 8032 derivation of the seed: the certificate carries it.
        let der = a.certificate_der();
        assert!(der.windows(32).any(|w| w == a.public_key()));
    }

    #[test]
    fn pins_print_and_parse_as_hex() {
        let pin = Identity::from_node_key(&NodeKey::from_seed([1; 32]))
            .unwrap()
            .pin();
        assert_eq!(pin.to_string().parse::<CertPin>().unwrap(), pin);
        assert!("not hex".parse::<CertPin>().is_err());
    }

    #[test]
    fn generated_keys_differ_and_debug_hides_them() {
        let a = NodeKey::generate();
        let b = NodeKey::generate();
        assert_ne!(a.seed(), b.seed());
        assert_eq!(format!("{a:?}"), "NodeKey(..)");
    }

    #[test]
    fn reset_secret_is_made_once_private_and_kept() {
        let dir = tempfile_dir();
        let path = dir.join("quic-reset.key");
        let made = ResetSecret::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!path.with_extension("tmp").exists());
        let again = ResetSecret::load_or_create(&path).unwrap();
        assert!(made == again, "the second load reads the first secret");
        assert_eq!(format!("{made:?}"), "ResetSecret(..)");
        // A damaged file is refused with its length, not replaced.
        std::fs::write(&path, [1u8; 31]).unwrap();
        match ResetSecret::load_or_create(&path) {
            Err(ResetSecretError::BadLength { len: 31, .. }) => {}
            other => panic!("expected BadLength, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), [1u8; 31]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ota-net-reset-{}-{}",
            std::process::id(),
            hex::encode(ResetSecret::generate().0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn server_and_client_configs_build() {
        let identity = Identity::from_node_key(&NodeKey::from_seed([2; 32])).unwrap();
        let limits = TransportLimits::default();
        server_config(&identity, &limits).unwrap();
        client_config(identity.pin(), &limits).unwrap();
    }

    /// The sockets get the buffers asked for, as far as the kernel's caps allow (on Linux, the
    /// cap is `net.core.rmem_max` / `wmem_max` and the reported size is twice the grant).
    #[cfg(target_os = "linux")]
    #[test]
    fn endpoint_sockets_get_large_buffers_within_the_kernel_caps() {
        let cap = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let socket = socket2::SockRef::from(&socket);
        let expect = |cap: usize| 2 * SOCKET_BUFFER.min(cap);
        assert_eq!(socket.recv_buffer_size().unwrap(), expect(cap("rmem_max")));
        assert_eq!(socket.send_buffer_size().unwrap(), expect(cap("wmem_max")));
        let v6 = bind_udp("[::1]:0".parse().unwrap());
        if let Ok(v6) = v6 {
            assert!(v6.local_addr().unwrap().is_ipv6());
        }
    }
}

//! How sekisho's TLS client meets a route's `https` upstreams: the certificates it trusts, the
//! name it verifies, and the certificate it presents (`tls_*` route keys merged with the
//! top-level `upstream_tls` defaults).

use std::fmt;
use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A route's upstream TLS settings, resolved: the route's own `tls_*` keys, and for each one it
/// does not write, the `upstream_tls` defaults. Routes without an `https` target keep the
/// default (nothing applies to them).
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// Which certificates the upstream may present.
    pub verify: UpstreamVerify,
    /// `tls_server_name`: the name sent as SNI and verified in the upstream's certificate
    /// instead of the host of the `to` URL (absent: that host).
    pub server_name: Option<ServerName<'static>>,
    /// `tls_client_certificate` + `tls_client_key`: the certificate presented when the upstream
    /// asks for one (mTLS); absent: none is presented.
    pub client_auth: Option<UpstreamClientAuth>,
}

/// How an upstream's certificate is verified.
#[derive(Debug, Clone, Default)]
pub enum UpstreamVerify {
    /// Against the public web roots (Mozilla's, as shipped by webpki-roots): the default.
    #[default]
    PublicRoots,
    /// Against these CAs only (`tls_custom_ca`); the public roots are not trusted.
    CustomCa(CaBundle),
    /// Not at all (`tls_skip_verify: true`): any certificate is accepted, though the handshake
    /// signature is still checked against the certificate's key.
    Off,
}

/// A PEM bundle of CA certificates, read and parsed at load.
#[derive(Clone)]
pub struct CaBundle {
    /// The file, resolved against the config file's directory.
    pub file: PathBuf,
    /// Its certificates, in file order; non-empty, each one usable as a trust anchor.
    pub certificates: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for CaBundle {
    /// The file and the number of certificates, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("file", &self.file)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

/// The certificate chain and private key sekisho presents to an upstream that asks for one.
#[derive(Clone)]
pub struct UpstreamClientAuth {
    /// The certificate file (PEM chain, leaf first), resolved against the config file's
    /// directory.
    pub cert_file: PathBuf,
    /// The key file (PEM; PKCS#8, PKCS#1 or SEC1), resolved likewise.
    pub key_file: PathBuf,
    /// The chain, leaf first; non-empty.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key: a key rustls can sign with, whose public key is the leaf's.
    pub key: TlsPrivateKey,
}

impl fmt::Debug for UpstreamClientAuth {
    /// The files and the chain length; never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClientAuth")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A private key (DER). Its `Debug` never shows the value.
pub struct TlsPrivateKey(PrivateKeyDer<'static>);

impl TlsPrivateKey {
    /// Wraps a parsed key.
    pub fn new(key: PrivateKeyDer<'static>) -> Self {
        Self(key)
    }

    /// A copy of the key, as rustls takes it.
    pub fn der(&self) -> PrivateKeyDer<'static> {
        self.0.clone_key()
    }
}

impl Clone for TlsPrivateKey {
    /// A copy of the key bytes.
    fn clone(&self) -> Self {
        Self(self.0.clone_key())
    }
}

impl fmt::Debug for TlsPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsPrivateKey(<redacted>)")
    }
}

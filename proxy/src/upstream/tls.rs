//! The TLS client of one route's upstreams: the certificates it trusts (the public web roots,
//! the route's own CAs, or any certificate with `tls_skip_verify`) and the certificate it
//! presents. (The name it verifies is the connector's: see [`super::Upstream::new`].)

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sekisho_config::{UpstreamTls, UpstreamVerify};

use crate::error::ProxyError;

/// The rustls client configuration for a route's resolved upstream TLS settings (ALPN is set
/// by the connector).
pub(super) fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(internal)?;
    let builder = match &tls.verify {
        UpstreamVerify::PublicRoots => builder.with_root_certificates(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        UpstreamVerify::CustomCa(ca) => {
            // Only the route's CAs: adding the public roots would let any public CA vouch for
            // an internal name.
            let mut roots = RootCertStore::empty();
            for certificate in &ca.certificates {
                roots.add(certificate.clone()).map_err(internal)?;
            }
            builder.with_root_certificates(roots)
        }
        UpstreamVerify::Off => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms })),
    };
    match &tls.client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some(client) => builder
            .with_client_auth_cert(client.chain.clone(), client.key.der())
            .map_err(internal),
    }
}

/// A rustls error while building a client configuration the configuration crate has already
/// checked: a bug or an environment problem.
fn internal(error: rustls::Error) -> ProxyError {
    ProxyError::Internal {
        detail: format!("upstream TLS client: {error}"),
    }
}

/// `tls_skip_verify`: accepts any certificate for any name, but still checks that the server
/// signed the handshake with the key of the certificate it presented, using the provider's
/// algorithms (so the connection is at least encrypted to whoever holds that key).
#[derive(Debug)]
struct AnyCertificate {
    /// The provider's signature verification algorithms.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

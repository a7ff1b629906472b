//! What can be wrong in upstream TLS settings — `upstream_tls` and a route's `tls_*` keys
//! ([`UpstreamTlsProblem`]); becomes a [`super::Problem`] like every other configuration error.

use rustls::pki_types::pem;
use std::io;

/// What is wrong with upstream TLS settings.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamTlsProblem {
    /// A file that could not be read.
    #[error("cannot read {what} `{path}`: {source}")]
    Read {
        /// `CA file`, `certificate file` or `key file`.
        what: &'static str,
        /// The resolved path.
        path: String,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// A file whose PEM is broken.
    #[error("`{path}` is not valid PEM: {source}")]
    Pem {
        /// The resolved path.
        path: String,
        /// What is wrong.
        #[source]
        source: pem::Error,
    },
    /// A CA or certificate file without a certificate.
    #[error("`{path}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate {
        /// The resolved path.
        path: String,
    },
    /// A certificate in a CA file that cannot be a trust anchor.
    #[error("certificate {number} in `{path}` cannot be used as a CA: {reason}")]
    CaCertificate {
        /// The resolved path.
        path: String,
        /// 1-based position of the certificate in the file.
        number: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file without a private key.
    #[error(
        "`{path}` holds no PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
    )]
    NoKey {
        /// The resolved path.
        path: String,
    },
    /// A private key rustls cannot sign with.
    #[error("the private key in `{path}` is not usable: {reason}")]
    KeyUnusable {
        /// The resolved path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A leaf certificate that does not parse.
    #[error("the first certificate in `{path}` is not usable: {reason}")]
    CertificateUnusable {
        /// The resolved path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A private key whose public key is not the certificate's.
    #[error("the private key in `{key}` does not belong to the certificate in `{cert}`")]
    KeyMismatch {
        /// The key file.
        key: String,
        /// The certificate file.
        cert: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("`{written}` needs `{missing}` too: a client certificate is a certificate and its key")]
    HalfPair {
        /// The key written.
        written: &'static str,
        /// The key missing.
        missing: &'static str,
    },
    /// Verification off and a CA to verify against, at one level.
    #[error(
        "`{skip}: true` turns certificate verification off, and `{ca}` names the CA to verify against; write one of them"
    )]
    SkipWithCustomCa {
        /// The skip key.
        skip: &'static str,
        /// The CA key.
        ca: &'static str,
    },
    /// A `tls_*` key on a route without an `https` target.
    #[error("`{key}` only applies to https upstreams, and none of this route's `to` URLs is https")]
    NotHttps {
        /// The key.
        key: &'static str,
    },
    /// A `tls_server_name` that is neither a DNS name nor an IP address.
    #[error("`{0}` is not a DNS name or an IP address, like `upstream.internal` or `10.0.0.5`")]
    ServerName(String),
}

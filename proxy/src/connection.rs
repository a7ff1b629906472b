//! Connection facts: what sekisho knows of the client connection a request arrived on (filled
//! once at accept and after the TLS handshake, `server.rs`), and of the upstream connection a
//! forwarded request used (filled by the forward phase from the pooled client's connection).
//! Both ends are kept so that a host-local peer on either side can be looked up (its process,
//! its container).

use std::net::SocketAddr;

use crate::policy::ClientCertificate;

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The TCP peer (canonical: a v4-mapped IPv6 peer is IPv4).
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// Whether the listener terminated TLS.
    pub tls: bool,
    /// The negotiated TLS version (`1.2`, `1.3`), when it did.
    pub tls_version: Option<&'static str>,
    /// The request came to the admin listener (metrics, audit review).
    pub admin: bool,
    /// The client certificate presented over mTLS, if any.
    pub client_certificate: Option<ClientCertificate>,
}

/// The upstream connection a forwarded request went out on: sekisho's end and the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamConnection {
    /// sekisho's address on it.
    pub local: SocketAddr,
    /// The upstream's address.
    pub remote: SocketAddr,
}

//! Listeners: plain HTTP and TLS (rustls, SNI over several certificates, ALPN h2/http1.1),
//! HTTP/1.1 and HTTP/2 with upgrades, phase timeouts, graceful shutdown, and the worker threads
//! (one per core) that serve the proxy listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sekisho_config::{Config, TlsCertificate};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::connection::Connection;
use crate::policy::ClientCertificate;
use crate::proxy::Proxy;

mod certificates;
mod conn;

pub use certificates::{Certificates, FilesState};

pub use conn::set_memory_release;
use conn::{Protocol, Protocols};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding a socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key could not be loaded.
    #[error("TLS certificate {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Bound listeners, ready to serve.
pub struct Listeners {
    http: Option<TcpListener>,
    https: Option<(TcpListener, TlsAcceptor)>,
    admin: Option<TcpListener>,
    /// The TLS listener's certificates, reloadable.
    certificates: Option<Arc<Certificates>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("addresses", &self.addresses())
            .finish()
    }
}

impl Listeners {
    /// Binds the configured listeners (port 0 picks a free port; see [`Listeners::addresses`]).
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let http = match config.server.http_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
            None => None,
        };
        let mut certificates = None;
        let https = match config.server.https_listen {
            Some(addr) => {
                let (acceptor, resolver) = tls_acceptor(
                    &config.server.tls,
                    config.server.client_ca_file.as_deref(),
                    config.server.require_client_certificate,
                )?;
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?;
                certificates = Some(resolver);
                Some((listener, acceptor))
            }
            None => None,
        };
        let admin =
            match &config.admin {
                Some(admin) => Some(TcpListener::bind(admin.listen).await.map_err(|source| {
                    ServerError::Bind {
                        addr: admin.listen,
                        source,
                    }
                })?),
                None => None,
            };
        Ok(Listeners {
            http,
            https,
            admin,
            certificates,
        })
    }

    /// The TLS listener's certificates (to reload them), when there is one.
    pub fn certificates(&self) -> Option<Arc<Certificates>> {
        self.certificates.clone()
    }

    /// The bound admin listener address, when configured.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The actual bound addresses (http, https).
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.http.as_ref().and_then(|l| l.local_addr().ok()),
            self.https.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        )
    }

    /// Serves until `shutdown` resolves, then lets in-flight connections finish (up to 10 s).
    ///
    /// The proxy listeners are served by [`worker_count`] threads, one per core, each with its
    /// own single-threaded runtime accepting from the same sockets (nginx's worker model): a
    /// connection, its requests and their upstream connections (one pool per worker, see
    /// `upstream.rs`) stay on the thread that accepted it, with no hand-off between threads per
    /// request. The admin listener and background work stay on the caller's runtime.
    pub async fn serve(
        self,
        proxy: Arc<Proxy>,
        timeouts: sekisho_config::ServerTimeouts,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        // Every connection holds a receiver; a send asks them to finish, and the sender's
        // `closed` says when the last one has.
        let (stop, stopped) = watch::channel(());
        // Workers keep driving their connections until told to exit.
        let (exit, exiting) = watch::channel(false);
        let protocols = Arc::new(Protocols::new(&timeouts));
        let mut proxy_listeners = Vec::new();
        for (listener, tls) in [
            self.http.map(|l| (l, None)),
            self.https.map(|(l, acceptor)| (l, Some(acceptor))),
        ]
        .into_iter()
        .flatten()
        {
            match listener.into_std() {
                Ok(listener) => proxy_listeners.push((listener, tls)),
                Err(e) => tracing::error!(error = %e, "cannot hand a listener to the workers"),
            }
        }
        let count = worker_count();
        let (inboxes, mut receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let dealer = Arc::new(Dealer {
            inboxes,
            next: AtomicUsize::new(0),
        });
        let serving = Serving {
            proxy: proxy.clone(),
            handshake_timeout: timeouts.tls_handshake,
            protocols: protocols.clone(),
            stopped: stopped.clone(),
        };
        let mut workers = Vec::new();
        for (index, inbox) in receivers.drain(..).enumerate() {
            let mut sockets = Vec::new();
            for (listener, tls) in &proxy_listeners {
                match listener.try_clone() {
                    Ok(socket) => sockets.push((socket, tls.clone())),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot share a listener with worker {index}")
                    }
                }
            }
            let worker = Worker {
                index,
                listeners: sockets,
                inbox,
                dealer: dealer.clone(),
                serving: serving.clone(),
                exiting: exiting.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("sekisho-w{index}"))
                .spawn(move || worker.run())
            {
                Ok(thread) => workers.push(thread),
                Err(e) => tracing::error!(error = %e, "cannot start worker thread {index}"),
            }
        }
        drop(proxy_listeners);
        let mut admin = tokio::task::JoinSet::new();
        if let Some(listener) = self.admin {
            admin.spawn(accept_loop(listener, None, true, serving.clone(), None));
        }
        drop((stopped, serving, dealer));
        drop(exiting);
        shutdown.await;
        admin.abort_all();
        while admin.join_next().await.is_some() {}
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(10), stop.closed())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after 10 s; closing them");
        }
        let _ = exit.send(true);
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }
}

/// How many worker threads serve the proxy listeners: one per core.
pub fn worker_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

thread_local! {
    static WORKER_INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index of the worker thread this runs on (0 off the workers: the admin listener, tests).
pub fn worker_index() -> usize {
    WORKER_INDEX.with(std::cell::Cell::get)
}

/// One worker thread: a single-threaded runtime accepting from its copies of the listeners and
/// serving the connections dealt to it.
struct Worker {
    index: usize,
    listeners: Vec<(std::net::TcpListener, Option<TlsAcceptor>)>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    dealer: Arc<Dealer>,
    serving: Serving,
    exiting: watch::Receiver<bool>,
}

impl Worker {
    fn run(self) {
        let Worker {
            index,
            listeners,
            mut inbox,
            dealer,
            serving,
            mut exiting,
        } = self;
        WORKER_INDEX.with(|cell| cell.set(index));
        // I/O and timers only: a worker spawns no processes and handles no signals (the
        // process driver would otherwise look for exited children at every park).
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, worker = index, "cannot start a worker's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let mut accepts = tokio::task::JoinSet::new();
            for (socket, tls) in listeners {
                match TcpListener::from_std(socket) {
                    Ok(listener) => {
                        accepts.spawn(accept_loop(
                            listener,
                            tls,
                            false,
                            serving.clone(),
                            Some(dealer.clone()),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, worker = index, "cannot accept on a listener")
                    }
                }
            }
            drop(dealer);
            let dealt = serving.clone();
            accepts.spawn(async move {
                while let Some(Handoff { stream, conn, tls }) = inbox.recv().await {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve_connection(stream, conn, tls, &dealt),
                        Err(e) => {
                            tracing::debug!(peer = %conn.peer, error = %e, "connection lost in hand-off")
                        }
                    }
                }
            });
            let mut signal = serving.stopped.clone();
            drop(serving);
            let _ = signal.changed().await;
            drop(signal);
            accepts.abort_all();
            while accepts.join_next().await.is_some() {}
            // The connections finish on this runtime; it keeps running them until told to exit.
            let _ = exiting.wait_for(|exit| *exit).await;
        });
    }
}

/// What every connection task needs.
#[derive(Clone)]
struct Serving {
    proxy: Arc<Proxy>,
    handshake_timeout: Duration,
    protocols: Arc<Protocols>,
    stopped: watch::Receiver<()>,
}

/// A connection accepted by one worker for another to serve.
struct Handoff {
    stream: std::net::TcpStream,
    conn: Connection,
    tls: Option<TlsAcceptor>,
}

/// The workers' inboxes, and whose turn the next connection is: connections are dealt out in
/// turn, whichever worker happened to accept them (a burst of connects wakes one worker first,
/// and it would otherwise take them all).
struct Dealer {
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    next: AtomicUsize,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    admin: bool,
    serving: Serving,
    dealer: Option<Arc<Dealer>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`: every phase (trusted
        // proxies, policies, the audit record) sees them as the IPv4 address they are.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let local = match stream.local_addr() {
            Ok(local) => SocketAddr::new(local.ip().to_canonical(), local.port()),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection gone before it was served");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            peer,
            local,
            tls: tls.is_some(),
            tls_version: None,
            client_certificate: None,
            admin,
        };
        if let Some(dealer) = &dealer {
            let turn = dealer.next.fetch_add(1, Ordering::Relaxed) % dealer.inboxes.len().max(1);
            if turn != worker_index()
                && let Some(inbox) = dealer.inboxes.get(turn)
            {
                match stream.into_std() {
                    Ok(stream) => {
                        let handoff = Handoff {
                            stream,
                            conn,
                            tls: tls.clone(),
                        };
                        if let Err(refused) = inbox.send(handoff) {
                            // That worker is gone (shutting down): serve it here.
                            let Handoff { stream, conn, tls } = refused.0;
                            match TcpStream::from_std(stream) {
                                Ok(stream) => serve_connection(stream, conn, tls, &serving),
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "connection lost in hand-off")
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "connection lost in hand-off"),
                }
                continue;
            }
        }
        serve_connection(stream, conn, tls.clone(), &serving);
    }
}

/// Spawns the task that serves one accepted connection on this thread's runtime.
fn serve_connection(
    stream: TcpStream,
    conn: Connection,
    tls: Option<TlsAcceptor>,
    serving: &Serving,
) {
    let Serving {
        proxy,
        handshake_timeout,
        protocols,
        stopped,
    } = serving.clone();
    let peer = conn.peer;
    // Two kinds of task, each sized for its own state: a plain connection's task must not
    // carry room for a TLS session it does not have (an idle connection keeps its task).
    match tls {
        None => {
            tokio::spawn(conn::serve(
                stream,
                Protocol::Sniff,
                proxy,
                conn,
                protocols,
                stopped,
            ));
        }
        Some(acceptor) => {
            tokio::spawn(Box::pin(async move {
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let protocol = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                let conn = Connection {
                    client_certificate: client_certificate(&stream),
                    tls_version: tls_version(&stream),
                    ..conn
                };
                conn::serve(stream, protocol, proxy, conn, protocols, stopped).await;
            }));
        }
    }
}

/// A TLS acceptor serving each certificate by SNI (the first one when SNI is absent or unknown),
/// verifying client certificates against `client_ca` when set (mTLS; optional unless
/// `require_client_certificate`).
/// The certificates are read from their files once here and again at each
/// [`Certificates::reload`].
fn tls_acceptor(
    certificates: &[TlsCertificate],
    client_ca: Option<&Path>,
    require_client_certificate: bool,
) -> Result<(TlsAcceptor, Arc<Certificates>), ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(Certificates::load(certificates, provider.clone())?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Certificate {
            path: "(config)".into(),
            reason: e.to_string(),
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let err = |reason: String| ServerError::Certificate {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(cert.map_err(|e| err(e.to_string()))?)
                    .map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("no CA certificate in file".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| err(e.to_string()))?)
        }
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Session resumption by stateless tickets (TLS 1.3 and 1.2), their key rotated every 6 h: a
    // returning client skips the certificate signature and key exchange. Without a ticketer
    // rustls resumes from a 256-entry in-memory cache, and a TLS 1.3 ticket only once.
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| ServerError::Certificate {
            path: "(session tickets)".into(),
            reason: e.to_string(),
        })?;
    Ok((TlsAcceptor::from(Arc::new(config)), resolver))
}

/// The verified client certificate of an mTLS connection: SHA-256 of the DER certificate and of
/// its SubjectPublicKeyInfo.
fn client_certificate(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<ClientCertificate> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let sha256 = |bytes: &[u8]| -> Option<[u8; 32]> {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .try_into()
            .ok()
    };
    let spki = webpki::EndEntityCert::try_from(leaf)
        .ok()?
        .subject_public_key_info();
    Some(ClientCertificate {
        fingerprint: sha256(leaf.as_ref())?,
        spki_hash: sha256(spki.as_ref())?,
    })
}

/// The negotiated TLS version, as audit records write it.
fn tls_version(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<&'static str> {
    match stream.get_ref().1.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => Some("1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("1.2"),
        _ => Some("other"),
    }
}

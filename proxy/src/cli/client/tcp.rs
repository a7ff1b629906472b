//! `sekisho tcp HOST:PORT (--stdio | --listen ADDR)`: TCP to a service behind the proxy through
//! its identity-aware CONNECT tunnels, presenting the session `sekisho login` stored.
//!
//! The phases of one tunnel: credential read → connection to the proxy (TLS for https) →
//! `CONNECT` with the session cookies → the answer's head (a refusal becomes a
//! [`TunnelError`]) → refreshed cookies saved → bytes relayed both ways, half-close honoured.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::credentials::{Credential, Store, StoreError};
use super::{
    ProxyOrigin, REQUEST_TIMEOUT, USER_AGENT, causes, choose_proxy, printable, tls_config,
};

/// The largest answer head read from the proxy.
const MAX_HEAD: usize = 16 * 1024;

/// The most of a refusal's body read (its first line is shown).
const MAX_BODY: usize = 4 * 1024;

/// How long a refusal's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(3);

/// The relay's buffer, each way.
const RELAY_BUFFER: usize = 64 * 1024;

/// `sekisho tcp`'s arguments.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["listen", "stdio"])))]
pub(in crate::cli) struct TcpArgs {
    /// The service behind the proxy, as HOST:PORT (the tunnel route's name and port).
    #[arg(value_name = "HOST:PORT", value_parser = Target::parse)]
    target: Target,
    /// The proxy, like https://proxy.example.com (default: the only one signed in to).
    #[arg(long, value_name = "URL", value_parser = ProxyOrigin::parse)]
    proxy: Option<ProxyOrigin>,
    /// PEM file of CA certificates to trust for the proxy, beside the public roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept local connections on ADDR (like 127.0.0.1:15432), each its own tunnel.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// One tunnel between standard input and output, for ssh:
    /// `ssh -o ProxyCommand='sekisho tcp --stdio %h:%p' host`.
    #[arg(long)]
    stdio: bool,
    /// Let --listen bind an address that is not loopback: whoever reaches it uses your session.
    #[arg(long, requires = "listen")]
    allow_remote: bool,
}

/// Runs `sekisho tcp`.
pub(in crate::cli) fn run(args: TcpArgs) -> anyhow::Result<ExitCode> {
    let store = Store::from_env()?;
    let origin = choose_proxy(args.proxy, &store.load()?, "name one with --proxy")?;
    if store.credential(origin.as_str())?.is_none() {
        return Err(TunnelError::NotSignedIn {
            origin: origin.to_string(),
        }
        .into());
    }
    let tls = if origin.is_tls() {
        let mut config = tls_config(args.ca.as_deref())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(config))
    } else {
        None
    };
    let tunnel = Arc::new(Tunnel {
        origin,
        target: args.target,
        tls,
        store,
    });
    let runtime = crate::cli::runtime()?;
    let outcome = match args.listen {
        Some(address) => {
            anyhow::ensure!(
                address.ip().is_loopback() || args.allow_remote,
                "--listen {address} is not a loopback address: whoever reaches it would use \
                 your session; pass --allow-remote if that is what you want"
            );
            runtime.block_on(listen(address, tunnel))
        }
        None => runtime.block_on(stdio(tunnel)),
    };
    // Standard input's reader may still be blocked in a read: do not wait for it.
    runtime.shutdown_background();
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Serves `--listen` until interrupted.
async fn listen(address: SocketAddr, tunnel: Arc<Tunnel>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    let bound = listener.local_addr().context("the listener's address")?;
    eprintln!(
        "Listening on {bound} for {} via {}",
        tunnel.target, tunnel.origin
    );
    tokio::select! {
        () = serve(listener, tunnel) => Ok(()),
        interrupted = tokio::signal::ctrl_c() => interrupted.context("waiting for Ctrl-C"),
    }
}

/// Accepts local connections forever, each its own tunnel; a tunnel that fails is logged and
/// its local connection closed.
async fn serve(listener: TcpListener, tunnel: Arc<Tunnel>) {
    loop {
        let (mut local, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                eprintln!("accepting a local connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tunnel = Arc::clone(&tunnel);
        tokio::spawn(async move {
            let _ = local.set_nodelay(true);
            match tunnel.open().await {
                Err(error) => eprintln!("{peer}: {error}"),
                Ok(opened) => {
                    eprintln!("{peer}: tunnel to {} open", tunnel.target);
                    match relay(&mut local, opened).await {
                        Ok((sent, received)) => eprintln!(
                            "{peer}: tunnel to {} closed ({sent} bytes sent, {received} received)",
                            tunnel.target
                        ),
                        Err(error) => {
                            eprintln!("{peer}: tunnel to {} {}", tunnel.target, broke(&error));
                        }
                    }
                }
            }
        });
    }
}

/// `--stdio`: one tunnel between standard input and output; nothing else is written to
/// standard output.
async fn stdio(tunnel: Arc<Tunnel>) -> anyhow::Result<()> {
    let opened = tunnel.open().await?;
    relay(&mut StdioStream::new(), opened)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "the tunnel to {} via {} {}",
                tunnel.target,
                tunnel.origin,
                broke(&error)
            )
        })?;
    Ok(())
}

/// How a relay that failed ended, for the log line.
fn broke(error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        // TLS without close_notify: the proxy dropped the connection (a session that ended
        // closes its tunnels at once), or the network did.
        "was cut by the proxy or the network (the connection ended without a TLS close)".to_owned()
    } else {
        format!("broke: {error}")
    }
}

/// A service behind the proxy: `HOST:PORT`, an IPv6 host in brackets (or bare, as ssh's `%h`
/// writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::cli) struct Target {
    /// A DNS name, an IPv4 address, or an IPv6 address (without brackets).
    host: String,
    /// The port.
    port: u16,
}

impl Target {
    /// Parses `HOST:PORT`; the error is the text clap shows.
    pub(in crate::cli) fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not HOST:PORT (like db.internal:5432 or [::1]:22)");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(bad)?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inside) => inside.parse::<Ipv6Addr>().map_err(|_| bad())?.to_string(),
            None if host.contains(':') => host.parse::<Ipv6Addr>().map_err(|_| bad())?.to_string(),
            None if !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) =>
            {
                host.to_ascii_lowercase()
            }
            None => return Err(bad()),
        };
        Ok(Self { host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a tunnel did not open; the text is the one line the user sees.
#[derive(Debug, thiserror::Error)]
pub(in crate::cli) enum TunnelError {
    /// No credential is stored for the proxy.
    #[error("not signed in to {origin}: run `sekisho login {origin}`")]
    NotSignedIn {
        /// The proxy.
        origin: String,
    },
    /// 401 (or 407): the session is over.
    #[error(
        "your sign-in to {origin} has expired or was ended (refresh failed): run \
         `sekisho login {origin}`"
    )]
    Expired {
        /// The proxy.
        origin: String,
    },
    /// 403: a policy refused the tunnel.
    #[error("denied by policy: {reason}")]
    Denied {
        /// The rule or reason the proxy gave.
        reason: String,
    },
    /// 404: the proxy has no tunnel route for the target.
    #[error("{origin} has no tunnel route for {target}")]
    NoRoute {
        /// The proxy.
        origin: String,
        /// The target.
        target: String,
    },
    /// 502 or 504: the proxy could not reach the target.
    #[error("{origin} could not reach {target}: {detail}")]
    Unreachable {
        /// The proxy.
        origin: String,
        /// The target.
        target: String,
        /// What the proxy said.
        detail: String,
    },
    /// Any other refusal.
    #[error("{origin} refused the tunnel to {target} with HTTP {status}: {detail}")]
    Refused {
        /// The proxy.
        origin: String,
        /// The target.
        target: String,
        /// The status.
        status: u16,
        /// What the proxy said.
        detail: String,
    },
    /// The proxy could not be reached (connection, TLS, a lost connection, a timeout).
    #[error("cannot reach the proxy {origin}: {detail}")]
    ProxyUnreachable {
        /// The proxy.
        origin: String,
        /// What went wrong.
        detail: String,
    },
    /// The proxy's answer is not an HTTP/1.1 response head.
    #[error("{origin} did not answer the tunnel request as an HTTP proxy: {problem}")]
    BadAnswer {
        /// The proxy.
        origin: String,
        /// What is wrong with the answer.
        problem: HeadError,
    },
    /// The credentials file could not be used.
    #[error("{0}")]
    Store(StoreError),
}

/// One target through one proxy, opened once per local connection.
#[derive(Debug)]
struct Tunnel {
    /// The proxy.
    origin: ProxyOrigin,
    /// The service behind it.
    target: Target,
    /// TLS to the proxy (https), or none (http).
    tls: Option<Arc<ClientConfig>>,
    /// Where the session is read and refreshed (read again for each tunnel, so a new login
    /// serves a running `--listen`).
    store: Store,
}

/// A connection to the proxy, TLS or not.
trait ProxyStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ProxyStream for T {}

/// An open tunnel: the proxy connection past the answer's head, and the tunnel's bytes that
/// came with the head.
struct Opened {
    /// The connection.
    stream: Box<dyn ProxyStream>,
    /// Bytes the proxy sent after the head (the service may speak first, like SSH).
    early: Vec<u8>,
}

impl Tunnel {
    /// Opens the tunnel: the CONNECT request with the session, the answer, the cookies it
    /// refreshed saved.
    async fn open(&self) -> Result<Opened, TunnelError> {
        let origin = self.origin.to_string();
        let store = self.store.clone();
        let key = origin.clone();
        let credential = blocking(move || store.credential(&key))
            .await
            .map_err(TunnelError::Store)?
            .ok_or_else(|| TunnelError::NotSignedIn {
                origin: origin.clone(),
            })?;
        let unreachable = |detail: String| TunnelError::ProxyUnreachable {
            origin: origin.clone(),
            detail,
        };
        let exchange = async {
            let mut stream = self.connect().await.map_err(&unreachable)?;
            stream
                .write_all(&connect_request(&self.target, &credential))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (head, early) = read_head(&mut stream)
                .await
                .map_err(|problem| match problem {
                    HeadError::Read(detail) => unreachable(detail),
                    problem => TunnelError::BadAnswer {
                        origin: origin.clone(),
                        problem,
                    },
                })?;
            Ok((stream, head, early))
        };
        let (mut stream, head, early) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        if !(200..300).contains(&head.status) {
            let body = read_body(&mut stream, &head, early).await;
            return Err(refusal(&self.origin, &self.target, &head, &body));
        }
        self.refresh(&head).await;
        Ok(Opened { stream, early })
    }

    /// A connection to the proxy, through TLS for https.
    async fn connect(&self) -> Result<Box<dyn ProxyStream>, String> {
        let tcp = TcpStream::connect((self.origin.host.as_str(), self.origin.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let name = self.origin.server_name().map_err(|e| format!("{e:#}"))?;
                let stream = TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {}", causes(&e)))?;
                Ok(Box::new(stream))
            }
        }
    }

    /// Saves the cookies the answer set (the proxy refreshes sessions this way). A failure is
    /// reported but does not close the tunnel.
    async fn refresh(&self, head: &ResponseHead) {
        let set_cookies: Vec<String> = head.all("set-cookie").map(str::to_owned).collect();
        if set_cookies.is_empty() {
            return;
        }
        let store = self.store.clone();
        let origin = self.origin.to_string();
        let saved = blocking(move || {
            store.update(|all| match all.credential_mut(&origin) {
                Some(credential) => {
                    let now = SystemTime::now();
                    let mut changed = false;
                    for header in &set_cookies {
                        changed |= credential.apply_set_cookie(header, now);
                    }
                    (changed, ())
                }
                None => (false, ()),
            })
        })
        .await;
        if let Err(error) = saved {
            eprintln!(
                "warning: could not save the session {} refreshed: {error}",
                self.origin
            );
        }
    }
}

/// Runs a credentials file operation off the async workers (it may wait for the file's lock).
async fn blocking<R: Send + 'static>(
    operation: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(operation)
        .await
        .unwrap_or_else(|error| {
            Err(StoreError::Io {
                path: PathBuf::from("credentials"),
                error: io::Error::other(error),
            })
        })
}

/// The CONNECT request for `target` presenting `credential`.
fn connect_request(target: &Target, credential: &Credential) -> Vec<u8> {
    format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nCookie: {}\r\nUser-Agent: {USER_AGENT}\r\n\r\n",
        credential.cookie_header()
    )
    .into_bytes()
}

/// The head of the proxy's answer.
#[derive(Debug, PartialEq, Eq)]
struct ResponseHead {
    /// The status code.
    status: u16,
    /// The header fields in order, names lowercased.
    headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The values of the header `name` (lowercase), in order.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of the header `name` (lowercase).
    fn first(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why the proxy's answer head is not one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(in crate::cli) enum HeadError {
    /// More than [`MAX_HEAD`] bytes without the blank line.
    #[error("its head is larger than 16 KiB")]
    TooLarge,
    /// The status line is not `HTTP/1.x NNN reason`.
    #[error("bad status line {0:?}")]
    StatusLine(String),
    /// A header line is not `name: value`.
    #[error("bad header line {0:?}")]
    HeaderLine(String),
    /// The connection ended inside the head.
    #[error("the connection closed before the answer's head ended")]
    Truncated,
    /// Reading failed.
    #[error("{0}")]
    Read(String),
}

/// Reads the answer's head; returns it with the bytes read past it.
async fn read_head(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
) -> Result<(ResponseHead, Vec<u8>), HeadError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = vec![0_u8; 4096];
    loop {
        if let Some((head, length)) = parse_head(&buffer)? {
            let rest = buffer.get(length..).unwrap_or_default().to_vec();
            return Ok((head, rest));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| HeadError::Read(e.to_string()))?;
        if n == 0 {
            return Err(HeadError::Truncated);
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Parses a response head at the start of `buffer`: `None` while it is incomplete, else the
/// head and its length (blank line included).
fn parse_head(buffer: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return if buffer.len() >= MAX_HEAD {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let length = end.saturating_add(4);
    if length > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = String::from_utf8_lossy(buffer.get(..end).unwrap_or_default());
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)
        .ok_or_else(|| HeadError::StatusLine(printable(status_line)))?;
    let mut headers = Vec::new();
    for line in lines {
        let field = line
            .split_once(':')
            .filter(|(name, _)| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c))
            })
            .ok_or_else(|| HeadError::HeaderLine(printable(line)))?;
        let (name, value) = field;
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_owned(),
        ));
    }
    Ok(Some((ResponseHead { status, headers }, length)))
}

/// The status of `HTTP/1.x NNN reason`.
fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, _reason) = rest.split_once(' ').unwrap_or((rest, ""));
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse().ok())
        .flatten()
        .filter(|status| (100..600).contains(status))
}

/// Reads (some of) a refusal's body: up to its length or [`MAX_BODY`], for [`BODY_TIMEOUT`].
async fn read_body(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
    head: &ResponseHead,
    mut body: Vec<u8>,
) -> Vec<u8> {
    let limit = head
        .first("content-length")
        .and_then(|length| length.parse::<usize>().ok())
        .map_or(MAX_BODY, |length| length.min(MAX_BODY));
    let _ = tokio::time::timeout(BODY_TIMEOUT, async {
        let mut chunk = [0_u8; 1024];
        while body.len() < limit {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    body.truncate(limit);
    body
}

/// The error a refused CONNECT becomes: the proxy's reason from its header (`X-Sekisho-Denied`
/// for 403, `X-Sekisho-Error` for the others), else the body's first line.
fn refusal(origin: &ProxyOrigin, target: &Target, head: &ResponseHead, body: &[u8]) -> TunnelError {
    let (origin, target) = (origin.to_string(), target.to_string());
    let body = String::from_utf8_lossy(body);
    let first_line = body.lines().map(printable).find(|line| !line.is_empty());
    let status = head.status;
    let explained = |header: &str| {
        head.first(header)
            .map(printable)
            .filter(|text| !text.is_empty())
            .or_else(|| first_line.clone())
            .unwrap_or_else(|| format!("HTTP {status} without a reason"))
    };
    match status {
        401 | 407 => TunnelError::Expired { origin },
        403 => TunnelError::Denied {
            reason: explained("x-sekisho-denied"),
        },
        404 => TunnelError::NoRoute { origin, target },
        502 | 504 => TunnelError::Unreachable {
            origin,
            target,
            detail: explained("x-sekisho-error"),
        },
        status => TunnelError::Refused {
            origin,
            target,
            status,
            detail: explained("x-sekisho-error"),
        },
    }
}

/// Relays between `local` and the tunnel until both directions end: each side's end of input
/// shuts down the other side's output (half-close). Returns the bytes sent and received.
async fn relay(
    local: &mut (impl AsyncRead + AsyncWrite + Unpin + ?Sized),
    opened: Opened,
) -> io::Result<(u64, u64)> {
    let Opened { mut stream, early } = opened;
    if !early.is_empty() {
        local.write_all(&early).await?;
    }
    let (sent, received) =
        tokio::io::copy_bidirectional_with_sizes(local, &mut stream, RELAY_BUFFER, RELAY_BUFFER)
            .await?;
    let early = u64::try_from(early.len()).unwrap_or(u64::MAX);
    Ok((sent, received.saturating_add(early)))
}

/// Standard input and output as one stream; shutting it down closes standard output (so the
/// program reading it, like ssh, sees the end) while standard input is still read.
#[derive(Debug)]
struct StdioStream {
    /// Standard input.
    stdin: tokio::io::Stdin,
    /// Standard output.
    stdout: tokio::io::Stdout,
    /// Whether standard output is closed.
    closed: bool,
}

impl StdioStream {
    /// The process's standard input and output.
    fn new() -> Self {
        Self {
            stdin: tokio::io::stdin(),
            stdout: tokio::io::stdout(),
            closed: false,
        }
    }
}

impl AsyncRead for StdioStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_read(cx, buf)
    }
}

impl AsyncWrite for StdioStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdout).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.stdout).poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // Replacing descriptor 1 with /dev/null closes the pipe or socket it was, which is how
        // the reader learns the end; nothing is written to standard output afterwards.
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        rustix::stdio::dup2_stdout(&null)?;
        self.closed = true;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;

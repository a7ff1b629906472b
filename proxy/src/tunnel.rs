//! TCP tunnels: a client's HTTP CONNECT to a tunnel route (`from: tcp+https://HOST:PORT`),
//! admitted by the gate like any request, becomes a byte relay to the route's `tcp://` upstream.
//! This module keeps the open tunnels, closes them when what admitted them ends — the session
//! (logout, revocation, expiry, refused refresh, the provider's back-channel logout) or the
//! bearer token (its `exp`, or its provider session or user signed out) — and relays the bytes
//! with the idle and absolute limits. The door itself is `proxy/tunnel_door.rs`.
//!
//! A session's `Ended` event closes its tunnels at once; a sweep every
//! `server.timeouts.tunnel_session_check` (default 2 s, at most 10 s) closes those whose session
//! stopped being live without an event (expiry, a revocation made elsewhere) or whose token
//! expired or was revoked, so a tunnel never outlives its credential by more than that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::session::{Identity, OpenSession};
use crate::sessions::events::{SessionChange, SessionEvent, SessionSubscriber};

/// Relay buffer per direction.
const BUFFER: usize = 64 * 1024;

/// Why a tunnel closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished (each closed its sending side).
    Finished,
    /// The client's connection ended or failed.
    Client,
    /// The upstream's connection ended or failed.
    Upstream,
    /// No byte either way for the route's `idle_timeout`.
    Idle,
    /// The route's `max_duration` passed.
    MaxDuration,
    /// The session that opened it was ended (logout, refused refresh).
    SessionEnded,
    /// The session expired or was revoked, or the bearer token expired.
    CredentialExpired,
    /// sekisho is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Its name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Finished => "finished",
            CloseReason::Client => "client_closed",
            CloseReason::Upstream => "upstream_closed",
            CloseReason::Idle => "idle_timeout",
            CloseReason::MaxDuration => "max_duration",
            CloseReason::SessionEnded => "session_ended",
            CloseReason::CredentialExpired => "credential_expired",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// Who closed it: `client`, `upstream` or `sekisho`.
    pub fn closed_by(self) -> &'static str {
        match self {
            CloseReason::Finished | CloseReason::Client => "client",
            CloseReason::Upstream => "upstream",
            _ => "sekisho",
        }
    }
}

/// What admitted a tunnel, checked again while it is open.
#[derive(Debug, Clone)]
pub enum Holder {
    /// A session.
    Session(Arc<OpenSession>),
    /// A bearer token valid until this Unix time.
    Bearer {
        /// [`crate::session::sid_hash`] of the token.
        token_hash: String,
        /// Whose token (its provider session and user may be signed out meanwhile).
        identity: Arc<Identity>,
        /// Its `iat`.
        issued_at: u64,
        /// Its `exp`.
        expires_at: Option<u64>,
    },
}

#[derive(Debug)]
struct Open {
    holder: Holder,
    close: watch::Sender<Option<CloseReason>>,
}

/// The open tunnels.
#[derive(Debug, Default)]
pub struct Tunnels {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
    /// Tunnels opened.
    pub opened: AtomicU64,
    /// Tunnels closed by sekisho because their credential ended.
    pub cut: AtomicU64,
}

/// A registered tunnel: its close signal; dropping it unregisters the tunnel.
#[derive(Debug)]
pub struct Registration {
    tunnels: Arc<Tunnels>,
    id: u64,
    /// Changes to `Some` when sekisho closes the tunnel.
    pub closed: watch::Receiver<Option<CloseReason>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut open) = self.tunnels.open.lock() {
            open.remove(&self.id);
        }
    }
}

impl Tunnels {
    /// Registers a tunnel held by `holder`.
    pub fn register(self: &Arc<Self>, holder: Holder) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, Open { holder, close });
        }
        self.opened.fetch_add(1, Ordering::Relaxed);
        Registration {
            tunnels: self.clone(),
            id,
            closed,
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |open| open.len())
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every tunnel `which` selects, for `reason`.
    fn close_where(&self, reason: CloseReason, which: impl Fn(&Holder) -> bool) {
        let Ok(open) = self.open.lock() else {
            return;
        };
        for tunnel in open.values().filter(|t| which(&t.holder)) {
            if tunnel.close.send_if_modified(|state| {
                let first = state.is_none();
                if first {
                    *state = Some(reason);
                }
                first
            }) {
                self.cut.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Closes the tunnels whose session is no longer live (`live` says), or whose token expired
    /// by `now` (Unix seconds) or was revoked (`token_live` says, given its identity and
    /// `iat`). Called every `server.timeouts.tunnel_session_check`.
    pub fn sweep(
        &self,
        now: u64,
        live: impl Fn(&OpenSession) -> bool,
        token_live: impl Fn(&Identity, u64) -> bool,
    ) {
        self.close_where(CloseReason::CredentialExpired, |holder| match holder {
            Holder::Session(session) => !live(session),
            Holder::Bearer {
                expires_at,
                identity,
                issued_at,
                ..
            } => expires_at.is_some_and(|exp| exp <= now) || !token_live(identity, *issued_at),
        });
    }

    /// Closes every tunnel (shutdown).
    pub fn close_all(&self) {
        self.close_where(CloseReason::Shutdown, |_| true);
    }
}

impl SessionSubscriber for Tunnels {
    /// An ended session closes its tunnels at once.
    fn session_event(&self, event: &SessionEvent) {
        if let SessionChange::Ended(_) = event.change {
            self.close_where(CloseReason::SessionEnded, |holder| {
                matches!(holder, Holder::Session(session) if session.sid_hash == event.session)
            });
        }
    }
}

/// Bytes relayed each way.
#[derive(Debug, Default)]
pub struct Traffic {
    /// From the client to the upstream.
    pub up: AtomicU64,
    /// From the upstream to the client.
    pub down: AtomicU64,
}

/// Relays between `client` and `upstream` until both have finished, one fails, or sekisho
/// closes the tunnel (`closed`), it idles for `idle`, or `max` passes. Half-close is honoured:
/// when one side finishes sending, the other side's write half is shut down and the other
/// direction goes on.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    mut closed: watch::Receiver<Option<CloseReason>>,
    idle: Duration,
    max: Duration,
    traffic: &Traffic,
) -> CloseReason
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let last = Mutex::new(Instant::now());
    let touch = || {
        if let Ok(mut last) = last.lock() {
            *last = Instant::now();
        }
    };
    let up = copy(&mut client_read, &mut upstream_write, &traffic.up, &touch);
    let down = copy(&mut upstream_read, &mut client_write, &traffic.down, &touch);
    let both = async {
        let (up, down) = tokio::join!(up, down);
        match (up, down) {
            (Ok(()), Ok(())) => CloseReason::Finished,
            (Err(()), _) => CloseReason::Client,
            (_, Err(())) => CloseReason::Upstream,
        }
    };
    let idle_watch = async {
        loop {
            let since = last.lock().map_or(Duration::ZERO, |last| last.elapsed());
            if since >= idle {
                return CloseReason::Idle;
            }
            tokio::time::sleep(idle.saturating_sub(since)).await;
        }
    };
    let sekisho = async {
        loop {
            if let Some(reason) = *closed.borrow() {
                return reason;
            }
            if closed.changed().await.is_err() {
                // The registry is gone: sekisho is stopping.
                return CloseReason::Shutdown;
            }
        }
    };
    tokio::select! {
        reason = both => reason,
        reason = idle_watch => reason,
        reason = sekisho => reason,
        () = tokio::time::sleep(max) => CloseReason::MaxDuration,
    }
}

/// Copies until end of file, then shuts `to`'s write half (half-close). `Err` when a side
/// failed (reset, broken pipe): the side is told by the caller's argument order.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    counter: &AtomicU64,
    touch: &impl Fn(),
) -> Result<(), ()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buffer).await.map_err(|_| ())?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(buffer.get(..n).unwrap_or_default())
            .await
            .map_err(|_| ())?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_with_half_close_and_are_counted() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (upstream, mut upstream_far) = tokio::io::duplex(1024);
        let (_close, closed) = watch::channel(None);
        let traffic = Traffic::default();
        let relay = relay(
            client,
            upstream,
            closed,
            Duration::from_secs(60),
            Duration::from_secs(60),
            &traffic,
        );
        let peers = async {
            client_far.write_all(b"ping").await.unwrap_or_default();
            client_far.shutdown().await.unwrap_or_default();
            let mut got = Vec::new();
            upstream_far.read_to_end(&mut got).await.unwrap_or_default();
            assert_eq!(got, b"ping", "the client's half-close reaches the upstream");
            upstream_far.write_all(b"pong").await.unwrap_or_default();
            upstream_far.shutdown().await.unwrap_or_default();
            let mut back = Vec::new();
            client_far.read_to_end(&mut back).await.unwrap_or_default();
            assert_eq!(back, b"pong", "the other direction goes on after it");
        };
        let (reason, ()) = tokio::join!(relay, peers);
        assert_eq!(reason, CloseReason::Finished);
        assert_eq!(traffic.up.load(Ordering::Relaxed), 4);
        assert_eq!(traffic.down.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_closed_tunnels_end_with_their_reason() {
        let (client, _client_far) = tokio::io::duplex(64);
        let (upstream, _upstream_far) = tokio::io::duplex(64);
        let (_close, closed) = watch::channel(None);
        let reason = relay(
            client,
            upstream,
            closed,
            Duration::from_secs(5),
            Duration::from_secs(60),
            &Traffic::default(),
        )
        .await;
        assert_eq!(reason, CloseReason::Idle);

        let tunnels = Arc::new(Tunnels::default());
        let bearer = |sub: &str| Holder::Bearer {
            token_hash: format!("t-{sub}"),
            identity: Arc::new(crate::session::test_identity(sub)),
            issued_at: 50,
            expires_at: Some(100),
        };
        let registration = tunnels.register(bearer("alice"));
        let revoked = tunnels.register(bearer("mallory"));
        let (client, _client_far) = tokio::io::duplex(64);
        let (upstream, _upstream_far) = tokio::io::duplex(64);
        // A token whose provider session or user was signed out closes at the next sweep.
        let token_live = |identity: &Identity, issued_at: u64| {
            assert_eq!(issued_at, 50);
            identity.sub != "mallory"
        };
        tunnels.sweep(99, |_| true, token_live);
        assert!(registration.closed.borrow().is_none(), "not yet expired");
        assert_eq!(
            *revoked.closed.borrow(),
            Some(CloseReason::CredentialExpired),
            "revoked"
        );
        drop(revoked);
        tunnels.sweep(100, |_| true, |_, _| true);
        let reason = relay(
            client,
            upstream,
            registration.closed.clone(),
            Duration::from_secs(60),
            Duration::from_secs(60),
            &Traffic::default(),
        )
        .await;
        assert_eq!(reason, CloseReason::CredentialExpired);
        assert_eq!(tunnels.len(), 1);
        drop(registration);
        assert!(
            tunnels.is_empty(),
            "dropping the registration unregisters it"
        );
    }
}

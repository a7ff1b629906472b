//! The floor under sekisho's CPU per request: a bare reverse proxy on the same stack — one
//! current-thread tokio runtime per core accepting from the same listener, hyper's HTTP/1.1
//! server, hyper's HTTP/1.1 client connections pooled per worker (a connection goes back when
//! its response body has been read to the end), mimalloc — and nothing else: no session, no
//! policy, no header rewriting, no audit record. `tests/bench/run.sh` measures it beside nginx
//! and sekisho when `FLOOR_BIN` names it (see `tests/bench/README.md`).
//!
//! ```text
//! cargo build --release -p sekisho-tests --example hyper_floor
//! target/release/examples/hyper_floor 127.0.0.1:0 127.0.0.1:8080
//! ```
//!
//! It prints `{"http": "ADDRESS"}` on stdout once it listens, and serves until killed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool: a panic with context is its failure report"
)]

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Sender = client::SendRequest<Incoming>;
type ProxyBody = Either<Returning, Full<Bytes>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .expect("usage: hyper_floor LISTEN UPSTREAM")
        .parse()
        .expect("LISTEN: an address");
    let upstream: SocketAddr = args
        .next()
        .expect("usage: hyper_floor LISTEN UPSTREAM")
        .parse()
        .expect("UPSTREAM: an address");
    let listener = std::net::TcpListener::bind(listen).expect("binding LISTEN");
    listener.set_nonblocking(true).expect("non-blocking");
    println!(
        "{{\"http\": \"{}\"}}",
        listener.local_addr().expect("local address")
    );
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let listener = listener.try_clone().expect("sharing the listener");
            std::thread::spawn(move || worker(listener, upstream))
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

/// One worker: a current-thread runtime accepting connections and serving them with its own
/// pool of upstream connections.
fn worker(listener: std::net::TcpListener, upstream: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener).expect("registering the listener");
        let pool: Rc<RefCell<Vec<Sender>>> = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |request| {
                    let pool = pool.clone();
                    async move { Ok::<_, Infallible>(forward(request, upstream, pool).await) }
                });
                let _ = server::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Sends `request` upstream on a pooled connection (or a new one) and answers with the
/// response, or a 502.
async fn forward(
    mut request: Request<Incoming>,
    upstream: SocketAddr,
    pool: Rc<RefCell<Vec<Sender>>>,
) -> Response<ProxyBody> {
    *request.uri_mut() = request
        .uri()
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    let mut sender = loop {
        let idle = pool.borrow_mut().pop();
        match idle {
            Some(mut sender) => {
                if sender.ready().await.is_ok() {
                    break sender;
                }
            }
            None => match connect(upstream).await {
                Some(sender) => break sender,
                None => return bad_gateway(),
            },
        }
    };
    match sender.send_request(request).await {
        Ok(response) => response.map(|body| {
            Either::Left(Returning {
                body,
                sender: Some(sender),
                pool,
                ended: false,
            })
        }),
        Err(_) => bad_gateway(),
    }
}

/// A new connection to `upstream`, its I/O driven by a task on this worker.
async fn connect(upstream: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = client::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::task::spawn_local(connection);
    sender.ready().await.ok()?;
    Some(sender)
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        b"bad gateway\n",
    ))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// A response body that hands its connection back to the worker's pool once read to the end.
struct Returning {
    body: Incoming,
    sender: Option<Sender>,
    pool: Rc<RefCell<Vec<Sender>>>,
    ended: bool,
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take()
            && (self.ended || self.body.is_end_stream())
            && sender.is_ready()
        {
            self.pool.borrow_mut().push(sender);
        }
    }
}

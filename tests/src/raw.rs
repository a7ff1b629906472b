//! Raw HTTP/1.1 over a `TcpStream`, for requests whose exact bytes matter (header-name case and
//! order, duplicated or conflicting headers, non-ASCII values, dot segments, backslashes): reqwest
//! and the `url` crate would normalise them before they reached the proxy.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::echo::Echoed;
use crate::{DEADLINE, Proxy};

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Every header line as (lower-cased name, trimmed value), in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as the echo upstream's description of the request it received.
    pub fn echoed(&self) -> Echoed {
        Echoed(
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("not an echo answer ({e}): {self:?}")),
        )
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `request_line`, the header lines exactly as given (name case, order, duplicates, value
/// bytes), `Connection: close`, and `body`.
pub fn request<V: AsRef<[u8]>>(
    request_line: &str,
    headers: &[(&str, V)],
    body: impl AsRef<[u8]>,
) -> Vec<u8> {
    let mut out = format!("{request_line}\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_ref());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body.as_ref());
    out
}

/// `GET target HTTP/1.1` to the proxy's own host, with `headers` exactly as given.
pub fn get<V: AsRef<[u8]>>(proxy: &Proxy, target: &str, headers: &[(&str, V)]) -> Vec<u8> {
    let host = proxy.http.to_string();
    let mut all: Vec<(&str, &[u8])> = vec![("Host", host.as_bytes())];
    all.extend(headers.iter().map(|(n, v)| (*n, v.as_ref())));
    request(&format!("GET {target} HTTP/1.1"), &all, "")
}

/// Writes `request` as is and reads every response until the proxy closes the connection.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<RawResponse> {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connecting to sekisho");
    stream
        .write_all(request)
        .await
        .expect("writing the request");
    let mut bytes = Vec::new();
    let read = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                // A server that refuses a message may reset the connection after answering.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the response: {e}"),
            }
        }
    };
    if tokio::time::timeout(DEADLINE, read).await.is_err() {
        panic!(
            "sekisho kept the connection open after:\n{}",
            String::from_utf8_lossy(request)
        );
    }
    parse_responses(&bytes)
}

/// [`exchange`] for a request that must get exactly one response.
pub async fn single(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut responses = exchange(addr, request).await;
    assert_eq!(
        responses.len(),
        1,
        "expected one response to:\n{}\ngot {responses:?}",
        String::from_utf8_lossy(request)
    );
    responses.remove(0)
}

/// Every response in `bytes`, each body framed by `Content-Length`, chunked, or running to the
/// end.
pub fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "truncated response head: {:?}",
                    String::from_utf8_lossy(bytes)
                )
            });
        let head = String::from_utf8_lossy(&bytes[..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let rest = &bytes[end + 4..];
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let (body, rest) =
            if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                dechunk(rest)
            } else if let Some(len) = find("content-length") {
                let len: usize = len.parse().expect("Content-Length");
                (rest[..len].to_vec(), &rest[len..])
            } else {
                (rest.to_vec(), &rest[rest.len()..])
            };
        out.push(RawResponse {
            status,
            headers,
            body,
        });
        bytes = rest;
    }
    out
}

/// The payload of a chunked body, and the bytes after it.
fn dechunk(mut bytes: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut body = Vec::new();
    loop {
        let eol = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&bytes[..eol]).expect("chunk size text");
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                .expect("chunk size");
        bytes = &bytes[eol + 2..];
        if size == 0 {
            // No trailers from our servers: the final CRLF.
            return (body, &bytes[2..]);
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

/// Sends `CONNECT authority` (HTTP/1.1) with `headers` (each line ending in CRLF) to the
/// proxy: the status, the response head, and the stream (positioned after the head).
pub async fn connect_tunnel(
    proxy: SocketAddr,
    authority: &str,
    headers: &str,
) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(proxy)
        .await
        .expect("connecting to the proxy");
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{headers}\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending the CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("reading the answer");
        assert_eq!(
            n, 1,
            "the proxy closed before the end of the head: {head:?}"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("a text head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head, stream)
}

//! A small Redis client: the RESP2 wire format (commands out as arrays of bulk strings, replies
//! parsed incrementally with bounded sizes), over TCP, TLS (rustls) or a Unix socket, with
//! `AUTH` and `SELECT` at connect. Only what the shared-state layer uses: one command or a
//! pipeline at a time, each reply read before the next request.

use std::sync::Arc;

use sekisho_config::{Redis, RedisAddress};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The largest bulk string accepted from the server (a stream entry is far smaller).
const MAX_BULK: usize = 8 << 20;
/// The most elements in one array reply.
const MAX_ARRAY: usize = 1 << 20;
/// The deepest nesting of arrays (an `XREAD` reply is four levels deep).
const MAX_DEPTH: usize = 8;
/// The most bytes buffered for one reply before it is refused.
const MAX_REPLY: usize = 64 << 20;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration or server name is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent something that is not RESP, or exceeds the bounds.
    #[error("malformed reply: {0}")]
    Protocol(&'static str),
    /// The server answered with an error (`-ERR ...`).
    #[error("server error: {0}")]
    Server(String),
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...` inside a pipeline or array (a lone error reply is [`RespError::Server`]).
    Error(String),
    /// `:N`.
    Int(i64),
    /// `$N` bytes, or `$-1` (`None`).
    Bulk(Option<Vec<u8>>),
    /// `*N` replies, or `*-1` (`None`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The elements of an array reply (an absent array is empty).
    pub fn into_array(self) -> Result<Vec<Value>, RespError> {
        match self {
            Value::Array(items) => Ok(items.unwrap_or_default()),
            Value::Error(e) => Err(RespError::Server(e)),
            _ => Err(RespError::Protocol("expected an array")),
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn into_bytes(self) -> Result<Vec<u8>, RespError> {
        match self {
            Value::Bulk(Some(bytes)) => Ok(bytes),
            Value::Simple(text) => Ok(text.into_bytes()),
            Value::Error(e) => Err(RespError::Server(e)),
            _ => Err(RespError::Protocol("expected a string")),
        }
    }

    /// A bulk or simple string as UTF-8 text.
    pub fn into_text(self) -> Result<String, RespError> {
        String::from_utf8(self.into_bytes()?).map_err(|_| RespError::Protocol("string not UTF-8"))
    }

    /// An integer reply.
    pub fn into_int(self) -> Result<i64, RespError> {
        match self {
            Value::Int(n) => Ok(n),
            Value::Error(e) => Err(RespError::Server(e)),
            _ => Err(RespError::Protocol("expected an integer")),
        }
    }

    /// `Err` when this is an error reply.
    pub fn ok(self) -> Result<Value, RespError> {
        match self {
            Value::Error(e) => Err(RespError::Server(e)),
            other => Ok(other),
        }
    }
}

/// Appends `args` as one command (an array of bulk strings).
pub fn encode<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the front of `buf`: the reply and the bytes it took, `None` when
/// more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Protocol("arrays nested too deep"));
    }
    let Some(rest) = buf.get(at..) else {
        return Ok(None);
    };
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > 64 * 1024 {
            return Err(RespError::Protocol("line too long"));
        }
        return Ok(None);
    };
    let Some((&kind, line)) = rest.get(..end).and_then(<[u8]>::split_first) else {
        return Err(RespError::Protocol("empty line"));
    };
    let line = std::str::from_utf8(line).map_err(|_| RespError::Protocol("line not UTF-8"))?;
    let after = at + end + 2;
    let number = || -> Result<i64, RespError> {
        line.parse::<i64>()
            .map_err(|_| RespError::Protocol("bad length or integer"))
    };
    match kind {
        b'+' => Ok(Some((Value::Simple(line.to_owned()), after))),
        b'-' => Ok(Some((Value::Error(line.to_owned()), after))),
        b':' => Ok(Some((Value::Int(number()?), after))),
        b'$' => {
            let len = number()?;
            if len == -1 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Protocol("negative length"))?;
            if len > MAX_BULK {
                return Err(RespError::Protocol("bulk string too long"));
            }
            let Some(body) = buf.get(after..after + len + 2) else {
                return Ok(None);
            };
            let (bytes, crlf) = body.split_at(len);
            if crlf != b"\r\n" {
                return Err(RespError::Protocol("bulk string not followed by CRLF"));
            }
            Ok(Some((Value::Bulk(Some(bytes.to_vec())), after + len + 2)))
        }
        b'*' => {
            let len = number()?;
            if len == -1 {
                return Ok(Some((Value::Array(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Protocol("negative length"))?;
            if len > MAX_ARRAY {
                return Err(RespError::Protocol("array too long"));
            }
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = after;
            for _ in 0..len {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        _ => Err(RespError::Protocol("unknown reply type")),
    }
}

/// Any byte stream a connection runs over.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection to the server.
pub struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `redis`, over TLS with `tls` when the URL was `rediss://`, then signs in
    /// (`AUTH`) and selects the database.
    pub async fn open(
        redis: &Redis,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, RespError> {
        let stream: Box<dyn Stream> = match (&redis.address, tls) {
            (RedisAddress::Unix(path), _) => Box::new(tokio::net::UnixStream::connect(path).await?),
            (RedisAddress::Tcp { host, port }, None) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            (RedisAddress::Tcp { host, port }, Some(config)) => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| RespError::Tls(format!("server name {host}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        let mut connection = Connection {
            stream,
            buf: Vec::with_capacity(4096),
        };
        if let Some(password) = &redis.password {
            let user = redis.username.as_deref().unwrap_or("default");
            connection
                .command(&[
                    b"AUTH".as_slice(),
                    user.as_bytes(),
                    password.expose().as_bytes(),
                ])
                .await?
                .ok()?;
        }
        if redis.database != 0 {
            connection
                .command(&[b"SELECT".to_vec(), redis.database.to_string().into_bytes()])
                .await?
                .ok()?;
        }
        Ok(connection)
    }

    /// Sends one command and reads its reply; an error reply is [`RespError::Server`].
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, RespError> {
        let mut out = Vec::new();
        encode(args, &mut out);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        self.read().await?.ok()
    }

    /// Sends `commands` at once and reads their replies, in order; error replies stay in the
    /// list as [`Value::Error`].
    pub async fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Value>, RespError> {
        let mut out = Vec::new();
        for command in commands {
            encode(command, &mut out);
        }
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.read().await?);
        }
        Ok(replies)
    }

    /// Reads the next reply.
    async fn read(&mut self) -> Result<Value, RespError> {
        loop {
            if let Some((value, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(value);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(RespError::Protocol("reply too large"));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(RespError::Closed);
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&["SET", "k", ""], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn replies_parse_whole_or_ask_for_more() {
        let reply = b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nm\r\n$2\r\nhi\r\n:7\r\n+OK\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len() - 5, "the next reply is left alone");
        let items = value.into_array().unwrap();
        assert_eq!(items[1], Value::Int(7));
        for cut in 0..used {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Value::Bulk(None), 5)));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((Value::Array(None), 5)));
        assert_eq!(
            parse(b"-ERR wrong\r\n").unwrap(),
            Some((Value::Error("ERR wrong".into()), 12))
        );
    }

    #[test]
    fn malformed_and_oversized_replies_are_refused() {
        for bad in [
            b"?x\r\n".as_slice(),
            b"$abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b"*99999999\r\n",
            b"$999999999\r\n",
            b"\r\n",
            b"*-5\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err(), "nesting is bounded");
    }
}

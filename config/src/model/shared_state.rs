//! `shared_state:`: the store several sekisho instances share their revocations, used login
//! states, session events and failures through (Redis or Valkey). Each instance keeps its own
//! copy, fed by the store's event stream; a request never waits on the store.

use std::fmt;
use std::path::PathBuf;

use super::{CaBundle, SecretString};

/// The shared-state settings.
#[derive(Debug, Clone)]
pub struct SharedState {
    /// The Redis (or Valkey) server.
    pub redis: Redis,
}

/// Where the Redis server is and how sekisho signs in to it.
#[derive(Clone)]
pub struct Redis {
    /// Where it listens.
    pub address: RedisAddress,
    /// The database number (`/N` at the end of a `redis://` URL, default 0).
    pub database: u32,
    /// TLS towards the server (`rediss://`): the CAs trusted (`tls.ca_file`), or the public
    /// web roots when `None`.
    pub tls: Option<RedisTls>,
    /// The ACL user (`username`), with `password`; absent: `default`.
    pub username: Option<String>,
    /// The password (`password`: a string, `{file: PATH}` or `{env: VAR}`); absent: no `AUTH`.
    pub password: Option<SecretString>,
    /// The prefix of every key sekisho writes (`key_prefix`, default `sekisho:`), so that
    /// several deployments can share one server.
    pub key_prefix: String,
}

impl fmt::Debug for Redis {
    /// Everything but the password's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.address)
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// A Redis server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddress {
    /// `redis://HOST:PORT` or `rediss://HOST:PORT` (port default 6379).
    Tcp {
        /// The host name or address (without brackets).
        host: String,
        /// The port.
        port: u16,
    },
    /// `unix:///path/to/redis.sock`.
    Unix(PathBuf),
}

impl fmt::Display for RedisAddress {
    /// `host:port` or the socket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            RedisAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            RedisAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// TLS towards the Redis server.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The CAs the server's certificate must chain to (`tls.ca_file`); absent: the public web
    /// roots.
    pub ca: Option<CaBundle>,
}

//! sekisho: a zero-trust, identity-aware access proxy. The request path lives in [`proxy`];
//! ARCHITECTURE.md draws its phases. [`app`] builds the running service from a configuration.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod assertion;
pub mod attribution;
pub mod audit;
pub mod connection;
pub mod error;
pub(crate) mod facts;
pub mod gate;
pub mod headers;
pub mod health;
pub mod hex;
pub mod idp;
pub mod metrics;
pub mod normalize;
pub mod oidc;
pub mod otlp;
pub mod policy;
pub mod proxy;
pub mod quickstart;
pub mod redirect;
pub mod revocation;
pub mod routes;
pub mod seal;
pub mod server;
pub mod session;
pub mod sessions;
pub mod shared;
pub mod target;
pub mod traces;
pub mod tunnel;
pub mod upstream;
pub mod xdp;

//! The audit log: every decision, login and reload as an OCSF-shaped JSON line, hash-chained
//! and signed ([`chain`]), written off the request path by one thread with strict or batched
//! durability ([`writer`]), and read back by `sekisho audit verify` and `sekisho audit query`
//! ([`query`]). AUDIT.md documents the record fields and their OCSF mapping.

pub mod chain;
pub mod otlp;
pub mod query;
pub mod record;
pub mod writer;

pub use record::{
    Actor, AuthActivity, AuthEvent, BypassAttempt, Container, Decision, Door, Event, HttpEvent,
    Lifecycle, LifecycleEvent, NetworkEvent, Query, TunnelClosed,
};
pub use writer::{AuditLog, Refused, Unrecorded};

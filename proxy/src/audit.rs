//! The audit log (issue 5, in progress): tamper-evident, hash-chained JSON lines. This module
//! owns the chain format and its verification; the record schema (OCSF-shaped), the writer with
//! rotation and durability modes, and the request-path integration come next.

pub mod chain;

//! Placeholder: filled in by the resolver work.

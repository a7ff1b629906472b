//! Placeholder: filled in by the identity parser work.

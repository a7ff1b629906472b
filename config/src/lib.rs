//! sekisho's configuration: one YAML file parsed into validated types ([`Config`]), with every
//! error reported at once by file, line, column and field.
#![forbid(unsafe_code)]

mod model;

pub use model::*;

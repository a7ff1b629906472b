//! The `tracing` section.

use super::Parser;
use crate::model::Tracing;
use crate::value::ValueError;
use crate::walk::Field;

/// Keys of `tracing`.
const TRACING: &[&str] = &["otlp", "sample_ratio"];

impl Parser<'_> {
    /// `tracing`.
    pub(super) fn tracing(&mut self, field: &Field<'_>) -> Option<Tracing> {
        let map = self.walk.mapping(field, TRACING)?;
        let otlp = self.walk.required(&map, "otlp").and_then(|f| self.otlp(&f));
        let sample_ratio = self.or_default(
            &map,
            "sample_ratio",
            |p, f| p.walk.value(f, sample_ratio),
            || 1.0,
        );
        Some(Tracing {
            otlp: otlp?,
            sample_ratio: sample_ratio?,
        })
    }
}

/// A share of requests: a number from 0 to 1.
fn sample_ratio(input: &str) -> Result<f64, ValueError> {
    let text = input.trim();
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(ValueError::SampleRatio(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::sample_ratio;

    #[test]
    fn sample_ratios_are_shares_from_zero_to_one() {
        for (text, ratio) in [
            ("0", 0.0),
            ("1", 1.0),
            ("0.1", 0.1),
            (" 0.25 ", 0.25),
            ("1.0", 1.0),
        ] {
            assert_eq!(sample_ratio(text).ok(), Some(ratio), "{text}");
        }
        for text in ["-0.1", "1.5", "NaN", "inf", "", "10%", "one"] {
            assert!(sample_ratio(text).is_err(), "{text}");
        }
    }
}

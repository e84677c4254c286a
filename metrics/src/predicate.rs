//! Metric predicates: the scenarios of model test cases ("low light" = `brightness < 0.25`, "heavy rain" =
//! `brightness < 0.3 and sharpness < 0.01`). A predicate is a conjunction of comparisons of one frame's metric
//! values with numbers; a frame belongs to the scenario when every comparison holds (a missing value holds
//! nothing). The service turns predicates into slices; `framewatch evaluate` into rows of its report.

use std::fmt;

use crate::drift::Comparison;

/// `metric OP number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub metric: String,
    pub op: Comparison,
    pub threshold: f64,
}

/// Every condition must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub conditions: Vec<Condition>,
}

/// Why a predicate's text was refused, with the fragment at fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PredicateError {
    #[error("{0:?} has no comparison (write e.g. \"brightness < 0.25\" or \"brightness < 0.3 and sharpness < 0.01\")")]
    NoComparison(String),
    #[error("{0:?} is not a number (write e.g. \"brightness < 0.25\")")]
    NotANumber(String),
    #[error("{0:?} names no metric")]
    NoMetric(String),
}

/// More conditions than this in one predicate is refused (a scenario is a few words, not a program).
pub const MAX_CONDITIONS: usize = 16;

impl Predicate {
    /// Parses `metric OP number [and metric OP number]...` (`and` in any case, surrounded by spaces).
    pub fn parse(text: &str) -> Result<Predicate, PredicateError> {
        let mut conditions = Vec::new();
        for part in split_and(text) {
            let (m, op, v) = Comparison::split(part).ok_or_else(|| PredicateError::NoComparison(part.trim().into()))?;
            let metric = m.trim();
            if metric.is_empty() {
                return Err(PredicateError::NoMetric(part.trim().into()));
            }
            let threshold: f64 = v.trim().parse().map_err(|_| PredicateError::NotANumber(v.trim().into()))?;
            if !threshold.is_finite() {
                return Err(PredicateError::NotANumber(v.trim().into()));
            }
            conditions.push(Condition { metric: metric.to_owned(), op, threshold });
            if conditions.len() > MAX_CONDITIONS {
                return Err(PredicateError::NoComparison(format!("more than {MAX_CONDITIONS} conditions")));
            }
        }
        Ok(Predicate { conditions })
    }

    /// True when every condition holds on the values `value` gives (by the condition's index in `conditions`).
    pub fn holds_with(&self, mut value: impl FnMut(usize, &Condition) -> Option<f64>) -> bool {
        self.conditions
            .iter()
            .enumerate()
            .all(|(i, c)| value(i, c).is_some_and(|v| v.is_finite() && c.op.holds(v, c.threshold)))
    }
}

fn split_and(text: &str) -> impl Iterator<Item = &str> {
    let lower = text.to_ascii_lowercase();
    let mut cuts = Vec::new();
    let mut from = 0;
    while let Some(p) = lower[from..].find(" and ") {
        cuts.push(from + p);
        from += p + 5;
    }
    let mut start = 0;
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    for c in cuts {
        parts.push(&text[start..c]);
        start = c + 5;
    }
    parts.push(&text[start..]);
    parts.into_iter()
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.conditions.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{} {} {}", c.metric, c.op.symbol(), c.threshold)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_comparison_and_a_conjunction_parse() {
        let p = Predicate::parse("brightness < 0.25").expect("one");
        assert_eq!(p.conditions, vec![Condition { metric: "brightness".into(), op: Comparison::Lt, threshold: 0.25 }]);
        let rain = Predicate::parse("brightness < 0.3 AND sharpness <= 0.01").expect("two");
        assert_eq!(rain.conditions.len(), 2);
        assert_eq!(rain.conditions[1].op, Comparison::Le);
        assert_eq!(rain.to_string(), "brightness < 0.3 and sharpness <= 0.01");
        assert_eq!(Predicate::parse(&rain.to_string()).expect("round trip"), rain);
    }

    #[test]
    fn every_condition_must_hold_and_a_missing_value_holds_nothing() {
        let rain = Predicate::parse("brightness < 0.3 and sharpness < 0.01").expect("parse");
        let frame =
            |b: Option<f64>, s: Option<f64>| rain.holds_with(|_, c| if c.metric == "brightness" { b } else { s });
        assert!(frame(Some(0.2), Some(0.005)));
        assert!(!frame(Some(0.2), Some(0.05)));
        assert!(!frame(Some(0.5), Some(0.005)));
        assert!(!frame(None, Some(0.005)));
        assert!(!frame(Some(f64::NAN), Some(0.005)));
    }

    #[test]
    fn bad_text_is_refused_with_the_fragment_at_fault() {
        assert_eq!(Predicate::parse("brightness ~ 3"), Err(PredicateError::NoComparison("brightness ~ 3".into())));
        assert_eq!(Predicate::parse("brightness < abc"), Err(PredicateError::NotANumber("abc".into())));
        assert_eq!(Predicate::parse("brightness < inf"), Err(PredicateError::NotANumber("inf".into())));
        assert_eq!(Predicate::parse(" < 3"), Err(PredicateError::NoMetric("< 3".into())));
        assert!(Predicate::parse("brightness < 0.3 and").is_err());
        let long = vec!["a < 1"; MAX_CONDITIONS + 1].join(" and ");
        assert!(Predicate::parse(&long).is_err());
    }
}

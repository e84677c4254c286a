//! The recent evaluations of every (slice, metric), for the web view's sparklines: a fixed ring of PSI values per
//! pair, pushed after each evaluation. Bounded by construction: a slice is kept only while the latest evaluation
//! has it (at most `slices.max_slices`), each with one ring of `POINTS` values per tracked metric, so the whole
//! history holds at most max_slices x metrics x POINTS x 4 bytes (2000 x 35 x 60 x 4 = 17 MB at the defaults).

use std::collections::HashMap;
use std::sync::Arc;

use crate::evaluate::Evaluation;
use crate::slice::SliceKey;

/// Evaluations remembered per (slice, metric): five minutes at the default 5 s interval.
pub const POINTS: usize = 60;

/// One metric's last `POINTS` PSI values, oldest first; NaN where the window had too few values for a verdict.
#[derive(Debug, Clone)]
pub struct Ring {
    values: [f32; POINTS],
    /// Values pushed so far, saturating at `POINTS`.
    len: usize,
    /// Where the next value goes.
    head: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Ring { values: [f32::NAN; POINTS], len: 0, head: 0 }
    }
}

impl Ring {
    fn push(&mut self, v: f32) {
        self.values[self.head] = v;
        self.head = (self.head + 1) % POINTS;
        self.len = (self.len + 1).min(POINTS);
    }

    /// The values, oldest first.
    pub fn values(&self) -> Vec<f32> {
        let start = (self.head + POINTS - self.len) % POINTS;
        (0..self.len).map(|i| self.values[(start + i) % POINTS]).collect()
    }
}

/// Rings per slice, per metric name.
#[derive(Debug, Default)]
pub struct EvaluationHistory {
    slices: HashMap<SliceKey, HashMap<Arc<str>, Ring>>,
}

impl EvaluationHistory {
    /// Appends one point per (slice, metric) of `eval`; slices the evaluation no longer has are forgotten.
    pub fn push(&mut self, eval: &Evaluation) {
        let mut old = std::mem::take(&mut self.slices);
        for s in &eval.slices {
            let mut rings = old.remove(&s.key).unwrap_or_default();
            rings.retain(|name, _| s.metrics.iter().any(|m| m.name == *name));
            for m in &s.metrics {
                let v = if m.drift.is_some() { m.stats.psi as f32 } else { f32::NAN };
                rings.entry(m.name.clone()).or_default().push(v);
            }
            self.slices.insert(s.key.clone(), rings);
        }
    }

    /// The PSI values of one (slice, metric), oldest first (empty when unknown).
    pub fn psi(&self, slice: &str, metric: &str) -> Vec<f32> {
        self.slices.get(slice).and_then(|r| r.get(metric)).map(Ring::values).unwrap_or_default()
    }

    /// Slices remembered.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_points_oldest_first() {
        let mut r = Ring::default();
        for i in 0..(POINTS + 5) {
            r.push(i as f32);
        }
        let v = r.values();
        assert_eq!(v.len(), POINTS);
        assert_eq!((v[0], v[POINTS - 1]), (5.0, (POINTS + 4) as f32));
        let mut short = Ring::default();
        short.push(1.0);
        short.push(2.0);
        assert_eq!(short.values(), vec![1.0, 2.0]);
    }
}

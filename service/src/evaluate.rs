//! Drift evaluation: every few seconds each slice's window is merged (under the store lock, one slice at a time,
//! so ingest never waits long) and compared with the baseline (outside the lock). The result is an immutable
//! `Evaluation` that the exporter, the query API and the alert engine read. Cost: linear in active slices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use framewatch_metrics::Baseline;
use framewatch_metrics::baseline::CLASS_CATEGORICAL;
use framewatch_metrics::drift::DriftThresholds;
use framewatch_metrics::stats::{ChiSquare, MetricDrift, chi_square_homogeneity, compare};

use crate::slice::SliceKey;
use crate::store::WindowStore;

#[derive(Debug, Clone)]
pub struct MetricEval {
    pub name: Arc<str>,
    pub stats: MetricDrift,
    pub missing: u64,
    pub baseline_std: f64,
    /// Default verdict; `None` when the window holds fewer than `min_frames` values.
    pub drift: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct ClassEval {
    pub counts: BTreeMap<String, u64>,
    pub chi_square: ChiSquare,
    pub drift: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct SliceEval {
    pub key: SliceKey,
    pub frames: u64,
    pub last_seen_secs: i64,
    pub window_start_secs: i64,
    pub window_end_secs: i64,
    pub metrics: Vec<MetricEval>,
    pub classes: Option<ClassEval>,
    /// Judged against the slice's own baseline (else the global one).
    pub own_baseline: bool,
}

/// One evaluation of every slice, sorted by slice key.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub evaluated_at_secs: i64,
    pub slices: Vec<SliceEval>,
}

impl Evaluation {
    pub fn slice(&self, key: &str) -> Option<&SliceEval> {
        self.slices.binary_search_by(|s| (*s.key).cmp(key)).ok().map(|i| &self.slices[i])
    }
}

pub fn evaluate(
    store: &Mutex<WindowStore>,
    baseline: &Baseline,
    thresholds: &DriftThresholds,
    now_secs: i64,
) -> Evaluation {
    let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
    let keys = {
        let mut s = lock();
        s.evict_idle(now_secs);
        s.slice_keys()
    };
    let mut scratch = (Vec::new(), Vec::new());
    let mut slices = Vec::with_capacity(keys.len());
    for key in keys {
        let (snap, names): (_, Vec<Arc<str>>) = {
            let s = lock();
            let Some(snap) = s.snapshot(&key, now_secs) else { continue };
            (snap, s.tracked().iter().map(|t| t.name.clone()).collect())
        };
        let mut metrics = Vec::with_capacity(names.len());
        for (name, h) in names.iter().zip(&snap.hists) {
            let Some((b, _)) = baseline.metric_for(&key, name) else { continue };
            let stats = compare(&b.layout, &b.histogram, b.mean, b.std, h, &mut scratch);
            let drift = thresholds.verdict(&stats);
            metrics.push(MetricEval { name: name.clone(), stats, missing: h.missing, baseline_std: b.std, drift });
        }
        let classes = baseline.categorical_for(&key, CLASS_CATEGORICAL).and_then(|base| {
            let counts: BTreeMap<String, u64> = snap.classes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let keys: std::collections::BTreeSet<&String> = base.keys().chain(counts.keys()).collect();
            let pairs = keys.iter().map(|k| (base.get(*k).copied().unwrap_or(0), counts.get(*k).copied().unwrap_or(0)));
            let chi = chi_square_homogeneity(pairs)?;
            let n: u64 = counts.values().sum();
            let drift = thresholds.categorical_verdict(n, &chi);
            Some(ClassEval { counts, chi_square: chi, drift })
        });
        slices.push(SliceEval {
            key: snap.key,
            frames: snap.frames,
            last_seen_secs: snap.last_seen_secs,
            window_start_secs: snap.window_start_secs,
            window_end_secs: snap.window_end_secs,
            metrics,
            classes,
            own_baseline: snap.own_baseline,
        });
    }
    slices.sort_by(|a, b| a.key.cmp(&b.key));
    Evaluation { evaluated_at_secs: now_secs, slices }
}

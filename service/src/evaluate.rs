//! Drift evaluation: every few seconds each slice's window is merged (under the store lock, one slice at a time,
//! so ingest never waits long), compared with the baseline (outside the lock), and diagnosed: which causes
//! (darker, blur, frozen, ...) explain the change (`framewatch_metrics::cause`). The result is an immutable
//! `Evaluation` that the exporter, the query API and the alert engine read. Cost: linear in active slices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use framewatch_metrics::Baseline;
use framewatch_metrics::baseline::{CLASS_CATEGORICAL, MetricBaseline};
use framewatch_metrics::cause::{ClassShift, Evidence, Finding, Shift, Tolerances, diagnose};
use framewatch_metrics::drift::DriftThresholds;
use framewatch_metrics::histogram::Histogram;
use framewatch_metrics::label_quality::LABEL_METRICS;
use framewatch_metrics::performance::{Performance, summarize};
use framewatch_metrics::stats::{
    ChiSquare, EffectiveN, MetricDrift, chi_square_homogeneity, compare_to, effective_sample_size,
};

use crate::cameras::CameraState;
use crate::config::EvaluationConfig;
use crate::slice::SliceKey;
use crate::store::{WindowSnapshot, WindowStore};
use crate::truth::JoinStore;

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
    /// The causes that explain this slice's change, consequences already suppressed (empty: nothing to say).
    pub causes: Vec<Finding>,
    /// Model performance over the slice's labelled frames in the performance window (`judge_performance`); `None`
    /// when none of its frames has been labelled.
    pub performance: Option<SlicePerformance>,
}

/// A slice's model performance against ground truth.
#[derive(Debug, Clone)]
pub struct SlicePerformance {
    /// `performance.frames` is the count of labelled frames.
    pub performance: Performance,
    /// At least `labels.min_frames` labelled frames: model test cases on performance judge only then.
    pub enough: bool,
    /// The baseline's performance on its labelled validation frames (`baseline build --labels`) for this slice:
    /// its own slice's, else the global figure.
    pub baseline: Option<Arc<Performance>>,
}

/// One evaluation of every slice, sorted by slice key.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub evaluated_at_secs: i64,
    pub slices: Vec<SliceEval>,
    /// Slices the store evicted for capacity since the previous evaluation, sorted: their alerts are kept and
    /// marked "evicted", not resolved.
    pub evicted: Vec<SliceKey>,
}

impl Evaluation {
    pub fn slice(&self, key: &str) -> Option<&SliceEval> {
        self.slices.binary_search_by(|s| s.key.as_str().cmp(key)).ok().map(|i| &self.slices[i])
    }
}

/// What the evaluation judges with (from `[evaluation]`).
#[derive(Debug, Clone)]
pub struct EvaluationSettings {
    pub thresholds: DriftThresholds,
    pub tolerances: Tolerances,
    pub frozen_frames: u64,
    pub moved_frames: u64,
}

impl From<&EvaluationConfig> for EvaluationSettings {
    fn from(c: &EvaluationConfig) -> Self {
        EvaluationSettings {
            thresholds: c.thresholds,
            tolerances: c.tolerances,
            frozen_frames: c.frozen_frames,
            moved_frames: c.moved_frames,
        }
    }
}

/// Evaluates every slice; `cameras` (sorted by camera id) are the temporal detectors' states.
pub fn evaluate(
    store: &Mutex<WindowStore>,
    baseline: &Baseline,
    settings: &EvaluationSettings,
    cameras: &[(String, CameraState)],
    now_secs: i64,
) -> Evaluation {
    let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
    let (keys, mut evicted, names) = {
        let mut s = lock();
        s.evict_idle(now_secs);
        let names: Vec<Arc<str>> = s.tracked().iter().map(|t| t.name.clone()).collect();
        (s.slice_keys(), s.take_evicted(), names)
    };
    evicted.sort();
    evicted.dedup();
    let mut scratch = Vec::new();
    let mut evidence = Evidence::default();
    let mut slices = Vec::with_capacity(keys.len());
    // One snapshot's buffers serve every slice in turn (no per-slice histograms to allocate and zero).
    let mut snap = WindowSnapshot::empty();
    // Each reference's baselines in the store's metric order (`Baseline::metric_for`), looked up by name once per
    // evaluation rather than once per slice: keyed by the slice's own reference, `None` for the global one.
    let mut resolved: BTreeMap<Option<&str>, Vec<Option<&MetricBaseline>>> = BTreeMap::new();
    for key in keys {
        if !lock().snapshot_into(&key, now_secs, &mut snap) {
            continue;
        }
        let own = baseline.reference_for(snap.key.as_str()).and_then(|k| baseline.slices.get_key_value(k));
        let references = resolved.entry(own.map(|(k, _)| k.as_str())).or_insert_with(|| {
            names.iter().map(|name| baseline.metric_for(snap.key.as_str(), name).map(|(m, _)| m)).collect()
        });
        let metrics = compare_metrics(&settings.thresholds, &snap, &names, references, &mut scratch);
        let classes = compare_classes(baseline, &settings.thresholds, &snap);
        let camera = snap
            .key
            .camera_id()
            .and_then(|c| cameras.binary_search_by(|(k, _)| k.as_str().cmp(c.as_str())).ok().map(|i| &cameras[i].1));
        evidence.clear();
        for m in &metrics {
            let significant = settings.thresholds.significant_shift(&m.stats);
            if let Some(shift) = Shift::from_drift(&m.stats, m.baseline_std, significant) {
                evidence.set_metric(&m.name, shift);
            }
        }
        evidence.frozen = camera.is_some_and(|c| c.frozen_frames >= settings.frozen_frames);
        evidence.moved = camera.is_some_and(|c| c.moved_frames >= settings.moved_frames);
        evidence.classes = classes.as_ref().map(|c| {
            let n: u64 = c.counts.values().sum();
            ClassShift {
                cramers_v: c.chi_square.cramers_v,
                significant: n >= settings.thresholds.min_frames && c.chi_square.p_value <= settings.thresholds.p_value,
            }
        });
        slices.push(SliceEval {
            causes: diagnose(&evidence, &settings.tolerances),
            key: snap.key.clone(),
            frames: snap.frames,
            last_seen_secs: snap.last_seen_secs,
            window_start_secs: snap.window_start_secs,
            window_end_secs: snap.window_end_secs,
            metrics,
            classes,
            own_baseline: snap.own_baseline,
            performance: None,
        });
    }
    slices.sort_by(|a, b| a.key.cmp(&b.key));
    Evaluation { evaluated_at_secs: now_secs, slices, evicted }
}

/// Sums each evaluated slice's labelled frames (ground truth joined by frame id, captured in the performance
/// window) into its model performance. Expired frames and held labels age out first. The join's lock is held
/// while the window is gathered (reference counts, no copies), not while the sums are made.
///
/// The labels' quality metrics (`label_object_count`, ...) of those frames are compared with the baseline's
/// (`baseline build --labels`) like any metric and added to the slice's `metrics`, so label drift shows in the same
/// series, summaries and rules.
pub fn judge_performance(
    evaluation: &mut Evaluation,
    join: &Mutex<JoinStore>,
    baseline_file: &Baseline,
    thresholds: &DriftThresholds,
    min_frames: u64,
    now_secs: i64,
) {
    let window = {
        let mut j = join.lock().unwrap_or_else(|p| p.into_inner());
        j.expire(now_secs);
        j.window(now_secs)
    };
    let mut scratch = Vec::new();
    // One shared copy per baseline reference, however many slices it judges.
    let mut references: BTreeMap<&str, Arc<Performance>> = BTreeMap::new();
    for s in &mut evaluation.slices {
        let Some(frames) = window.get(s.key.as_str()) else {
            s.performance = None;
            continue;
        };
        let performance = summarize(frames.iter().map(|l| &l.matched));
        let baseline = baseline_file
            .performance_for(s.key.as_str())
            .map(|(p, key, _)| references.entry(key).or_insert_with(|| Arc::new(p.clone())).clone());
        s.performance =
            Some(SlicePerformance { enough: performance.frames >= min_frames.max(1), performance, baseline });
        compare_label_metrics(s, frames, baseline_file, thresholds, &mut scratch);
    }
}

/// The label quality metrics of a slice's labelled frames against the baseline's (its own slice's, else global).
fn compare_label_metrics(
    s: &mut SliceEval,
    frames: &[Arc<crate::truth::Labelled>],
    baseline: &Baseline,
    thresholds: &DriftThresholds,
    scratch: &mut Vec<f64>,
) {
    let own = baseline.reference_for(s.key.as_str()).and_then(|k| baseline.slices.get(k));
    for (i, info) in LABEL_METRICS.iter().enumerate() {
        let Some(b) =
            own.and_then(|sl| sl.label_metrics.get(info.name)).or_else(|| baseline.label_metrics.get(info.name))
        else {
            continue;
        };
        let mut h = Histogram::new(&b.layout);
        for l in frames {
            let v = l.label_values[i];
            h.record(&b.layout, v.is_finite().then_some(f64::from(v)));
        }
        // Labelled frames are a sample spread over the window: independent enough to count as they are.
        let effective = EffectiveN { reference: b.effective_n, current: h.n as f64 };
        let stats = compare_to(&b.reference(), &h, effective, scratch);
        let drift = thresholds.verdict(&stats);
        s.metrics.push(MetricEval {
            name: Arc::from(info.name),
            stats,
            missing: h.missing,
            baseline_std: b.std,
            drift,
        });
    }
}

/// Every tracked metric's statistics against its reference in `references` (one per name, `None` where the
/// baseline has none). P-values count effective sample sizes: the baseline's (from its frames' order) and the
/// window's (from the lag-1 autocorrelation of consecutive frames of each camera).
fn compare_metrics(
    thresholds: &DriftThresholds,
    snap: &WindowSnapshot,
    names: &[Arc<str>],
    references: &[Option<&MetricBaseline>],
    scratch: &mut Vec<f64>,
) -> Vec<MetricEval> {
    let mut metrics = Vec::with_capacity(names.len());
    for (i, ((name, h), b)) in names.iter().zip(&snap.hists).zip(references).enumerate() {
        let Some(b) = b else {
            continue;
        };
        let r1 = snap.lags.get(i).and_then(|l| l.lag1_autocorrelation()).unwrap_or(0.0);
        let effective = EffectiveN { reference: b.effective_n, current: effective_sample_size(h.n, r1) };
        let stats = compare_to(&b.reference(), h, effective, scratch);
        let drift = thresholds.verdict(&stats);
        metrics.push(MetricEval { name: name.clone(), stats, missing: h.missing, baseline_std: b.std, drift });
    }
    metrics
}

fn compare_classes(baseline: &Baseline, thresholds: &DriftThresholds, snap: &WindowSnapshot) -> Option<ClassEval> {
    let base = baseline.categorical_for(&snap.key, CLASS_CATEGORICAL)?;
    let counts: BTreeMap<String, u64> = snap.classes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let keys: std::collections::BTreeSet<&String> = base.keys().chain(counts.keys()).collect();
    let pairs = keys.iter().map(|k| (base.get(*k).copied().unwrap_or(0), counts.get(*k).copied().unwrap_or(0)));
    let chi = chi_square_homogeneity(pairs)?;
    let n: u64 = counts.values().sum();
    let drift = thresholds.categorical_verdict(n, &chi);
    Some(ClassEval { counts, chi_square: chi, drift })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::{JoinFrame, JoinSettings, LabelResult, Labels};
    use framewatch_metrics::performance::TruthBox;
    use framewatch_metrics::{BaselineBuilder, ComparableSettings, Detection};

    const NOW: i64 = 1_800_000_000;

    fn car(x: f32) -> TruthBox {
        TruthBox { x_min: x, y_min: 0.4, x_max: x + 0.1, y_max: 0.6, class_label: "car".into() }
    }

    /// Issue 15: the live performance pass judges a slice's labelled frames against the baseline's validation set,
    /// for performance and for the labels' own quality: a lot that fills up (five cars a frame where the baseline
    /// had one) is label drift, and a model that finds only one of them loses recall.
    #[test]
    fn performance_and_label_drift_are_judged_against_the_baseline() {
        let mut b = BaselineBuilder::new(vec!["brightness".into()], ComparableSettings::default(), 20);
        for i in 0..300 {
            b.add(&[Some(0.3 + f64::from(i % 10) / 50.0)], ["car"]);
            let truth = [car(0.1 + (i % 7) as f32 / 10.0)];
            let dets: Vec<Detection> = truth.iter().map(|t| t.detected(0.9)).collect();
            b.add_labelled(&[], &truth, Some(&dets));
        }
        let baseline = b.finish("t".into(), "v".into(), "s".into()).expect("baseline");
        assert!(baseline.label_metrics.contains_key("label_object_count"));

        let join = Mutex::new(JoinStore::new(JoinSettings::default(), vec![(0, Arc::from("brightness"))]));
        let slices = ["global".to_string()];
        for i in 0..100 {
            let truth: Vec<TruthBox> = (0..5).map(|k| car(k as f32 * 0.18)).collect();
            let dets = [truth[0].detected(0.9)];
            let id = format!("f{i}");
            let f =
                JoinFrame { frame_id: &id, capture_secs: NOW - 60, detections: &dets, slices: &slices, values: &[] };
            let mut j = join.lock().expect("join");
            j.offer_frame(&f, NOW - 60);
            let labels = Labels { frame_id: id, truth, no_objects: false };
            assert_eq!(j.offer_labels(&labels, NOW - 30), LabelResult::Joined);
        }
        let slice = SliceEval {
            key: SliceKey::from_canonical("global"),
            frames: 100,
            last_seen_secs: NOW,
            window_start_secs: NOW - 900,
            window_end_secs: NOW,
            metrics: Vec::new(),
            classes: None,
            own_baseline: false,
            causes: Vec::new(),
            performance: None,
        };
        let mut e = Evaluation { evaluated_at_secs: NOW, slices: vec![slice], evicted: Vec::new() };
        judge_performance(&mut e, &join, &baseline, &DriftThresholds::default(), 30, NOW);
        let s = &e.slices[0];
        let p = s.performance.as_ref().expect("performance");
        assert!(p.enough);
        assert_eq!(p.performance.frames, 100);
        assert_eq!(p.performance.counts.recall(), Some(0.2));
        let base = p.baseline.as_ref().expect("the baseline's performance");
        assert_eq!(base.counts.recall(), Some(1.0));
        let count = s.metrics.iter().find(|m| &*m.name == "label_object_count").expect("label metric judged");
        assert_eq!(count.stats.mean, Some(5.0));
        assert_eq!(count.drift, Some(true), "{:?}", count.stats);
        // Where the labels look like the baseline's, no label drift: each box alone, like the validation set's.
        let dup = s.metrics.iter().find(|m| &*m.name == "label_duplicates").expect("duplicates judged");
        assert_eq!(dup.stats.mean, Some(0.0));
        assert_ne!(dup.drift, Some(true));
    }
}

//! Prometheus exposition. Ingest counters are ordinary prometheus-client metrics updated as frames flow; drift
//! statistics are rendered at scrape time from the latest evaluation (a collector), so a slice that left the
//! window disappears from /metrics instead of lingering as a stale series. Label cardinality is bounded by
//! `prometheus.export_dimensions` and `prometheus.series_budget`.

use std::sync::{Arc, Mutex, RwLock};

use framewatch_metrics::cause::Cause;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::alerts::{AlertSnapshot, Phase};
use crate::cameras::CameraTracker;
use crate::evaluate::Evaluation;
use crate::evaluate::SlicePerformance;
use crate::store::WindowStore;
use crate::truth::Truth;
use framewatch_metrics::performance::PerformanceStatistic;

/// Series one metric of one slice exports (mean, psi, ks, js, wasserstein, 2 outlier shares, verdict,
/// out_of_range, effective n).
const SERIES_PER_METRIC: usize = 10;
/// Cause rows per slice (every cause but ingest and model_test).
const CAUSE_SERIES: usize = 11;

/// Renders drift statistics and store counters on each scrape.
#[derive(Debug)]
pub struct DriftCollector {
    pub evaluation: Arc<RwLock<Arc<Evaluation>>>,
    pub store: Arc<Mutex<WindowStore>>,
    /// Slice dimensions exported per slice (e.g. "camera_id", "site"); "global" always is.
    pub export_dimensions: Vec<String>,
    pub series_budget: usize,
    pub alerts: Arc<RwLock<AlertSnapshot>>,
    pub cameras: Arc<Mutex<CameraTracker>>,
    /// The ground-truth join (its size and what it dropped).
    pub truth: Truth,
}

/// Classes per slice whose performance is exported (those with the most labelled objects).
const EXPORTED_CLASSES: usize = 20;

/// Performance rows of one slice: labelled frames, the overall figures and the best-labelled classes'.
fn performance_rows(
    p: &SlicePerformance,
    base: &[(&'static str, String)],
    (labelled, overall, per_class, baseline): (&mut Rows, &mut Rows, &mut Rows, &mut Rows),
) {
    let perf = &p.performance;
    labelled.push((base.to_vec(), perf.frames as f64));
    for (stat, b) in p.baseline.iter().flat_map(|b| PerformanceStatistic::ALL.map(|s| (s, b))) {
        if let Some(v) = stat.value(b, None) {
            let mut l = base.to_vec();
            l.push(("statistic", stat.name().to_string()));
            baseline.push((l, v));
        }
    }
    let with = |k: &'static str, v: &str| {
        let mut l = base.to_vec();
        l.push((k, v.to_string()));
        l
    };
    for stat in PerformanceStatistic::ALL {
        if let Some(v) = stat.value(perf, None) {
            overall.push((with("statistic", stat.name()), v));
        }
    }
    let mut classes: Vec<(&String, u64)> = perf.classes.iter().map(|(c, cp)| (c, cp.truths)).collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (class, _) in classes.into_iter().take(EXPORTED_CLASSES) {
        for stat in PerformanceStatistic::ALL {
            if let Some(v) = stat.value(perf, Some(class)) {
                let mut l = with("class", class);
                l.push(("statistic", stat.name().to_string()));
                per_class.push((l, v));
            }
        }
    }
}

type Rows = Vec<(Vec<(&'static str, String)>, f64)>;

/// Series one slice's performance costs: labelled frames, 5 overall figures (and 5 of the baseline's), 5 per
/// exported class.
fn performance_cost(p: Option<&SlicePerformance>) -> usize {
    p.map_or(0, |p| 1 + 10 + 5 * p.performance.classes.len().min(EXPORTED_CLASSES))
}

/// The join's gauges and counters.
fn encode_join(enc: &mut DescriptorEncoder, truth: &Truth) -> std::fmt::Result {
    let (size, c) = {
        let j = truth.lock();
        (j.size(), j.counters())
    };
    gauge(
        enc,
        "framewatch_label_join_frames",
        "Frames kept for the ground-truth join: waiting for labels, or labelled (in the performance window)",
        &[
            (vec![("state", "waiting".to_string())], size.waiting as f64),
            (vec![("state", "labelled".to_string())], size.labelled as f64),
        ],
    )?;
    gauge(
        enc,
        "framewatch_label_join_early_labels",
        "Labels held until their frame arrives",
        &[(vec![], size.early as f64)],
    )?;
    gauge(
        enc,
        "framewatch_label_join_bytes",
        "Memory the ground-truth join holds (estimate: frames, labels, matches)",
        &[(vec![], size.bytes as f64)],
    )?;
    let mut fam = enc.encode_descriptor(
        "framewatch_label_join_frames_dropped",
        "Frames with a frame_id dropped from the join: expired (no labels within labels.max_delay_secs), capacity \
         (labels.max_frames reached, oldest first) or duplicate_id (an id already kept; the first frame stays)",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in [
        ("expired", c.frames_expired_unlabelled),
        ("capacity", c.frames_dropped_capacity),
        ("duplicate_id", c.frames_duplicate_id),
    ] {
        ConstCounter::new(n).encode(fam.encode_family(&[("reason", reason)])?)?;
    }
    let mut fam = enc.encode_descriptor(
        "framewatch_label_join_early_dropped",
        "Held labels that never counted: their frame never came (expired: labels.early_secs; capacity: \
         labels.max_early reached), or came captured before the performance window (too_late)",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in
        [("expired", c.early_expired), ("capacity", c.early_dropped_capacity), ("too_late", c.early_too_late)]
    {
        ConstCounter::new(n).encode(fam.encode_family(&[("reason", reason)])?)?;
    }
    Ok(())
}

/// A gauge family from rows; the HELP/TYPE lines are written even with no rows, so dashboards and rules can rely
/// on every family being declared.
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, f64)],
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(fam.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for DriftCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (counters, slices, refused, classes_overflowed) = {
            let s = self.store.lock().unwrap_or_else(|p| p.into_inner());
            (s.counters(), s.slice_count(), s.refused_slices(), s.classes_overflowed())
        };
        let c = ConstCounter::new(counters.late);
        c.encode(enc.encode_descriptor(
            "framewatch_frames_late",
            "Frames captured before the allowed lateness: counted, not mixed into windows",
            None,
            c.metric_type(),
        )?)?;
        let ev = ConstCounter::new(counters.evicted_capacity + counters.evicted_idle);
        ev.encode(enc.encode_descriptor(
            "framewatch_slices_evicted",
            "Slices forgotten (slice cap reached, or idle)",
            None,
            ev.metric_type(),
        )?)?;
        let r = ConstCounter::new(refused);
        r.encode(enc.encode_descriptor(
            "framewatch_slices_refused",
            "Frames whose new slice was refused because new slices arrived faster than slices.admit_per_sec (the \
             frames still count in their other slices)",
            None,
            r.metric_type(),
        )?)?;
        let co = ConstCounter::new(classes_overflowed);
        co.encode(enc.encode_descriptor(
            "framewatch_classes_overflowed",
            "Class counts recorded under \"(other)\" because a slice's window already had slices.max_classes classes",
            None,
            co.metric_type(),
        )?)?;
        let g = ConstGauge::new(slices as i64);
        g.encode(enc.encode_descriptor("framewatch_slices_active", "Slices held in memory", None, g.metric_type())?)?;

        let eval = self.evaluation.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut budget = self.series_budget;
        let mut skipped = 0u64;
        let (mut frames, mut mean, mut psi, mut ks, mut js, mut wn, mut om, mut os, mut drift) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut baseline_mean = vec![];
        let (mut class_v, mut class_drift) = (vec![], vec![]);
        let (mut out_of_range, mut n_eff, mut causes) = (vec![], vec![], vec![]);
        let (mut labelled, mut performance, mut class_performance, mut base_perf) = (vec![], vec![], vec![], vec![]);
        // Fleet-wide slices first (global, predicates, then label dimensions other than cameras), so the budget
        // runs out on camera slices, never on what the shipped rules and dashboards watch fleet-wide.
        let mut order: Vec<(u8, &crate::evaluate::SliceEval, String)> = eval
            .slices
            .iter()
            .filter_map(|s| {
                let dim = s.key.dimension();
                let rank = if s.key.is_global() {
                    0
                } else if s.key.is_predicate() {
                    1
                } else if !self.export_dimensions.contains(&dim) {
                    return None;
                } else if dim == "camera_id" {
                    3
                } else {
                    2
                };
                Some((rank, s, dim))
            })
            .collect();
        order.sort_by_key(|(rank, _, _)| *rank);
        for (_, s, dim) in order {
            // Real series: frames, class V and verdict, 10 per metric, one per cause, and performance.
            let cost =
                3 + SERIES_PER_METRIC * s.metrics.len() + CAUSE_SERIES + performance_cost(s.performance.as_ref());
            if budget < cost {
                skipped += 1;
                continue;
            }
            budget -= cost;
            let base = vec![("slice", s.key.to_string()), ("dimension", dim.clone())];
            frames.push((base.clone(), s.frames as f64));
            if let Some(p) = &s.performance {
                performance_rows(p, &base, (&mut labelled, &mut performance, &mut class_performance, &mut base_perf));
            }
            if let Some(c) = &s.classes {
                class_v.push((base.clone(), c.chi_square.cramers_v));
                if let Some(d) = c.drift {
                    class_drift.push((base.clone(), if d { 1.0 } else { 0.0 }));
                }
            }
            for m in &s.metrics {
                let mut l = base.clone();
                l.push(("metric", m.name.to_string()));
                if let Some(v) = m.stats.mean {
                    mean.push((l.clone(), v));
                }
                psi.push((l.clone(), m.stats.psi));
                ks.push((l.clone(), m.stats.ks_statistic));
                js.push((l.clone(), m.stats.js_distance));
                if let Some(w) = m.stats.wasserstein_norm {
                    wn.push((l.clone(), w));
                }
                let mut lm = l.clone();
                lm.push(("severity", "moderate".into()));
                om.push((lm, m.stats.outliers_moderate));
                let mut ls = l.clone();
                ls.push(("severity", "severe".into()));
                os.push((ls, m.stats.outliers_severe));
                out_of_range.push((l.clone(), m.stats.out_of_range));
                n_eff.push((l.clone(), m.stats.n_effective));
                if let Some(d) = m.drift {
                    drift.push((l, if d { 1.0 } else { 0.0 }));
                }
            }
            // One row per diagnosable cause, 0 or 1, so rules and dashboards see 0 rather than "no data".
            for c in Cause::ALL.iter().filter(|c| !matches!(c, Cause::Ingest | Cause::ModelTest)) {
                let mut l = base.clone();
                l.push(("cause", c.as_str().to_string()));
                causes.push((l, if s.causes.iter().any(|f| f.cause == *c) { 1.0 } else { 0.0 }));
            }
        }
        if let Some(g) = eval.slices.iter().find(|s| s.key.is_global()) {
            for m in &g.metrics {
                baseline_mean.push((vec![("metric", m.name.to_string())], m.stats.baseline_mean));
            }
        }
        om.extend(os);
        gauge(&mut enc, "framewatch_window_frames", "Frames in the slice's current window", &frames)?;
        gauge(&mut enc, "framewatch_window_mean", "Mean of the metric over the slice's window", &mean)?;
        gauge(&mut enc, "framewatch_baseline_mean", "Mean of the metric in the training baseline", &baseline_mean)?;
        gauge(
            &mut enc,
            "framewatch_drift_psi",
            "Population stability index vs baseline (baseline deciles, open-ended ends)",
            &psi,
        )?;
        gauge(&mut enc, "framewatch_drift_ks_statistic", "Two-sample KS statistic vs baseline", &ks)?;
        gauge(&mut enc, "framewatch_drift_js_distance", "Jensen-Shannon distance vs baseline, base 2", &js)?;
        gauge(&mut enc, "framewatch_drift_wasserstein_norm", "Wasserstein-1 distance / baseline std", &wn)?;
        gauge(&mut enc, "framewatch_outlier_share", "Share of window values outside the baseline IQR fences", &om)?;
        gauge(&mut enc, "framewatch_drift_detected", "1 when the default drift verdict holds, 0 when not", &drift)?;
        gauge(
            &mut enc,
            "framewatch_out_of_range_share",
            "Share of window values outside the baseline's [min, max]",
            &out_of_range,
        )?;
        gauge(
            &mut enc,
            "framewatch_effective_sample_size",
            "Effective number of independent values in the window (lag-1 autocorrelation of each camera's frames)",
            &n_eff,
        )?;
        gauge(
            &mut enc,
            "framewatch_cause_detected",
            "1 while the diagnosis names this cause for the slice (consequences of another cause suppressed)",
            &causes,
        )?;
        gauge(&mut enc, "framewatch_class_cramers_v", "Cramer's V of the class distribution vs baseline", &class_v)?;
        gauge(
            &mut enc,
            "framewatch_class_drift_detected",
            "1 when the class distribution drifts (verdict)",
            &class_drift,
        )?;
        gauge(
            &mut enc,
            "framewatch_labelled_frames",
            "Labelled frames (ground truth joined by frame_id) in the slice's performance window",
            &labelled,
        )?;
        gauge(
            &mut enc,
            "framewatch_model_performance",
            "Model performance on the slice's labelled frames: map50, map50_95 (COCO), precision, recall, f1 (at \
             labels.iou_threshold and labels.score_threshold)",
            &performance,
        )?;
        gauge(
            &mut enc,
            "framewatch_model_class_performance",
            "Model performance per class on the slice's labelled frames (the 20 classes with most labelled objects)",
            &class_performance,
        )?;
        gauge(
            &mut enc,
            "framewatch_baseline_model_performance",
            "The baseline's model performance on its labelled validation frames (baseline build --labels) that \
             judges the slice: its own slice's, else the global figure",
            &base_perf,
        )?;
        encode_join(&mut enc, &self.truth)?;
        let alerts = self.alerts.read().unwrap_or_else(|p| p.into_inner()).clone();
        let states: Vec<_> = alerts
            .active
            .iter()
            .map(|a| {
                let labels = vec![
                    ("rule", a.rule.to_string()),
                    ("slice", a.slice.to_string()),
                    ("severity", a.severity.clone()),
                    ("cause", a.labels.get("cause").cloned().unwrap_or_default()),
                ];
                (labels, if a.phase == Phase::Firing { 2.0 } else { 1.0 })
            })
            .collect();
        gauge(&mut enc, "framewatch_alert_state", "Alerts pending (1) or firing (2), by rule and slice", &states)?;
        let tests: Vec<_> = alerts
            .tests
            .iter()
            .map(|(n, s, p)| (vec![("test", n.to_string()), ("slice", s.to_string())], if *p { 1.0 } else { 0.0 }))
            .collect();
        gauge(&mut enc, "framewatch_model_test_passing", "Model test cases: 1 when the expectation holds", &tests)?;
        if self.export_dimensions.iter().any(|d| d == "camera_id") {
            let cams = self.cameras.lock().unwrap_or_else(|p| p.into_inner()).snapshot();
            let take = cams.len().min(budget / 3);
            let rows = |f: &dyn Fn(&crate::cameras::CameraState) -> f64| -> Vec<(Vec<(&'static str, String)>, f64)> {
                cams.iter().take(take).map(|(c, s)| (vec![("camera_id", c.clone())], f(s))).collect()
            };
            gauge(
                &mut enc,
                "framewatch_camera_frozen_frames",
                "Consecutive frames showing the same picture",
                &rows(&|s| s.frozen_frames as f64),
            )?;
            gauge(
                &mut enc,
                "framewatch_camera_moved_frames",
                "Consecutive frames far from the camera's settled scene",
                &rows(&|s| s.moved_frames as f64),
            )?;
            gauge(
                &mut enc,
                "framewatch_camera_frame_change",
                "pHash distance of the last frame to the previous one, 0-1",
                &rows(&|s| s.frame_change),
            )?;
        }
        let sk = ConstGauge::new(skipped as i64);
        sk.encode(enc.encode_descriptor(
            "framewatch_slices_unexported",
            "Slices whose per-slice series were left out by prometheus.series_budget at the last scrape",
            None,
            sk.metric_type(),
        )?)?;
        let at = ConstGauge::new(eval.evaluated_at_secs as f64);
        at.encode(enc.encode_descriptor(
            "framewatch_last_evaluation_timestamp_seconds",
            "When drift was last evaluated (Unix time)",
            None,
            at.metric_type(),
        )?)?;
        Ok(())
    }
}

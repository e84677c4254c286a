//! Prometheus exposition. Ingest counters are ordinary prometheus-client metrics updated as frames flow; drift
//! statistics are rendered at scrape time from the latest evaluation (a collector), so a slice that left the
//! window disappears from /metrics instead of lingering as a stale series. Label cardinality is bounded by
//! `prometheus.export_dimensions` and `prometheus.series_budget`.

use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::alerts::{AlertSnapshot, Phase};
use crate::cameras::CameraTracker;
use crate::evaluate::Evaluation;
use crate::store::WindowStore;

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
        let (counters, slices) = match self.store.lock() {
            Ok(s) => (s.counters(), s.slice_count()),
            Err(p) => (p.get_ref().counters(), p.get_ref().slice_count()),
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
        let g = ConstGauge::new(slices as i64);
        g.encode(enc.encode_descriptor("framewatch_slices_active", "Slices held in memory", None, g.metric_type())?)?;

        let eval = self.evaluation.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut budget = self.series_budget;
        let mut skipped = 0u64;
        let (mut frames, mut mean, mut psi, mut ks, mut js, mut wn, mut om, mut os, mut drift) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut baseline_mean = vec![];
        let (mut class_v, mut class_drift) = (vec![], vec![]);
        for s in &eval.slices {
            let dim = s.key.dimension();
            let exported = s.key.is_global() || dim.starts_with("predicate:") || self.export_dimensions.contains(&dim);
            if !exported {
                continue;
            }
            if budget < s.metrics.len() + 1 {
                skipped += 1;
                continue;
            }
            budget -= s.metrics.len() + 1;
            let base = vec![("slice", s.key.to_string()), ("dimension", dim.clone())];
            frames.push((base.clone(), s.frames as f64));
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
                if let Some(d) = m.drift {
                    drift.push((l, if d { 1.0 } else { 0.0 }));
                }
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
        gauge(&mut enc, "framewatch_drift_psi", "Population stability index vs baseline (deciles + tails)", &psi)?;
        gauge(&mut enc, "framewatch_drift_ks_statistic", "Two-sample KS statistic vs baseline", &ks)?;
        gauge(&mut enc, "framewatch_drift_js_distance", "Jensen-Shannon distance vs baseline, base 2", &js)?;
        gauge(&mut enc, "framewatch_drift_wasserstein_norm", "Wasserstein-1 distance / baseline std", &wn)?;
        gauge(&mut enc, "framewatch_outlier_share", "Share of window values outside the baseline IQR fences", &om)?;
        gauge(&mut enc, "framewatch_drift_detected", "1 when the default drift verdict holds, 0 when not", &drift)?;
        gauge(&mut enc, "framewatch_class_cramers_v", "Cramer's V of the class distribution vs baseline", &class_v)?;
        gauge(
            &mut enc,
            "framewatch_class_drift_detected",
            "1 when the class distribution drifts (verdict)",
            &class_drift,
        )?;
        let alerts = self.alerts.read().unwrap_or_else(|p| p.into_inner()).clone();
        let states: Vec<_> = alerts
            .active
            .iter()
            .map(|a| {
                let labels = vec![
                    ("rule", a.rule.to_string()),
                    ("slice", a.slice.to_string()),
                    ("severity", a.severity.clone()),
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

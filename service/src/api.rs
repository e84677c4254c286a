//! The query API (gRPC): slices, slice summaries, a ranked drift report and the metric catalog, all read from the
//! latest evaluation. The one place where framewatch errors become `tonic::Status`.

use std::sync::{Arc, RwLock};

use framewatch_metrics::MetricRegistry;
use framewatch_proto::v1::query_service_server::QueryService;
use framewatch_proto::v1::{
    self as pb, CategoricalSummary, DriftEntry, DriftReport, GetDriftReportRequest, GetExemplarsRequest,
    GetExemplarsResponse, GetMetricImportanceRequest, GetMetricImportanceResponse, GetSliceSummaryRequest,
    ListMetricsRequest, ListMetricsResponse, ListSlicesRequest, ListSlicesResponse, MetricDescription, MetricSummary,
    SliceInfo, SliceSummary, WatchAlertsRequest,
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::alerts::{AlertEvent, AlertSnapshot, Phase};
use crate::evaluate::{Evaluation, MetricEval, SliceEval, SlicePerformance};
use crate::exemplars::ExemplarStore;
use crate::truth::Truth;
use framewatch_metrics::performance::Performance;

#[derive(Debug, Clone)]
pub struct QueryApi {
    pub evaluation: Arc<RwLock<Arc<Evaluation>>>,
    pub registry: Arc<MetricRegistry>,
    pub alerts: broadcast::Sender<AlertEvent>,
    pub alert_state: Arc<RwLock<AlertSnapshot>>,
    /// One permit per `WatchAlerts` subscriber (`server.max_alert_watchers`), held until its stream ends.
    pub watchers: Arc<tokio::sync::Semaphore>,
    /// Thumbnails of drifting pairs' frames (None: `exemplars.memory_mib = 0`).
    pub exemplars: Option<Arc<ExemplarStore>>,
    /// Labelled frames, for `GetMetricImportance`.
    pub truth: Truth,
}

pub fn alert_event(e: &AlertEvent) -> pb::AlertEvent {
    use pb::alert_event::State;
    pb::AlertEvent {
        rule: e.rule.to_string(),
        slice: e.slice.to_string(),
        state: match e.phase {
            Phase::Pending => State::Pending,
            Phase::Firing => State::Firing,
            Phase::Resolved => State::Resolved,
        } as i32,
        value: e.value,
        threshold: e.threshold,
        severity: e.severity.clone(),
        labels: e.labels.clone().into_iter().collect(),
        annotations: e.annotations.clone().into_iter().collect(),
        starts_at: ts(e.starts_at_secs),
        ends_at: e.ends_at_secs.and_then(ts),
        at: ts(e.at_secs),
        model_test: e.model_test,
    }
}

type AlertStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AlertEvent, Status>> + Send>>;

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: secs, nanos: 0 })
}

fn metric_summary(m: &MetricEval) -> MetricSummary {
    let s = &m.stats;
    MetricSummary {
        metric: m.name.to_string(),
        n: s.n,
        missing: m.missing,
        mean: s.mean,
        baseline_mean: s.baseline_mean,
        baseline_std: m.baseline_std,
        psi: s.psi,
        ks_statistic: s.ks_statistic,
        ks_p_value: s.ks_p_value,
        js_distance: s.js_distance,
        wasserstein_norm: s.wasserstein_norm,
        outliers_moderate: s.outliers_moderate,
        outliers_severe: s.outliers_severe,
        drift: m.drift,
    }
}

fn slice_summary(s: &SliceEval, evaluated_at: i64) -> SliceSummary {
    SliceSummary {
        slice: s.key.to_string(),
        frames: s.frames,
        window_start: ts(s.window_start_secs),
        window_end: ts(s.window_end_secs),
        evaluated_at: ts(evaluated_at),
        metrics: s.metrics.iter().map(metric_summary).collect(),
        baseline: if s.own_baseline { "slice" } else { "global" }.into(),
        categoricals: s
            .classes
            .iter()
            .map(|c| CategoricalSummary {
                name: "class".into(),
                counts: c.counts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                chi_square: c.chi_square.statistic,
                chi_square_p_value: c.chi_square.p_value,
                cramers_v: c.chi_square.cramers_v,
                drift: c.drift,
            })
            .collect(),
        performance: s.performance.as_ref().map(model_performance),
    }
}

fn model_performance(p: &SlicePerformance) -> pb::ModelPerformance {
    let mut out = performance_figures(&p.performance);
    out.enough = p.enough;
    out.baseline = p.baseline.as_deref().map(|b| Box::new(performance_figures(b)));
    out
}

fn performance_figures(perf: &Performance) -> pb::ModelPerformance {
    pb::ModelPerformance {
        labelled_frames: perf.frames,
        enough: false,
        baseline: None,
        map50: perf.map50,
        map50_95: perf.map50_95,
        precision: perf.counts.precision(),
        recall: perf.counts.recall(),
        f1: perf.counts.f1(),
        true_positives: perf.counts.true_positives,
        false_positives: perf.counts.false_positives,
        false_negatives: perf.counts.false_negatives,
        classes: perf
            .classes
            .iter()
            .map(|(class, c)| pb::ClassPerformance {
                class_label: class.clone(),
                truths: c.truths,
                ap50: c.ap50,
                ap50_95: c.ap50_95,
                precision: c.counts.precision(),
                recall: c.counts.recall(),
                f1: c.counts.f1(),
            })
            .collect(),
    }
}

/// Metric importance over one slice's labelled frames (the performance window at `now_secs`).
fn metric_importance(truth: &Truth, slice: &str, now_secs: i64) -> GetMetricImportanceResponse {
    use framewatch_metrics::importance::{ImportanceSettings, MatchedFrame, matched_importance};
    let (names, frames) = {
        let j = truth.lock();
        (j.metric_names(), j.slice_window(slice, now_secs))
    };
    let confidence = names.iter().position(|n| &**n == "confidence_mean");
    let values: Vec<Vec<Option<f64>>> =
        frames.iter().map(|l| l.values.iter().map(|v| v.is_finite().then_some(f64::from(*v))).collect()).collect();
    let matched: Vec<MatchedFrame<'_>> = frames
        .iter()
        .zip(&values)
        .map(|(l, v)| MatchedFrame {
            values: v,
            confidence_mean: confidence.and_then(|i| v[i]),
            matched: Some(&l.matched),
        })
        .collect();
    let name_refs: Vec<&str> = names.iter().map(|n| &**n).collect();
    let ranked = matched_importance(&name_refs, &matched, &ImportanceSettings::default());
    GetMetricImportanceResponse {
        slice: slice.to_string(),
        labelled_frames: frames.len() as u64,
        metrics: ranked
            .into_iter()
            .map(|m| pb::MetricImportance {
                metric: m.metric,
                labelled_frames: m.labelled_frames,
                f1_spearman: m.f1_spearman,
                f1_mutual_information: m.f1_mutual_information,
                frames: m.frames,
                confidence_spearman: m.confidence_spearman,
                confidence_mutual_information: m.confidence_mutual_information,
                buckets: m
                    .buckets
                    .iter()
                    .map(|b| pb::PerformanceBucket {
                        min: b.min,
                        max: b.max,
                        frames: b.frames,
                        map50: b.map50,
                        precision: b.counts.precision(),
                        recall: b.counts.recall(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl QueryApi {
    fn current(&self) -> Arc<Evaluation> {
        self.evaluation.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[tonic::async_trait]
impl QueryService for QueryApi {
    type WatchAlertsStream = AlertStream;

    async fn watch_alerts(&self, req: Request<WatchAlertsRequest>) -> Result<Response<AlertStream>, Status> {
        let Ok(watcher) = self.watchers.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "too many WatchAlerts subscribers are connected (server.max_alert_watchers); retry later",
            ));
        };
        // Subscribe before reading the current state, so no change falls between the two.
        let mut live = self.alerts.subscribe();
        let current = if req.into_inner().include_current {
            self.alert_state.read().unwrap_or_else(|p| p.into_inner()).active.clone()
        } else {
            Vec::new()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let _watcher = watcher;
            for e in &current {
                if tx.send(Ok(alert_event(e))).await.is_err() {
                    return;
                }
            }
            loop {
                // A subscriber that went away frees its slot at once, not at the next alert.
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    e = live.recv() => e,
                };
                match next {
                    Ok(e) => {
                        if tx.send(Ok(alert_event(&e))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "an alert watcher is too slow; events were skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_slices(&self, req: Request<ListSlicesRequest>) -> Result<Response<ListSlicesResponse>, Status> {
        let req = req.into_inner();
        let eval = self.current();
        let matching: Vec<&SliceEval> = eval.slices.iter().filter(|s| s.key.contains(&req.filter)).collect();
        let start: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse().map_err(|_| Status::invalid_argument("page_token is not one this server issued"))?
        };
        let size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let page: Vec<SliceInfo> = matching
            .iter()
            .skip(start)
            .take(size)
            .map(|s| SliceInfo { key: s.key.to_string(), frames: s.frames, last_frame_time: ts(s.last_seen_secs) })
            .collect();
        let next = start + page.len();
        Ok(Response::new(ListSlicesResponse {
            next_page_token: if next < matching.len() { next.to_string() } else { String::new() },
            total: matching.len() as u64,
            slices: page,
        }))
    }

    async fn get_slice_summary(&self, req: Request<GetSliceSummaryRequest>) -> Result<Response<SliceSummary>, Status> {
        let key = req.into_inner().slice;
        let eval = self.current();
        let s = eval.slice(&key).ok_or_else(|| {
            Status::not_found(format!("no slice {key:?} in the current window (ListSlices shows the live ones)"))
        })?;
        Ok(Response::new(slice_summary(s, eval.evaluated_at_secs)))
    }

    async fn get_drift_report(&self, req: Request<GetDriftReportRequest>) -> Result<Response<DriftReport>, Status> {
        let req = req.into_inner();
        let key: fn(&MetricEval) -> f64 = match req.rank_by.as_str() {
            "" | "psi" => |m| m.stats.psi,
            "ks_statistic" => |m| m.stats.ks_statistic,
            "js_distance" => |m| m.stats.js_distance,
            "wasserstein_norm" => |m| m.stats.wasserstein_norm.unwrap_or(0.0),
            other => {
                return Err(Status::invalid_argument(format!(
                    "rank_by {other:?}: use psi, ks_statistic, js_distance or wasserstein_norm"
                )));
            }
        };
        let eval = self.current();
        let mut rows: Vec<(&SliceEval, &MetricEval)> = eval
            .slices
            .iter()
            .filter(|s| s.key.contains(&req.slice_filter))
            .flat_map(|s| s.metrics.iter().map(move |m| (s, m)))
            // Windows with fewer than min_frames values have no verdict; their PSI is mostly sampling noise.
            .filter(|(_, m)| m.drift.is_some())
            .collect();
        rows.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)));
        let limit = if req.limit == 0 { 20 } else { req.limit as usize };
        Ok(Response::new(DriftReport {
            entries: rows
                .into_iter()
                .take(limit)
                .map(|(s, m)| DriftEntry { slice: s.key.to_string(), summary: Some(metric_summary(m)) })
                .collect(),
            evaluated_at: ts(eval.evaluated_at_secs),
        }))
    }

    async fn get_metric_importance(
        &self,
        req: Request<GetMetricImportanceRequest>,
    ) -> Result<Response<GetMetricImportanceResponse>, Status> {
        let slice = req.into_inner().slice;
        let eval = self.current();
        if eval.slice(&slice).is_none() {
            return Err(Status::not_found(format!(
                "no slice {slice:?} in the current window (ListSlices shows the live ones)"
            )));
        }
        let (truth, now) = (self.truth.clone(), eval.evaluated_at_secs);
        // Ranks and bins every metric over the slice's labelled frames: CPU work, off the async runtime.
        let response = tokio::task::spawn_blocking(move || metric_importance(&truth, &slice, now))
            .await
            .map_err(|_| Status::internal("metric importance failed"))?;
        Ok(Response::new(response))
    }

    async fn get_exemplars(&self, req: Request<GetExemplarsRequest>) -> Result<Response<GetExemplarsResponse>, Status> {
        let GetExemplarsRequest { slice, metric } = req.into_inner();
        if !self.registry.infos().any(|m| m.name == metric) {
            return Err(Status::invalid_argument(format!("metric {metric:?} is not in the catalog (ListMetrics)")));
        }
        let eval = self.current();
        if eval.slice(&slice).is_none() {
            return Err(Status::not_found(format!(
                "no slice {slice:?} in the current window (ListSlices shows the live ones)"
            )));
        }
        let kept = self.exemplars.as_ref().map(|x| x.exemplars(&slice, &metric)).unwrap_or_default();
        Ok(Response::new(GetExemplarsResponse {
            exemplars: kept
                .into_iter()
                .map(|e| pb::Exemplar {
                    id: e.id,
                    kind: e.kind.as_str().into(),
                    camera_id: e.camera_id.to_string(),
                    capture_time: ts(e.capture_secs),
                    value: e.value,
                    score: e.score,
                    jpeg: e.jpeg.to_vec(),
                })
                .collect(),
            slice,
            metric,
        }))
    }

    async fn list_metrics(&self, _req: Request<ListMetricsRequest>) -> Result<Response<ListMetricsResponse>, Status> {
        Ok(Response::new(ListMetricsResponse {
            metrics: self
                .registry
                .infos()
                .map(|m| MetricDescription {
                    name: m.name.into(),
                    kind: format!("{:?}", m.kind).to_lowercase(),
                    unit: m.unit.into(),
                    range: m.range.into(),
                    description: m.description.into(),
                    encord_equivalent: m.encord.unwrap_or_default().into(),
                })
                .collect(),
            catalog_fingerprint: self.registry.fingerprint(),
        }))
    }
}

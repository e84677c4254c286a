//! The training-set baseline: per metric, fixed quantile edges with the baseline's own counts, quartiles and
//! moments; per categorical, counts. Stored as versioned JSON (README.md, "Baseline file"); loading validates every field and
//! names the one that is wrong.
//!
//! A baseline may be keyed by a context (`ContextSpec`: time of day, or a frame label such as illumination) so that
//! night is compared with night: its slice references are then held per (slice, context value), keyed
//! `camera_id=cam-1,context=night`, next to each slice's context-free reference (the fallback).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analysis::AnalysisSettings;
use crate::histogram::{BinLayout, Histogram, LayoutError, quantile_sorted};
use crate::label_quality::{label_metric_names, label_quality};
use crate::performance::{
    FrameMatch, LabelledFrame, Performance, PerformanceSettings, TruthBox, match_frame, summarize,
};
use crate::prediction::{Detection, MAX_CLASS_LABEL_BYTES, PredictionSettings};
use crate::stats::{LagSeries, Reference};

pub const FORMAT: &str = "framewatch-baseline";
pub const VERSION: u32 = 1;
/// Name of the categorical that holds the detections' class labels.
pub const CLASS_CATEGORICAL: &str = "class";

/// Settings that must be equal for two sets of scores to be comparable.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparableSettings {
    pub analysis: AnalysisSettings,
    pub prediction: PredictionSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub frames_scored: u64,
    pub frames_rejected: u64,
    #[serde(default)]
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// RFC 3339 time the baseline was written (given by the caller: this crate reads no clock).
    pub created_at: String,
    pub framewatch_version: String,
    /// Free text: where the frames came from.
    #[serde(default)]
    pub source: String,
    /// Number of quantile bins between the baseline minimum and maximum.
    pub fine_bins: u32,
    /// Scored frames that had ground truth (`baseline build --labels`); absent without labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_labelled: Option<u64>,
    /// Lines of the labels file refused, by reason (`invalid_label_box`, `too_many_labels`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_refused: BTreeMap<String, u64>,
}

/// One metric's baseline as stored in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricBaselineFile {
    pub n: u64,
    pub missing: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Q1, median, Q3 (numpy linear interpolation).
    pub quartiles: [f64; 3],
    /// Strictly increasing quantile edges from min to max (ties collapsed).
    pub edges: Vec<f64>,
    /// Baseline deciles used as PSI/JS bin cuts; each is one of `edges`.
    pub psi_cuts: Vec<f64>,
    /// Baseline counts per bin: [lower tail, edges[0]..edges[1], ..., == max, upper tail] = edges.len() + 2 bins.
    pub counts: Vec<u64>,
    /// How many independent values the `n` are worth, from the lag-1 autocorrelation of the values in input order
    /// (METRICS.md, "Effective sample size"). In [1, n]; absent in older files, which then count as n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_n: Option<f64>,
}

/// A slice's own reference (e.g. one camera's training frames), compared with that slice's windows instead of
/// the fleet-wide baseline: cameras legitimately differ from each other, so a camera is judged against itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceBaselineFile {
    pub frames: u64,
    pub metrics: BTreeMap<String, MetricBaselineFile>,
    #[serde(default)]
    pub categoricals: BTreeMap<String, BTreeMap<String, u64>>,
    /// The slice's own distributions of the label quality metrics, over its labelled frames (when it has at
    /// least `MIN_SLICE_FRAMES` of them); absent without `--labels` and in every file written before labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_metrics: BTreeMap<String, MetricBaselineFile>,
}

/// The validation set's model performance (`baseline build --labels` with predictions): the numbers live
/// performance is compared with. Stored as computed, so it equals what `framewatch evaluate` reports on the same
/// files with the same settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinePerformance {
    /// How detections were matched to labelled boxes (IoU and confidence thresholds, detections per class).
    pub settings: PerformanceSettings,
    /// Over every labelled frame, in input order.
    pub global: Performance,
    /// Per slice key the baseline makes (`camera_id=cam-1`, `camera_id=cam-1,context=night`), over the slice's
    /// labelled frames; a slice without a labelled frame is absent. Unlike the metric references, a slice needs no
    /// minimum number of frames here: `frames` says how many, and the reader decides what is enough for a verdict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, Performance>,
}

/// Most slices with a recorded performance: a fleet of thousands of cameras times 24 hour-of-day contexts.
pub const MAX_PERFORMANCE_SLICES: usize = 100_000;
/// Most classes in one recorded performance (a detector's label set is tens to a few hundred classes).
pub const MAX_PERFORMANCE_CLASSES: usize = 1_000;
/// Most label quality metrics in a baseline, and most refusal reasons: both are small fixed sets today.
pub const MAX_LABEL_METRICS: usize = 64;

/// The dimension name of the context pair appended to a slice key (`camera_id=cam-1,context=night`). Reserved:
/// a label named `context` cannot be a slice dimension of a context baseline.
pub const CONTEXT_DIMENSION: &str = "context";

/// What a baseline's references are keyed by, besides the slice: written `hour_of_day:N` or a label name.
///
/// - `hour_of_day:N` (N divides 24): N equal buckets of the UTC day from each frame's capture time, named by
///   their hours, `00-06`, `06-12`, `12-18`, `18-24` for N = 4 (zero-padded, end exclusive).
/// - `LABEL` (e.g. `illumination`): the value of that frame label (`day`, `ir`, ...). A frame without the label
///   has no context value and is judged against its slice's context-free reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ContextSpec {
    HourOfDay { buckets: u8 },
    Label(String),
}

impl ContextSpec {
    pub fn parse(text: &str) -> Result<ContextSpec, String> {
        let text = text.trim();
        if let Some(n) = text.strip_prefix("hour_of_day") {
            let n = n.strip_prefix(':').unwrap_or(if n.is_empty() { "24" } else { n });
            return match n.parse::<u8>() {
                Ok(b) if b > 0 && 24 % b == 0 => Ok(ContextSpec::HourOfDay { buckets: b }),
                _ => Err(format!(
                    "context {text:?}: hour_of_day takes a number of buckets that divides 24 (1, 2, 3, 4, 6, 8, 12, 24)"
                )),
            };
        }
        let valid = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match text {
            _ if !valid => Err(format!(
                "context {text:?}: expected hour_of_day:N or a label name (letters, digits, '_'), e.g. illumination"
            )),
            CONTEXT_DIMENSION | "camera_id" | "model_version" => {
                Err(format!("context {text:?}: not a frame label that can key a context"))
            }
            _ => Ok(ContextSpec::Label(text.to_string())),
        }
    }

    /// The context value of a frame captured at `capture_secs` (Unix seconds) with labels `label`: the
    /// time-of-day bucket, or the label's value (`None` when the frame lacks the label or it is empty).
    pub fn value<'a>(&self, capture_secs: i64, label: impl FnOnce(&str) -> Option<&'a str>) -> Option<String> {
        let mut out = String::new();
        self.write_value(capture_secs, label, &mut out).then_some(out)
    }

    /// `value` written into a reused buffer (the service does this per frame); `false` when there is none.
    pub fn write_value<'a>(
        &self,
        capture_secs: i64,
        label: impl FnOnce(&str) -> Option<&'a str>,
        out: &mut String,
    ) -> bool {
        use std::fmt::Write as _;
        out.clear();
        match self {
            ContextSpec::HourOfDay { buckets } => {
                let width = 24 / u32::from(*buckets);
                // Pure arithmetic on a time the caller gives: this crate reads no clock.
                let hour = (capture_secs.rem_euclid(86_400) / 3600) as u32;
                let start = hour / width * width;
                write!(out, "{start:02}-{:02}", start + width).is_ok()
            }
            ContextSpec::Label(name) => match label(name) {
                Some(v) if !v.is_empty() => {
                    out.push_str(v);
                    true
                }
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for ContextSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContextSpec::HourOfDay { buckets } => write!(f, "hour_of_day:{buckets}"),
            ContextSpec::Label(name) => f.write_str(name),
        }
    }
}

impl TryFrom<String> for ContextSpec {
    type Error = String;
    fn try_from(s: String) -> Result<ContextSpec, String> {
        ContextSpec::parse(&s)
    }
}

impl From<ContextSpec> for String {
    fn from(c: ContextSpec) -> String {
        c.to_string()
    }
}

/// `slice` with the context pair appended: `camera_id=cam-1` + `night` -> `camera_id=cam-1,context=night`. The
/// value is escaped as slice keys escape values (`\`, `,`, `=` get a backslash).
pub fn context_key(slice: &str, value: &str) -> String {
    let mut key = String::with_capacity(slice.len() + value.len() + 9);
    key.push_str(slice);
    key.push(',');
    key.push_str(CONTEXT_DIMENSION);
    key.push('=');
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            key.push('\\');
        }
        key.push(c);
    }
    key
}

/// The slice of a context-keyed slice key (`camera_id=cam-1,context=night` -> `camera_id=cam-1`); `None` for a
/// key without a context pair. The pair is always last, and an escaped value never holds an unescaped `=`, so the
/// last `,context=` is the separator.
pub fn without_context(key: &str) -> Option<&str> {
    let i = key.rfind(",context=")?;
    Some(&key[..i])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    pub format: String,
    pub version: u32,
    pub provenance: Provenance,
    pub settings: ComparableSettings,
    pub metrics: BTreeMap<String, MetricBaselineFile>,
    #[serde(default)]
    pub categoricals: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per-slice references, keyed like the service's slices ("camera_id=cam-3"); in a context baseline also per
    /// (slice, context value): "camera_id=cam-3,context=night".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, SliceBaselineFile>,
    /// What the references are keyed by besides the slice (`hour_of_day:4`, `illumination`); absent in a baseline
    /// without contexts (and in every file written before contexts existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextSpec>,
    /// Typical training frames per reference ("global" or a slice key) as small JPEG thumbnails, for showing next
    /// to live frames (`baseline build --exemplars N`); absent in baselines built without them, and in every file
    /// written before they existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exemplars: BTreeMap<String, Vec<BaselineExemplar>>,
    /// The validation set's model performance (`baseline build --labels` with predictions); absent otherwise and
    /// in every file written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<BaselinePerformance>,
    /// The label quality metrics' distributions over the labelled frames (`label_quality::LABEL_METRICS`). Kept
    /// apart from `metrics`, which holds exactly the frame-scoring registry's metrics the service tracks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_metrics: BTreeMap<String, MetricBaselineFile>,
}

/// One typical training frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineExemplar {
    /// The frame's path as given to `baseline build` (relative to its directory argument).
    pub path: String,
    /// JPEG, standard base64 (at most `MAX_EXEMPLAR_BASE64` characters).
    pub jpeg_base64: String,
}

/// Longest accepted `jpeg_base64` of one baseline exemplar: 64 KiB of JPEG, far above a 160 px thumbnail.
pub const MAX_EXEMPLAR_BASE64: usize = 87_384;
/// Most baseline exemplars in one file, over all references: with thumbnails of a few kilobytes this caps their
/// share of a baseline at a few megabytes.
pub const MAX_EXEMPLARS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline is not valid JSON for format {FORMAT} v{VERSION}: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a framewatch baseline: format is {0:?}, expected {FORMAT:?}")]
    WrongFormat(String),
    #[error("baseline version {found} is not supported (this framewatch reads version {VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("{metric}.{field}: {problem}")]
    Invalid { metric: String, field: &'static str, problem: String },
    #[error("{metric}: {source}")]
    Layout { metric: String, source: LayoutError },
    #[error("the baseline holds no metric with values")]
    Empty,
    #[error(
        "analysis settings differ from the baseline's (baseline {baseline}, current {current}); scores under \
         different settings are not comparable: rebuild the baseline or score with the baseline's settings"
    )]
    SettingsMismatch { baseline: String, current: String },
}

/// A loaded, validated metric baseline with its bin layout and histogram.
#[derive(Debug, Clone)]
pub struct MetricBaseline {
    pub layout: BinLayout,
    pub histogram: Histogram,
    pub mean: f64,
    pub std: f64,
    pub quartiles: [f64; 3],
    pub missing: u64,
    /// Effective sample size of the baseline's values (their count when frame order was unknown).
    pub effective_n: f64,
    /// `histogram`'s PSI/JS proportions, computed once here rather than at every comparison (`reference`).
    proportions: Vec<f64>,
    /// `stats::psi_logs(proportions)`, likewise.
    ln_proportions: Vec<f64>,
}

impl MetricBaseline {
    fn new(
        layout: BinLayout,
        histogram: Histogram,
        (mean, std): (f64, f64),
        quartiles: [f64; 3],
        missing: u64,
        effective_n: f64,
    ) -> Self {
        let mut proportions = Vec::new();
        histogram.coarse_proportions(&layout, &mut proportions);
        let mut ln_proportions = Vec::new();
        crate::stats::psi_logs(&proportions, &mut ln_proportions);
        MetricBaseline { layout, histogram, mean, std, quartiles, missing, effective_n, proportions, ln_proportions }
    }

    /// This reference as `stats::compare_to` reads it.
    pub fn reference(&self) -> Reference<'_> {
        Reference {
            layout: &self.layout,
            histogram: &self.histogram,
            proportions: &self.proportions,
            ln_proportions: &self.ln_proportions,
            mean: self.mean,
            std: self.std,
        }
    }
}

/// One slice's validated reference.
#[derive(Debug, Clone)]
pub struct SliceBaseline {
    pub frames: u64,
    pub metrics: BTreeMap<String, MetricBaseline>,
    pub categoricals: BTreeMap<String, BTreeMap<String, u64>>,
    /// The label quality metrics over the slice's labelled frames (empty without labels).
    pub label_metrics: BTreeMap<String, MetricBaseline>,
}

/// A validated baseline ready for comparisons.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub provenance: Provenance,
    pub settings: ComparableSettings,
    pub metrics: BTreeMap<String, MetricBaseline>,
    pub categoricals: BTreeMap<String, BTreeMap<String, u64>>,
    pub slices: BTreeMap<String, SliceBaseline>,
    pub context: Option<ContextSpec>,
    /// Typical training frames per reference ("global" or a slice key); validated: base64 text within
    /// `MAX_EXEMPLAR_BASE64`, at most `MAX_EXEMPLARS` in all.
    pub exemplars: BTreeMap<String, Vec<BaselineExemplar>>,
    /// Validated: finite figures in range, counts that add up, bounded slices and classes.
    pub performance: Option<BaselinePerformance>,
    /// The label quality metrics over every labelled frame (empty without labels).
    pub label_metrics: BTreeMap<String, MetricBaseline>,
}

/// Checks the exemplars' shape: a bounded number, each base64 text of bounded length (so it can be embedded in a
/// page or a data URI as is).
fn validate_exemplars(exemplars: &BTreeMap<String, Vec<BaselineExemplar>>) -> Result<(), BaselineError> {
    let total: usize = exemplars.values().map(Vec::len).sum();
    if total > MAX_EXEMPLARS {
        return Err(invalid("exemplars", "count", format!("{total} exemplars, at most {MAX_EXEMPLARS}")));
    }
    for (key, list) in exemplars {
        for (i, e) in list.iter().enumerate() {
            let b = e.jpeg_base64.as_bytes();
            let base64 = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=');
            if b.is_empty() || b.len() > MAX_EXEMPLAR_BASE64 || !b.len().is_multiple_of(4) || !b.iter().all(base64) {
                return Err(invalid(
                    &format!("exemplars.{key}[{i}]"),
                    "jpeg_base64",
                    format!("must be standard base64 of at most {MAX_EXEMPLAR_BASE64} characters"),
                ));
            }
        }
    }
    Ok(())
}

/// Validates a map of label quality metric references (`label_metrics` of the baseline or of a slice).
fn validate_label_metrics(
    prefix: &str,
    metrics: BTreeMap<String, MetricBaselineFile>,
) -> Result<BTreeMap<String, MetricBaseline>, BaselineError> {
    if metrics.len() > MAX_LABEL_METRICS {
        let problem = format!("{} metrics, at most {MAX_LABEL_METRICS}", metrics.len());
        return Err(invalid(prefix, "label_metrics", problem));
    }
    metrics.into_iter().map(|(name, m)| Ok((name.clone(), validate_metric(&format!("{prefix}{name}"), m)?))).collect()
}

/// Checks a recorded performance: the figures a comparison will print and judge must be numbers in [0, 1], and
/// counts that cannot come from one matching (a class with more hits than objects) mean a damaged file.
fn validate_performance_figures(name: &str, p: &Performance) -> Result<(), BaselineError> {
    let unit = |field: &'static str, v: Option<f64>| match v {
        Some(v) if !(v.is_finite() && (0.0..=1.0).contains(&v)) => {
            Err(invalid(name, field, format!("{v} is not a number in [0, 1]")))
        }
        _ => Ok(()),
    };
    unit("map50", p.map50)?;
    unit("map50_95", p.map50_95)?;
    if p.frames == 0 {
        return Err(invalid(name, "frames", "must be at least 1"));
    }
    if p.classes.len() > MAX_PERFORMANCE_CLASSES {
        return Err(invalid(
            name,
            "classes",
            format!("{} classes, at most {MAX_PERFORMANCE_CLASSES}", p.classes.len()),
        ));
    }
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (class, c) in &p.classes {
        let field = format!("{name}.classes.{class}");
        if class.len() > MAX_CLASS_LABEL_BYTES {
            return Err(invalid(&field, "class", format!("longer than {MAX_CLASS_LABEL_BYTES} bytes")));
        }
        unit("ap50", c.ap50).and(unit("ap50_95", c.ap50_95)).map_err(|e| match e {
            BaselineError::Invalid { field: f, problem, .. } => invalid(&field, f, problem),
            other => other,
        })?;
        if c.counts.true_positives.checked_add(c.counts.false_negatives) != Some(c.truths) {
            return Err(invalid(&field, "counts", "true_positives + false_negatives must equal truths"));
        }
        let add = |a: u64, b: u64| a.checked_add(b).ok_or_else(|| invalid(&field, "counts", "overflow"));
        tp = add(tp, c.counts.true_positives)?;
        fp = add(fp, c.counts.false_positives)?;
        fneg = add(fneg, c.counts.false_negatives)?;
    }
    if (tp, fp, fneg) != (p.counts.true_positives, p.counts.false_positives, p.counts.false_negatives) {
        return Err(invalid(name, "counts", "must be the sum of the classes' counts"));
    }
    Ok(())
}

fn validate_performance(p: &BaselinePerformance) -> Result<(), BaselineError> {
    let s = &p.settings;
    if !(s.iou_threshold.is_finite() && s.iou_threshold > 0.0 && s.iou_threshold <= 1.0) {
        return Err(invalid("performance.settings", "iou_threshold", "must be a number in (0, 1]"));
    }
    if !(s.score_threshold.is_finite() && (0.0..=1.0).contains(&s.score_threshold)) {
        return Err(invalid("performance.settings", "score_threshold", "must be a number in [0, 1]"));
    }
    if s.max_detections == 0 {
        return Err(invalid("performance.settings", "max_detections", "must be at least 1"));
    }
    if p.slices.len() > MAX_PERFORMANCE_SLICES {
        let problem = format!("{} slices, at most {MAX_PERFORMANCE_SLICES}", p.slices.len());
        return Err(invalid("performance", "slices", problem));
    }
    validate_performance_figures("performance.global", &p.global)?;
    for (key, perf) in &p.slices {
        validate_performance_figures(&format!("performance.slices.{key}"), perf)?;
    }
    Ok(())
}

fn invalid(metric: &str, field: &'static str, problem: impl Into<String>) -> BaselineError {
    BaselineError::Invalid { metric: metric.to_string(), field, problem: problem.into() }
}

impl Baseline {
    pub fn from_json(text: &str) -> Result<Baseline, BaselineError> {
        // Check the header first so a wrong file gets a precise message rather than a missing-field error.
        let header: serde_json::Value = serde_json::from_str(text)?;
        match header.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => {
                return Err(BaselineError::WrongFormat(other.unwrap_or("<missing>").to_string()));
            }
        }
        match header.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            other => {
                return Err(BaselineError::UnsupportedVersion {
                    found: other.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)),
                });
            }
        }
        let file: BaselineFile = serde_json::from_value(header)?;
        Baseline::from_file(file)
    }

    pub fn from_file(file: BaselineFile) -> Result<Baseline, BaselineError> {
        let mut metrics = BTreeMap::new();
        for (name, m) in file.metrics {
            metrics.insert(name.clone(), validate_metric(&format!("metrics.{name}"), m)?);
        }
        if metrics.is_empty() {
            return Err(BaselineError::Empty);
        }
        let mut slices = BTreeMap::new();
        for (key, sl) in file.slices {
            let mut sm = BTreeMap::new();
            for (name, m) in sl.metrics {
                sm.insert(name.clone(), validate_metric(&format!("slices.{key}.metrics.{name}"), m)?);
            }
            let label_metrics = validate_label_metrics(&format!("slices.{key}.label_metrics."), sl.label_metrics)?;
            let slice = SliceBaseline { frames: sl.frames, metrics: sm, categoricals: sl.categoricals, label_metrics };
            slices.insert(key, slice);
        }
        validate_exemplars(&file.exemplars)?;
        if file.provenance.labels_refused.len() > MAX_LABEL_METRICS {
            let problem = format!("at most {MAX_LABEL_METRICS} reasons");
            return Err(invalid("provenance", "labels_refused", problem));
        }
        if let Some(p) = &file.performance {
            validate_performance(p)?;
        }
        let label_metrics = validate_label_metrics("label_metrics.", file.label_metrics)?;
        Ok(Baseline {
            provenance: file.provenance,
            settings: file.settings,
            metrics,
            categoricals: file.categoricals,
            slices,
            context: file.context,
            exemplars: file.exemplars,
            performance: file.performance,
            label_metrics,
        })
    }

    /// The key of the reference that judges `slice`: its own (`camera_id=cam-1,context=night`), else, for a
    /// context-keyed slice, its context-free one (`camera_id=cam-1`); `None`: the global reference.
    pub fn reference_for<'k>(&self, slice: &'k str) -> Option<&'k str> {
        if self.slices.contains_key(slice) {
            return Some(slice);
        }
        without_context(slice).filter(|parent| self.slices.contains_key(*parent))
    }

    /// The reference for `metric` on `slice` (chosen by `reference_for`): the slice's own when it has one (`true`),
    /// else the global one.
    pub fn metric_for(&self, slice: &str, metric: &str) -> Option<(&MetricBaseline, bool)> {
        if let Some(m) = self.reference_for(slice).and_then(|k| self.slices.get(k)).and_then(|s| s.metrics.get(metric))
        {
            return Some((m, true));
        }
        self.metrics.get(metric).map(|m| (m, false))
    }

    /// The reference counts of a categorical on `slice` (the slice's own when it has them).
    pub fn categorical_for(&self, slice: &str, name: &str) -> Option<&BTreeMap<String, u64>> {
        self.reference_for(slice)
            .and_then(|k| self.slices.get(k))
            .and_then(|s| s.categoricals.get(name))
            .or_else(|| self.categoricals.get(name))
    }

    pub fn to_file(&self) -> BaselineFile {
        fn metrics_file(metrics: &BTreeMap<String, MetricBaseline>) -> BTreeMap<String, MetricBaselineFile> {
            metrics
                .iter()
                .map(|(name, m)| {
                    let h = &m.histogram;
                    let file = MetricBaselineFile {
                        n: h.n,
                        missing: m.missing,
                        mean: m.mean,
                        std: m.std,
                        min: h.min,
                        max: h.max,
                        quartiles: m.quartiles,
                        edges: m.layout.edges().to_vec(),
                        psi_cuts: m.layout.coarse_cuts().to_vec(),
                        counts: h.counts.iter().map(|&c| u64::from(c)).collect(),
                        effective_n: Some(m.effective_n),
                    };
                    (name.clone(), file)
                })
                .collect()
        }
        BaselineFile {
            format: FORMAT.to_string(),
            version: VERSION,
            provenance: self.provenance.clone(),
            settings: self.settings,
            metrics: metrics_file(&self.metrics),
            categoricals: self.categoricals.clone(),
            slices: self
                .slices
                .iter()
                .map(|(k, s)| {
                    let f = SliceBaselineFile {
                        frames: s.frames,
                        metrics: metrics_file(&s.metrics),
                        categoricals: s.categoricals.clone(),
                        label_metrics: metrics_file(&s.label_metrics),
                    };
                    (k.clone(), f)
                })
                .collect(),
            context: self.context.clone(),
            exemplars: self.exemplars.clone(),
            performance: self.performance.clone(),
            label_metrics: metrics_file(&self.label_metrics),
        }
    }

    /// The recorded performance that `slice` is compared with, chosen like `metric_for`: the slice's own (then
    /// `true`), else its context-free slice's, else the global one; with the key of the reference chosen
    /// (`global` for the global one). `None` when the baseline holds no performance.
    pub fn performance_for<'a>(&'a self, slice: &str) -> Option<(&'a Performance, &'a str, bool)> {
        let p = self.performance.as_ref()?;
        let own =
            p.slices.get_key_value(slice).or_else(|| without_context(slice).and_then(|k| p.slices.get_key_value(k)));
        Some(match own {
            Some((key, perf)) => (perf, key.as_str(), true),
            None => (&p.global, GLOBAL_REFERENCE, false),
        })
    }

    /// Typical training frames for `slice`: its own reference's, else its context-free key's, else the global
    /// reference's (empty when the baseline has none).
    pub fn exemplars_for(&self, slice: &str) -> &[BaselineExemplar] {
        self.exemplars
            .get(slice)
            .or_else(|| without_context(slice).and_then(|k| self.exemplars.get(k)))
            .or_else(|| self.exemplars.get("global"))
            .map_or(&[], Vec::as_slice)
    }

    pub fn to_json(&self) -> String {
        // Serialising plain data with finite floats cannot fail.
        serde_json::to_string_pretty(&self.to_file()).unwrap_or_default()
    }

    /// Refuses a comparison with scores computed under other settings.
    pub fn check_settings(&self, current: &ComparableSettings) -> Result<(), BaselineError> {
        if &self.settings == current {
            Ok(())
        } else {
            let show = |s: &ComparableSettings| serde_json::to_string(s).unwrap_or_default();
            Err(BaselineError::SettingsMismatch { baseline: show(&self.settings), current: show(current) })
        }
    }
}

fn validate_metric(name: &str, m: MetricBaselineFile) -> Result<MetricBaseline, BaselineError> {
    if m.n == 0 {
        return Err(invalid(name, "n", "must be at least 1"));
    }
    for (field, v) in [("mean", m.mean), ("std", m.std), ("min", m.min), ("max", m.max)] {
        if !v.is_finite() {
            return Err(invalid(name, field, format!("{v} is not finite")));
        }
    }
    if m.std < 0.0 {
        return Err(invalid(name, "std", "is negative"));
    }
    if m.min > m.max {
        return Err(invalid(name, "min", format!("{} is above max {}", m.min, m.max)));
    }
    if m.edges.first() != Some(&m.min) || m.edges.last() != Some(&m.max) {
        return Err(invalid(name, "edges", "must start at min and end at max"));
    }
    if m.counts.len() != m.edges.len() + 2 {
        return Err(invalid(
            name,
            "counts",
            format!("has {} entries, expected edges + 2 = {}", m.counts.len(), m.edges.len() + 2),
        ));
    }
    let total: u64 = m.counts.iter().try_fold(0u64, |a, &c| a.checked_add(c)).unwrap_or(u64::MAX);
    if total != m.n {
        return Err(invalid(name, "counts", format!("sum to {total}, but n is {}", m.n)));
    }
    if m.counts[0] != 0 || m.counts[m.counts.len() - 1] != 0 {
        return Err(invalid(name, "counts", "tail bins (first and last) must be 0 in a baseline"));
    }
    if !(m.quartiles[0] >= m.min && m.quartiles[2] <= m.max) {
        return Err(invalid(name, "quartiles", "must lie within [min, max]"));
    }
    let effective_n = match m.effective_n {
        None => m.n as f64,
        Some(e) if e.is_finite() && e >= 1.0 && e <= m.n as f64 => e,
        Some(e) => return Err(invalid(name, "effective_n", format!("{e} is not a number in [1, n = {}]", m.n))),
    };
    let layout = BinLayout::new(m.edges, &m.psi_cuts, m.quartiles)
        .map_err(|source| BaselineError::Layout { metric: name.to_string(), source })?;
    let mut histogram = Histogram::new(&layout);
    histogram.counts = m
        .counts
        .iter()
        .map(|&c| u32::try_from(c))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid(name, "counts", "a bin holds more than 4294967295 frames"))?;
    histogram.n = m.n;
    histogram.missing = m.missing;
    histogram.min = m.min;
    histogram.max = m.max;
    Ok(MetricBaseline::new(layout, histogram, (m.mean, m.std), m.quartiles, m.missing, effective_n))
}

/// The name of the fleet-wide reference where a slice key is expected (exemplars, performance).
pub const GLOBAL_REFERENCE: &str = "global";

/// Counts per category, per categorical ("class" -> label -> count).
pub type Categoricals = BTreeMap<String, BTreeMap<String, u64>>;

/// Values of one group of frames (the whole set, or one slice).
#[derive(Debug, Clone)]
struct Accumulator {
    values: Vec<Vec<f64>>,
    missing: Vec<u64>,
    classes: BTreeMap<String, u64>,
    frames: u64,
}

impl Accumulator {
    fn new(n: usize) -> Accumulator {
        Accumulator { values: vec![Vec::new(); n], missing: vec![0; n], classes: BTreeMap::new(), frames: 0 }
    }

    fn add<'a>(&mut self, values: &[Option<f64>], class_labels: impl IntoIterator<Item = &'a str>) {
        self.frames += 1;
        for ((vals, missing), v) in self.values.iter_mut().zip(self.missing.iter_mut()).zip(values) {
            match v.filter(|v| v.is_finite()) {
                Some(v) => vals.push(v),
                None => *missing += 1,
            }
        }
        for c in class_labels {
            *self.classes.entry(c.to_string()).or_default() += 1;
        }
    }

    fn finish(
        self,
        names: &[String],
        prefix: &str,
        fine_bins: u32,
    ) -> Result<(BTreeMap<String, MetricBaseline>, Categoricals), BaselineError> {
        let mut metrics = BTreeMap::new();
        for ((name, mut vals), missing) in names.iter().zip(self.values).zip(self.missing) {
            if vals.is_empty() {
                continue;
            }
            // Values are still in input order here (frames of a video: time order), which is all the lag-1
            // autocorrelation needs; shifting by the mean keeps its sums clear of cancellation.
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let mut lag = LagSeries::default();
            vals.iter().for_each(|v| lag.push(v - mean));
            vals.sort_by(f64::total_cmp);
            let mut metric = metric_from_sorted(&format!("{prefix}{name}"), &vals, missing, fine_bins)?;
            metric.effective_n = lag.effective_n(metric.histogram.n);
            metrics.insert(name.clone(), metric);
        }
        let mut categoricals = BTreeMap::new();
        if !self.classes.is_empty() {
            categoricals.insert(CLASS_CATEGORICAL.to_string(), self.classes);
        }
        Ok((metrics, categoricals))
    }
}

/// Collects scored frames and turns them into a `Baseline`. Holds every value (8 bytes per metric per frame,
/// once more per slice the frame belongs to) because exact quantiles need them; a million frames of 35 metrics is
/// about 280 MB. Frames are taken in the order they are added, which should be time order (frames of a video in
/// file order): the effective sample size of each metric comes from consecutive values.
#[derive(Debug)]
pub struct BaselineBuilder {
    names: Vec<String>,
    global: Accumulator,
    slices: BTreeMap<String, Accumulator>,
    settings: ComparableSettings,
    rejected: BTreeMap<String, u64>,
    fine_bins: u32,
    context: Option<ContextSpec>,
    /// The label quality values of the labelled frames, fleet-wide and per slice (empty without labels).
    labels_global: Accumulator,
    labels_slices: BTreeMap<String, Accumulator>,
    labels_refused: BTreeMap<String, u64>,
    performance_settings: PerformanceSettings,
    /// Each labelled frame that came with predictions, matched: a few bytes per detection, from which every
    /// slice's performance is summed exactly at the end.
    matches: Vec<FrameMatch>,
    /// Per slice key, its frames' indices into `matches`, in input order.
    slice_matches: BTreeMap<String, Vec<usize>>,
}

/// Default number of quantile bins: KS on histograms is then within 0.01 of the exact statistic.
pub const DEFAULT_FINE_BINS: u32 = 100;

/// A slice gets its own reference only with at least this many frames; smaller slices use the global one.
pub const MIN_SLICE_FRAMES: u64 = 30;

const LABEL_METRIC_COUNT: usize = crate::label_quality::LABEL_METRICS.len();

impl BaselineBuilder {
    /// `names` are the metric names in registry order (the order of the value slices passed to `add`).
    /// `fine_bins` must be a positive multiple of 10 (so the deciles are among the edges); it is rounded up.
    pub fn new(names: Vec<String>, settings: ComparableSettings, fine_bins: u32) -> BaselineBuilder {
        let fine_bins = fine_bins.max(10).div_ceil(10) * 10;
        BaselineBuilder {
            global: Accumulator::new(names.len()),
            names,
            slices: BTreeMap::new(),
            settings,
            rejected: BTreeMap::new(),
            fine_bins,
            context: None,
            labels_global: Accumulator::new(LABEL_METRIC_COUNT),
            labels_slices: BTreeMap::new(),
            labels_refused: BTreeMap::new(),
            performance_settings: PerformanceSettings::default(),
            matches: Vec::new(),
            slice_matches: BTreeMap::new(),
        }
    }

    /// How `add_labelled` matches detections to ground truth (default: `PerformanceSettings::default()`).
    pub fn with_performance_settings(mut self, settings: PerformanceSettings) -> BaselineBuilder {
        self.performance_settings = settings;
        self
    }

    /// Adds a scored frame's ground truth (validated by `performance::validate_truth`): its label quality values
    /// go to the fleet-wide and the named slices' label references and, when the model's `detections` are known,
    /// its matching goes into their performance. Call it for the frames given to `add`/`add_to_slices`, in the
    /// same order, with the same slices.
    pub fn add_labelled(&mut self, slices: &[&str], truth: &[TruthBox], detections: Option<&[Detection]>) {
        let values = label_quality(truth).values();
        self.labels_global.add(&values, std::iter::empty());
        for key in slices {
            let acc = self.labels_slices.entry(key.to_string()).or_insert_with(|| Accumulator::new(LABEL_METRIC_COUNT));
            acc.add(&values, std::iter::empty());
        }
        if let Some(detections) = detections {
            let at = self.matches.len();
            self.matches.push(match_frame(&LabelledFrame { detections, truth }, &self.performance_settings));
            for key in slices {
                self.slice_matches.entry(key.to_string()).or_default().push(at);
            }
        }
    }

    /// Counts `count` frames whose ground truth was refused for `reason`.
    pub fn add_refused_labels(&mut self, reason: &str, count: u64) {
        let n = self.labels_refused.entry(reason.to_string()).or_default();
        *n = n.saturating_add(count);
    }

    /// Records that the slice references are keyed by `context`: the caller then adds each frame to its slices'
    /// context keys (`context_key`) as well as to the context-free ones, which serve as fallbacks.
    pub fn with_context(mut self, context: ContextSpec) -> BaselineBuilder {
        self.context = Some(context);
        self
    }

    pub fn add<'a>(&mut self, values: &[Option<f64>], class_labels: impl IntoIterator<Item = &'a str> + Clone) {
        self.add_to_slices(&[], values, class_labels);
    }

    /// Adds a frame to the global reference and to each named slice's own reference.
    pub fn add_to_slices<'a>(
        &mut self,
        slices: &[&str],
        values: &[Option<f64>],
        class_labels: impl IntoIterator<Item = &'a str> + Clone,
    ) {
        self.global.add(values, class_labels.clone());
        for key in slices {
            let n = self.names.len();
            self.slices.entry(key.to_string()).or_insert_with(|| Accumulator::new(n)).add(values, class_labels.clone());
        }
    }

    pub fn add_rejected(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }

    pub fn finish(
        self,
        created_at: String,
        framewatch_version: String,
        source: String,
    ) -> Result<Baseline, BaselineError> {
        let scored = self.global.frames;
        let (metrics, categoricals) = self.global.finish(&self.names, "metrics.", self.fine_bins)?;
        if metrics.is_empty() {
            return Err(BaselineError::Empty);
        }
        let mut slices = BTreeMap::new();
        for (key, acc) in self.slices {
            if acc.frames < MIN_SLICE_FRAMES {
                continue;
            }
            let frames = acc.frames;
            let (metrics, categoricals) = acc.finish(&self.names, &format!("slices.{key}.metrics."), self.fine_bins)?;
            slices.insert(key, SliceBaseline { frames, metrics, categoricals, label_metrics: BTreeMap::new() });
        }
        let label_names: Vec<String> = label_metric_names().map(str::to_string).collect();
        let frames_labelled = (self.labels_global.frames > 0).then_some(self.labels_global.frames);
        let (label_metrics, _) = self.labels_global.finish(&label_names, "label_metrics.", self.fine_bins)?;
        for (key, acc) in self.labels_slices {
            // As for the metric references: a slice's own label reference needs enough labelled frames.
            let Some(slice) = slices.get_mut(&key).filter(|_| acc.frames >= MIN_SLICE_FRAMES) else { continue };
            let prefix = format!("slices.{key}.label_metrics.");
            slice.label_metrics = acc.finish(&label_names, &prefix, self.fine_bins)?.0;
        }
        let performance = (!self.matches.is_empty()).then(|| {
            let matches = &self.matches;
            BaselinePerformance {
                settings: self.performance_settings,
                global: summarize(matches),
                slices: self
                    .slice_matches
                    .iter()
                    .map(|(key, at)| (key.clone(), summarize(at.iter().map(|&i| &matches[i]))))
                    .collect(),
            }
        });
        let frames_rejected = self.rejected.values().sum();
        Ok(Baseline {
            provenance: Provenance {
                frames_scored: scored,
                frames_rejected,
                rejected_by_reason: self.rejected,
                created_at,
                framewatch_version,
                source,
                fine_bins: self.fine_bins,
                frames_labelled,
                labels_refused: self.labels_refused,
            },
            settings: self.settings,
            metrics,
            categoricals,
            slices,
            context: self.context,
            exemplars: BTreeMap::new(),
            performance,
            label_metrics,
        })
    }
}

/// Builds one metric's baseline from its sorted values. Sorted values carry no frame order, so `effective_n` is
/// their count (as if independent); `BaselineBuilder` replaces it with the one of the input order.
pub fn metric_from_sorted(
    name: &str,
    sorted: &[f64],
    missing: u64,
    fine_bins: u32,
) -> Result<MetricBaseline, BaselineError> {
    let fine = fine_bins.max(10);
    let mut edges: Vec<f64> = (0..=fine).map(|i| quantile_sorted(sorted, f64::from(i) / f64::from(fine))).collect();
    edges.dedup();
    let psi_cuts: Vec<f64> =
        (1..10).map(|i| quantile_sorted(sorted, f64::from(i * fine / 10) / f64::from(fine))).collect();
    let quartiles = [0.25, 0.5, 0.75].map(|p| quantile_sorted(sorted, p));
    let layout = BinLayout::new(edges, &psi_cuts, quartiles)
        .map_err(|source| BaselineError::Layout { metric: name.to_string(), source })?;
    let mut histogram = Histogram::new(&layout);
    for &v in sorted {
        histogram.record(&layout, Some(v));
    }
    histogram.missing = missing;
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let std = (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(MetricBaseline::new(layout, histogram, (mean, std), quartiles, missing, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(context: Option<ContextSpec>) -> Baseline {
        let mut b = BaselineBuilder::new(vec!["brightness".into()], ComparableSettings::default(), 100);
        if let Some(c) = context {
            b = b.with_context(c);
        }
        for i in 0..100 {
            let (night, v) = (i % 2 == 0, (i % 10) as f64 / 100.0);
            let value = if night { 0.1 + v } else { 0.5 + v };
            let ctx = context_key("camera_id=cam-1", if night { "night" } else { "day" });
            b.add_to_slices(&["camera_id=cam-1", ctx.as_str()], &[Some(value)], ["car"]);
        }
        b.finish("t".into(), "v".into(), "s".into()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn exemplars_round_trip_fall_back_to_global_and_are_optional_and_checked() {
        let mut b = built(None);
        assert!(!b.to_json().contains("exemplars"), "absent when there are none");
        let e = |p: &str| BaselineExemplar { path: p.into(), jpeg_base64: "/9j/4AAQ".into() };
        b.exemplars.insert("global".into(), vec![e("a.jpg")]);
        b.exemplars.insert("camera_id=cam-1".into(), vec![e("cam-1/b.jpg")]);
        let back = Baseline::from_json(&b.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.exemplars, b.exemplars);
        assert_eq!(back.exemplars_for("camera_id=cam-1")[0].path, "cam-1/b.jpg");
        assert_eq!(back.exemplars_for("camera_id=cam-1,context=night")[0].path, "cam-1/b.jpg");
        assert_eq!(back.exemplars_for("camera_id=cam-9")[0].path, "a.jpg");
        b.exemplars.insert("global".into(), vec![BaselineExemplar { path: "x".into(), jpeg_base64: "<b>\"".into() }]);
        let err = Baseline::from_json(&b.to_json()).map(|_| ()).expect_err("not base64");
        assert!(err.to_string().contains("exemplars.global[0].jpeg_base64"), "{err}");
    }

    #[test]
    fn context_specs_parse_print_and_bucket_the_day() {
        let four = ContextSpec::parse("hour_of_day:4").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(four, ContextSpec::HourOfDay { buckets: 4 });
        assert_eq!(four.to_string(), "hour_of_day:4");
        let at = |h: i64| four.value(1_800_000_000 - 1_800_000_000 % 86_400 + h * 3600 + 59, |_| None);
        let names: Vec<_> = [0, 5, 6, 11, 12, 18, 23].map(at).into_iter().flatten().collect();
        assert_eq!(names, ["00-06", "00-06", "06-12", "06-12", "12-18", "18-24", "18-24"]);
        assert_eq!(ContextSpec::parse("hour_of_day"), Ok(ContextSpec::HourOfDay { buckets: 24 }));
        assert_eq!(ContextSpec::parse("hour_of_day:24").map(|c| c.value(3600 * 7, |_| None)), Ok(Some("07-08".into())));
        for bad in ["hour_of_day:5", "hour_of_day:0", "", "a b", "context", "camera_id"] {
            assert!(ContextSpec::parse(bad).is_err(), "{bad}");
        }
        let label = ContextSpec::parse("illumination").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(label.value(0, |n| (n == "illumination").then_some("ir")), Some("ir".into()));
        assert_eq!(label.value(0, |_| Some("")), None, "an empty label is no context");
    }

    #[test]
    fn context_keys_escape_values_and_strip_back() {
        assert_eq!(context_key("camera_id=cam-1", "night"), "camera_id=cam-1,context=night");
        assert_eq!(context_key("camera_id=a\\,b", "x=y"), "camera_id=a\\,b,context=x\\=y");
        assert_eq!(without_context("camera_id=a\\,b,context=x\\=y"), Some("camera_id=a\\,b"));
        assert_eq!(without_context("camera_id=a\\,context\\=b"), None, "an escaped look-alike is a value");
        assert_eq!(without_context("camera_id=cam-1"), None);
    }

    #[test]
    fn context_references_are_picked_per_value_with_fallbacks_and_round_trip() {
        let b = built(Some(ContextSpec::Label("illumination".into())));
        let night = b.metric_for("camera_id=cam-1,context=night", "brightness").map(|(m, own)| (m.mean, own));
        let day = b.metric_for("camera_id=cam-1,context=day", "brightness").map(|(m, own)| (m.mean, own));
        assert!(matches!(night, Some((m, true)) if (m - 0.14).abs() < 1e-9), "{night:?}");
        assert!(matches!(day, Some((m, true)) if (m - 0.55).abs() < 1e-9), "{day:?}");
        // an unknown context value falls back to the camera's context-free reference, an unknown camera to global
        assert_eq!(b.reference_for("camera_id=cam-1,context=dusk"), Some("camera_id=cam-1"));
        assert_eq!(b.reference_for("camera_id=cam-9,context=day"), None);
        assert!(b.categorical_for("camera_id=cam-1,context=dusk", CLASS_CATEGORICAL).is_some());

        let text = b.to_json();
        assert!(text.contains("\"context\": \"illumination\""), "{text}");
        let back = Baseline::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.context, b.context);
        assert_eq!(back.to_file(), b.to_file());
    }

    #[test]
    fn baselines_without_a_context_still_load_and_bad_contexts_are_named() {
        let b = built(None);
        let text = b.to_json();
        assert!(!text.contains("\"context\""), "no field unless keyed by a context");
        assert_eq!(Baseline::from_json(&text).map(|b| b.context).ok(), Some(None));
        let bad = text.replacen("\"format\"", "\"context\": \"hour_of_day:7\",\n  \"format\"", 1);
        let err = Baseline::from_json(&bad).map(|_| ()).expect_err("hour_of_day:7 is refused").to_string();
        assert!(err.contains("hour_of_day"), "{err}");
    }

    fn truth(x0: f32, y0: f32, x1: f32, y1: f32) -> TruthBox {
        TruthBox { x_min: x0, y_min: y0, x_max: x1, y_max: y1, class_label: "car".into() }
    }

    /// 60 frames on two cameras; every frame but each fifth is labelled with one or two cars; the model finds
    /// every car on cam-1 and only the first on cam-2.
    /// A labelled frame as added: ground truth, detections, slice.
    type Labelled = (Vec<TruthBox>, Vec<Detection>, &'static str);

    fn built_with_labels() -> (Baseline, Vec<Labelled>) {
        let mut b = BaselineBuilder::new(vec!["brightness".into()], ComparableSettings::default(), 100);
        let mut labelled = Vec::new();
        for i in 0..60u16 {
            let cam = if i % 2 == 0 { "camera_id=cam-1" } else { "camera_id=cam-2" };
            b.add_to_slices(&[cam], &[Some(f64::from(i) / 60.0)], ["car"]);
            if i % 5 == 4 {
                continue;
            }
            let x = f32::from(i % 7) / 10.0;
            let mut t = vec![truth(x, 0.1, x + 0.2, 0.3)];
            if i % 3 == 0 {
                t.push(truth(x, 0.5, x + 0.2, 0.9));
            }
            let d: Vec<Detection> = if cam.ends_with("cam-1") {
                t.iter().map(|t| t.detected(0.9)).collect()
            } else {
                vec![t[0].detected(0.6)]
            };
            b.add_labelled(&[cam], &t, Some(&d));
            labelled.push((t, d, cam));
        }
        b.add_refused_labels("invalid_label_box", 1);
        let b = b.finish("t".into(), "v".into(), "s".into()).unwrap_or_else(|e| panic!("{e}"));
        (b, labelled)
    }

    #[test]
    fn labelled_baselines_record_the_same_performance_as_evaluate_and_label_metric_references() {
        let (b, labelled) = built_with_labels();
        let settings = PerformanceSettings::default();
        let frames = |cam: Option<&str>| -> Vec<LabelledFrame<'_>> {
            labelled
                .iter()
                .filter(|(_, _, c)| cam.is_none_or(|cam| cam == *c))
                .map(|(t, d, _)| LabelledFrame { detections: d, truth: t })
                .collect()
        };
        let perf = b.performance.as_ref().expect("performance recorded");
        assert_eq!(perf.global, crate::performance::evaluate(&frames(None), &settings).0);
        assert_eq!(perf.global.frames, 48);
        let cam2 = crate::performance::evaluate(&frames(Some("camera_id=cam-2")), &settings).0;
        assert_eq!(perf.slices["camera_id=cam-2"], cam2);
        assert!(cam2.counts.recall() < perf.slices["camera_id=cam-1"].counts.recall(), "cam-2 misses cars");
        assert_eq!(b.provenance.frames_labelled, Some(48));
        assert_eq!(b.provenance.labels_refused["invalid_label_box"], 1);

        // One or two cars per labelled frame: 16 of the 48 have two (i % 3 == 0 and i % 5 != 4).
        let count = &b.label_metrics["label_object_count"];
        assert_eq!(count.histogram.n, 48);
        assert!((count.mean - (32.0 + 2.0 * 16.0) / 48.0).abs() < 1e-12, "{}", count.mean);
        assert_eq!(b.label_metrics.len(), 4, "{:?}", b.label_metrics.keys());
        assert!(!b.metrics.contains_key("label_object_count"), "label metrics are kept apart");
        // Each camera has 24 labelled frames, under MIN_SLICE_FRAMES: no slice label reference of its own.
        assert!(b.slices["camera_id=cam-1"].label_metrics.is_empty());

        assert_eq!(b.performance_for("camera_id=cam-2"), Some((&cam2, "camera_id=cam-2", true)));
        let fallback = b.performance_for("camera_id=cam-2,context=night").map(|(_, k, own)| (k, own));
        assert_eq!(fallback, Some(("camera_id=cam-2", true)));
        assert_eq!(b.performance_for("predicate=dark").map(|(_, k, own)| (k, own)), Some(("global", false)));

        let back = Baseline::from_json(&b.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_file(), b.to_file());
        assert_eq!(back.performance, b.performance);
    }

    #[test]
    fn baselines_without_labels_write_none_of_the_label_fields() {
        let b = built(None);
        let text = b.to_json();
        for field in ["performance", "label_metrics", "frames_labelled", "labels_refused"] {
            assert!(!text.contains(field), "{field} written without labels");
        }
        assert!(b.performance.is_none() && b.label_metrics.is_empty());
        assert_eq!(b.performance_for("global"), None);
        assert_eq!(Baseline::from_json(&text).map(|b| b.to_json()).ok(), Some(text));
    }

    #[test]
    fn damaged_performance_and_label_references_are_refused_by_field() {
        let (b, _) = built_with_labels();
        let refused = |edit: &dyn Fn(&mut BaselineFile)| {
            let mut file = b.to_file();
            edit(&mut file);
            Baseline::from_file(file).map(|_| ()).expect_err("refused").to_string()
        };
        let err = refused(&|f| {
            if let Some(p) = f.performance.as_mut() {
                p.global.map50 = Some(f64::NAN);
            }
        });
        assert!(err.contains("performance.global.map50"), "{err}");
        let err = refused(&|f| {
            if let Some(s) = f.performance.as_mut().and_then(|p| p.slices.get_mut("camera_id=cam-1")) {
                s.counts.true_positives += 1;
            }
        });
        assert!(err.contains("performance.slices.camera_id=cam-1.counts"), "{err}");
        let err = refused(&|f| {
            if let Some(c) = f.performance.as_mut().and_then(|p| p.global.classes.get_mut("car")) {
                c.ap50 = Some(1.5);
            }
        });
        assert!(err.contains("performance.global.classes.car.ap50"), "{err}");
        let err = refused(&|f| {
            if let Some(p) = f.performance.as_mut() {
                p.settings.iou_threshold = 0.0;
            }
        });
        assert!(err.contains("iou_threshold"), "{err}");
        let err = refused(&|f| {
            if let Some(m) = f.label_metrics.get_mut("label_relative_area") {
                m.mean = f64::INFINITY;
            }
        });
        assert!(err.contains("label_metrics.label_relative_area.mean"), "{err}");
        let err = refused(&|f| {
            let one = f.label_metrics["label_object_count"].clone();
            for i in 0..=MAX_LABEL_METRICS {
                f.label_metrics.insert(format!("m{i}"), one.clone());
            }
        });
        assert!(err.contains("at most 64"), "{err}");
    }
}

//! The training-set baseline: per metric, fixed quantile edges with the baseline's own counts, quartiles and
//! moments; per categorical, counts. Stored as versioned JSON (README.md, "Baseline file"); loading validates every field and
//! names the one that is wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analysis::AnalysisSettings;
use crate::histogram::{BinLayout, Histogram, LayoutError, quantile_sorted};
use crate::prediction::PredictionSettings;
use crate::stats::LagSeries;

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
    /// Per-slice references, keyed like the service's slices ("camera_id=cam-3").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slices: BTreeMap<String, SliceBaselineFile>,
}

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
}

/// One slice's validated reference.
#[derive(Debug, Clone)]
pub struct SliceBaseline {
    pub frames: u64,
    pub metrics: BTreeMap<String, MetricBaseline>,
    pub categoricals: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A validated baseline ready for comparisons.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub provenance: Provenance,
    pub settings: ComparableSettings,
    pub metrics: BTreeMap<String, MetricBaseline>,
    pub categoricals: BTreeMap<String, BTreeMap<String, u64>>,
    pub slices: BTreeMap<String, SliceBaseline>,
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
            slices.insert(key, SliceBaseline { frames: sl.frames, metrics: sm, categoricals: sl.categoricals });
        }
        Ok(Baseline {
            provenance: file.provenance,
            settings: file.settings,
            metrics,
            categoricals: file.categoricals,
            slices,
        })
    }

    /// The reference for `metric` on `slice`: the slice's own when it has one (`true`), else the global one.
    pub fn metric_for(&self, slice: &str, metric: &str) -> Option<(&MetricBaseline, bool)> {
        if let Some(m) = self.slices.get(slice).and_then(|s| s.metrics.get(metric)) {
            return Some((m, true));
        }
        self.metrics.get(metric).map(|m| (m, false))
    }

    /// The reference counts of a categorical on `slice` (the slice's own when it has them).
    pub fn categorical_for(&self, slice: &str, name: &str) -> Option<&BTreeMap<String, u64>> {
        self.slices.get(slice).and_then(|s| s.categoricals.get(name)).or_else(|| self.categoricals.get(name))
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
                    };
                    (k.clone(), f)
                })
                .collect(),
        }
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
    Ok(MetricBaseline {
        layout,
        histogram,
        mean: m.mean,
        std: m.std,
        quartiles: m.quartiles,
        missing: m.missing,
        effective_n,
    })
}

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
}

/// Default number of quantile bins: KS on histograms is then within 0.01 of the exact statistic.
pub const DEFAULT_FINE_BINS: u32 = 100;

/// A slice gets its own reference only with at least this many frames; smaller slices use the global one.
pub const MIN_SLICE_FRAMES: u64 = 30;

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
        }
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
            slices.insert(key, SliceBaseline { frames, metrics, categoricals });
        }
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
            },
            settings: self.settings,
            metrics,
            categoricals,
            slices,
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
    Ok(MetricBaseline { layout, histogram, mean, std, quartiles, missing, effective_n: n })
}

//! A drift report: histograms of a set of frames on the baseline's bins, compared metric by metric, with a verdict
//! on effect sizes (not p-values alone: on large windows every trivial shift is "significant") and user rules
//! (`--fail-on`) for data gates and model test cases.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::baseline::{Baseline, BaselineError, CLASS_CATEGORICAL, ComparableSettings};
use crate::histogram::Histogram;
use crate::stats::{ChiSquare, EffectiveN, LagSeries, MetricDrift, chi_square_homogeneity, compare_to};

/// When a metric counts as drifted by default: a large effect (PSI or KS statistic) that is also clear of sampling
/// noise (KS p-value, Bonferroni-sized for ~35 metrics), on at least `min_frames` values. Effect sizes decide,
/// because on large windows every trivial shift is "significant"; the p-value only guards small samples, where PSI
/// is biased upwards (about (bins - 1) * (1/n + 1/m) with no drift at all). The p-value counts effective sizes
/// (`MetricDrift::n_effective`: consecutive frames of a camera are nearly copies), `min_frames` raw frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftThresholds {
    /// Fewer values than this: no verdict ("insufficient data"), whatever the statistics say.
    pub min_frames: u64,
    /// PSI at or above this is drift (0.25 = "major shift" in the credit-scoring reading).
    pub psi: f64,
    /// KS statistic at or above this is drift (a 20-point gap between the two CDFs somewhere).
    pub ks_statistic: f64,
    /// Cramer's V of the class distribution at or above this is drift.
    pub cramers_v: f64,
    /// The KS (or, for classes, chi-square) p-value must be at or below this too.
    pub p_value: f64,
}

impl Default for DriftThresholds {
    fn default() -> Self {
        DriftThresholds { min_frames: 100, psi: 0.25, ks_statistic: 0.2, cramers_v: 0.1, p_value: 1e-3 }
    }
}

impl DriftThresholds {
    /// The default verdict for one metric; `None` below `min_frames` values.
    pub fn verdict(&self, s: &MetricDrift) -> Option<bool> {
        (s.n >= self.min_frames)
            .then_some((s.psi >= self.psi || s.ks_statistic >= self.ks_statistic) && s.ks_p_value <= self.p_value)
    }

    /// Whether a metric's change is clear of sampling noise, for the cause diagnosis: the default verdict, or a
    /// mean shift with a p-value at or below `p_value` (on effective sample sizes); never below `min_frames`.
    pub fn significant_shift(&self, s: &MetricDrift) -> bool {
        s.n >= self.min_frames && (self.verdict(s) == Some(true) || s.mean_p_value <= self.p_value)
    }

    /// The default verdict for a categorical of `n` observations.
    pub fn categorical_verdict(&self, n: u64, chi: &ChiSquare) -> Option<bool> {
        (n >= self.min_frames).then_some(chi.cramers_v >= self.cramers_v && chi.p_value <= self.p_value)
    }
}

/// Histograms of the current frames, one per baseline metric, plus class counts. Frames are taken in the order
/// they are added (time order, for a video): their lag-1 autocorrelation gives the effective sample size that the
/// KS p-value counts.
#[derive(Debug)]
pub struct DriftAccumulator<'b> {
    baseline: &'b Baseline,
    /// Registry index -> (metric name, histogram, lag moments) for metrics the baseline knows.
    slots: Vec<Option<(&'b str, Histogram, LagSeries)>>,
    classes: BTreeMap<String, u64>,
    scored: u64,
    rejected: BTreeMap<String, u64>,
}

impl<'b> DriftAccumulator<'b> {
    /// `names` are the registry's metric names in order; `settings` are those the frames are scored with.
    pub fn new<'n>(
        baseline: &'b Baseline,
        names: impl IntoIterator<Item = &'n str>,
        settings: &ComparableSettings,
    ) -> Result<DriftAccumulator<'b>, BaselineError> {
        baseline.check_settings(settings)?;
        let slots = names
            .into_iter()
            .map(|name| {
                let (key, m) = baseline.metrics.get_key_value(name)?;
                Some((key.as_str(), Histogram::new(&m.layout), LagSeries::default()))
            })
            .collect();
        Ok(DriftAccumulator { baseline, slots, classes: BTreeMap::new(), scored: 0, rejected: BTreeMap::new() })
    }

    pub fn add<'a>(&mut self, values: &[Option<f64>], class_labels: impl IntoIterator<Item = &'a str>) {
        self.scored += 1;
        for (slot, v) in self.slots.iter_mut().zip(values) {
            if let Some((name, h, lag)) = slot {
                let m = &self.baseline.metrics[*name];
                h.record(&m.layout, *v);
                // Shifted by the baseline mean (a fixed reference) to keep the lag sums precise.
                if let Some(v) = v {
                    lag.push(v - m.mean);
                }
            }
        }
        for c in class_labels {
            *self.classes.entry(c.to_string()).or_default() += 1;
        }
    }

    pub fn add_rejected(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }

    pub fn report(&self, thresholds: &DriftThresholds) -> DriftReport {
        let mut scratch = Vec::new();
        let mut metrics = BTreeMap::new();
        for (name, h, lag) in self.slots.iter().flatten() {
            let m = &self.baseline.metrics[*name];
            let effective = EffectiveN { reference: m.effective_n, current: lag.effective_n(h.n) };
            let stats = compare_to(&m.reference(), h, effective, &mut scratch);
            let drift = thresholds.verdict(&stats);
            metrics.insert(name.to_string(), MetricReport { stats, drift });
        }
        let mut categoricals = BTreeMap::new();
        if let Some(base) = self.baseline.categoricals.get(CLASS_CATEGORICAL) {
            let keys: std::collections::BTreeSet<&String> = base.keys().chain(self.classes.keys()).collect();
            let pairs: Vec<(u64, u64)> = keys
                .iter()
                .map(|k| (base.get(*k).copied().unwrap_or(0), self.classes.get(*k).copied().unwrap_or(0)))
                .collect();
            let n: u64 = self.classes.values().sum();
            if let Some(chi) = chi_square_homogeneity(pairs) {
                let drift = thresholds.categorical_verdict(n, &chi);
                categoricals.insert(
                    CLASS_CATEGORICAL.to_string(),
                    CategoricalReport { n, counts: self.classes.clone(), chi_square: chi, drift },
                );
            }
        }
        let drifted =
            metrics.values().any(|m| m.drift == Some(true)) || categoricals.values().any(|c| c.drift == Some(true));
        DriftReport {
            frames: FrameCounts {
                scored: self.scored,
                rejected: self.rejected.values().sum(),
                rejected_by_reason: self.rejected.clone(),
            },
            metrics,
            categoricals,
            verdict: if drifted { Verdict::Drift } else { Verdict::Ok },
            thresholds: *thresholds,
            rule_failures: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameCounts {
    pub scored: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricReport {
    #[serde(flatten)]
    pub stats: MetricDrift,
    /// `None`: fewer values than `min_frames`, no verdict.
    pub drift: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoricalReport {
    pub n: u64,
    pub counts: BTreeMap<String, u64>,
    pub chi_square: ChiSquare,
    pub drift: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Drift,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub frames: FrameCounts,
    pub metrics: BTreeMap<String, MetricReport>,
    pub categoricals: BTreeMap<String, CategoricalReport>,
    pub verdict: Verdict,
    pub thresholds: DriftThresholds,
    /// Rules given with `--fail-on` that the report breaks.
    pub rule_failures: Vec<RuleFailure>,
}

/// A statistic a rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    Psi,
    KsStatistic,
    KsPValue,
    JsDistance,
    WassersteinNorm,
    OutliersModerate,
    OutliersSevere,
    OutOfRange,
    Mean,
    MeanDelta,
    CramersV,
    ChiSquarePValue,
}

const STATISTICS: &[(&str, Statistic)] = &[
    ("psi", Statistic::Psi),
    ("ks_statistic", Statistic::KsStatistic),
    ("ks_p_value", Statistic::KsPValue),
    ("js_distance", Statistic::JsDistance),
    ("wasserstein_norm", Statistic::WassersteinNorm),
    ("outliers_moderate", Statistic::OutliersModerate),
    ("outliers_severe", Statistic::OutliersSevere),
    ("out_of_range", Statistic::OutOfRange),
    ("mean", Statistic::Mean),
    ("mean_delta", Statistic::MeanDelta),
    ("cramers_v", Statistic::CramersV),
    ("chi_square_p_value", Statistic::ChiSquarePValue),
];

impl Statistic {
    pub fn name(self) -> &'static str {
        STATISTICS.iter().find(|(_, s)| *s == self).map_or("?", |(n, _)| n)
    }

    fn of_metric(self, m: &MetricDrift) -> Option<f64> {
        match self {
            Statistic::Psi => Some(m.psi),
            Statistic::KsStatistic => Some(m.ks_statistic),
            Statistic::KsPValue => Some(m.ks_p_value),
            Statistic::JsDistance => Some(m.js_distance),
            Statistic::WassersteinNorm => m.wasserstein_norm,
            Statistic::OutliersModerate => Some(m.outliers_moderate),
            Statistic::OutliersSevere => Some(m.outliers_severe),
            Statistic::OutOfRange => Some(m.out_of_range),
            Statistic::Mean => m.mean,
            Statistic::MeanDelta => m.mean.map(|x| x - m.baseline_mean),
            Statistic::CramersV | Statistic::ChiSquarePValue => None,
        }
    }

    fn of_categorical(self, c: &ChiSquare) -> Option<f64> {
        match self {
            Statistic::CramersV => Some(c.cramers_v),
            Statistic::ChiSquarePValue => Some(c.p_value),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Comparison {
    /// Every operator, longest first, so `<=` is found before `<` when splitting an expression.
    pub const ALL: [(&'static str, Comparison); 4] =
        [("<=", Comparison::Le), (">=", Comparison::Ge), ("<", Comparison::Lt), (">", Comparison::Gt)];

    /// `>`, `>=`, `<` or `<=`.
    pub fn from_symbol(s: &str) -> Option<Comparison> {
        Comparison::ALL.iter().find(|(sym, _)| *sym == s.trim()).map(|(_, c)| *c)
    }

    /// Splits `lhs OP rhs` at its first operator: (lhs, operator, rhs).
    pub fn split(text: &str) -> Option<(&str, Comparison, &str)> {
        Comparison::ALL
            .iter()
            .filter_map(|(sym, c)| text.find(sym).map(|p| (p, sym.len(), *c)))
            .min_by_key(|(p, len, _)| (*p, std::cmp::Reverse(*len)))
            .map(|(p, len, c)| (&text[..p], c, &text[p + len..]))
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Gt => a > b,
            Comparison::Ge => a >= b,
            Comparison::Lt => a < b,
            Comparison::Le => a <= b,
        }
    }
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
        }
    }
}

/// `[metric.]statistic OP threshold`, e.g. `psi>0.25`, `brightness.ks_statistic>=0.1`,
/// `confidence_mean.mean<0.7` (a model test case), `class.cramers_v>0.1`. Without a metric it applies to all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailRule {
    pub metric: Option<String>,
    pub statistic: Statistic,
    pub comparison: Comparison,
    pub threshold: f64,
}

impl fmt::Display for FailRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.metric {
            write!(f, "{m}.")?;
        }
        write!(f, "{}{}{}", self.statistic.name(), self.comparison.symbol(), self.threshold)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleParseError {
    #[error("rule {0:?} has no comparison: write e.g. psi>0.25 (operators: > >= < <=)")]
    NoOperator(String),
    #[error("rule {rule:?}: unknown statistic {stat:?}; known: {known}")]
    UnknownStatistic { rule: String, stat: String, known: String },
    #[error("rule {rule:?}: threshold {value:?} is not a finite number")]
    BadThreshold { rule: String, value: String },
}

impl FromStr for FailRule {
    type Err = RuleParseError;
    fn from_str(s: &str) -> Result<FailRule, RuleParseError> {
        let rule = s.trim();
        let (lhs, comparison, rhs) =
            Comparison::split(rule).ok_or_else(|| RuleParseError::NoOperator(rule.to_string()))?;
        let (lhs, rhs) = (lhs.trim(), rhs.trim());
        let threshold: f64 = rhs
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| RuleParseError::BadThreshold { rule: rule.to_string(), value: rhs.to_string() })?;
        let (metric, stat) = match lhs.rsplit_once('.') {
            Some((m, st)) => (Some(m.trim().to_string()), st.trim()),
            None => (None, lhs),
        };
        let statistic = STATISTICS.iter().find(|(n, _)| *n == stat).map(|(_, s)| *s).ok_or_else(|| {
            RuleParseError::UnknownStatistic {
                rule: rule.to_string(),
                stat: stat.to_string(),
                known: STATISTICS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            }
        })?;
        Ok(FailRule { metric, statistic, comparison, threshold })
    }
}

/// Parses a comma-separated rule list.
pub fn parse_rules(s: &str) -> Result<Vec<FailRule>, RuleParseError> {
    s.split(',').filter(|r| !r.trim().is_empty()).map(str::parse).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleFailure {
    pub rule: String,
    pub metric: String,
    pub value: f64,
}

/// A rule naming a metric that the report does not have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rule {rule}: no metric or categorical named {metric:?} in this report")]
pub struct UnknownRuleMetric {
    pub rule: String,
    pub metric: String,
}

impl DriftReport {
    /// Evaluates rules; failures are stored in `rule_failures` and returned as a count. Metrics with fewer values
    /// than `min_frames` are not judged (as for the verdict), so a rule never fails on a handful of frames.
    pub fn apply_rules(&mut self, rules: &[FailRule]) -> Result<usize, UnknownRuleMetric> {
        let min = self.thresholds.min_frames;
        let mut failures = Vec::new();
        for rule in rules {
            if let Some(name) = &rule.metric
                && !self.metrics.contains_key(name)
                && !self.categoricals.contains_key(name)
            {
                return Err(UnknownRuleMetric { rule: rule.to_string(), metric: name.clone() });
            }
            let wanted = |name: &str| rule.metric.as_deref().is_none_or(|m| m == name);
            for (name, m) in self.metrics.iter().filter(|(n, _)| wanted(n)) {
                if m.stats.n < min {
                    continue;
                }
                if let Some(v) = rule.statistic.of_metric(&m.stats)
                    && rule.comparison.holds(v, rule.threshold)
                {
                    failures.push(RuleFailure { rule: rule.to_string(), metric: name.clone(), value: v });
                }
            }
            for (name, c) in self.categoricals.iter().filter(|(n, _)| wanted(n)) {
                if c.n < min {
                    continue;
                }
                if let Some(v) = rule.statistic.of_categorical(&c.chi_square)
                    && rule.comparison.holds(v, rule.threshold)
                {
                    failures.push(RuleFailure { rule: rule.to_string(), metric: name.clone(), value: v });
                }
            }
        }
        let count = failures.len();
        self.rule_failures = failures;
        Ok(count)
    }
}

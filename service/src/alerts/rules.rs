//! Rule configuration made executable: a rule's statistic, comparison and slice selector, validated at start-up
//! with errors that name the key, and the default rules (`defaults.toml`).

use anyhow::{Context, bail};
use framewatch_metrics::cause::Cause;
use framewatch_metrics::drift::Comparison;
use framewatch_metrics::performance::PerformanceStatistic;
use serde::Deserialize;

use crate::cameras::CameraState;
use crate::config::{AlertsConfig, RuleConfig};
use crate::evaluate::SliceEval;
use crate::slice::SliceSelector;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    Cause,
    OutOfRange,
    Psi,
    Ks,
    KsP,
    Js,
    Wasserstein,
    Mean,
    MeanDelta,
    OutliersModerate,
    OutliersSevere,
    Drift,
    CramersV,
    Frames,
    SinceLastFrame,
    FrozenFrames,
    MovedFrames,
    FrameChange,
    /// Model performance against ground truth (labelled frames in the performance window).
    Performance(PerformanceStatistic),
}

impl Stat {
    fn parse(s: &str) -> Option<Stat> {
        Some(match s {
            "cause" => Stat::Cause,
            "out_of_range" => Stat::OutOfRange,
            "psi" => Stat::Psi,
            "ks_statistic" => Stat::Ks,
            "ks_p_value" => Stat::KsP,
            "js_distance" => Stat::Js,
            "wasserstein_norm" => Stat::Wasserstein,
            "mean" => Stat::Mean,
            "mean_delta" => Stat::MeanDelta,
            "outliers_moderate" => Stat::OutliersModerate,
            "outliers_severe" => Stat::OutliersSevere,
            "drift" => Stat::Drift,
            "cramers_v" => Stat::CramersV,
            "frames" => Stat::Frames,
            "seconds_since_last_frame" => Stat::SinceLastFrame,
            "frozen_frames" => Stat::FrozenFrames,
            "moved_frames" => Stat::MovedFrames,
            "frame_change" => Stat::FrameChange,
            other => Stat::Performance(PerformanceStatistic::from_name(other)?),
        })
    }

    fn needs_metric(self) -> bool {
        matches!(
            self,
            Stat::Psi
                | Stat::Ks
                | Stat::KsP
                | Stat::Js
                | Stat::Wasserstein
                | Stat::Mean
                | Stat::MeanDelta
                | Stat::OutliersModerate
                | Stat::OutliersSevere
                | Stat::OutOfRange
                | Stat::Drift
        )
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub config: RuleConfig,
    pub(crate) stat: Stat,
    pub(crate) op: Comparison,
    min_frames: u64,
    selector: SliceSelector,
}

impl Rule {
    pub fn new(c: RuleConfig, default_min_frames: u64, metric_exists: &dyn Fn(&str) -> bool) -> anyhow::Result<Rule> {
        let at = format!("alerts.rules[{}]", c.name);
        if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            bail!("alerts.rules: name {:?} must be non-empty ASCII letters, digits or _", c.name);
        }
        let stat = Stat::parse(&c.statistic)
            .with_context(|| format!("{at}.statistic: unknown statistic {:?}", c.statistic))?;
        let op =
            Comparison::from_symbol(&c.op).with_context(|| format!("{at}.op: {:?} is not one of > >= < <=", c.op))?;
        if stat.needs_metric() {
            match &c.metric {
                None => bail!("{at}.metric: statistic {:?} needs a metric", c.statistic),
                Some(m) if !metric_exists(m) => bail!("{at}.metric: {m:?} is not a metric of the baseline"),
                Some(_) => {}
            }
        }
        if !c.threshold.is_finite() || c.resolve_threshold.is_some_and(|t| !t.is_finite()) {
            bail!("{at}.threshold: must be a finite number");
        }
        if c.class.is_some() && !matches!(stat, Stat::Performance(_)) {
            bail!("{at}.class: only performance statistics (map50, map50_95, precision, recall, f1) take a class");
        }
        if stat == Stat::Cause && c.cause.is_none() {
            bail!("{at}.cause: statistic \"cause\" needs the cause to watch (e.g. cause = \"darker\")");
        }
        let selector = SliceSelector::parse(&c.slice).with_context(|| {
            format!("{at}.slice: {:?} is not a slice key or selector (*, camera_id=*, predicate=*, PREFIX*)", c.slice)
        })?;
        let min_frames = c.min_frames.unwrap_or(default_min_frames);
        Ok(Rule { config: c, stat, op, min_frames, selector })
    }

    pub(crate) fn matches(&self, slice: &crate::slice::SliceKey) -> bool {
        self.selector.matches(slice)
    }

    /// The rule's value on a slice; `None` when it cannot be judged (no such metric, too few values).
    pub(crate) fn value(&self, s: &SliceEval, camera: Option<&CameraState>, now_secs: i64) -> Option<f64> {
        let metric = || {
            let name = self.config.metric.as_deref()?;
            s.metrics.iter().find(|m| &*m.name == name).filter(|m| m.stats.n >= self.min_frames)
        };
        match self.stat {
            Stat::Cause => Some(if s.causes.iter().any(|f| Some(f.cause) == self.config.cause) { 1.0 } else { 0.0 }),
            Stat::OutOfRange => metric().map(|m| m.stats.out_of_range),
            Stat::Psi => metric().map(|m| m.stats.psi),
            Stat::Ks => metric().map(|m| m.stats.ks_statistic),
            Stat::KsP => metric().map(|m| m.stats.ks_p_value),
            Stat::Js => metric().map(|m| m.stats.js_distance),
            Stat::Wasserstein => metric().and_then(|m| m.stats.wasserstein_norm),
            Stat::Mean => metric().and_then(|m| m.stats.mean),
            Stat::MeanDelta => metric().and_then(|m| m.stats.mean.map(|x| x - m.stats.baseline_mean)),
            Stat::OutliersModerate => metric().map(|m| m.stats.outliers_moderate),
            Stat::OutliersSevere => metric().map(|m| m.stats.outliers_severe),
            Stat::Drift => metric().and_then(|m| m.drift).map(|d| if d { 1.0 } else { 0.0 }),
            Stat::CramersV => {
                let c = s.classes.as_ref()?;
                (c.counts.values().sum::<u64>() >= self.min_frames).then_some(c.chi_square.cramers_v)
            }
            Stat::Frames => Some(s.frames as f64),
            Stat::SinceLastFrame => Some((now_secs - s.last_seen_secs).max(0) as f64),
            Stat::FrozenFrames => camera.map(|c| c.frozen_frames as f64),
            Stat::MovedFrames => camera.map(|c| c.moved_frames as f64),
            Stat::FrameChange => camera.map(|c| c.frame_change),
            Stat::Performance(p) => {
                // A rule's own min_frames counts labelled frames; otherwise labels.min_frames decided `enough`.
                let perf = s.performance.as_ref().filter(|perf| match self.config.min_frames {
                    Some(n) => perf.performance.frames >= n,
                    None => perf.enough,
                })?;
                p.value(&perf.performance, self.config.class.as_deref())
            }
        }
    }

    /// The `cause` label of this rule's alerts.
    pub fn cause(&self) -> Cause {
        self.config.cause.unwrap_or(if self.config.test { Cause::ModelTest } else { Cause::Distribution })
    }

    /// The supporting numbers of a cause rule on a slice (the diagnosis' summary), or of a performance rule (the
    /// figure, its class and the labelled frames it stands on).
    pub(crate) fn evidence(&self, s: &SliceEval) -> Option<String> {
        if let Stat::Performance(p) = self.stat {
            let sp = s.performance.as_ref()?;
            let perf = &sp.performance;
            let class = self.config.class.as_deref();
            let value = p.value(perf, class)?;
            let of = class.map_or(String::new(), |c| format!(" of class {c}"));
            let counts = match class {
                Some(c) => perf.classes.get(c).map_or_else(Default::default, |c| c.counts),
                None => perf.counts,
            };
            let baseline = sp
                .baseline
                .as_deref()
                .and_then(|b| p.value(b, class))
                .map_or(String::new(), |b| format!(", baseline {b:.3}"));
            return Some(format!(
                "{}{of} {value:.3} over {} labelled frames (true positives {}, false positives {}, missed {}{baseline})",
                p.name(),
                perf.frames,
                counts.true_positives,
                counts.false_positives,
                counts.false_negatives
            ));
        }
        if self.stat != Stat::Cause {
            return None;
        }
        s.causes.iter().find(|f| Some(f.cause) == self.config.cause).map(|f| f.summary.clone())
    }

    /// Whether the alert condition holds for `value` against `threshold`.
    pub(crate) fn alerting(&self, value: f64, threshold: f64) -> bool {
        let holds = self.op.holds(value, threshold);
        if self.config.test { !holds } else { holds }
    }
}

/// framewatch's default rules, from `defaults.toml` (data, like any configured rule).
pub fn default_rules() -> Vec<RuleConfig> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Defaults {
        rules: Vec<RuleConfig>,
    }
    let d: Defaults = toml::from_str(include_str!("defaults.toml")).expect("defaults.toml is valid (tested)");
    d.rules
}

/// Builds the rule set: the defaults (when enabled) plus the configured rules; names must be unique.
pub fn build_rules(
    cfg: &AlertsConfig,
    min_frames: u64,
    metric_exists: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<Rule>> {
    let mut configs = if cfg.default_rules { default_rules() } else { Vec::new() };
    for r in &cfg.rules {
        if let Some(i) = configs.iter().position(|d| d.name == r.name) {
            configs.remove(i); // a configured rule replaces the default of the same name
        }
        configs.push(r.clone());
    }
    let mut names = std::collections::HashSet::new();
    let mut rules = Vec::new();
    for c in configs {
        if !names.insert(c.name.clone()) {
            bail!("alerts.rules: the name {:?} is used twice", c.name);
        }
        // Default rules about metrics the baseline lacks (e.g. no predictions in training data) are skipped.
        let needs_missing_metric = c.metric.as_deref().is_some_and(|m| !metric_exists(m));
        if needs_missing_metric && !cfg.rules.iter().any(|r| r.name == c.name) {
            continue;
        }
        rules.push(Rule::new(c, min_frames, metric_exists)?);
    }
    Ok(rules)
}

#[cfg(test)]
mod example_tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_shipped_example_config_loads_and_its_rules_are_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../framewatch.example.toml");
        let c = Config::load(Some(&path), Vec::new()).expect("example config");
        assert_eq!(c.slices.predicates.len(), 2);
        assert_eq!(c.alerts.rules.len(), 2);
        let rules = build_rules(&c.alerts, c.evaluation.thresholds.min_frames, &|_| true).expect("rules");
        assert!(rules.iter().any(|r| r.config.name == "DarkFramesConfidence" && r.config.test));
        assert!(rules.len() >= 9, "defaults plus two");
    }

    /// Every runbook the default rules link (`README.md#cause-...`) is a heading of the README.
    #[test]
    fn default_runbooks_exist_in_the_readme() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
        let anchors: Vec<String> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("#### "))
            .map(|h| h.to_lowercase().replace(": ", "-").replace(' ', "-"))
            .collect();
        for r in default_rules() {
            let link = &r.annotations["runbook"];
            let anchor = link.strip_prefix("README.md#").expect("README link");
            assert!(anchors.iter().any(|a| a == anchor), "{}: no README heading for {link}", r.name);
        }
    }
}

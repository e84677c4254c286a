//! Alert rules over the latest evaluation: per (rule, slice) a state machine inactive -> pending -> firing ->
//! resolved, with a `for` duration, a minimum number of values, and hysteresis (a firing alert resolves only when
//! the value is back past `resolve_threshold`). Model test cases are rules whose expectation must hold. Changes go
//! to the sinks: the log, the gRPC watch stream, and an Alertmanager webhook (see `webhook.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, bail};
use framewatch_metrics::drift::Comparison;
use serde::Deserialize;

use crate::cameras::CameraState;
use crate::evaluate::{Evaluation, SliceEval};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Include framewatch's default rules (brightness drift, blur drift, confidence degradation, frozen camera,
    /// moved camera, class-distribution shift, ingest stalled) besides `rules`.
    pub default_rules: bool,
    pub rules: Vec<RuleConfig>,
    /// Alertmanager base URL (http://host:port); alerts are POSTed to {url}/api/v2/alerts. Empty: no webhook.
    pub alertmanager_url: String,
    /// Pending webhook deliveries; when full, the oldest new batch is dropped and counted.
    pub webhook_queue: usize,
    /// Firing alerts are re-sent this often so Alertmanager keeps them active.
    pub resend_secs: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            default_rules: true,
            rules: Vec::new(),
            alertmanager_url: String::new(),
            webhook_queue: 256,
            resend_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Metric the statistic is about (metric statistics only).
    #[serde(default)]
    pub metric: Option<String>,
    /// Slice selector: "*" (every slice but predicate slices), an exact key ("predicate=dark"), or a prefix
    /// ending in '*' ("camera_id=*", "predicate=*").
    #[serde(default = "all_slices")]
    pub slice: String,
    /// psi, ks_statistic, ks_p_value, js_distance, wasserstein_norm, mean, mean_delta, outliers_moderate,
    /// outliers_severe, drift (1/0), cramers_v (class distribution), frames (in window),
    /// seconds_since_last_frame, frozen_frames, moved_frames, frame_change (camera slices).
    pub statistic: String,
    /// ">", ">=", "<" or "<=".
    pub op: String,
    pub threshold: f64,
    /// A firing alert resolves only once the value no longer passes this (default: `threshold`).
    #[serde(default)]
    pub resolve_threshold: Option<f64>,
    /// The condition must hold this long before the alert fires.
    #[serde(default)]
    pub for_secs: u64,
    /// Metric statistics are not judged on fewer values than this (default: evaluation.min_frames).
    #[serde(default)]
    pub min_frames: Option<u64>,
    #[serde(default = "warning")]
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// A model test case: `statistic op threshold` is what SHOULD hold ("confidence_mean mean >= 0.7 in slice
    /// dark"); the alert fires while it does not, and pass/fail is exported.
    #[serde(default)]
    pub test: bool,
}

fn all_slices() -> String {
    "*".into()
}

fn warning() -> String {
    "warning".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
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
}

impl Stat {
    fn parse(s: &str) -> Option<Stat> {
        Some(match s {
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
            _ => return None,
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
                | Stat::Drift
        )
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub config: RuleConfig,
    stat: Stat,
    op: Comparison,
    min_frames: u64,
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
        let min_frames = c.min_frames.unwrap_or(default_min_frames);
        Ok(Rule { config: c, stat, op, min_frames })
    }

    /// "*" matches every slice except metric-predicate ones: a predicate slice ("dark frames") differs from the
    /// baseline by definition, so drift rules would always fire there; name it explicitly to watch it.
    fn matches(&self, slice: &str) -> bool {
        let sel = self.config.slice.as_str();
        (sel == "*" && !slice.starts_with("predicate="))
            || sel == slice
            || (sel != "*" && sel.strip_suffix('*').is_some_and(|p| slice.starts_with(p)))
    }

    /// The rule's value on a slice; `None` when it cannot be judged (no such metric, too few values).
    fn value(&self, s: &SliceEval, camera: Option<&CameraState>, now_secs: i64) -> Option<f64> {
        let metric = || {
            let name = self.config.metric.as_deref()?;
            s.metrics.iter().find(|m| &*m.name == name).filter(|m| m.stats.n >= self.min_frames)
        };
        match self.stat {
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
        }
    }

    /// Whether the alert condition holds for `value` against `threshold`.
    fn alerting(&self, value: f64, threshold: f64) -> bool {
        let holds = self.op.holds(value, threshold);
        if self.config.test { !holds } else { holds }
    }
}

/// framewatch's default rules. The drift rules fire on the default verdict (METRICS.md: PSI or KS effect size with
/// a p-value guard and a minimum sample), which stays quiet on small noisy windows where a bare PSI threshold would
/// not; `for` durations keep a single evaluation from paging anyone.
pub fn default_rules() -> Vec<RuleConfig> {
    let rule = |name: &str,
                metric: Option<&str>,
                slice: &str,
                stat: &str,
                op: &str,
                thr: f64,
                resolve: f64,
                for_secs: u64,
                sev: &str,
                summary: &str| {
        RuleConfig {
            name: name.into(),
            metric: metric.map(String::from),
            slice: slice.into(),
            statistic: stat.into(),
            op: op.into(),
            threshold: thr,
            resolve_threshold: Some(resolve),
            for_secs,
            min_frames: None,
            severity: sev.into(),
            labels: BTreeMap::new(),
            annotations: [
                ("summary".to_string(), summary.to_string()),
                ("runbook".to_string(), format!("README.md#alert-{}", name.to_lowercase())),
            ]
            .into(),
            test: false,
        }
    };
    vec![
        rule(
            "BrightnessDrift",
            Some("brightness"),
            "*",
            "drift",
            ">=",
            1.0,
            1.0,
            60,
            "warning",
            "Brightness distribution differs from the training baseline (dark, over-exposed or lighting change)",
        ),
        rule(
            "BlurDrift",
            Some("sharpness"),
            "*",
            "drift",
            ">=",
            1.0,
            1.0,
            60,
            "warning",
            "Sharpness distribution differs from the baseline (dirty lens, focus, fog, compression)",
        ),
        rule(
            "ConfidenceDegradation",
            Some("confidence_mean"),
            "*",
            "mean_delta",
            "<=",
            -0.1,
            -0.05,
            60,
            "critical",
            "Mean model confidence dropped at least 0.1 below the baseline",
        ),
        rule(
            "CameraFrozen",
            None,
            "camera_id=*",
            "frozen_frames",
            ">=",
            30.0,
            1.0,
            0,
            "critical",
            "The camera keeps sending the same picture",
        ),
        rule(
            "CameraMoved",
            None,
            "camera_id=*",
            "moved_frames",
            ">=",
            30.0,
            1.0,
            0,
            "warning",
            "The camera shows a different scene than the one it settled on",
        ),
        rule(
            "ClassDistributionShift",
            None,
            "*",
            "cramers_v",
            ">=",
            0.1,
            0.05,
            60,
            "warning",
            "The model's class mix differs from the baseline",
        ),
        rule(
            "IngestStalled",
            None,
            "global",
            "seconds_since_last_frame",
            ">=",
            120.0,
            60.0,
            0,
            "critical",
            "No frame has arrived for two minutes",
        ),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Firing,
    Resolved,
}

#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub rule: Arc<str>,
    pub slice: Arc<str>,
    pub phase: Phase,
    pub value: f64,
    pub threshold: f64,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_secs: i64,
    pub ends_at_secs: Option<i64>,
    pub at_secs: i64,
    pub model_test: bool,
}

/// What the exporter and the query API see of the alert engine after each evaluation.
#[derive(Debug, Clone, Default)]
pub struct AlertSnapshot {
    pub active: Vec<AlertEvent>,
    /// (model test name, slice, passing)
    pub tests: Vec<(Arc<str>, Arc<str>, bool)>,
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

#[derive(Debug, Clone, Copy)]
enum State {
    Pending { since: i64 },
    Firing { since: i64 },
}

/// One event of `rule` on `slice`.
#[allow(clippy::too_many_arguments)]
fn alert_event(
    rule: &Rule,
    name: &Arc<str>,
    slice: &Arc<str>,
    phase: Phase,
    value: f64,
    since: i64,
    ends: Option<i64>,
    now: i64,
) -> AlertEvent {
    AlertEvent {
        rule: name.clone(),
        slice: slice.clone(),
        phase,
        value,
        threshold: rule.config.threshold,
        severity: rule.config.severity.clone(),
        labels: rule.config.labels.clone(),
        annotations: rule.config.annotations.clone(),
        starts_at_secs: since,
        ends_at_secs: ends,
        at_secs: now,
        model_test: rule.config.test,
    }
}

#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    names: Vec<Arc<str>>,
    states: HashMap<(usize, Arc<str>), (State, f64)>,
    /// Latest value of every model test per slice: (rule, slice) -> passing.
    tests: BTreeMap<(Arc<str>, Arc<str>), bool>,
}

impl AlertEngine {
    pub fn new(rules: Vec<Rule>) -> AlertEngine {
        let names = rules.iter().map(|r| Arc::from(r.config.name.as_str())).collect();
        AlertEngine { rules, names, states: HashMap::new(), tests: BTreeMap::new() }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Steps every state machine with a new evaluation; returns the state changes.
    pub fn step(&mut self, eval: &Evaluation, cameras: &[(String, CameraState)], now: i64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let mut seen: std::collections::HashSet<(usize, Arc<str>)> = std::collections::HashSet::new();
        self.tests.clear();
        for (ri, rule) in self.rules.iter().enumerate() {
            for s in eval.slices.iter().filter(|s| rule.matches(&s.key)) {
                let camera = s
                    .key
                    .strip_prefix("camera_id=")
                    .and_then(|c| cameras.binary_search_by(|(k, _)| k.as_str().cmp(c)).ok().map(|i| &cameras[i].1));
                let Some(value) = rule.value(s, camera, now) else { continue };
                if rule.config.test {
                    self.tests
                        .insert((self.names[ri].clone(), s.key.clone()), rule.op.holds(value, rule.config.threshold));
                }
                let key = (ri, s.key.clone());
                seen.insert(key.clone());
                let threshold = rule.config.threshold;
                let resolve = rule.config.resolve_threshold.unwrap_or(threshold);
                let name = &self.names[ri];
                let event = |phase, since: i64, ends: Option<i64>| {
                    alert_event(rule, name, &s.key, phase, value, since, ends, now)
                };
                match self.states.get(&key).copied() {
                    None => {
                        if rule.alerting(value, threshold) {
                            if rule.config.for_secs == 0 {
                                self.states.insert(key, (State::Firing { since: now }, value));
                                events.push(event(Phase::Firing, now, None));
                            } else {
                                self.states.insert(key, (State::Pending { since: now }, value));
                                events.push(event(Phase::Pending, now, None));
                            }
                        }
                    }
                    Some((State::Pending { since }, _)) => {
                        if !rule.alerting(value, threshold) {
                            self.states.remove(&key);
                        } else if now - since >= rule.config.for_secs as i64 {
                            self.states.insert(key, (State::Firing { since: now }, value));
                            events.push(event(Phase::Firing, now, None));
                        } else {
                            self.states.insert(key, (State::Pending { since }, value));
                        }
                    }
                    Some((State::Firing { since }, _)) => {
                        if rule.alerting(value, resolve) {
                            self.states.insert(key, (State::Firing { since }, value));
                        } else {
                            self.states.remove(&key);
                            events.push(event(Phase::Resolved, since, Some(now)));
                        }
                    }
                }
            }
        }
        // A slice that left the evaluation (no data, evicted) cannot keep an alert firing.
        let gone: Vec<(usize, Arc<str>)> = self.states.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in gone {
            if let Some((State::Firing { since }, value)) = self.states.remove(&key) {
                let rule = &self.rules[key.0];
                events.push(alert_event(
                    rule,
                    &self.names[key.0],
                    &key.1,
                    Phase::Resolved,
                    value,
                    since,
                    Some(now),
                    now,
                ));
            }
        }
        events
    }

    /// Alerts pending or firing now, as events (for watchers that join late and for webhook re-sends).
    pub fn active(&self, now: i64) -> Vec<AlertEvent> {
        let mut v: Vec<AlertEvent> = self
            .states
            .iter()
            .map(|((ri, slice), (state, value))| {
                let (phase, since) = match state {
                    State::Pending { since } => (Phase::Pending, *since),
                    State::Firing { since } => (Phase::Firing, *since),
                };
                alert_event(&self.rules[*ri], &self.names[*ri], slice, phase, *value, since, None, now)
            })
            .collect();
        v.sort_by(|a, b| (&a.rule, &a.slice).cmp(&(&b.rule, &b.slice)));
        v
    }

    /// Model test results of the last step: (test name, slice) -> passing.
    pub fn tests(&self) -> &BTreeMap<(Arc<str>, Arc<str>), bool> {
        &self.tests
    }

    pub fn snapshot(&self, now: i64) -> AlertSnapshot {
        AlertSnapshot {
            active: self.active(now),
            tests: self.tests.iter().map(|((n, s), p)| (n.clone(), s.clone(), *p)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::MetricEval;
    use framewatch_metrics::stats::MetricDrift;

    fn eval(psi: f64, mean: f64, n: u64) -> Evaluation {
        let stats = MetricDrift {
            n,
            mean: Some(mean),
            baseline_mean: 0.8,
            psi,
            ks_statistic: 0.0,
            ks_p_value: 1.0,
            js_distance: 0.0,
            wasserstein_norm: Some(0.0),
            outliers_moderate: 0.0,
            outliers_severe: 0.0,
        };
        Evaluation {
            evaluated_at_secs: 0,
            slices: vec![SliceEval {
                key: Arc::from("camera_id=c1"),
                frames: n,
                last_seen_secs: 0,
                window_start_secs: 0,
                window_end_secs: 60,
                metrics: vec![MetricEval { name: Arc::from("m"), stats, missing: 0, baseline_std: 1.0, drift: None }],
                classes: None,
                own_baseline: false,
            }],
        }
    }

    fn rule(stat: &str, op: &str, thr: f64, resolve: Option<f64>, for_secs: u64, test: bool) -> Rule {
        let c = RuleConfig {
            name: "R".into(),
            metric: Some("m".into()),
            slice: "camera_id=*".into(),
            statistic: stat.into(),
            op: op.into(),
            threshold: thr,
            resolve_threshold: resolve,
            for_secs,
            min_frames: Some(10),
            severity: "warning".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            test,
        };
        Rule::new(c, 100, &|m| m == "m").expect("rule")
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved_with_hysteresis() {
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, Some(0.1), 60, false)]);
        let phases = |ev: Vec<AlertEvent>| ev.iter().map(|e| e.phase).collect::<Vec<_>>();
        assert_eq!(phases(e.step(&eval(0.05, 0.8, 200), &[], 0)), vec![]);
        assert_eq!(phases(e.step(&eval(0.30, 0.8, 200), &[], 10)), vec![Phase::Pending]);
        assert_eq!(phases(e.step(&eval(0.30, 0.8, 200), &[], 40)), vec![], "not yet 60 s");
        assert_eq!(phases(e.step(&eval(0.30, 0.8, 200), &[], 70)), vec![Phase::Firing]);
        // below the firing threshold but above the resolve threshold: keeps firing
        assert_eq!(phases(e.step(&eval(0.15, 0.8, 200), &[], 80)), vec![]);
        assert_eq!(e.active(80)[0].phase, Phase::Firing);
        let resolved = e.step(&eval(0.05, 0.8, 200), &[], 90);
        assert_eq!(phases(resolved.clone()), vec![Phase::Resolved]);
        assert_eq!((resolved[0].starts_at_secs, resolved[0].ends_at_secs), (70, Some(90)));
        assert!(e.active(90).is_empty());
    }

    #[test]
    fn pending_clears_when_condition_stops_and_few_values_are_not_judged() {
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, None, 60, false)]);
        assert_eq!(e.step(&eval(0.5, 0.8, 200), &[], 0).len(), 1);
        assert!(e.step(&eval(0.0, 0.8, 200), &[], 10).is_empty());
        assert!(e.active(10).is_empty());
        assert!(e.step(&eval(5.0, 0.8, 5), &[], 20).is_empty(), "5 values < min_frames 10");
    }

    #[test]
    fn model_test_fires_while_the_expectation_fails() {
        let mut e = AlertEngine::new(vec![rule("mean", ">=", 0.7, None, 0, true)]);
        assert!(e.step(&eval(0.0, 0.9, 200), &[], 0).is_empty());
        assert_eq!(e.tests().values().copied().collect::<Vec<_>>(), vec![true]);
        let ev = e.step(&eval(0.0, 0.5, 200), &[], 10);
        assert_eq!((ev[0].phase, ev[0].model_test), (Phase::Firing, true));
        assert_eq!(e.tests().values().copied().collect::<Vec<_>>(), vec![false]);
    }

    #[test]
    fn a_vanished_slice_resolves_its_alert() {
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, None, 0, false)]);
        e.step(&eval(0.5, 0.8, 200), &[], 0);
        let ev = e.step(&Evaluation::default(), &[], 30);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].phase, Phase::Resolved);
    }

    #[test]
    fn rules_are_validated_with_the_key_named() {
        let mut c = default_rules()[0].clone();
        c.statistic = "psy".into();
        let e = Rule::new(c, 100, &|_| true).expect_err("bad statistic");
        assert!(e.to_string().contains("alerts.rules[BrightnessDrift].statistic"), "{e}");
        let mut c = default_rules()[0].clone();
        c.metric = Some("nope".into());
        assert!(Rule::new(c, 100, &|m| m == "brightness").is_err());
        for r in default_rules() {
            Rule::new(r, 100, &|_| true).expect("default rules are valid");
        }
    }
}

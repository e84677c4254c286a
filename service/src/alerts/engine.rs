//! The alert state machine: per (rule, slice) inactive -> pending -> firing -> resolved, with a `for` duration,
//! a minimum number of values, and hysteresis (a firing alert resolves only when the value is back past
//! `resolve_threshold`). Model test cases are rules whose expectation must hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::rules::Rule;
use crate::cameras::CameraState;
use crate::evaluate::Evaluation;
use crate::slice::SliceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Firing,
    Resolved,
}

#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub rule: Arc<str>,
    pub slice: SliceKey,
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
    pub tests: Vec<(Arc<str>, SliceKey, bool)>,
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
    slice: &SliceKey,
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
    states: HashMap<(usize, SliceKey), (State, f64)>,
    /// Latest value of every model test per slice: (rule, slice) -> passing.
    tests: BTreeMap<(Arc<str>, SliceKey), bool>,
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
        let mut seen: std::collections::HashSet<(usize, SliceKey)> = std::collections::HashSet::new();
        self.tests.clear();
        for (ri, rule) in self.rules.iter().enumerate() {
            for s in eval.slices.iter().filter(|s| rule.matches(&s.key)) {
                let camera = s.key.camera_id().and_then(|c| {
                    cameras.binary_search_by(|(k, _)| k.as_str().cmp(c.as_str())).ok().map(|i| &cameras[i].1)
                });
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
        let gone: Vec<(usize, SliceKey)> = self.states.keys().filter(|k| !seen.contains(*k)).cloned().collect();
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
    pub fn tests(&self) -> &BTreeMap<(Arc<str>, SliceKey), bool> {
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
    use crate::alerts::default_rules;
    use crate::config::RuleConfig;
    use crate::evaluate::{MetricEval, SliceEval};
    use framewatch_metrics::stats::MetricDrift;
    use std::collections::BTreeMap;

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
                key: SliceKey::camera("c1"),
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

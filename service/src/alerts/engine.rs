//! The alert state machine: per (rule, slice) inactive -> pending -> firing -> resolved, with a `for` duration,
//! a minimum number of values, and hysteresis (a firing alert resolves only when the value is back past
//! `resolve_threshold`). Model test cases are rules whose expectation must hold. Every event carries the label
//! `cause` (one value of `framewatch_metrics::cause::Cause`) and, for cause rules, the supporting numbers as the
//! annotation `evidence`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::rules::Rule;
use crate::cameras::CameraState;
use crate::evaluate::{Evaluation, SliceEval};
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
    /// The rule's labels plus `cause`, and `camera_id` on camera slices.
    pub labels: BTreeMap<String, String>,
    /// The rule's annotations plus `evidence` (cause rules); for an alert resolved because its slice left the
    /// evaluation, `resolution = "slice_gone"`; for a firing alert whose slice was evicted (`slices.max_slices`),
    /// `slice_state = "evicted"`: it keeps firing, since nothing shows the problem is gone.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Firing,
}

/// One (rule, slice) that is pending or firing.
#[derive(Debug, Clone)]
struct Active {
    state: State,
    since: i64,
    value: f64,
    evidence: Option<String>,
    /// The slice was evicted while this alert fired: it stays firing, marked, until the slice is evaluated again.
    evicted: bool,
}

#[derive(Debug)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    names: Vec<Arc<str>>,
    states: HashMap<(usize, SliceKey), Active>,
    /// Latest value of every model test per slice: (rule, slice) -> passing.
    tests: BTreeMap<(Arc<str>, SliceKey), bool>,
    /// `server.external_url` without a trailing slash: events then link to their slice's page in the web view.
    external_url: Option<String>,
}

impl AlertEngine {
    pub fn new(rules: Vec<Rule>) -> AlertEngine {
        let names = rules.iter().map(|r| Arc::from(r.config.name.as_str())).collect();
        AlertEngine { rules, names, states: HashMap::new(), tests: BTreeMap::new(), external_url: None }
    }

    /// Events carry `exemplars_url`, the slice's page (exemplar frames, charts) under `url` (`server.external_url`;
    /// empty: no link).
    pub fn with_external_url(mut self, url: &str) -> AlertEngine {
        let url = url.trim_end_matches('/');
        self.external_url = (!url.is_empty()).then(|| url.to_string());
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// One event of rule `ri` on `slice` in `phase`.
    fn event(&self, ri: usize, slice: &SliceKey, phase: Phase, a: &Active, ends: Option<i64>, now: i64) -> AlertEvent {
        let rule = &self.rules[ri];
        let mut labels = rule.config.labels.clone();
        labels.insert("cause".into(), rule.cause().as_str().into());
        if let Some(c) = slice.camera_id() {
            labels.insert("camera_id".into(), c);
        }
        let mut annotations = rule.config.annotations.clone();
        if let Some(e) = &a.evidence {
            annotations.insert("evidence".into(), e.clone());
        }
        if a.evicted {
            annotations.insert("slice_state".into(), "evicted".into());
        }
        if let Some(base) = &self.external_url {
            let link = format!("{base}/slice?key={}", crate::charts::url_encode(slice.as_str()));
            annotations.insert("exemplars_url".into(), link);
        }
        AlertEvent {
            rule: self.names[ri].clone(),
            slice: slice.clone(),
            phase,
            value: a.value,
            threshold: rule.config.threshold,
            severity: rule.config.severity.clone(),
            labels,
            annotations,
            starts_at_secs: a.since,
            ends_at_secs: ends,
            at_secs: now,
            model_test: rule.config.test,
        }
    }

    /// Steps every state machine with a new evaluation; returns the state changes.
    pub fn step(&mut self, eval: &Evaluation, cameras: &[(String, CameraState)], now: i64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let mut seen: HashSet<(usize, SliceKey)> = HashSet::new();
        self.tests.clear();
        for ri in 0..self.rules.len() {
            for s in &eval.slices {
                if !self.rules[ri].matches(&s.key) {
                    continue;
                }
                let camera = s.key.camera_id().and_then(|c| {
                    cameras.binary_search_by(|(k, _)| k.as_str().cmp(c.as_str())).ok().map(|i| &cameras[i].1)
                });
                let Some(value) = self.rules[ri].value(s, camera, now) else { continue };
                let key = (ri, s.key.clone());
                seen.insert(key.clone());
                self.step_one(key, s, value, now, &mut events);
            }
        }
        // A slice that left the evaluation (no data for a window, idle) cannot keep an alert firing: it resolves,
        // marked as such, so nobody reads it as "fixed". A slice evicted to make room is different: its problem
        // may well go on, so a firing alert stays firing, marked "evicted" (one event says so), until the slice
        // is evaluated again.
        let gone: Vec<(usize, SliceKey)> = self.states.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in gone {
            let Some(a) = self.states.get_mut(&key) else { continue };
            if a.state == State::Firing && (a.evicted || eval.evicted.binary_search(&key.1).is_ok()) {
                if !a.evicted {
                    a.evicted = true;
                    let a = a.clone();
                    events.push(self.event(key.0, &key.1, Phase::Firing, &a, None, now));
                }
                continue;
            }
            if let Some(a) = self.states.remove(&key)
                && a.state == State::Firing
            {
                let mut ev = self.event(key.0, &key.1, Phase::Resolved, &a, Some(now), now);
                ev.annotations.insert("resolution".into(), "slice_gone".into());
                events.push(ev);
            }
        }
        events
    }

    fn step_one(&mut self, key: (usize, SliceKey), s: &SliceEval, value: f64, now: i64, events: &mut Vec<AlertEvent>) {
        let rule = &self.rules[key.0];
        if rule.config.test {
            self.tests.insert((self.names[key.0].clone(), key.1.clone()), rule.op.holds(value, rule.config.threshold));
        }
        let threshold = rule.config.threshold;
        let resolve = rule.config.resolve_threshold.unwrap_or(threshold);
        let evidence = rule.evidence(s);
        let for_secs = rule.config.for_secs as i64;
        let next = match self.states.get(&key) {
            None if rule.alerting(value, threshold) => {
                let state = if for_secs == 0 { State::Firing } else { State::Pending };
                Some((state, now, true))
            }
            None => None,
            Some(a) if a.state == State::Pending => {
                if !rule.alerting(value, threshold) {
                    None
                } else if now - a.since >= for_secs {
                    Some((State::Firing, now, true))
                } else {
                    Some((State::Pending, a.since, false))
                }
            }
            Some(a) => {
                if rule.alerting(value, resolve) {
                    Some((State::Firing, a.since, false))
                } else {
                    let a = Active { value, evidence, evicted: false, ..a.clone() };
                    events.push(self.event(key.0, &key.1, Phase::Resolved, &a, Some(now), now));
                    self.states.remove(&key);
                    return;
                }
            }
        };
        match next {
            None => {
                self.states.remove(&key);
            }
            Some((state, since, changed)) => {
                let a = Active { state, since, value, evidence, evicted: false };
                if changed {
                    let phase = if state == State::Firing { Phase::Firing } else { Phase::Pending };
                    events.push(self.event(key.0, &key.1, phase, &a, None, now));
                }
                self.states.insert(key, a);
            }
        }
    }

    /// Alerts pending or firing now, as events (for watchers that join late and for webhook re-sends).
    pub fn active(&self, now: i64) -> Vec<AlertEvent> {
        let mut v: Vec<AlertEvent> = self
            .states
            .iter()
            .map(|((ri, slice), a)| {
                let phase = if a.state == State::Firing { Phase::Firing } else { Phase::Pending };
                self.event(*ri, slice, phase, a, None, now)
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
    use framewatch_metrics::cause::{Cause, Finding};
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
            out_of_range: 0.0,
            n_effective: n as f64,
            mean_p_value: 1.0,
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
                causes: Vec::new(),
                performance: None,
            }],
            evicted: Vec::new(),
        }
    }

    fn rule(stat: &str, op: &str, thr: f64, resolve: Option<f64>, for_secs: u64, test: bool) -> Rule {
        let c = RuleConfig {
            name: "R".into(),
            metric: Some("m".into()),
            class: None,
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
            cause: None,
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

    fn with_causes(mut e: Evaluation, causes: &[(Cause, &str)]) -> Evaluation {
        e.slices[0].causes = causes.iter().map(|(c, s)| Finding { cause: *c, summary: s.to_string() }).collect();
        e
    }

    #[test]
    fn cause_rules_fire_one_alert_per_cause_with_its_label_and_evidence() {
        let rules: Vec<Rule> =
            default_rules().into_iter().map(|r| Rule::new(r, 10, &|_| true).expect("rule")).collect();
        let mut e = AlertEngine::new(rules);
        let darker = with_causes(eval(0.0, 0.8, 200), &[(Cause::Darker, "brightness mean 0.43 -> 0.21 (-51 %)")]);
        assert!(e.step(&darker, &[], 0).iter().all(|ev| ev.phase == Phase::Pending));
        let fired = e.step(&darker, &[], 61);
        assert_eq!(fired.len(), 1, "{fired:?}");
        let ev = &fired[0];
        assert_eq!((&*ev.rule, ev.phase), ("CameraDarker", Phase::Firing));
        assert_eq!(ev.labels["cause"], "darker");
        assert_eq!(ev.labels["camera_id"], "c1");
        assert_eq!(ev.annotations["evidence"], "brightness mean 0.43 -> 0.21 (-51 %)");
        // The cause goes away: the alert resolves (hysteresis on the 0/1 value).
        let ev = e.step(&eval(0.0, 0.8, 200), &[], 70);
        assert_eq!((ev.len(), ev[0].phase, ev[0].labels["cause"].as_str()), (1, Phase::Resolved, "darker"));
    }

    #[test]
    fn exemplars_url_links_the_slice_page_only_with_an_external_url() {
        let plain = AlertEngine::new(vec![rule("psi", ">=", 0.25, None, 0, false)])
            .step(&eval(0.5, 0.8, 200), &[], 0)
            .remove(0);
        assert!(!plain.annotations.contains_key("exemplars_url"), "{plain:?}");
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, None, 0, false)])
            .with_external_url("https://fw.example.com/");
        let ev = e.step(&eval(0.5, 0.8, 200), &[], 0).remove(0);
        let want = format!("https://fw.example.com/slice?key={}", crate::charts::url_encode(ev.slice.as_str()));
        assert_eq!(ev.annotations["exemplars_url"], want);
    }

    #[test]
    fn every_alert_carries_a_cause_label() {
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, None, 0, false), {
            let mut c = rule("mean", ">=", 0.7, None, 0, true).config;
            c.name = "T".into();
            Rule::new(c, 10, &|_| true).expect("test rule")
        }]);
        let ev = e.step(&eval(0.5, 0.5, 200), &[], 0);
        let causes: Vec<&str> = ev.iter().map(|e| e.labels["cause"].as_str()).collect();
        assert_eq!(causes, ["distribution", "model_test"]);
    }

    #[test]
    fn a_vanished_slice_resolves_its_alert_marked_as_gone() {
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, None, 0, false)]);
        e.step(&eval(0.5, 0.8, 200), &[], 0);
        let ev = e.step(&Evaluation::default(), &[], 30);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].phase, Phase::Resolved);
        assert_eq!(ev[0].annotations["resolution"], "slice_gone");
    }

    #[test]
    fn an_evicted_slice_keeps_its_alert_firing_marked_evicted_until_it_is_judged_again() {
        let phases = |ev: Vec<AlertEvent>| ev.iter().map(|e| e.phase).collect::<Vec<_>>();
        let mut e = AlertEngine::new(vec![rule("psi", ">=", 0.25, Some(0.1), 0, false)]);
        assert_eq!(phases(e.step(&eval(0.5, 0.8, 200), &[], 0)), vec![Phase::Firing]);
        // Evicted: one event says so; the alert stays firing and active, and is not resolved.
        let evicted = Evaluation { evicted: vec![SliceKey::camera("c1")], ..Evaluation::default() };
        let ev = e.step(&evicted, &[], 30);
        assert_eq!((ev.len(), ev[0].phase), (1, Phase::Firing));
        assert_eq!(ev[0].annotations["slice_state"], "evicted");
        assert!(ev[0].ends_at_secs.is_none());
        assert!(e.step(&Evaluation::default(), &[], 60).is_empty(), "no resolution while the slice is away");
        let active = e.active(90);
        assert_eq!((active.len(), active[0].annotations["slice_state"].as_str()), (1, "evicted"));
        // Back, and judged fine on its data: only now does it resolve.
        let back = e.step(&eval(0.05, 0.8, 200), &[], 120);
        assert_eq!(phases(back.clone()), vec![Phase::Resolved]);
        assert!(!back[0].annotations.contains_key("slice_state"));
        assert!(!back[0].annotations.contains_key("resolution"));
    }

    #[test]
    fn rules_are_validated_with_the_key_named() {
        let mut c = default_rules()[0].clone();
        c.statistic = "psy".into();
        let e = Rule::new(c, 100, &|_| true).expect_err("bad statistic");
        assert!(e.to_string().contains("alerts.rules[CameraDarker].statistic"), "{e}");
        let mut c = default_rules()[0].clone();
        c.cause = None;
        let e = Rule::new(c, 100, &|_| true).expect_err("a cause rule without its cause");
        assert!(e.to_string().contains("alerts.rules[CameraDarker].cause"), "{e}");
        let mut c = rule("psi", ">=", 0.25, None, 0, false).config;
        c.metric = Some("nope".into());
        assert!(Rule::new(c, 100, &|m| m == "brightness").is_err());
        for r in default_rules() {
            Rule::new(r, 100, &|_| true).expect("default rules are valid");
        }
    }
}

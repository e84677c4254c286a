//! The live web view on the HTTP port: server-rendered HTML read from the latest evaluation, the alert engine's
//! state, the window store (for histograms) and the evaluation history (for sparklines). `/` is the fleet at a
//! glance, `/slice?key=...` one slice in depth. Read-only; nothing is loaded from elsewhere (inline CSS and SVG,
//! one line of script that reloads the page); every slice, camera, label and rule text is HTML-escaped.

pub mod history;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use framewatch_metrics::Baseline;
use framewatch_metrics::drift::DriftThresholds;

use crate::alerts::{AlertEvent, AlertSnapshot, Phase};
use crate::charts::{Series, escape, fmt_num, histogram_svg, sparkline_svg, url_encode};
use crate::evaluate::{Evaluation, MetricEval, SliceEval, SlicePerformance};
use crate::exemplars::{Exemplar, ExemplarStore};
use crate::store::WindowStore;
use crate::time::{Clock, now_secs, rfc3339};
use framewatch_metrics::performance::PerformanceStatistic;

pub use history::EvaluationHistory;

/// Rows of the fleet table: the most drifted slices; the rest are counted, not listed (a page stays small with
/// thousands of slices).
pub const FLEET_ROWS: usize = 200;
/// Alerts listed; the rest are counted.
pub const ALERT_ROWS: usize = 200;
/// The page reloads itself this often.
pub const REFRESH_SECS: u64 = 15;

/// What the pages read; cheap to clone.
#[derive(Clone)]
pub struct WebView {
    pub evaluation: Arc<RwLock<Arc<Evaluation>>>,
    pub alerts: Arc<RwLock<AlertSnapshot>>,
    pub store: Arc<Mutex<WindowStore>>,
    pub baseline: Arc<Baseline>,
    pub history: Arc<Mutex<EvaluationHistory>>,
    pub thresholds: DriftThresholds,
    pub clock: Arc<dyn Clock>,
    /// Thumbnails of drifting pairs' frames (None: off).
    pub exemplars: Option<Arc<ExemplarStore>>,
}

impl std::fmt::Debug for WebView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebView(..)")
    }
}

/// The largest PSI among a slice's metrics that have a verdict (0 when none has): what the fleet is ranked by.
fn slice_drift(s: &SliceEval) -> (f64, Option<&MetricEval>) {
    s.metrics
        .iter()
        .filter(|m| m.drift.is_some())
        .max_by(|a, b| a.stats.psi.total_cmp(&b.stats.psi))
        .map_or((0.0, None), |m| (m.stats.psi, Some(m)))
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "pending",
        Phase::Firing => "firing",
        Phase::Resolved => "resolved",
    }
}

fn slice_link(key: &str) -> String {
    format!("<a class=\"slice\" href=\"/slice?key={}\">{}</a>", escape(&url_encode(key)), escape(key))
}

fn page_start(h: &mut String, title: &str) {
    let _ = write!(
        h,
        concat!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n"
        ),
        escape(title)
    );
    h.push_str(include_str!("../cli/report.css"));
    h.push_str(include_str!("web.css"));
    h.push_str("</style>\n</head>\n<body>\n");
}

fn page_end(h: &mut String) {
    let _ = write!(
        h,
        concat!(
            "<footer>framewatch {} · this page reloads every {} s</footer>\n",
            "<script>setTimeout(function () {{ location.reload(); }}, {});</script>\n</body>\n</html>\n"
        ),
        escape(framewatch_metrics::VERSION),
        REFRESH_SECS,
        REFRESH_SECS * 1000
    );
}

impl WebView {
    fn current(&self) -> Arc<Evaluation> {
        self.evaluation.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn active_alerts(&self) -> Vec<AlertEvent> {
        self.alerts.read().unwrap_or_else(|p| p.into_inner()).active.clone()
    }

    /// `GET /`: slices ranked by drift with their alerts and causes, then the alert list.
    pub fn fleet_page(&self) -> String {
        let eval = self.current();
        let alerts = self.active_alerts();
        let mut h = String::with_capacity(32 << 10);
        page_start(&mut h, "framewatch: fleet");
        let drifting = eval.slices.iter().filter(|s| s.metrics.iter().any(|m| m.drift == Some(true))).count();
        let firing = alerts.iter().filter(|a| a.phase == Phase::Firing).count();
        let _ = writeln!(
            h,
            concat!(
                "<header>\n<h1>framewatch: fleet</h1>\n<p id=\"summary\" class=\"banner {}\">{} of {} slices drifting, ",
                "{} alerts firing, {} pending</p>\n<p class=\"meta\">Evaluated {}; a metric drifts when (PSI &ge; {} ",
                "or KS &ge; {}) and KS p &le; {} on at least {} values.</p>\n</header>"
            ),
            if drifting > 0 || firing > 0 { "drift" } else { "ok" },
            drifting,
            eval.slices.len(),
            firing,
            alerts.len() - firing,
            if eval.evaluated_at_secs > 0 { rfc3339(eval.evaluated_at_secs) } else { "not yet".into() },
            self.thresholds.psi,
            self.thresholds.ks_statistic,
            self.thresholds.p_value,
            self.thresholds.min_frames,
        );

        let mut ranked: Vec<(f64, &SliceEval)> = eval.slices.iter().map(|s| (slice_drift(s).0, s)).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
        h.push_str(concat!(
            "<section>\n<h2>Slices, most drifted first</h2>\n<table id=\"fleet\">\n<thead><tr><th>slice</th>",
            "<th>frames</th><th>drifting metrics</th><th>most drifted</th><th>PSI</th><th>alerts</th>",
            "<th>causes</th></tr></thead>\n<tbody>\n"
        ));
        for (psi, s) in ranked.iter().take(FLEET_ROWS) {
            let (_, top) = slice_drift(s);
            let n_drift = s.metrics.iter().filter(|m| m.drift == Some(true)).count();
            let states: Vec<String> = alerts
                .iter()
                .filter(|a| a.slice == s.key)
                .map(|a| format!("<span class=\"alert {0}\">{1}: {0}</span>", phase_name(a.phase), escape(&a.rule)))
                .collect();
            let causes: Vec<String> = s
                .causes
                .iter()
                .map(|f| format!("<span class=\"cause\" title=\"{}\">{}</span>", escape(&f.summary), f.cause))
                .collect();
            let _ = writeln!(
                h,
                "<tr class=\"{}\" data-slice=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"psi\">{:.3}</td><td>{}</td><td>{}</td></tr>",
                if n_drift > 0 { "drift" } else { "ok" },
                escape(s.key.as_str()),
                slice_link(s.key.as_str()),
                s.frames,
                n_drift,
                top.map_or("-".to_string(), |m| escape(&m.name)),
                psi,
                states.join(" "),
                causes.join(" "),
            );
        }
        h.push_str("</tbody>\n</table>\n");
        if ranked.len() > FLEET_ROWS {
            let _ = writeln!(
                h,
                "<p class=\"note\">{} more slices, less drifted, not listed.</p>",
                ranked.len() - FLEET_ROWS
            );
        }
        h.push_str("</section>\n");
        alert_list(&mut h, &alerts, None);
        page_end(&mut h);
        h
    }

    /// The JPEG of a slice's `i`-th typical training frame (its reference's, else the fleet's), from the baseline.
    pub fn training_jpeg(&self, slice: &str, i: usize) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let t = self.baseline.exemplars_for(slice).get(i)?;
        base64::engine::general_purpose::STANDARD.decode(&t.jpeg_base64).ok()
    }

    /// `GET /slice?key=...`: one slice's metrics (histogram vs baseline, statistics, recent PSI), causes and
    /// alerts. None when the latest evaluation has no such slice.
    pub fn slice_page(&self, key: &str) -> Option<String> {
        let eval = self.current();
        let s = eval.slice(key)?;
        let alerts: Vec<AlertEvent> = self.active_alerts().into_iter().filter(|a| a.slice == s.key).collect();
        // A fresh merge of the slice's window (the evaluation keeps statistics, not histograms).
        let snapshot = {
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<Arc<str>> = store.tracked().iter().map(|t| t.name.clone()).collect();
            store.snapshot(key, now_secs(self.clock.as_ref())).map(|snap| (names, snap))
        };
        let history = {
            let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
            s.metrics.iter().map(|m| h.psi(key, &m.name)).collect::<Vec<_>>()
        };
        let mut h = String::with_capacity(64 << 10);
        page_start(&mut h, &format!("framewatch: {}", s.key));
        let n_drift = s.metrics.iter().filter(|m| m.drift == Some(true)).count();
        let _ = writeln!(
            h,
            concat!(
                "<header>\n<p class=\"meta\"><a href=\"/\">&larr; fleet</a></p>\n<h1 id=\"slice\">{}</h1>\n",
                "<p class=\"banner {}\">{} of {} metrics drifting</p>\n<p class=\"meta\">{} frames in the window {} .. {}, ",
                "judged against the {} baseline; evaluated {}.</p>"
            ),
            escape(s.key.as_str()),
            if n_drift > 0 { "drift" } else { "ok" },
            n_drift,
            s.metrics.len(),
            s.frames,
            rfc3339(s.window_start_secs),
            rfc3339(s.window_end_secs),
            if s.own_baseline { "slice's own" } else { "global" },
            rfc3339(eval.evaluated_at_secs),
        );
        if !s.causes.is_empty() {
            h.push_str("<ul id=\"causes\">\n");
            for f in &s.causes {
                let _ = writeln!(h, "<li><span class=\"cause\">{}</span> {}</li>", f.cause, escape(&f.summary));
            }
            h.push_str("</ul>\n");
        }
        let training = self.baseline.exemplars_for(key);
        if !training.is_empty() {
            h.push_str("<div id=\"training\" class=\"exemplars\"><span class=\"meta\">Typical training frames:</span>");
            for (i, t) in training.iter().enumerate() {
                let _ = write!(
                    h,
                    "<figure class=\"frame baseline\"><img src=\"{}\" alt=\"{}\" title=\"{}\"></figure>",
                    escape(&training_src(key, i)),
                    escape(&t.path),
                    escape(&t.path),
                );
            }
            h.push_str("</div>\n");
        }
        h.push_str("</header>\n");
        alert_list(&mut h, &alerts, Some(&s.key));
        if let Some(p) = &s.performance {
            performance_table(&mut h, p);
        }

        let mut order: Vec<(usize, &MetricEval)> = s.metrics.iter().enumerate().collect();
        order.sort_by(|a, b| {
            (b.1.drift == Some(true)).cmp(&(a.1.drift == Some(true))).then(b.1.stats.psi.total_cmp(&a.1.stats.psi))
        });
        h.push_str(concat!(
            "<section>\n<h2>Metrics: current window vs baseline</h2>\n",
            "<p class=\"legend\"><span class=\"key base\"></span> baseline <span class=\"key cur\"></span> current ",
            "(share of frames per bar; the line marks the baseline median). The small chart is PSI over the last ",
            "evaluations, the dashed line the PSI threshold.</p>\n<div class=\"charts\">\n"
        ));
        for (i, m) in order {
            let class = match m.drift {
                Some(true) => "drift",
                Some(false) => "ok",
                None => "few",
            };
            let st = &m.stats;
            let _ = writeln!(
                h,
                "<figure class=\"chart {class}\" data-metric=\"{}\"><figcaption>{} <span>PSI {:.3} · KS {:.3} · p {}</span></figcaption>",
                escape(&m.name),
                escape(&m.name),
                st.psi,
                st.ks_statistic,
                fmt_num(st.ks_p_value),
            );
            let current = snapshot
                .as_ref()
                .and_then(|(names, snap)| names.iter().position(|n| *n == m.name).and_then(|j| snap.hists.get(j)));
            if let (Some((b, _)), Some(cur)) = (self.baseline.metric_for(key, &m.name), current) {
                let range = (cur.n > 0).then_some((cur.min, cur.max));
                histogram_svg(
                    &mut h,
                    b.layout.edges(),
                    Series::Binned { counts: &b.histogram.counts, range: None },
                    Series::Binned { counts: &cur.counts, range },
                    b.quartiles[1],
                );
            }
            let _ = write!(
                h,
                "<p class=\"stats\">n {} · mean {} (baseline {} ± {}) · outliers {:.1}% / {:.1}%</p><div class=\"trend\">",
                st.n,
                st.mean.map_or("-".into(), fmt_num),
                fmt_num(st.baseline_mean),
                fmt_num(m.baseline_std),
                st.outliers_moderate * 100.0,
                st.outliers_severe * 100.0,
            );
            sparkline_svg(&mut h, history.get(i).map_or(&[][..], Vec::as_slice), self.thresholds.psi, 0.5);
            h.push_str("</div>");
            if let Some(x) = &self.exemplars {
                let kept = x.exemplars(key, &m.name);
                x.pin(&kept);
                let training = (!self.baseline.exemplars_for(key).is_empty()).then(|| training_src(key, 0));
                exemplar_strip(&mut h, &m.name, &kept, training.as_deref());
            }
            h.push_str("</figure>\n");
        }
        h.push_str("</div>\n</section>\n");
        page_end(&mut h);
        Some(h)
    }
}

/// A metric's exemplar thumbnails (nothing when it has none), after the baseline's typical frame when the baseline
/// has one. Pictures are links (`/exemplars/<id>.jpg`, `/training?...`), so a page stays small and the browser
/// caches what repeats; the store keeps the shown ones fetchable for a while (`ExemplarStore::pin`).
/// Model performance on the slice's labelled frames, overall and per class (the 20 with most labelled objects),
/// beside the baseline's.
fn performance_table(h: &mut String, p: &SlicePerformance) {
    let perf = &p.performance;
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(
        h,
        "<section>\n<h2>Model performance on labelled frames</h2>\n<p class=\"meta\">{} labelled frames in the \
         performance window{}</p>\n<table id=\"performance\">\n<thead><tr><th></th><th>labelled objects</th>\
         <th>mAP@0.5</th><th>mAP@[.5:.95]</th><th>precision</th><th>recall</th><th>F1</th></tr></thead><tbody>",
        perf.frames,
        if p.enough { "" } else { " (too few for a verdict)" },
    );
    let truths: u64 = perf.classes.values().map(|c| c.truths).sum();
    let mut row = |name: &str, class: Option<&str>, truths: u64, of: &framewatch_metrics::performance::Performance| {
        let v = |s: PerformanceStatistic| cell(s.value(of, class));
        let _ = writeln!(
            h,
            "<tr data-class=\"{}\"><td>{}</td><td>{truths}</td><td class=\"map50\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(class.unwrap_or("")),
            escape(name),
            v(PerformanceStatistic::Map50),
            v(PerformanceStatistic::Map50_95),
            v(PerformanceStatistic::Precision),
            v(PerformanceStatistic::Recall),
            v(PerformanceStatistic::F1),
        );
    };
    row("all classes", None, truths, perf);
    if let Some(b) = &p.baseline {
        let base_truths = b.classes.values().map(|c| c.truths).sum();
        row("baseline (validation set)", None, base_truths, b);
    }
    let mut classes: Vec<(&String, u64)> = perf.classes.iter().map(|(c, cp)| (c, cp.truths)).collect();
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (class, n) in classes.into_iter().take(20) {
        row(class, Some(class), n, perf);
    }
    h.push_str("</tbody></table>\n</section>\n");
}

fn exemplar_strip(h: &mut String, metric: &str, kept: &[Exemplar], training: Option<&str>) {
    if kept.is_empty() {
        return;
    }
    let _ = write!(h, "<div class=\"exemplars\" data-metric=\"{}\">", escape(metric));
    if let Some(src) = training {
        let _ = write!(
            h,
            "<figure class=\"frame baseline\"><img src=\"{}\" alt=\"training frame\"><figcaption>training</figcaption></figure>",
            escape(src)
        );
    }
    for e in kept {
        let caption = format!("{} · {} = {} · {}", e.camera_id, metric, fmt_num(e.value), rfc3339(e.capture_secs));
        let _ = write!(
            h,
            "<figure class=\"frame {}\" data-id=\"{}\"><img src=\"/exemplars/{}.jpg\" alt=\"{}\" title=\"{}\"><figcaption>{} {}</figcaption></figure>",
            e.kind.as_str(),
            e.id,
            e.id,
            escape(&caption),
            escape(&caption),
            e.kind.as_str(),
            escape(&fmt_num(e.value)),
        );
    }
    h.push_str("</div>");
}

/// The URL of a slice's `i`-th typical training frame.
fn training_src(slice: &str, i: usize) -> String {
    format!("/training?slice={}&i={i}", url_encode(slice))
}

/// The pending and firing alerts (of one slice, when `only` is given), firing first.
fn alert_list(h: &mut String, alerts: &[AlertEvent], only: Option<&crate::slice::SliceKey>) {
    let mut rows: Vec<&AlertEvent> = alerts.iter().filter(|a| only.is_none_or(|k| a.slice == *k)).collect();
    rows.sort_by(|a, b| {
        (b.phase == Phase::Firing).cmp(&(a.phase == Phase::Firing)).then(a.starts_at_secs.cmp(&b.starts_at_secs))
    });
    h.push_str("<section>\n<h2>Alerts</h2>\n");
    if rows.is_empty() {
        h.push_str("<p id=\"no-alerts\" class=\"note\">No alert is pending or firing.</p>\n</section>\n");
        return;
    }
    h.push_str(concat!(
        "<table id=\"alerts\">\n<thead><tr><th>state</th><th>rule</th><th>slice</th><th>severity</th><th>cause</th>",
        "<th>evidence</th><th>since</th></tr></thead>\n<tbody>\n"
    ));
    for a in rows.iter().take(ALERT_ROWS) {
        let _ = writeln!(
            h,
            "<tr class=\"alert {}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"cause\">{}</td><td>{}</td><td>{}</td></tr>",
            phase_name(a.phase),
            phase_name(a.phase),
            escape(&a.rule),
            slice_link(a.slice.as_str()),
            escape(&a.severity),
            escape(a.labels.get("cause").map_or("", String::as_str)),
            escape(a.annotations.get("evidence").map_or("", String::as_str)),
            rfc3339(a.starts_at_secs),
        );
    }
    h.push_str("</tbody>\n</table>\n");
    if rows.len() > ALERT_ROWS {
        let _ = writeln!(h, "<p class=\"note\">{} more alerts not listed.</p>", rows.len() - ALERT_ROWS);
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use framewatch_metrics::cause::{Cause, Finding};
    use framewatch_metrics::{BaselineBuilder, ComparableSettings, MetricRegistry};

    use super::*;
    use crate::config::Config;
    use crate::slice::SliceKey;
    use crate::store::StoreSettings;
    use crate::time::ManualClock;

    const EVIL: &str = "<script>alert(1)</script>\"'&";

    /// A view of one slice whose camera id, alert rule, severity and evidence are all markup.
    /// One labelled frame whose only object, of a class named like an attack, was found.
    fn evil_performance() -> SlicePerformance {
        use framewatch_metrics::performance::{LabelledFrame, PerformanceSettings, TruthBox, evaluate};
        let truth = [TruthBox { x_min: 0.1, y_min: 0.1, x_max: 0.3, y_max: 0.3, class_label: EVIL.into() }];
        let detections = [truth[0].detected(0.9)];
        let frame = LabelledFrame { detections: &detections, truth: &truth };
        let (performance, _) = evaluate(&[frame], &PerformanceSettings::default());
        SlicePerformance { performance, enough: false, baseline: None }
    }

    fn view() -> WebView {
        let registry = MetricRegistry::standard();
        let mut b = BaselineBuilder::new(vec!["brightness".into()], ComparableSettings::default(), 10);
        for i in 0..100 {
            b.add(&[Some(0.3 + f64::from(i % 10) / 50.0)], ["car"]);
        }
        let baseline = b.finish("t".into(), "v".into(), "s".into()).expect("baseline");
        let index_of = |n: &str| registry.index_of(n);
        let settings = StoreSettings::from_config(&Config::default(), index_of).expect("settings");
        let store = WindowStore::new(settings, &baseline, index_of);
        let key = SliceKey::camera(EVIL);
        let slice = SliceEval {
            key: key.clone(),
            frames: 3,
            last_seen_secs: 100,
            window_start_secs: 0,
            window_end_secs: 100,
            metrics: Vec::new(),
            classes: None,
            own_baseline: false,
            causes: vec![Finding { cause: Cause::Darker, summary: EVIL.into() }],
            performance: Some(evil_performance()),
        };
        let alert = AlertEvent {
            rule: Arc::from(EVIL),
            slice: key,
            phase: Phase::Firing,
            value: 1.0,
            threshold: 1.0,
            severity: EVIL.into(),
            labels: BTreeMap::from([("cause".to_string(), EVIL.to_string())]),
            annotations: BTreeMap::from([("evidence".to_string(), EVIL.to_string())]),
            starts_at_secs: 50,
            ends_at_secs: None,
            at_secs: 100,
            model_test: false,
        };
        WebView {
            evaluation: Arc::new(RwLock::new(Arc::new(Evaluation {
                evaluated_at_secs: 100,
                slices: vec![slice],
                evicted: Vec::new(),
            }))),
            alerts: Arc::new(RwLock::new(AlertSnapshot { active: vec![alert], tests: Vec::new() })),
            store: Arc::new(Mutex::new(store)),
            baseline: Arc::new(baseline),
            history: Arc::default(),
            thresholds: DriftThresholds::default(),
            clock: Arc::new(ManualClock::at(100)),
            exemplars: None,
        }
    }

    #[test]
    fn every_outside_string_is_escaped_on_both_pages() {
        let v = view();
        let key = SliceKey::camera(EVIL);
        let slice = v.slice_page(key.as_str()).expect("the slice page");
        for page in [v.fleet_page(), slice] {
            // The only script is the page's own reload.
            assert_eq!(page.matches("<script>").count(), 1, "{page}");
            assert!(!page.contains("alert(1)</script>"), "{page}");
            assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"), "{page}");
        }
        assert!(v.slice_page("camera_id=nobody").is_none());
    }

    /// Issue 15: a slice with labelled frames shows its model performance, overall and per class.
    #[test]
    fn the_slice_page_shows_performance_on_labelled_frames() {
        let page = view().slice_page(SliceKey::camera(EVIL).as_str()).expect("the slice page");
        assert!(page.contains("<table id=\"performance\">"), "{page}");
        assert!(page.contains("1 labelled frames in the performance window (too few for a verdict)"), "{page}");
        // mAP@0.5 of a found object is 1 (pycocotools' precision is 1 - 2e-16, shown to 3 places).
        assert_eq!(page.matches("<td class=\"map50\">1.000</td>").count(), 2, "all classes and the class: {page}");
    }
}

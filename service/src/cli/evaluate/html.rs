//! The offline HTML evaluation report (`framewatch evaluate --html FILE`): the model test cases with their outcome,
//! performance per slice and per class, Encord Active's two charts (metric importance, and performance by metric
//! bucket) as inline SVG. Self-contained like the drift report: no script, font or style loaded from anywhere.

use std::fmt::Write as _;

use framewatch_metrics::importance::MetricImportance;

use super::{Outcome, Report, figures, num, slice_figures};
use crate::charts::escape;

/// Metrics that get a "performance by metric" chart: the most important ones.
const BUCKET_CHARTS: usize = 6;

const EXTRA_CSS: &str = "
svg .pos { fill: #2f7d4f; } svg .neg { fill: #c0392b; } svg .bucket { fill: #5b8fd6; }
td.outcome.fail { color: #9b1c14; font-weight: 700; } td.outcome.pass { color: #17603a; font-weight: 700; }
td.outcome.no_verdict { color: #8a929c; }
tr.baseline td { color: #5a6470; font-style: italic; }
";

/// A bucket bound in four significant digits at most, to fit under its bar.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
        format!("{v:.2e}")
    } else {
        format!("{:.4}", v).chars().take(6).collect()
    }
}

fn outcome_name(o: &Outcome) -> (&'static str, &'static str) {
    match o {
        Outcome::Pass => ("pass", "PASS"),
        Outcome::Fail => ("fail", "FAIL"),
        Outcome::NoVerdict => ("no_verdict", "NO VERDICT"),
    }
}

pub fn render(r: &Report, min_labelled: u64) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let failed = r.tests.iter().filter(|t| matches!(t.outcome, Outcome::Fail)).count();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>framewatch evaluation</title>\
         <style>{}{EXTRA_CSS}</style></head><body>\n<header><h1>Model evaluation</h1>\
         <p class=\"meta\">{} frames scored, {} labelled; precision, recall and F1 at IoU {} counting detections with \
         confidence &ge; {}; no verdict below {min_labelled} labelled frames.</p>",
        include_str!("../report.css"),
        r.frames_scored,
        r.frames_labelled,
        r.settings.iou_threshold,
        r.settings.score_threshold,
    );
    if !r.tests.is_empty() {
        let (class, text) = if failed > 0 {
            ("drift", format!("{failed} of {} model test cases fail (exit code 3)", r.tests.len()))
        } else {
            ("ok", format!("No model test case fails ({} run)", r.tests.len()))
        };
        let _ = write!(h, "<p id=\"gate\" class=\"banner {class}\">{text}</p>");
    }
    h.push_str("</header>\n");

    if !r.tests.is_empty() {
        h.push_str(
            "<section id=\"tests\"><h2>Model test cases</h2><table><tr><th>test</th><th>slice</th><th>outcome</th>\
             <th>value</th><th>labelled frames</th></tr>\n",
        );
        for t in &r.tests {
            let (class, text) = outcome_name(&t.outcome);
            let _ = writeln!(
                h,
                "<tr data-test=\"{0}\"><td><code>{0}</code></td><td>{1}</td><td class=\"outcome {class}\">{text}</td>\
                 <td class=\"value\">{2}</td><td>{3}</td></tr>",
                escape(&t.test),
                escape(&t.slice),
                num(t.value),
                t.labelled_frames
            );
        }
        h.push_str("</table></section>\n");
    }

    h.push_str(
        "<section id=\"slices\"><h2>Performance per slice</h2><table><tr><th>slice</th><th>frames</th>\
         <th>labelled</th><th>mAP@0.5</th><th>mAP@[.5:.95]</th><th>precision</th><th>recall</th><th>F1</th></tr>\n",
    );
    for s in &r.slices {
        let [m50, m5095, precision, recall, f1] = slice_figures(s.performance.as_ref());
        let _ = writeln!(
            h,
            "<tr data-slice=\"{0}\"{1}><td>{0}</td><td>{2}</td><td>{3}</td><td class=\"map50\">{m50}</td>\
             <td>{m5095}</td><td>{precision}</td><td>{recall}</td><td>{f1}</td></tr>",
            escape(&s.slice),
            if s.performance.is_none() { " class=\"few\"" } else { "" },
            s.frames,
            s.labelled_frames,
        );
        if let (Some(p), Some(reference)) = (&s.baseline_performance, &s.baseline_reference) {
            let [m50, m5095, precision, recall, f1] = slice_figures(Some(p));
            let _ = writeln!(
                h,
                "<tr class=\"baseline\" data-baseline-for=\"{}\"><td>&nbsp;&nbsp;baseline ({})</td><td>-</td>\
                 <td>{}</td><td class=\"map50\">{m50}</td><td>{m5095}</td><td>{precision}</td><td>{recall}</td>\
                 <td>{f1}</td></tr>",
                escape(&s.slice),
                escape(reference),
                p.frames,
            );
        }
    }
    h.push_str("</table></section>\n");
    label_metrics_table(&mut h, r);

    if let Some(p) = r.slices.first().and_then(|s| s.performance.as_ref()) {
        h.push_str(
            "<section id=\"classes\"><h2>Per class (every frame)</h2><table><tr><th>class</th><th>objects</th>\
             <th>AP@0.5</th><th>AP@[.5:.95]</th><th>precision</th><th>recall</th><th>F1</th></tr>\n",
        );
        for (c, cp) in &p.classes {
            let cells = figures(cp.ap50, cp.ap50_95, Some(&cp.counts)).map(|f| format!("<td>{f}</td>")).concat();
            let _ = writeln!(h, "<tr><td>{}</td><td>{}</td>{cells}</tr>", escape(c), cp.truths);
        }
        h.push_str("</table></section>\n");
    }

    importance_chart(&mut h, &r.importance);
    bucket_charts(&mut h, &r.importance);
    h.push_str("</body></html>\n");
    h
}

/// The label quality metrics of the labelled frames' ground truth, with the baseline's when known.
fn label_metrics_table(h: &mut String, r: &Report) {
    h.push_str(
        "<section id=\"label-metrics\"><h2>Label quality</h2><p class=\"note\">Encord Active's label quality metrics \
         on the labelled frames' ground truth (README, \"Label quality metrics\"); a frame without objects has only a \
         count.</p><table><tr><th>metric</th><th>values</th><th>mean</th><th>min</th><th>Q1</th><th>median</th>\
         <th>Q3</th><th>max</th><th>baseline mean</th><th>baseline median</th></tr>\n",
    );
    for m in &r.label_metrics {
        let s = &m.summary;
        let q = |i: usize| num(s.quartiles.map(|q| q[i]));
        let _ = writeln!(
            h,
            "<tr data-label-metric=\"{0}\"><td>{0}</td><td>{1}</td><td class=\"mean\">{2}</td><td>{3}</td><td>{4}</td>\
             <td>{5}</td><td>{6}</td><td>{7}</td><td class=\"baseline-mean\">{8}</td><td>{9}</td></tr>",
            escape(s.metric),
            s.values,
            num(s.mean),
            num(s.min),
            q(0),
            q(1),
            q(2),
            num(s.max),
            num(m.baseline_mean),
            num(m.baseline_quartiles.map(|q| q[1])),
        );
    }
    h.push_str("</table></section>\n");
}

/// One horizontal bar per metric: Spearman's rho with per-frame F1, from the centre line (right: more of the metric,
/// better performance).
fn importance_chart(h: &mut String, imp: &[MetricImportance]) {
    let rows: Vec<&MetricImportance> = imp.iter().filter(|m| m.f1_spearman.is_some()).collect();
    h.push_str(
        "<section id=\"importance\"><h2>Metric importance</h2><p class=\"note\">Spearman's rho of each data metric \
         with the per-frame F1 over labelled frames (bar), and mutual information (nats). Green: more of the metric, \
         better performance; red: more of it, worse.</p>\n",
    );
    if rows.is_empty() {
        h.push_str("<p class=\"note\">Too few labelled frames to relate metrics to performance.</p></section>\n");
        return;
    }
    let (label_w, bar_w, row_h) = (170.0, 420.0, 16.0);
    let width = label_w + bar_w + 120.0;
    let height = row_h * rows.len() as f64 + 24.0;
    let mid = label_w + bar_w / 2.0;
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\">\
         <line class=\"axis\" x1=\"{mid}\" y1=\"0\" x2=\"{mid}\" y2=\"{}\"/>",
        height - 20.0
    );
    for (i, m) in rows.iter().enumerate() {
        let rho = m.f1_spearman.unwrap_or(0.0);
        let y = i as f64 * row_h;
        let w = rho.abs() * bar_w / 2.0;
        let x = if rho >= 0.0 { mid } else { mid - w };
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect class=\"imp {}\" data-metric=\"{}\" x=\"{x:.1}\" \
             y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"/><text x=\"{}\" y=\"{}\">{:+.2} · MI {}</text>",
            label_w - 6.0,
            y + 11.0,
            escape(&m.metric),
            if rho >= 0.0 { "pos" } else { "neg" },
            escape(&m.metric),
            y + 2.0,
            row_h - 4.0,
            label_w + bar_w + 6.0,
            y + 11.0,
            rho,
            num(m.f1_mutual_information),
        );
    }
    let _ = writeln!(
        h,
        "<text x=\"{label_w}\" y=\"{0}\">-1</text><text x=\"{mid}\" y=\"{0}\" text-anchor=\"middle\">0</text>\
         <text x=\"{1}\" y=\"{0}\" text-anchor=\"end\">+1</text></svg></section>",
        height - 6.0,
        label_w + bar_w
    );
}

/// Encord Active's "performance by metric": F1 per quantile bucket of each of the most important metrics.
fn bucket_charts(h: &mut String, imp: &[MetricImportance]) {
    let charts: Vec<&MetricImportance> =
        imp.iter().filter(|m| m.f1_spearman.is_some() && !m.buckets.is_empty()).take(BUCKET_CHARTS).collect();
    if charts.is_empty() {
        return;
    }
    h.push_str(
        "<section id=\"by-metric\"><h2>Performance by metric</h2><p class=\"note\">F1 of the labelled frames in each \
         quantile bucket of the metric, lowest values left; under each bar the bucket's smallest value (hover for its \
         range).</p><div class=\"charts\">\n",
    );
    let (w, ht, pad) = (360.0, 150.0, 22.0);
    for m in charts {
        let n = m.buckets.len() as f64;
        let slot = (w - 2.0 * pad) / n;
        let _ = write!(
            h,
            "<figure class=\"chart\" data-metric=\"{0}\"><figcaption>{0}<span>rho {1:+.2}</span></figcaption>\
             <svg viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\">\
             <line class=\"axis\" x1=\"{pad}\" y1=\"{2}\" x2=\"{3}\" y2=\"{2}\"/>",
            escape(&m.metric),
            m.f1_spearman.unwrap_or(0.0),
            ht - 2.0 * pad,
            w - pad,
        );
        for (i, b) in m.buckets.iter().enumerate() {
            let f1 = b.counts.f1().unwrap_or(0.0);
            let bar_h = f1 * (ht - 3.0 * pad);
            let x = pad + i as f64 * slot + 3.0;
            let _ = write!(
                h,
                "<rect class=\"bucket\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar_h:.1}\"><title>{} frames \
                 with {:.4} to {:.4}: F1 {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                ht - 2.0 * pad - bar_h,
                slot - 6.0,
                b.frames,
                b.min,
                b.max,
                num(b.counts.f1()),
                x + (slot - 6.0) / 2.0,
                ht - 2.0 * pad - bar_h - 3.0,
                num(b.counts.f1()),
                x + (slot - 6.0) / 2.0,
                ht - pad - 6.0,
                short(b.min),
            );
        }
        h.push_str("</svg></figure>\n");
    }
    h.push_str("</div></section>\n");
}

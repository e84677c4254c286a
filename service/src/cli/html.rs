//! The offline HTML drift report (`framewatch drift --html FILE`): one self-contained page with the verdict, the
//! statistics table, baseline-vs-current histograms as inline SVG and, for each drifting metric, its most outlying
//! frames with embedded JPEG thumbnails. No script, font or style is loaded from anywhere: it opens from a ticket.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use framewatch_metrics::decode::decode_into;
use framewatch_metrics::{Baseline, DecodeLimits, DriftReport, RgbImage, Verdict};

use super::offline::InputFile;
use super::report;
use crate::charts::{Series, ThumbnailScratch, escape, fmt_num, histogram_svg, thumbnail_jpeg};

/// Outlying frames listed per drifting metric.
pub const OUTLIERS_PER_METRIC: usize = 5;
/// Thumbnails embedded in one report, over all metrics: beyond it frames are listed without a picture, which keeps
/// a report with many drifting metrics in the hundreds of kilobytes.
pub const MAX_THUMBNAILS: usize = 40;

/// What the report needs from the scoring pass besides the drift report: each frame's path and, per metric the
/// baseline knows, every current value with the frame it came from.
#[derive(Debug, Default)]
pub struct FrameValues {
    paths: Vec<PathBuf>,
    /// Metric name -> (frame index, value), in input order.
    values: BTreeMap<String, Vec<(u32, f64)>>,
}

impl FrameValues {
    /// `names` are the registry's metric names, in the order of the `values` the scorer hands back.
    pub fn record(&mut self, names: &[&str], baseline: &Baseline, input: &InputFile, values: &[Option<f64>]) {
        let frame = self.paths.len() as u32;
        self.paths.push(input.path.clone());
        for (name, v) in names.iter().zip(values) {
            if let Some(v) = v.filter(|v| v.is_finite())
                && baseline.metrics.contains_key(*name)
            {
                self.values.entry((*name).to_string()).or_default().push((frame, v));
            }
        }
    }
}

/// The gate's outcome as the command computed it, for the verdict section.
#[derive(Debug)]
pub struct Gate<'a> {
    /// The `--fail-on` text, if given.
    pub rules: Option<&'a str>,
    /// Whether the command exits with the rule-failed code.
    pub failed: bool,
}

/// How far a value lies from the baseline: |v - median| in baseline IQR units (the scale Encord's outlier fences use),
/// falling back to the baseline standard deviation, then to plain units, for metrics without spread.
fn outlier_score(v: f64, quartiles: [f64; 3], std: f64) -> f64 {
    let iqr = quartiles[2] - quartiles[0];
    let scale = if iqr > 0.0 {
        iqr
    } else if std > 0.0 {
        std
    } else {
        1.0
    };
    (v - quartiles[1]).abs() / scale
}

/// Renders the whole page.
pub fn render(rep: &DriftReport, baseline: &Baseline, frames: &FrameValues, gate: &Gate) -> String {
    let mut h = String::with_capacity(64 << 10);
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<title>framewatch drift report</title>\n<style>\n",
        include_str!("report.css"),
        "</style>\n</head>\n<body>\n"
    ));
    let drifting: Vec<&str> =
        rep.metrics.iter().filter(|(_, m)| m.drift == Some(true)).map(|(n, _)| n.as_str()).collect();
    let drift = rep.verdict == Verdict::Drift;
    let _ = write!(
        h,
        "<header>\n<h1>framewatch drift report</h1>\n<p id=\"verdict\" class=\"banner {}\">{}</p>\n",
        if drift { "drift" } else { "ok" },
        if drift {
            format!("Drifting: {} of {} metrics drift from the baseline", drifting.len(), rep.metrics.len())
        } else {
            format!("Not drifting: none of {} metrics drifts from the baseline", rep.metrics.len())
        }
    );
    for (name, c) in rep.categoricals.iter().filter(|(_, c)| c.drift == Some(true)) {
        let _ = writeln!(
            h,
            "<p class=\"note\">The {} distribution drifts too (Cramér's V {:.3}, p {}).</p>",
            escape(name),
            c.chi_square.cramers_v,
            report::fmt_p(c.chi_square.p_value)
        );
    }
    if let Some(rules) = gate.rules {
        let _ = writeln!(
            h,
            "<p id=\"gate\" class=\"banner {}\">Gate <code>--fail-on {}</code>: {}</p>",
            if gate.failed { "drift" } else { "ok" },
            escape(rules),
            if gate.failed { "failed (exit code 3)" } else { "passed" }
        );
        if !rep.rule_failures.is_empty() {
            h.push_str("<ul class=\"rules\">\n");
            for r in &rep.rule_failures {
                let _ = writeln!(
                    h,
                    "<li>rule <code>{}</code> broken: {} = {:.4}</li>",
                    escape(&r.rule),
                    escape(&r.metric),
                    r.value
                );
            }
            h.push_str("</ul>\n");
        }
    }
    let p = &baseline.provenance;
    let f = &rep.frames;
    let _ = writeln!(
        h,
        "<p class=\"meta\">Baseline: {} frames ({}), built {}. Current: {} frames scored, {} rejected.</p>",
        p.frames_scored,
        escape(&p.source),
        escape(&p.created_at),
        f.scored,
        f.rejected
    );
    let t = &rep.thresholds;
    let _ = writeln!(
        h,
        "<p class=\"meta\">A metric drifts when (PSI &ge; {} or KS &ge; {}) and KS p &le; {} on at least {} values.</p>\n</header>",
        t.psi, t.ks_statistic, t.p_value, t.min_frames
    );

    // The statistics, the same rows and numbers as the text table.
    let (header, rows) = report::drift_rows(rep);
    h.push_str("<section>\n<h2>Statistics per metric</h2>\n<table id=\"stats\">\n<thead><tr>");
    for c in &header {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &rows {
        let verdict = row.last().map(String::as_str).unwrap_or("");
        let class = match verdict {
            "DRIFT" => "drift",
            "ok" => "ok",
            _ => "few",
        };
        let _ = write!(h, "<tr class=\"{class}\" data-metric=\"{}\">", escape(&row[0]));
        for (c, cell) in header.iter().zip(row) {
            let _ = write!(h, "<td class=\"{}\">{}</td>", escape(c), escape(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</section>\n");

    // Histograms in the table's order.
    h.push_str(concat!(
        "<section>\n<h2>Distributions: baseline vs current</h2>\n",
        "<p class=\"legend\"><span class=\"key base\"></span> baseline <span class=\"key cur\"></span> current ",
        "(share of frames per bar; the line marks the baseline median)</p>\n<div class=\"charts\">\n"
    ));
    let empty = Vec::new();
    for row in &rows {
        let name = &row[0];
        let (Some(m), Some(b)) = (rep.metrics.get(name), baseline.metrics.get(name)) else { continue };
        let values = frames.values.get(name).unwrap_or(&empty);
        let class = match m.drift {
            Some(true) => "drift",
            Some(false) => "ok",
            None => "few",
        };
        let _ = writeln!(
            h,
            "<figure class=\"chart {class}\" data-metric=\"{}\"><figcaption>{} <span>PSI {:.3} · KS {:.3}</span></figcaption>",
            escape(name),
            escape(name),
            m.stats.psi,
            m.stats.ks_statistic
        );
        histogram_svg(
            &mut h,
            b.layout.edges(),
            Series::Binned { counts: &b.histogram.counts, range: None },
            Series::Values(values),
            b.quartiles[1],
        );
        h.push_str("</figure>\n");
    }
    h.push_str("</div>\n</section>\n");

    outliers(&mut h, rep, baseline, frames, &rows);
    h.push_str("<footer>framewatch ");
    h.push_str(&escape(framewatch_metrics::VERSION));
    h.push_str("</footer>\n</body>\n</html>\n");
    h
}

/// For each drifting metric, the frames furthest from its baseline median (in IQR units), with thumbnails up to
/// the report's cap.
fn outliers(h: &mut String, rep: &DriftReport, baseline: &Baseline, frames: &FrameValues, rows: &[Vec<String>]) {
    let drifting: Vec<&String> =
        rows.iter().map(|r| &r[0]).filter(|n| rep.metrics.get(*n).is_some_and(|m| m.drift == Some(true))).collect();
    if drifting.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        concat!(
            "<section>\n<h2>Most outlying frames per drifting metric</h2>\n<p class=\"note\">Ranked by distance from ",
            "the baseline median in baseline IQR units; {} per metric, thumbnails for the first {} in all.</p>"
        ),
        OUTLIERS_PER_METRIC, MAX_THUMBNAILS
    );
    let mut thumbs = Thumbnailer::default();
    for name in drifting {
        let (Some(b), Some(values)) = (baseline.metrics.get(name), frames.values.get(name)) else { continue };
        let mut ranked: Vec<(f64, u32, f64)> =
            values.iter().map(|&(f, v)| (outlier_score(v, b.quartiles, b.std), f, v)).collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let _ = writeln!(
            h,
            "<h3>{}</h3>\n<p class=\"meta\">baseline median {}, IQR {}</p>\n<div class=\"frames\" data-metric=\"{}\">",
            escape(name),
            fmt_num(b.quartiles[1]),
            fmt_num(b.quartiles[2] - b.quartiles[0]),
            escape(name)
        );
        for &(score, f, v) in ranked.iter().take(OUTLIERS_PER_METRIC) {
            let path = &frames.paths[f as usize];
            let shown = escape(&path.to_string_lossy());
            h.push_str("<figure class=\"frame\">");
            match thumbs.thumbnail(path) {
                Some(Ok(b64)) => {
                    let _ = write!(h, "<img alt=\"{shown}\" src=\"data:image/jpeg;base64,{b64}\">");
                }
                Some(Err(why)) => {
                    let _ = write!(h, "<div class=\"nothumb\">no thumbnail: {}</div>", escape(&why));
                }
                None => h.push_str("<div class=\"nothumb\">thumbnail cap reached</div>"),
            }
            let _ = writeln!(
                h,
                "<figcaption><span class=\"path\">{shown}</span><br>{} = {} ({score:.1} IQR from the median)</figcaption></figure>",
                escape(name),
                fmt_num(v)
            );
        }
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n");
}

/// Decodes frames again and re-encodes them small, counting against the report's cap (`thumbnail`), or not
/// (`make`, for `baseline build --exemplars`).
#[derive(Debug, Default)]
pub(super) struct Thumbnailer {
    made: usize,
    bytes: Vec<u8>,
    full: RgbImage,
    scratch: ThumbnailScratch,
}

impl Thumbnailer {
    /// None once the cap is reached; otherwise the thumbnail as base64 JPEG, or why there is none.
    fn thumbnail(&mut self, path: &Path) -> Option<Result<String, String>> {
        if self.made >= MAX_THUMBNAILS {
            return None;
        }
        self.made += 1;
        Some(self.make(path))
    }

    /// The thumbnail as base64 JPEG, or why there is none.
    pub(super) fn make(&mut self, path: &Path) -> Result<String, String> {
        let limits = DecodeLimits::default();
        self.bytes.clear();
        std::fs::File::open(path)
            .and_then(|f| f.take(limits.max_encoded_bytes as u64 + 1).read_to_end(&mut self.bytes))
            .map_err(|e| e.to_string())?;
        decode_into(&self.bytes, &limits, &mut self.full).map_err(|e| e.to_string())?;
        let jpeg = thumbnail_jpeg(&self.full, &mut self.scratch).map_err(|e| e.to_string())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(&jpeg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlier_score_uses_iqr_then_std_then_units() {
        assert_eq!(outlier_score(5.0, [1.0, 2.0, 3.0], 9.0), 1.5);
        assert_eq!(outlier_score(5.0, [2.0, 2.0, 2.0], 2.0), 1.5);
        assert_eq!(outlier_score(5.0, [2.0, 2.0, 2.0], 0.0), 3.0);
    }
}

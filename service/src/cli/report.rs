//! Human and machine output of the offline commands: score tables and JSON lines, the drift table, the catalog.

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::bail;
use framewatch_metrics::{Baseline, DriftReport, MetricRegistry, Verdict};

use super::offline::{FrameResult, InputFile};

/// Columns of the score table when none are asked for.
const TABLE_DEFAULT: &[&str] =
    &["brightness", "contrast", "sharpness", "saturation", "entropy", "noise", "object_count", "confidence_mean"];

/// Registry indices of the metrics to show; unknown names are an error that lists the known ones.
pub fn columns(registry: &MetricRegistry, asked: &[String], table: bool) -> anyhow::Result<Vec<usize>> {
    if asked.is_empty() {
        return Ok(if table {
            TABLE_DEFAULT.iter().filter_map(|n| registry.index_of(n)).collect()
        } else {
            (0..registry.len()).collect()
        });
    }
    let mut out = Vec::new();
    for name in asked {
        match registry.index_of(name.trim()) {
            Some(i) => out.push(i),
            None => {
                bail!("unknown metric {name:?}; known metrics: {}", registry.names().collect::<Vec<_>>().join(", "))
            }
        }
    }
    Ok(out)
}

pub fn write_jsonl(
    out: &mut impl Write,
    registry: &MetricRegistry,
    columns: &[usize],
    input: &InputFile,
    result: &FrameResult,
) -> io::Result<()> {
    let names: Vec<&str> = registry.names().collect();
    let line = match result {
        FrameResult::Scored { values, width, height, perceptual_hash, .. } => {
            let metrics: serde_json::Map<String, serde_json::Value> =
                columns.iter().map(|&i| (names[i].to_string(), values[i].into())).collect();
            serde_json::json!({
                "path": input.path.to_string_lossy(),
                "width": width,
                "height": height,
                "metrics": metrics,
                "perceptual_hash": perceptual_hash.map(|h| format!("{h:016x}")),
            })
        }
        FrameResult::Failed { reason, message } => serde_json::json!({
            "path": input.path.to_string_lossy(),
            "error": {"kind": reason, "message": message},
        }),
    };
    serde_json::to_writer(&mut *out, &line)?;
    writeln!(out)
}

/// Accumulates rows, then prints them aligned.
#[derive(Debug)]
pub struct ScoreTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    columns: Vec<usize>,
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e9 => format!("{x:.0}"),
        Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.4}"),
    }
}

impl ScoreTable {
    pub fn new(registry: &MetricRegistry, columns: &[usize]) -> ScoreTable {
        let names: Vec<&str> = registry.names().collect();
        let mut header = vec!["path".to_string(), "size".to_string()];
        header.extend(columns.iter().map(|&i| names[i].to_string()));
        ScoreTable { header, rows: Vec::new(), columns: columns.to_vec() }
    }

    pub fn push(&mut self, input: &InputFile, result: &FrameResult) {
        let mut row = vec![input.relative.clone()];
        match result {
            FrameResult::Scored { values, width, height, .. } => {
                row.push(match (width, height) {
                    (Some(w), Some(h)) => format!("{w}x{h}"),
                    _ => "-".into(),
                });
                row.extend(self.columns.iter().map(|&i| fmt_value(values[i])));
            }
            FrameResult::Failed { reason, message } => row.push(format!("ERROR {reason}: {message}")),
        }
        self.rows.push(row);
    }

    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        print_aligned(out, &self.header, &self.rows)
    }
}

/// Left-aligns the first column, right-aligns the others; rows shorter than the header (errors) are not padded.
fn print_aligned(out: &mut impl Write, header: &[String], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows.iter().filter(|r| r.len() == header.len()) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i == 0 {
                line.push_str(&format!("{c:<w$}"));
            } else if r.len() == header.len() {
                line.push_str(&format!("  {c:>w$}"));
            } else {
                line.push_str(&format!("  {c}"));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub fn print_frame_summary(scored: u64, rejected: &BTreeMap<&'static str, u64>) {
    let total: u64 = rejected.values().sum();
    if total == 0 {
        eprintln!("frames: {scored} scored, 0 rejected");
    } else {
        let by: Vec<String> = rejected.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        eprintln!("frames: {scored} scored, {total} rejected ({})", by.join(", "));
    }
}

pub fn print_catalog(registry: &MetricRegistry, out: &mut impl Write) -> io::Result<()> {
    let header: Vec<String> = ["name", "kind", "unit", "range", "encord", "definition"].map(String::from).to_vec();
    let rows: Vec<Vec<String>> = registry
        .infos()
        .map(|m| {
            vec![
                m.name.to_string(),
                format!("{:?}", m.kind).to_lowercase(),
                m.unit.to_string(),
                m.range.to_string(),
                m.encord.unwrap_or("-").to_string(),
                m.description.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r).take(5) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| if i < 5 { format!("{c:<w$}", w = widths[i]) } else { c.clone() })
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

pub(super) fn fmt_p(p: f64) -> String {
    if p >= 1e-3 { format!("{p:.3}") } else { format!("{p:.1e}") }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.4}"))
}

/// The drift table's header and rows: one row per metric, drifted metrics first, then by PSI.
pub(super) fn drift_rows(rep: &DriftReport) -> (Vec<String>, Vec<Vec<String>>) {
    let header: Vec<String> =
        ["metric", "n", "mean", "baseline", "psi", "ks", "ks_p", "js", "w_norm", "out_1.5iqr", "out_2.5iqr", "verdict"]
            .map(String::from)
            .to_vec();
    // Drifted metrics first, then by PSI: the reader's eye lands on what moved most. Sorted on the numbers, before
    // they are formatted (the sort is stable: equal keys keep the report's name order).
    let mut metrics: Vec<_> = rep.metrics.iter().collect();
    metrics.sort_by(|(_, a), (_, b)| {
        (a.drift != Some(true)).cmp(&(b.drift != Some(true))).then(b.stats.psi.total_cmp(&a.stats.psi))
    });
    let mut rows = Vec::new();
    for (name, m) in metrics {
        let s = &m.stats;
        rows.push(vec![
            name.clone(),
            s.n.to_string(),
            opt(s.mean),
            format!("{:.4}", s.baseline_mean),
            format!("{:.3}", s.psi),
            format!("{:.3}", s.ks_statistic),
            fmt_p(s.ks_p_value),
            format!("{:.3}", s.js_distance),
            s.wasserstein_norm.map_or("-".into(), |w| format!("{w:.3}")),
            format!("{:.3}", s.outliers_moderate),
            format!("{:.3}", s.outliers_severe),
            match m.drift {
                Some(true) => "DRIFT".into(),
                Some(false) => "ok".into(),
                None => "too few".into(),
            },
        ]);
    }
    (header, rows)
}

pub fn print_drift(rep: &DriftReport, baseline: &Baseline, out: &mut impl Write) -> io::Result<()> {
    let (header, rows) = drift_rows(rep);
    writeln!(
        out,
        "baseline: {} frames ({}), built {}",
        baseline.provenance.frames_scored, baseline.provenance.source, baseline.provenance.created_at
    )?;
    let f = &rep.frames;
    write!(out, "current:  {} frames scored, {} rejected", f.scored, f.rejected)?;
    if !f.rejected_by_reason.is_empty() {
        let by: Vec<String> = f.rejected_by_reason.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        write!(out, " ({})", by.join(", "))?;
    }
    writeln!(out, "\n")?;
    print_aligned(out, &header, &rows)?;
    for (name, c) in &rep.categoricals {
        writeln!(
            out,
            "\n{name} distribution: n={} chi2={:.2} dof={} p={} cramers_v={:.3} -> {}",
            c.n,
            c.chi_square.statistic,
            c.chi_square.dof,
            fmt_p(c.chi_square.p_value),
            c.chi_square.cramers_v,
            match c.drift {
                Some(true) => "DRIFT",
                Some(false) => "ok",
                None => "too few",
            }
        )?;
    }
    let t = &rep.thresholds;
    writeln!(
        out,
        "\nverdict: {}  (drift = (psi >= {} or ks >= {}) and ks_p <= {} with n >= {}; class: cramers_v >= {})",
        match rep.verdict {
            Verdict::Drift => "DRIFT",
            Verdict::Ok => "ok",
        },
        t.psi,
        t.ks_statistic,
        t.p_value,
        t.min_frames,
        t.cramers_v
    )?;
    for r in &rep.rule_failures {
        writeln!(out, "rule broken: {} ({} = {:.4})", r.rule, r.metric, r.value)?;
    }
    Ok(())
}

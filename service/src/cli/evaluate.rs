//! `framewatch evaluate`: the seed's model test cases on real performance, offline. Frames are scored with the
//! quality metrics, joined with the model's predictions and a reviewer's ground truth, cut into slices (every
//! frame, scenario predicates such as "brightness < 0.3 and sharpness < 0.01", sub-directories), and judged per
//! slice: mAP@0.5, mAP@[.5:.95], precision, recall, F1. Tests such as `map50 >= 0.6 in predicate=dark` make it a CI
//! gate (exit code 3); metric importance says which metrics explain where the model fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use framewatch_metrics::importance::{ImportanceFrame, ImportanceSettings, MetricImportance, metric_importance};
use framewatch_metrics::label_quality::{LabelMetricSummary, summarize_labels};
use framewatch_metrics::performance::{
    Counts, LabelledFrame, Performance, PerformanceSettings, PerformanceTest, TruthBox, evaluate,
};
use framewatch_metrics::predicate::Predicate;
use framewatch_metrics::{Baseline, Detection, MetricRegistry, PredictionSettings, ScoreSettings};
use serde::Serialize;

mod html;

use super::offline::{FrameResult, GroundTruth, score_files};
use super::{AnalysisArgs, EXIT_RULE_FAILED, InputArgs, MatchingArgs, load_inputs, settings_with, slice_key, threads};
use crate::slice::SliceKey;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Ground truth: JSON lines {"path": ..., "objects": [{"x_min", "y_min", "x_max", "y_max", "class"}]}, boxes
    /// normalised to [0,1]; `"objects": []` is a frame with nothing to find. Frames without a line are unlabelled:
    /// they count for metric importance against confidence, not for performance.
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// A scenario slice, NAME=CONDITIONS: `dark=brightness < 0.25`, `heavy_rain=brightness < 0.3 and sharpness <
    /// 0.01`. Repeatable; the slice is `predicate=NAME`.
    #[arg(long = "predicate", value_name = "NAME=CONDITIONS")]
    pub predicates: Vec<String>,
    /// Also one slice per sub-directory, DIMENSION=<sub-directory> (as `baseline build --slice-dimension`).
    #[arg(long, value_name = "DIMENSION")]
    pub slice_dimension: Option<String>,
    /// A model test case, `[CLASS.]STATISTIC OP NUMBER [in SLICE]` with STATISTIC one of map50, map50_95,
    /// precision, recall, f1 (default slice: global). Repeatable. Exit code 3 when any fails.
    /// Examples: 'map50 >= 0.6 in predicate=dark'  'car.recall >= 0.8 in site=lot-7'  'f1 >= 0.7'
    #[arg(long = "test", value_name = "TEST")]
    pub tests: Vec<String>,
    /// A slice with fewer labelled frames than this gets no verdict.
    #[arg(long, default_value_t = 20)]
    pub min_labelled: u64,
    #[command(flatten)]
    pub matching: MatchingArgs,
    /// A baseline built with `baseline build --labels`: its recorded performance is shown next to each slice's
    /// (the slice's own reference, else its context-free one, else the fleet-wide one), and its label quality
    /// distributions next to the current ones.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Quantile buckets per metric for performance by metric.
    #[arg(long, default_value_t = ImportanceSettings::default().buckets)]
    pub buckets: usize,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML file (test cases, performance per slice and class, the
    /// metric importance and performance-by-metric charts as inline SVG); it loads nothing from anywhere.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// A `--test`: a performance test on one slice.
#[derive(Debug, Clone)]
struct SliceTest {
    text: String,
    test: PerformanceTest,
    slice: SliceKey,
}

fn parse_test(text: &str) -> anyhow::Result<SliceTest> {
    let (rule, slice) = match text.rsplit_once(" in ") {
        Some((r, s)) => {
            let key = SliceKey::parse(s.trim())
                .with_context(|| format!("--test {text:?}: {:?} is not a slice key (e.g. predicate=dark)", s.trim()))?;
            (r, key)
        }
        None => (text, SliceKey::global()),
    };
    let test = PerformanceTest::parse(rule).with_context(|| format!("--test {text:?}"))?;
    Ok(SliceTest { text: text.to_owned(), test, slice })
}

fn parse_predicate_arg(text: &str) -> anyhow::Result<(String, Predicate)> {
    let (name, cond) = text
        .split_once('=')
        .with_context(|| format!("--predicate {text:?}: write NAME=CONDITIONS, e.g. dark=brightness < 0.25"))?;
    let name = name.trim();
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        bail!("--predicate {text:?}: the name is empty");
    }
    let p = Predicate::parse(cond).map_err(|e| anyhow::anyhow!("--predicate {name}: {e}"))?;
    Ok((name.to_owned(), p))
}

/// One scored frame, with what the join found for it.
struct Frame {
    values: Vec<Option<f64>>,
    detections: Arc<[Detection]>,
    truth: Option<Arc<[TruthBox]>>,
    slices: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct SliceReport {
    slice: String,
    frames: u64,
    labelled_frames: u64,
    /// Over the labelled frames; absent below --min-labelled.
    performance: Option<Performance>,
    /// With --baseline: the recorded performance this slice is compared with, and the key of the baseline
    /// reference it comes from (the slice's own, its context-free one, or `global`).
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_performance: Option<Performance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_reference: Option<String>,
}

/// A label quality metric over the labelled frames, with the baseline's distribution when one was given.
#[derive(Debug, Serialize)]
struct LabelMetricReport {
    #[serde(flatten)]
    summary: LabelMetricSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_quartiles: Option<[f64; 3]>,
}

/// What --baseline held for the comparison.
#[derive(Debug, Serialize)]
struct BaselineReport {
    path: String,
    /// The matching settings of its recorded performance; absent when it records none (built without --labels
    /// and --predictions).
    performance_settings: Option<PerformanceSettings>,
    frames_labelled: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Pass,
    Fail,
    NoVerdict,
}

#[derive(Debug, Serialize)]
struct TestReport {
    test: String,
    slice: String,
    outcome: Outcome,
    value: Option<f64>,
    labelled_frames: u64,
    /// Why there is no verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    settings: PerformanceSettings,
    frames_scored: u64,
    frames_rejected: BTreeMap<&'static str, u64>,
    frames_labelled: u64,
    labels_refused: BTreeMap<&'static str, u64>,
    /// Lines of the labels file that matched no scored frame.
    labels_unmatched: u64,
    slices: Vec<SliceReport>,
    tests: Vec<TestReport>,
    /// Every metric, most related to per-frame F1 first.
    importance: Vec<MetricImportance>,
    /// Encord Active's label quality metrics over the labelled frames' ground truth, in catalog order.
    label_metrics: Vec<LabelMetricReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<BaselineReport>,
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let tests: Vec<SliceTest> = args.tests.iter().map(|t| parse_test(t)).collect::<anyhow::Result<_>>()?;
    let predicates: Vec<(String, Predicate)> =
        args.predicates.iter().map(|p| parse_predicate_arg(p)).collect::<anyhow::Result<_>>()?;
    let perf_settings = args.matching.settings()?;
    if !(1..=100).contains(&args.buckets) {
        bail!("--buckets must be between 1 and 100 (got {})", args.buckets);
    }
    let registry = Arc::new(MetricRegistry::standard());
    let names: Vec<&str> = registry.names().collect();
    let index_of = |m: &str| names.iter().position(|n| *n == m);
    let mut resolved = Vec::with_capacity(predicates.len());
    for (name, p) in &predicates {
        let idx = p
            .conditions
            .iter()
            .map(|c| index_of(&c.metric).with_context(|| format!("--predicate {name}: unknown metric {:?}", c.metric)))
            .collect::<anyhow::Result<Vec<usize>>>()?;
        resolved.push((SliceKey::predicate(name), p, idx));
    }
    for t in &tests {
        if t.slice.is_predicate() && !resolved.iter().any(|(k, _, _)| *k == t.slice) {
            bail!("--test {:?}: no --predicate defines {}", t.text, t.slice);
        }
    }
    let baseline = match &args.baseline {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read baseline {}", path.display()))?;
            let b = Baseline::from_json(&text).with_context(|| format!("invalid baseline {}", path.display()))?;
            match &b.performance {
                None => eprintln!(
                    "baseline {} records no performance (built without --labels and --predictions): only the \
                     label quality metrics are compared",
                    path.display()
                ),
                Some(p) if p.settings != perf_settings => eprintln!(
                    "baseline {} matched detections with other settings (IoU {}, confidence >= {}): its precision, \
                     recall and F1 are not directly comparable",
                    path.display(),
                    p.settings.iou_threshold,
                    p.settings.score_threshold
                ),
                Some(_) => {}
            }
            Some(b)
        }
    };
    let (files, preds) = load_inputs(&args.input)?;
    let truth = GroundTruth::load(&args.labels, PredictionSettings::default().max_detections)?;
    let settings = settings_with(&args.analysis, ScoreSettings::default());

    let mut slices: Vec<SliceKey> = vec![SliceKey::global()];
    slices.extend(resolved.iter().map(|(k, _, _)| k.clone()));
    let mut frames: Vec<Frame> = Vec::with_capacity(files.len());
    let mut rejected = BTreeMap::<&'static str, u64>::new();
    let mut matched_labels = 0u64;
    score_files(&files, &preds, &registry, settings, threads(args.input.threads), |input, result| match result {
        FrameResult::Scored { values, detections, .. } => {
            let mut member = vec![0];
            for (i, (_, p, idx)) in resolved.iter().enumerate() {
                if p.holds_with(|c, _| values.get(idx[c]).copied().flatten()) {
                    member.push(1 + i);
                }
            }
            if let Some(k) = slice_key(args.slice_dimension.as_deref(), input) {
                let (dim, value) = k.split_once('=').unwrap_or((k.as_str(), ""));
                let key = SliceKey::labels([(dim, value)]);
                let at = slices.iter().position(|s| *s == key).unwrap_or_else(|| {
                    slices.push(key);
                    slices.len() - 1
                });
                member.push(at);
            }
            let t = truth.lookup(input);
            matched_labels += u64::from(t.is_some());
            frames.push(Frame { values, detections, truth: t, slices: member });
        }
        FrameResult::Failed { reason, message } => {
            eprintln!("skipped {}: {message}", input.path.display());
            *rejected.entry(reason).or_default() += 1;
        }
    });
    if frames.is_empty() {
        bail!("no frame could be scored");
    }

    let mut slice_reports = Vec::with_capacity(slices.len());
    for (si, key) in slices.iter().enumerate() {
        let members: Vec<&Frame> = frames.iter().filter(|f| f.slices.contains(&si)).collect();
        let labelled: Vec<LabelledFrame<'_>> = members
            .iter()
            .filter_map(|f| f.truth.as_deref().map(|t| LabelledFrame { detections: &f.detections, truth: t }))
            .collect();
        let n = labelled.len() as u64;
        let performance = (n >= args.min_labelled.max(1)).then(|| evaluate(&labelled, &perf_settings).0);
        let reference = baseline.as_ref().and_then(|b| b.performance_for(key));
        slice_reports.push(SliceReport {
            slice: key.to_string(),
            frames: members.len() as u64,
            labelled_frames: n,
            performance,
            baseline_performance: reference.map(|(p, _, _)| p.clone()),
            baseline_reference: reference.map(|(_, k, _)| k.to_owned()),
        });
    }
    let test_reports: Vec<TestReport> = tests
        .iter()
        .map(|t| {
            let at = slices.iter().position(|s| *s == t.slice);
            let rep = at.map(|i| &slice_reports[i]);
            let labelled_frames = rep.map_or(0, |r| r.labelled_frames);
            let (outcome, value, note) = match rep.and_then(|r| r.performance.as_ref()) {
                None => (
                    Outcome::NoVerdict,
                    None,
                    Some(format!("{labelled_frames} labelled frames, fewer than --min-labelled {}", args.min_labelled)),
                ),
                Some(p) => match t.test.judge(p) {
                    Some((v, true)) => (Outcome::Pass, Some(v), None),
                    Some((v, false)) => (Outcome::Fail, Some(v), None),
                    None => (Outcome::NoVerdict, None, Some("undefined on these frames".to_owned())),
                },
            };
            TestReport { test: t.test.to_string(), slice: t.slice.to_string(), outcome, value, labelled_frames, note }
        })
        .collect();

    // Prediction metrics are the model's own output: relating them to performance says how calibrated the model
    // is, not which scene conditions hurt it. Importance covers the data metrics.
    let data_metrics: Vec<&str> =
        registry.infos().filter(|m| m.kind == framewatch_metrics::MetricKind::Data).map(|m| m.name).collect();
    let data_index: Vec<usize> = data_metrics.iter().filter_map(|m| index_of(m)).collect();
    let projected: Vec<Vec<Option<f64>>> =
        frames.iter().map(|f| data_index.iter().map(|&i| f.values[i]).collect()).collect();
    let confidence = index_of("confidence_mean");
    let imp_frames: Vec<ImportanceFrame<'_>> = frames
        .iter()
        .zip(&projected)
        .map(|(f, values)| ImportanceFrame {
            values,
            confidence_mean: confidence.and_then(|i| f.values[i]),
            labelled: f.truth.as_deref().map(|t| LabelledFrame { detections: &f.detections, truth: t }),
        })
        .collect();
    let imp_settings = ImportanceSettings { buckets: args.buckets, ..ImportanceSettings::default() };
    let importance = metric_importance(&data_metrics, &imp_frames, &perf_settings, &imp_settings);

    let label_metrics = summarize_labels(frames.iter().filter_map(|f| f.truth.as_deref()))
        .into_iter()
        .map(|summary| {
            let reference = baseline.as_ref().and_then(|b| b.label_metrics.get(summary.metric));
            LabelMetricReport {
                summary,
                baseline_mean: reference.map(|m| m.mean),
                baseline_quartiles: reference.map(|m| m.quartiles),
            }
        })
        .collect();
    let baseline_report = baseline.as_ref().zip(args.baseline.as_ref()).map(|(b, path)| BaselineReport {
        path: path.display().to_string(),
        performance_settings: b.performance.as_ref().map(|p| p.settings),
        frames_labelled: b.provenance.frames_labelled,
    });
    let report = Report {
        settings: perf_settings,
        frames_scored: frames.len() as u64,
        frames_rejected: rejected,
        frames_labelled: frames.iter().filter(|f| f.truth.is_some()).count() as u64,
        labels_refused: truth.refused.clone(),
        labels_unmatched: truth.len() as u64 - matched_labels.min(truth.len() as u64),
        slices: slice_reports,
        tests: test_reports,
        importance,
        label_metrics,
        baseline: baseline_report,
    };
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&report, args.min_labelled))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&report, args.min_labelled, &mut out)?;
    }
    out.flush()?;
    let failed = report.tests.iter().any(|t| matches!(t.outcome, Outcome::Fail));
    Ok(if failed { ExitCode::from(EXIT_RULE_FAILED) } else { ExitCode::SUCCESS })
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// A row's figures as both reports show them: mAP@0.5, mAP@[.5:.95], precision, recall, F1 ("-" where undefined).
fn figures(map50: Option<f64>, map50_95: Option<f64>, counts: Option<&Counts>) -> [String; 5] {
    [
        num(map50),
        num(map50_95),
        num(counts.and_then(Counts::precision)),
        num(counts.and_then(Counts::recall)),
        num(counts.and_then(Counts::f1)),
    ]
}

fn slice_figures(p: Option<&Performance>) -> [String; 5] {
    figures(p.and_then(|p| p.map50), p.and_then(|p| p.map50_95), p.map(|p| &p.counts))
}

fn print_report(r: &Report, min_labelled: u64, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "frames: {} scored, {} labelled; IoU {} and confidence >= {} for precision/recall/F1",
        r.frames_scored, r.frames_labelled, r.settings.iou_threshold, r.settings.score_threshold
    )?;
    if !r.labels_refused.is_empty() || r.labels_unmatched > 0 {
        let by: Vec<String> = r.labels_refused.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        writeln!(out, "labels: {} refused ({}), {} matched no frame", by.len(), by.join(", "), r.labels_unmatched)?;
    }
    writeln!(out, "\nPerformance per slice (no verdict below {min_labelled} labelled frames)")?;
    writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>7} {:>8} {:>9} {:>7} {:>7}",
        "slice", "frames", "labelled", "map50", "map50_95", "precision", "recall", "f1"
    )?;
    for s in &r.slices {
        let [m50, m5095, precision, recall, f1] = slice_figures(s.performance.as_ref());
        writeln!(
            out,
            "{:<32} {:>8} {:>8} {m50:>7} {m5095:>8} {precision:>9} {recall:>7} {f1:>7}",
            s.slice, s.frames, s.labelled_frames,
        )?;
        if let (Some(p), Some(reference)) = (&s.baseline_performance, &s.baseline_reference) {
            let [m50, m5095, precision, recall, f1] = slice_figures(Some(p));
            let label = format!("  baseline ({reference})");
            writeln!(
                out,
                "{label:<32} {:>8} {:>8} {m50:>7} {m5095:>8} {precision:>9} {recall:>7} {f1:>7}",
                "-", p.frames
            )?;
        }
    }
    if let Some(p) = r.slices.first().and_then(|s| s.performance.as_ref()) {
        writeln!(out, "\nPer class (global)")?;
        writeln!(out, "{:<24} {:>7} {:>7} {:>9} {:>7} {:>7}", "class", "objects", "ap50", "precision", "recall", "f1")?;
        for (c, cp) in &p.classes {
            writeln!(
                out,
                "{:<24} {:>7} {:>7} {:>9} {:>7} {:>7}",
                c,
                cp.truths,
                num(cp.ap50),
                num(cp.counts.precision()),
                num(cp.counts.recall()),
                num(cp.counts.f1())
            )?;
        }
    }
    if !r.tests.is_empty() {
        writeln!(out, "\nModel test cases")?;
        for t in &r.tests {
            let what = match t.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::NoVerdict => "NO VERDICT",
            };
            let detail = t
                .note
                .clone()
                .unwrap_or_else(|| format!("{} over {} labelled frames", num(t.value), t.labelled_frames));
            writeln!(out, "  {what:<10} {} in {}: {detail}", t.test, t.slice)?;
        }
    }
    print_label_metrics(r, out)?;
    writeln!(
        out,
        "\nMetric importance (Spearman rho and mutual information, nats: with per-frame F1 over labelled frames, with \
         mean confidence over all frames); F1 per quantile bucket of the metric, lowest values first"
    )?;
    writeln!(out, "{:<28} {:>7} {:>7} {:>8} {:>8}  f1 by bucket", "metric", "rho_f1", "mi_f1", "rho_conf", "mi_conf")?;
    for m in &r.importance {
        let buckets: Vec<String> = m.buckets.iter().map(|b| num(b.counts.f1())).collect();
        writeln!(
            out,
            "{:<28} {:>7} {:>7} {:>8} {:>8}  {}",
            m.metric,
            num(m.f1_spearman),
            num(m.f1_mutual_information),
            num(m.confidence_spearman),
            num(m.confidence_mutual_information),
            buckets.join(" ")
        )?;
    }
    Ok(())
}

/// The label quality table: the labelled frames' ground truth, with the baseline's mean and median when known.
fn print_label_metrics(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "\nLabel quality over the labelled frames' ground truth (Encord Active's label metrics; a frame without \
         objects has only a count)"
    )?;
    writeln!(
        out,
        "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "metric", "values", "mean", "min", "q1", "median", "q3", "max", "base_mean", "base_med"
    )?;
    for m in &r.label_metrics {
        let s = &m.summary;
        let q = |i: usize| num(s.quartiles.map(|q| q[i]));
        writeln!(
            out,
            "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}",
            s.metric,
            s.values,
            num(s.mean),
            num(s.min),
            q(0),
            q(1),
            q(2),
            num(s.max),
            num(m.baseline_mean),
            num(m.baseline_quartiles.map(|q| q[1])),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_name_their_slice_or_default_to_global() {
        let t = parse_test("map50 >= 0.6 in predicate=dark").expect("parse");
        assert_eq!(t.slice, SliceKey::predicate("dark"));
        assert_eq!(parse_test("car.recall >= 0.8").expect("parse").slice, SliceKey::global());
        assert!(parse_test("map50 >= 0.6 in =x").is_err());
        assert!(parse_test("psi >= 0.6").is_err());
        let (name, p) = parse_predicate_arg("heavy_rain=brightness < 0.3 and sharpness < 0.01").expect("predicate");
        assert_eq!((name.as_str(), p.conditions.len()), ("heavy_rain", 2));
        assert!(parse_predicate_arg("brightness < 0.3").is_err());
    }
}

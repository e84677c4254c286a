//! The `framewatch` command line: argument definitions and the offline commands (score, baseline build, drift;
//! evaluate in its own module). Everything here is glue between clap, the offline scorer and the metrics crate.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use framewatch_metrics::baseline::{ContextSpec, DEFAULT_FINE_BINS, context_key};
use framewatch_metrics::drift::parse_rules;
use framewatch_metrics::performance::PerformanceSettings;
use framewatch_metrics::{
    Baseline, BaselineBuilder, ComparableSettings, Downscale, DriftAccumulator, DriftThresholds, MetricRegistry,
    ScoreSettings, Verdict,
};

mod evaluate;
mod html;
mod offline;
mod report;

use crate::time::now_rfc3339;
use offline::{FrameResult, GroundTruth, InputFile, Predictions, collect_inputs, score_files};

/// Exit code when a `--fail-on` rule is broken (distinct from 1 = error and 2 = usage error).
pub const EXIT_RULE_FAILED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "framewatch",
    version,
    about = "Data-drift monitor for computer-vision camera fleets",
    long_about = "framewatch scores camera frames with quality metrics (brightness, contrast, sharpness, colour, \
noise, model confidence, ...) and compares them with a training-set baseline (PSI, KS, Jensen-Shannon, Wasserstein, \
IQR outliers).\n\nTypical offline use:\n  framewatch baseline build train_images/ --predictions train.jsonl -o baseline.json\n  \
framewatch drift --baseline baseline.json new_images/ --predictions new.jsonl\n  \
framewatch drift --baseline baseline.json new_images/ --fail-on 'psi>0.25,confidence_mean.mean<0.7'   # CI data gate"
)]
pub struct Cli {
    /// Log format on stderr: text, or json (one object per line, for log shippers). Default: `[log] format` of
    /// `serve`'s configuration (FRAMEWATCH_LOG__FORMAT), else text. Colours only when stderr is a terminal.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::config::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log format: `--log-format`, else the configuration's (serve), else text. A configuration that does
    /// not load gives text here; `run` then reports its error.
    pub fn log_format(&self) -> crate::config::LogFormat {
        if let Some(f) = self.log_format {
            return f;
        }
        match &self.command {
            Command::Serve(args) => crate::config::Config::load(args.config.as_deref(), std::env::vars())
                .map(|c| c.log.format)
                .unwrap_or_default(),
            _ => crate::config::LogFormat::Text,
        }
    }

    /// Where logs go instead of stderr: only the demo names a file (`--log-file`, or a default one while it
    /// draws its screen on a terminal).
    pub fn log_file(&self) -> Option<PathBuf> {
        #[cfg(feature = "demo")]
        if let Command::Demo(args) = &self.command {
            return args.log_file();
        }
        None
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score frames: one line of metric values per image.
    Score(ScoreArgs),
    /// Build or inspect a training-set baseline.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Compare frames with a baseline and report drift per metric.
    Drift(DriftArgs),
    /// Judge the model against ground truth per slice (mAP, precision, recall, F1), run model test cases on
    /// performance (exit code 3 when one fails), and rank the quality metrics by how much they explain performance.
    Evaluate(evaluate::EvaluateArgs),
    /// List the metric catalog (names, units, ranges, Encord Active equivalents).
    Metrics,
    /// Run the streaming service: gRPC ingest and queries, Prometheus /metrics, drift per slice.
    Serve(ServeArgs),
    /// Run the service with a built-in synthetic camera fleet, inject drift, watch it being detected.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
    /// Inspect a service checkpoint (windows, camera state, Kafka offsets).
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Check a checkpoint file and print its contents as JSON (offsets, counters, every slice's sub-windows).
    Inspect {
        #[arg(value_name = "FILE")]
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration (see framewatch.example.toml); FRAMEWATCH_* environment variables override it,
    /// e.g. FRAMEWATCH_SERVER__GRPC_ADDR=0.0.0.0:50051 or FRAMEWATCH_BASELINE=baseline.json.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Baseline JSON (overrides `baseline` in the config).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Score every image under PATH... and write their distribution as a baseline JSON file.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// Image files (JPEG, PNG) or directories, walked recursively for *.jpg, *.jpeg, *.png.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Model predictions: JSON lines {"path": ..., "detections": [{"x_min", "y_min", "x_max", "y_max", "class",
    /// "confidence", "class_probabilities"?}]}, boxes normalised to [0,1]. A path matches the file as given, relative
    /// to the directory argument, or by file name.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct AnalysisArgs {
    /// Analyse frames whose longer side exceeds this at a downscaled resolution (integer factor). 0 = never.
    #[arg(long, value_name = "PIXELS")]
    pub max_side: Option<u32>,
    /// How frames over max-side are downscaled: dct (default) scales JPEGs inside the decoder's inverse DCT by a
    /// power of two; box decodes in full and averages blocks by the smallest integer factor.
    #[arg(long, value_enum)]
    pub downscale: Option<DownscaleArg>,
}

/// `--downscale`'s values (`framewatch_metrics::Downscale`, which knows nothing of clap).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DownscaleArg {
    Box,
    Dct,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Output format: a readable table, or one JSON object per frame.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Comma-separated metric names to show (default: a readable subset for the table, all for jsonl).
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Where to write the baseline JSON.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Quantile bins per metric (a multiple of 10; KS from bins is within 1/bins of the exact statistic).
    #[arg(long, default_value_t = DEFAULT_FINE_BINS)]
    pub bins: u32,
    /// Free text recorded in the baseline's provenance (default: the paths given).
    #[arg(long)]
    pub source: Option<String>,
    /// Also build one reference per sub-directory, as slice DIMENSION=<sub-directory>: with training images in
    /// train/cam-1/, train/cam-2/..., `--slice-dimension camera_id` gives slices camera_id=cam-1, ... which the
    /// service then judges against their own reference instead of the fleet-wide one.
    #[arg(long, value_name = "DIMENSION")]
    pub slice_dimension: Option<String>,
    /// Key each slice's reference by a context, so night is compared with night: `hour_of_day:N` (N UTC buckets
    /// of the capture time: the predictions line's `capture_time`, else the file's modification time) or a label
    /// name (the predictions line's `labels`, e.g. `illumination`). Needs --slice-dimension.
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Also store N typical frames per reference (the fleet's, and each --slice-dimension slice's) as JPEG
    /// thumbnails of at most 160 px, for the service's web view to show next to live frames (0-16; at most 2000
    /// in all; typical = closest to the reference's medians over all metrics, in IQR units).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=16))]
    pub exemplars: u8,
    /// Ground truth for (some of) the frames, in `evaluate --labels`'s format: JSON lines {"path": ..., "objects":
    /// [{"x_min", "y_min", "x_max", "y_max", "class"}]}. Records the label quality metrics' distributions and, with
    /// --predictions, the model's performance (mAP, precision, recall, F1) fleet-wide and per slice: what live
    /// performance is compared with. Refused lines are counted by reason.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub matching: MatchingArgs,
}

/// How detections are matched to ground truth (`evaluate`, `baseline build --labels`).
#[derive(Debug, Args)]
pub struct MatchingArgs {
    /// IoU at which a detection matches a labelled box (precision, recall, F1).
    #[arg(long, default_value_t = PerformanceSettings::default().iou_threshold)]
    pub iou: f64,
    /// Precision, recall and F1 count detections with at least this confidence.
    #[arg(long, default_value_t = PerformanceSettings::default().score_threshold)]
    pub score_threshold: f32,
}

impl MatchingArgs {
    pub fn settings(&self) -> anyhow::Result<PerformanceSettings> {
        if !(self.iou > 0.0 && self.iou <= 1.0) {
            bail!("--iou must be in (0, 1] (got {})", self.iou);
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            bail!("--score-threshold must be in [0, 1] (got {})", self.score_threshold);
        }
        Ok(PerformanceSettings {
            iou_threshold: self.iou,
            score_threshold: self.score_threshold,
            ..PerformanceSettings::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Baseline JSON written by `framewatch baseline build`.
    #[arg(long, value_name = "FILE")]
    pub baseline: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML file (verdict, statistics, histograms as inline SVG, the
    /// most outlying frames of each drifting metric with thumbnails); it loads nothing from anywhere.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Exit with code 3 when any rule holds. Rules: `[metric.]statistic OP number`, comma-separated; statistics:
    /// psi, ks_statistic, ks_p_value, js_distance, wasserstein_norm, outliers_moderate, outliers_severe, mean,
    /// mean_delta, and for `class`: cramers_v, chi_square_p_value. `drift` = the default verdict.
    /// Examples: 'psi>0.25'  'brightness.ks_statistic>=0.1'  'confidence_mean.mean<0.7'  'class.cramers_v>0.1'
    #[arg(long, value_name = "RULES")]
    pub fail_on: Option<String>,
    /// Metrics with fewer values than this get no verdict and are not judged by rules.
    #[arg(long, default_value_t = DriftThresholds::default().min_frames)]
    pub min_frames: u64,
}

/// Runs the parsed command. Errors are printed by the caller.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Score(args) => score(args),
        Command::Checkpoint(CheckpointCommand::Inspect { path }) => {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let c = crate::checkpoint::decode(&path, &bytes)?;
            let frames: u64 = c
                .store
                .slices
                .iter()
                .filter(|s| s.key == crate::slice::GLOBAL)
                .flat_map(|s| &s.subs)
                .map(|w| w.frames)
                .sum();
            eprintln!(
                "{}: {} slices, {} frames in the global window, {} partitions, {} cameras",
                path.display(),
                c.store.slices.len(),
                frames,
                c.offsets.len(),
                c.cameras.len()
            );
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &c)?;
            writeln!(out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Baseline(BaselineCommand::Build(args)) => build(args),
        Command::Drift(args) => drift(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Serve(args) => {
            let mut config = crate::config::Config::load(args.config.as_deref(), std::env::vars())?;
            if let Some(b) = args.baseline {
                config.baseline = Some(b);
            }
            crate::server::serve(config)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            crate::demo::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics => {
            report::print_catalog(&MetricRegistry::standard(), &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
}

fn load_inputs(input: &InputArgs) -> anyhow::Result<(Vec<InputFile>, Predictions)> {
    let files = collect_inputs(&input.paths)?;
    if files.is_empty() {
        bail!("no images (*.jpg, *.jpeg, *.png) found under the given paths");
    }
    let preds = match &input.predictions {
        Some(p) => Predictions::load(p)?,
        None => Predictions::default(),
    };
    Ok((files, preds))
}

fn settings_with(analysis: &AnalysisArgs, base: ScoreSettings) -> ScoreSettings {
    let mut s = base;
    if let Some(m) = analysis.max_side {
        s.analysis.max_side = m;
    }
    if let Some(d) = analysis.downscale {
        s.analysis.downscale = match d {
            DownscaleArg::Box => Downscale::Box,
            DownscaleArg::Dct => Downscale::Dct,
        };
    }
    s
}

/// Progress on stderr when it is a terminal; hidden otherwise.
fn progress(len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(len as u64), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames {per_sec} eta {eta}") {
        bar.set_style(style);
    }
    bar
}

fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let (files, preds) = load_inputs(&args.input)?;
    let registry = Arc::new(MetricRegistry::standard());
    let columns = report::columns(&registry, &args.metrics, args.format == Format::Table)?;
    let settings = settings_with(&args.analysis, ScoreSettings::default());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut table = report::ScoreTable::new(&registry, &columns);
    let (mut scored, mut rejected) = (0u64, BTreeMap::<&'static str, u64>::new());
    let mut io_error = None;
    score_files(&files, &preds, &registry, settings, threads(args.input.threads), |input, result| {
        match &result {
            FrameResult::Scored { .. } => scored += 1,
            FrameResult::Failed { reason, .. } => *rejected.entry(reason).or_default() += 1,
        }
        let written = match args.format {
            Format::Jsonl => report::write_jsonl(&mut out, &registry, &columns, input, &result),
            Format::Table => {
                table.push(input, &result);
                Ok(())
            }
        };
        if let Err(e) = written {
            io_error.get_or_insert(e);
        }
    });
    if let Some(e) = io_error {
        return Err(e).context("writing output");
    }
    if args.format == Format::Table {
        table.print(&mut out)?;
    }
    out.flush()?;
    report::print_frame_summary(scored, &rejected);
    Ok(if scored == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    if args.bins == 0 || args.bins > 10_000 {
        bail!("--bins must be between 10 and 10000 (got {})", args.bins);
    }
    let (files, preds) = load_inputs(&args.input)?;
    let registry = Arc::new(MetricRegistry::standard());
    let settings = settings_with(&args.analysis, ScoreSettings::default());
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    let names: Vec<String> = registry.names().map(str::to_string).collect();
    let mut builder =
        BaselineBuilder::new(names, comparable, args.bins).with_performance_settings(args.matching.settings()?);
    let truth = match &args.labels {
        Some(path) => {
            let t = GroundTruth::load(path, framewatch_metrics::PredictionSettings::default().max_detections)?;
            for (reason, n) in &t.refused {
                builder.add_refused_labels(reason, *n);
            }
            if args.input.predictions.is_none() {
                eprintln!(
                    "--labels without --predictions: recording the label quality metrics only, no model performance"
                );
            }
            Some(t)
        }
        None => None,
    };
    // Without predictions every frame would count as "nothing detected": a performance no model had.
    let with_predictions = args.input.predictions.is_some();
    let mut matched_labels = 0u64;
    let context = match &args.context {
        None => None,
        Some(text) => {
            if args.slice_dimension.is_none() {
                bail!("--context keys per-slice references: give --slice-dimension too");
            }
            let spec = ContextSpec::parse(text).map_err(anyhow::Error::msg)?;
            builder = builder.with_context(spec.clone());
            Some(spec)
        }
    };
    let bar = progress(files.len());
    let mut reasons = BTreeMap::<&'static str, u64>::new();
    // With --exemplars: every scored frame's values and slice, to pick the typical ones once medians are known.
    let mut candidates: Vec<TrainingFrame> = Vec::new();
    score_files(&files, &preds, &registry, settings, threads(args.input.threads), |input, result| {
        bar.inc(1);
        match result {
            FrameResult::Scored { values, detections, .. } => {
                let classes = detections.iter().map(|d| d.class_label.as_str());
                let key = slice_key(args.slice_dimension.as_deref(), input);
                if args.exemplars > 0 {
                    candidates.push(TrainingFrame {
                        path: input.path.clone(),
                        relative: input.relative.clone(),
                        slice: key.clone(),
                        values: values.to_vec(),
                    });
                }
                let keyed = key.as_deref().zip(context.as_ref()).and_then(|(k, spec)| {
                    let info = preds.frame_info(input);
                    let secs = info.and_then(|i| i.capture_secs).or_else(|| modified_secs(&input.path))?;
                    let value = spec.value(secs, |name| info.and_then(|i| i.labels.get(name)).map(String::as_str))?;
                    Some(context_key(k, &value))
                });
                let slices: Vec<&str> = key.iter().chain(keyed.iter()).map(String::as_str).collect();
                builder.add_to_slices(&slices, &values, classes);
                if let Some(t) = truth.as_ref().and_then(|t| t.lookup(input)) {
                    matched_labels += 1;
                    builder.add_labelled(&slices, &t, with_predictions.then_some(&*detections));
                }
            }
            FrameResult::Failed { reason, message } => {
                bar.suspend(|| eprintln!("skipped {}: {message}", input.path.display()));
                builder.add_rejected(reason);
                *reasons.entry(reason).or_default() += 1;
            }
        }
    });
    bar.finish_and_clear();
    let source = args
        .source
        .unwrap_or_else(|| args.input.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "));
    let mut baseline = builder
        .finish(now_rfc3339(), framewatch_metrics::VERSION.to_string(), source)
        .context("no frame could be scored, so there is no baseline to write")?;
    if args.exemplars > 0 {
        let names: Vec<&str> = registry.names().collect();
        baseline.exemplars = typical_frames(&baseline, &names, &candidates, usize::from(args.exemplars));
    }
    std::fs::write(&args.output, baseline.to_json() + "\n")
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    report::print_frame_summary(baseline.provenance.frames_scored, &reasons);
    if let Some(t) = &truth {
        print_label_summary(&baseline, t, matched_labels);
    }
    eprintln!(
        "wrote {} ({} metrics{}{})",
        args.output.display(),
        baseline.metrics.len(),
        if baseline.categoricals.is_empty() { "" } else { ", class distribution" },
        if baseline.slices.is_empty() {
            String::new()
        } else {
            format!(
                ", {} slice references: {}",
                baseline.slices.len(),
                baseline.slices.keys().cloned().collect::<Vec<_>>().join(" ")
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// What `baseline build --labels` recorded, on stderr: labelled frames, refused and unmatched label lines (as
/// `evaluate` reports them) and the fleet-wide performance.
fn print_label_summary(baseline: &Baseline, truth: &GroundTruth, matched: u64) {
    let refused: Vec<String> = truth.refused.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let unmatched = (truth.len() as u64).saturating_sub(matched);
    eprintln!(
        "labels: {} frames labelled, {} refused{}, {unmatched} matched no frame",
        baseline.provenance.frames_labelled.unwrap_or(0),
        truth.refused.values().sum::<u64>(),
        if refused.is_empty() { String::new() } else { format!(" ({})", refused.join(", ")) },
    );
    if let Some(p) = &baseline.performance {
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        eprintln!(
            "baseline performance over {} labelled frames: map50 {} map50_95 {} precision {} recall {} f1 {} \
             ({} slices)",
            p.global.frames,
            num(p.global.map50),
            num(p.global.map50_95),
            num(p.global.counts.precision()),
            num(p.global.counts.recall()),
            num(p.global.counts.f1()),
            p.slices.len()
        );
    }
}

/// A scored training frame, kept by `baseline build --exemplars` until the typical ones are picked.
#[derive(Debug)]
struct TrainingFrame {
    path: PathBuf,
    relative: String,
    /// Its `--slice-dimension` slice, if any.
    slice: Option<String>,
    values: Vec<Option<f64>>,
}

/// The `n` most typical frames of each reference (closest to its medians: the mean over metrics of the distance
/// in IQR units), as thumbnails; frames that cannot be read again are skipped with a warning. At most
/// `MAX_EXEMPLARS` in all.
fn typical_frames(
    baseline: &framewatch_metrics::Baseline,
    names: &[&str],
    frames: &[TrainingFrame],
    n: usize,
) -> BTreeMap<String, Vec<framewatch_metrics::baseline::BaselineExemplar>> {
    use framewatch_metrics::baseline::{BaselineExemplar, MAX_EXEMPLARS};
    let references = std::iter::once("global")
        .chain(baseline.slices.keys().map(String::as_str).filter(|k| !k.contains(",context=")));
    let mut out = BTreeMap::new();
    let mut thumbs = html::Thumbnailer::default();
    let mut total = 0;
    for reference in references {
        let distance = |values: &[Option<f64>]| {
            let (mut sum, mut count) = (0.0, 0u32);
            for (name, v) in names.iter().zip(values) {
                let m = if reference == "global" {
                    baseline.metrics.get(*name)
                } else {
                    baseline.metric_for(reference, name).map(|(m, _)| m)
                };
                if let (Some(m), Some(v)) = (m, v) {
                    sum += (v - m.quartiles[1]).abs() / crate::exemplars::outlier_scale(m.quartiles, m.std);
                    count += 1;
                }
            }
            if count == 0 { f64::INFINITY } else { sum / f64::from(count) }
        };
        let mut ranked: Vec<(f64, &PathBuf, &String)> = frames
            .iter()
            .filter(|f| reference == "global" || f.slice.as_deref() == Some(reference))
            .map(|f| (distance(&f.values), &f.path, &f.relative))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(b.2)));
        let mut kept = Vec::new();
        for (_, path, rel) in ranked {
            if kept.len() >= n || total >= MAX_EXEMPLARS {
                break;
            }
            match thumbs.make(path) {
                Ok(jpeg_base64) => {
                    kept.push(BaselineExemplar { path: rel.clone(), jpeg_base64 });
                    total += 1;
                }
                Err(why) => eprintln!("no exemplar thumbnail for {}: {why}", path.display()),
            }
        }
        if !kept.is_empty() {
            out.insert(reference.to_string(), kept);
        }
    }
    if total >= MAX_EXEMPLARS {
        eprintln!("--exemplars: stopped at {MAX_EXEMPLARS} thumbnails in all");
    }
    out
}

/// `DIMENSION=<first sub-directory>` for a file found under a directory argument.
/// The file's modification time, Unix seconds (the capture time of last resort for hour_of_day contexts).
fn modified_secs(path: &std::path::Path) -> Option<i64> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().map(crate::time::unix_secs)
}

fn slice_key(dimension: Option<&str>, input: &InputFile) -> Option<String> {
    let dim = dimension?;
    let rel = std::path::Path::new(&input.relative);
    let mut parts = rel.components();
    let first = parts.next()?;
    parts.next()?; // a file directly under the argument belongs to no sub-directory
    Some(format!("{dim}={}", first.as_os_str().to_string_lossy()))
}

fn drift(args: DriftArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.baseline)
        .with_context(|| format!("cannot read baseline {}", args.baseline.display()))?;
    let baseline =
        Baseline::from_json(&text).with_context(|| format!("invalid baseline {}", args.baseline.display()))?;
    let (rules, fail_on_verdict) = match &args.fail_on {
        Some(spec) => {
            let keep: Vec<&str> = spec.split(',').map(str::trim).filter(|r| *r != "drift").collect();
            (parse_rules(&keep.join(","))?, spec.split(',').any(|r| r.trim() == "drift"))
        }
        None => (Vec::new(), false),
    };
    let (files, preds) = load_inputs(&args.input)?;
    let registry = Arc::new(MetricRegistry::standard());
    // Score with the baseline's settings unless told otherwise; a different setting is refused below.
    let mut settings = ScoreSettings {
        analysis: baseline.settings.analysis,
        prediction: baseline.settings.prediction,
        ..Default::default()
    };
    settings = settings_with(&args.analysis, settings);
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    let mut acc = DriftAccumulator::new(&baseline, registry.names(), &comparable)?;
    // The HTML report also needs every value with its frame (for charts and outlying frames); only kept when asked.
    let mut frame_values = args.html.as_ref().map(|_| html::FrameValues::default());
    let names: Vec<&str> = registry.names().collect();
    let bar = progress(files.len());
    score_files(&files, &preds, &registry, settings, threads(args.input.threads), |input, result| {
        bar.inc(1);
        match result {
            FrameResult::Scored { values, detections, .. } => {
                if let Some(fv) = frame_values.as_mut() {
                    fv.record(&names, &baseline, input, &values);
                }
                acc.add(&values, detections.iter().map(|d| d.class_label.as_str()))
            }
            FrameResult::Failed { reason, message } => {
                bar.suspend(|| eprintln!("skipped {}: {message}", input.path.display()));
                acc.add_rejected(reason);
            }
        }
    });
    bar.finish_and_clear();
    let thresholds = DriftThresholds { min_frames: args.min_frames, ..DriftThresholds::default() };
    let mut rep = acc.report(&thresholds);
    let failed_rules = rep.apply_rules(&rules)?;
    let fail = failed_rules > 0 || (fail_on_verdict && rep.verdict == Verdict::Drift);
    if let (Some(path), Some(fv)) = (&args.html, &frame_values) {
        let gate = html::Gate { rules: args.fail_on.as_deref(), failed: fail };
        std::fs::write(path, html::render(&rep, &baseline, fv, &gate))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rep)?;
        writeln!(out)?;
    } else {
        report::print_drift(&rep, &baseline, &mut out)?;
    }
    out.flush()?;
    Ok(if fail { ExitCode::from(EXIT_RULE_FAILED) } else { ExitCode::SUCCESS })
}

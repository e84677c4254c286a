//! framewatch-loadtest: drives a running framewatch over gRPC or through Kafka with a synthetic camera fleet (or a
//! directory of real images), injects drift on a schedule, and reports what a fleet operator cares about: frames accepted,
//! throughput, ingest latency, how long each injected drift took to raise an alert, and every alert on a camera
//! that had no drift (a false alarm). Depends on the wire types and the metric engine, never on the service.
//!
//!   framewatch-loadtest baseline --cameras 10 -o fleet-baseline.json
//!   framewatch serve --baseline fleet-baseline.json
//!   framewatch-loadtest grpc --cameras 10 --fps 10 --duration 300 --drift camera=cam-3,at=60,kind=darken:0.5
//!   framewatch-loadtest kafka --brokers 127.0.0.1:9092 --topic frames --cameras 10 --fps 10 --duration 300
//!
//! Real footage (FOOTAGE.md): `--clip DIR` plays a folder of a clip's frames in order on every camera, and
//! `bench` runs the fault matrix (one clean camera, one per fault) and prints which alert cause each fault raised.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use framewatch_metrics::{
    BaselineBuilder, ComparableSettings, Detection, FramePixels, MetricRegistry, ScoreSettings, Scorer,
};
use framewatch_proto::v1;
use framewatch_proto::v1::ingest_service_client::IngestServiceClient;
use framewatch_proto::v1::query_service_client::QueryServiceClient;
use framewatch_synth::{Camera, Drift, SynthDetection, SynthObject};
use tokio::sync::Mutex;

mod bench;
mod footage;
mod kafka;
pub use bench::{BenchArgs, BenchCamera, BenchReport, run_bench};
pub use footage::{Clip, ClipArgs, ClipRange, Playback, clip_files, frame_at, select};
use framewatch_synth::footage::FootageDrifter;
use kafka::KafkaOut;
pub use kafka::sample_sum;
use prost::Message as _;

#[derive(Debug, Parser)]
#[command(name = "framewatch-loadtest", version, about = "Load, drift and false-alarm tests for a running framewatch")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Drive framewatch over gRPC.
    Grpc(GrpcCmd),
    /// Drive framewatch through Kafka: produce frames (keyed by camera id) to the topic framewatch consumes.
    Kafka(KafkaCmd),
    /// Write a baseline (global + one reference per camera and site) for `framewatch serve`: of the clean
    /// synthetic fleet, or with --clip of a real clip's frames (every camera sees the same clip).
    Baseline(BaselineCmd),
    /// The fault matrix on real footage: one clean camera and one camera per fault kind stream the held-out part
    /// of a clip, faults start at --at; prints a confusion matrix (fault injected x alert cause) and writes JSON.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct GrpcCmd {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
}

#[derive(Debug, Args)]
pub struct KafkaCmd {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clip: ClipArgs,
}

#[derive(Debug, Args)]
pub struct BaselineCmd {
    #[command(flatten)]
    pub args: BaselineArgs,
    #[command(flatten)]
    pub clip: ClipRange,
}

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Number of cameras (cam-1 ... cam-N).
    #[arg(long, default_value_t = 10)]
    pub cameras: usize,
    /// Frame size of the synthetic cameras.
    #[arg(long, default_value_t = 1280)]
    pub width: usize,
    #[arg(long, default_value_t = 720)]
    pub height: usize,
    /// Seed of the synthetic fleet (same seed, same frames).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Clean frames per camera (match the load run's pool * stride).
    #[arg(long, default_value_t = 256)]
    pub frames: usize,
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// framewatch's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Frames per second per camera; 0 = as fast as framewatch accepts them.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Send real images from this directory (round-robin) instead of synthetic frames.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Send pre-computed metric values instead of images (edge devices that score locally).
    #[arg(long)]
    pub prescored: bool,
    /// With --prescored: send the values in catalog order with the catalog's fingerprint (`MetricValues.packed`)
    /// instead of a map keyed by metric name.
    #[arg(long, requires = "prescored")]
    pub packed: bool,
    /// Drift schedule, repeatable: camera=cam-3,at=60,kind=darken:0.5 (kinds: darken, brighten, blur, noise,
    /// colour_cast, jpeg_quality, freeze, moved, confidence_drop, class_shift, daylight:DAY_SECONDS).
    #[arg(long = "drift")]
    pub drifts: Vec<String>,
    /// Distinct frames pre-encoded per camera and cycled (keeps the client cheap at high rates). A window of
    /// repeated frames is a small sample shown many times: for false-alarm runs keep the pool large (>= 128), or
    /// the drift tests rightly see a distribution narrower than the baseline's.
    #[arg(long, default_value_t = 64)]
    pub pool: usize,
    /// Camera frames skipped between pooled ones: the pool then spans pool * stride frames of motion, as the
    /// baseline does (match `baseline --frames`).
    #[arg(long, default_value_t = 4)]
    pub stride: usize,
    /// Frames each synthetic camera runs before its pool is taken: `--hold-out N` with the baseline's
    /// `--frames N` streams frames the baseline never saw (judge false alarms on held-out data, not a replay).
    #[arg(long, default_value_t = 0)]
    pub hold_out: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Ground truth: this share of synthetic frames carries a frame_id, and their labels (the synthetic scene's
    /// objects) are sent by `SendLabels` `--labels-delay-secs` later, as a reviewer's would be. 0: no labels.
    #[arg(long, default_value_t = 0.0)]
    pub labels_share: f64,
    /// Seconds between a labelled frame and its labels.
    #[arg(long, default_value_t = 5.0)]
    pub labels_delay_secs: f64,
}

#[derive(Debug, Args)]
pub struct KafkaArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Bootstrap brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic framewatch consumes.
    #[arg(long, default_value = "framewatch-frames")]
    pub topic: String,
    /// framewatch's /metrics, where accepted and rejected frames are counted (Kafka has no per-frame answer).
    #[arg(long, default_value = "http://127.0.0.1:9464/metrics")]
    pub metrics_url: String,
}

#[derive(Debug, Clone)]
struct DriftSpec {
    camera: String,
    at: Duration,
    kind: Drift,
    spec: String,
}

fn parse_drift(s: &str) -> anyhow::Result<DriftSpec> {
    let mut camera = None;
    let mut at = None;
    // kind values may contain commas (colour_cast:1.2,1,0.8): everything after kind= is the kind
    let (head, kind_part) = s.split_once("kind=").context("--drift needs kind=...")?;
    for part in head.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("camera", v)) => camera = Some(v.to_string()),
            Some(("at", v)) => {
                at = Some(Duration::from_secs_f64(v.trim_end_matches('s').parse().context("at=SECONDS")?))
            }
            _ => bail!("--drift {s:?}: unknown part {part:?}"),
        }
    }
    let kind = Drift::parse(kind_part).map_err(anyhow::Error::msg)?;
    Ok(DriftSpec {
        camera: camera.context("--drift needs camera=...")?,
        at: at.context("--drift needs at=SECONDS")?,
        kind,
        spec: s.to_string(),
    })
}

fn camera_name(i: usize) -> String {
    format!("cam-{}", i + 1)
}

fn site_of(i: usize) -> String {
    format!("site-{}", i % 3)
}

fn to_proto(d: &[SynthDetection]) -> Vec<v1::Detection> {
    d.iter().map(SynthDetection::to_proto).collect()
}

fn to_metrics(d: &[SynthDetection]) -> Vec<Detection> {
    d.iter().map(SynthDetection::to_detection).collect()
}

fn camera(fleet: &FleetArgs, i: usize) -> Camera {
    Camera::new(&camera_name(i), fleet.width, fleet.height, fleet.seed * 1000 + i as u64)
}

pub fn baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let (mut builder, mut scorer) = builder_and_scorer();
    let mut buf = Vec::new();
    for i in 0..args.fleet.cameras {
        let mut cam = camera(&args.fleet, i);
        // The same slices the run will create: the camera, and its site (a site is a subset of the fleet, so
        // comparing it with the fleet-wide reference would always "drift").
        let (key, site_key) = (format!("camera_id={}", camera_name(i)), format!("site={}", site_of(i)));
        for _ in 0..args.frames {
            let dets = cam.next_frame(&mut buf);
            let d = to_metrics(&dets);
            let s = scorer.score(FramePixels::Encoded(&buf), &d).map_err(|e| anyhow::anyhow!("{e}"))?;
            builder.add_to_slices(
                &[key.as_str(), site_key.as_str()],
                s.values,
                d.iter().map(|x| x.class_label.as_str()),
            );
        }
        eprintln!("scored {} clean frames of {}", args.frames, camera_name(i));
    }
    let source = format!(
        "framewatch-loadtest synthetic fleet: {} cameras x {} frames, seed {}",
        args.fleet.cameras, args.frames, args.fleet.seed
    );
    write_baseline(builder, source, &args.output)
}

/// A baseline builder for the whole catalog and a scorer with the default settings (what framewatch runs).
fn builder_and_scorer() -> (BaselineBuilder, Scorer) {
    let registry = Arc::new(MetricRegistry::standard());
    let settings = ScoreSettings::default();
    let names: Vec<String> = registry.names().map(String::from).collect();
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    (BaselineBuilder::new(names, comparable, 100), Scorer::new(registry, settings))
}

fn write_baseline(builder: BaselineBuilder, source: String, output: &std::path::Path) -> anyhow::Result<()> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let b = builder.finish(format!("unix:{secs}"), framewatch_metrics::VERSION.into(), source)?;
    std::fs::write(output, b.to_json() + "\n").with_context(|| format!("write {}", output.display()))?;
    eprintln!("wrote {}", output.display());
    Ok(())
}

/// A baseline of a real clip's frames `--start-frame..=--end-frame`: every camera of the run streams the same
/// clip, so each frame is scored once (in-process, the scorer framewatch runs) and counted for the fleet, for each
/// camera and for each site.
pub fn baseline_clip(args: &BaselineArgs, range: &ClipRange) -> anyhow::Result<()> {
    let dir = range.clip.as_ref().context("baseline of a clip needs --clip DIR")?;
    let clip = Clip::load(dir, range.start_frame, range.end_frame)?;
    let (mut builder, mut scorer) = builder_and_scorer();
    let mut keys: Vec<String> = (0..args.fleet.cameras).map(|i| format!("camera_id={}", camera_name(i))).collect();
    let sites: std::collections::BTreeSet<String> =
        (0..args.fleet.cameras).map(|i| format!("site={}", site_of(i))).collect();
    keys.extend(sites);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for (n, frame) in clip.frames.iter().enumerate() {
        match scorer.score(FramePixels::Encoded(frame), &[]) {
            Ok(s) => builder.add_to_slices(&keys, s.values, std::iter::empty::<&str>()),
            Err(e) => {
                eprintln!("frame {} of {}: {e}", clip.first_frame + n, dir.display());
                builder.add_rejected(e.reason());
            }
        }
    }
    let last = clip.first_frame + clip.len() - 1;
    eprintln!(
        "scored frames {}..={last} of {} for cam-1 .. cam-{}",
        clip.first_frame,
        dir.display(),
        args.fleet.cameras
    );
    let source = format!(
        "framewatch-loadtest clip {}: frames {}..={last} on {} cameras",
        dir.display(),
        clip.first_frame,
        args.fleet.cameras
    );
    write_baseline(builder, source, &args.output)
}

/// One pre-built frame: its content and detections.
/// A pooled frame: its content, the model's detections and the ground truth (the scene's objects).
type Pooled = (v1::frame::Content, Vec<v1::Detection>, Vec<v1::LabelBox>);

/// How pre-scored values travel: by metric name, or packed in catalog order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Named,
    Packed,
}

fn synth_pool(
    cam: &mut Camera,
    n: usize,
    stride: usize,
    edge: Option<Edge>,
    scorer: &mut Option<Scorer>,
) -> Vec<Pooled> {
    let prescored = edge.is_some();
    let mut buf = Vec::new();
    (0..n.max(1))
        .map(|_| {
            for _ in 1..stride.max(1) {
                cam.next_frame(&mut buf);
            }
            let dets = cam.next_frame(&mut buf);
            let truth: Vec<v1::LabelBox> = cam.truth().iter().map(SynthObject::to_label_proto).collect();
            let content = if prescored {
                // the edge scores locally and sends numbers
                let s = scorer.as_mut().map(|s| {
                    let r = s.score(FramePixels::Encoded(&buf), &to_metrics(&dets));
                    r.map(|r| match edge {
                        Some(Edge::Packed) => v1::MetricValues {
                            packed: r.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
                            catalog_fingerprint: catalog_fingerprint(),
                            perceptual_hash: r.perceptual_hash,
                            ..Default::default()
                        },
                        _ => v1::MetricValues {
                            values: s_names()
                                .iter()
                                .zip(r.values)
                                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
                                .collect(),
                            perceptual_hash: r.perceptual_hash,
                            ..Default::default()
                        },
                    })
                });
                match s {
                    Some(Ok(values)) => v1::frame::Content::MetricValues(values),
                    _ => v1::frame::Content::EncodedImage(buf.clone()),
                }
            } else {
                v1::frame::Content::EncodedImage(buf.clone())
            };
            (content, to_proto(&dets), truth)
        })
        .collect()
}

/// Whether frame `k` of camera `i` is one a reviewer labels: a fixed hash of both, so runs repeat.
fn labelled(i: usize, k: usize, share: f64) -> bool {
    let h = (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (h >> 11) as f64 / (1u64 << 53) as f64 <= share
}

/// Sends labels when they fall due, over one `SendLabels` stream, and counts the acknowledgements.
#[derive(Debug, Default)]
struct LabelCounters {
    sent: AtomicU64,
    accepted: AtomicU64,
    /// Labels not sent because the queue in front of the stream was full (the client's own bound).
    skipped: AtomicU64,
    reasons: std::sync::Mutex<BTreeMap<String, u64>>,
}

fn start_labels(
    target: String,
    counters: Arc<LabelCounters>,
) -> (tokio::sync::mpsc::Sender<(Instant, v1::FrameLabels)>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (tx, mut due) = tokio::sync::mpsc::channel::<(Instant, v1::FrameLabels)>(16_384);
    let task = tokio::spawn(async move {
        let mut client = IngestServiceClient::connect(target).await?;
        let (out, rx) = tokio::sync::mpsc::channel::<v1::FrameLabels>(256);
        let c = counters.clone();
        let feeder = tokio::spawn(async move {
            // Due times rise with send times: a queue in send order is a queue in due order.
            while let Some((at, labels)) = due.recv().await {
                tokio::time::sleep_until(at.into()).await;
                if out.send(labels).await.is_err() {
                    break;
                }
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut acks = client.send_labels(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        while let Some(a) = acks.message().await? {
            if a.accepted {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
            } else {
                let mut r = counters.reasons.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                *r.entry(a.reason).or_default() += 1;
            }
        }
        feeder.await?;
        anyhow::Ok(())
    });
    (tx, task)
}

/// The standard catalog's fingerprint (a client of a framewatch with custom metrics reads it from ListMetrics).
fn catalog_fingerprint() -> u64 {
    static FINGERPRINT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *FINGERPRINT.get_or_init(|| MetricRegistry::standard().fingerprint())
}

fn s_names() -> Vec<&'static str> {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| MetricRegistry::standard().names().collect()).clone()
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Debug, serde::Serialize)]
pub struct DriftResult {
    pub drift: String,
    pub camera: String,
    pub injected_at_s: f64,
    pub detected_after_s: Option<f64>,
    pub first_alert: Option<String>,
    /// The first alert's `cause` label (darker, blur, frozen ...), when framewatch gives one.
    pub first_cause: Option<String>,
}

/// One alert state change seen on `WatchAlerts`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertRecord {
    /// Seconds since the run started.
    pub at_s: f64,
    pub slice: String,
    pub rule: String,
    /// "firing", "resolved" or "pending".
    pub state: String,
    pub cause: Option<String>,
    pub value: f64,
    pub threshold: f64,
}

impl AlertRecord {
    fn new(at_s: f64, e: &v1::AlertEvent) -> AlertRecord {
        let state = match v1::alert_event::State::try_from(e.state) {
            Ok(v1::alert_event::State::Firing) => "firing",
            Ok(v1::alert_event::State::Resolved) => "resolved",
            Ok(v1::alert_event::State::Pending) => "pending",
            _ => "unspecified",
        };
        AlertRecord {
            at_s,
            slice: e.slice.clone(),
            rule: e.rule.clone(),
            state: state.into(),
            cause: e.labels.get("cause").cloned(),
            value: e.value,
            threshold: e.threshold,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.state == "firing"
    }

    /// The cause label, or the rule's name when framewatch gave no cause.
    pub fn cause_or_rule(&self) -> String {
        self.cause.clone().unwrap_or_else(|| format!("rule:{}", self.rule))
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// "grpc" or "kafka".
    pub transport: String,
    pub target: String,
    pub cameras: usize,
    pub fps_per_camera: f64,
    pub duration_s: f64,
    pub frames_sent: u64,
    pub frames_accepted: u64,
    pub frames_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub accepted_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub drifts: Vec<DriftResult>,
    pub false_alarms: Vec<String>,
    /// Every alert state change seen during the run, in order.
    pub alerts: Vec<AlertRecord>,
    /// Ground truth sent (`--labels-share`), accepted (joined, replaced or held), and refused by reason.
    pub labels_sent: u64,
    pub labels_accepted: u64,
    pub labels_rejected_by_reason: BTreeMap<String, u64>,
    /// Labels the client did not send because its own queue was full.
    pub labels_skipped: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the load over gRPC and returns the report (also printed).
pub async fn run_grpc(args: RunArgs) -> anyhow::Result<Report> {
    run_load(args, None, ClipArgs::default(), true).await
}

/// `run_grpc` with real footage (`clip.range.clip`) instead of synthetic frames when given.
pub async fn run_grpc_clip(args: RunArgs, clip: ClipArgs) -> anyhow::Result<Report> {
    run_load(args, None, clip, true).await
}

/// Runs the load through Kafka and returns the report (also printed). Alerts are still watched over gRPC
/// (`--target`); accepted and rejected frames are read from framewatch's /metrics.
pub async fn run_kafka(args: KafkaArgs) -> anyhow::Result<Report> {
    run_kafka_clip(args, ClipArgs::default()).await
}

/// `run_kafka` with real footage (`clip.range.clip`) instead of synthetic frames when given.
pub async fn run_kafka_clip(args: KafkaArgs, clip: ClipArgs) -> anyhow::Result<Report> {
    let kafka = KafkaOut::new(&args.brokers, &args.topic, &args.metrics_url)?;
    run_load(args.run, Some(Arc::new(kafka)), clip, true).await
}

/// Seconds since the day of a `daylight` drift began (0 without one): the time-varying drift's clock.
fn daylight_elapsed(active: &[DriftSpec], run_elapsed: Duration) -> f64 {
    active
        .iter()
        .find(|d| matches!(d.kind, Drift::Daylight(_)))
        .map_or(0.0, |d| run_elapsed.saturating_sub(d.at).as_secs_f64())
}

pub(crate) async fn run_load(
    args: RunArgs,
    kafka: Option<Arc<KafkaOut>>,
    clip_args: ClipArgs,
    print: bool,
) -> anyhow::Result<Report> {
    let drifts: Vec<DriftSpec> = args.drifts.iter().map(|d| parse_drift(d)).collect::<anyhow::Result<_>>()?;
    for d in &drifts {
        let known = (0..args.fleet.cameras).any(|i| camera_name(i) == d.camera);
        anyhow::ensure!(known, "--drift camera {} is not in the fleet (cam-1 .. cam-{})", d.camera, args.fleet.cameras);
    }
    let images: Vec<Vec<u8>> = match &args.images {
        Some(dir) => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("read {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_string_lossy().to_lowercase().as_str()))
                })
                .collect();
            v.sort();
            anyhow::ensure!(!v.is_empty(), "no images in {}", dir.display());
            v.iter().map(std::fs::read).collect::<Result<_, _>>()?
        }
        None => Vec::new(),
    };
    let images = Arc::new(images);
    let clip = match &clip_args.range.clip {
        Some(dir) => {
            anyhow::ensure!(args.images.is_none(), "--clip and --images are two frame sources: pick one");
            anyhow::ensure!(!args.prescored, "--prescored sends synthetic metric values; it does not apply to --clip");
            let (r, moved) = (&clip_args.range, &clip_args.moved_clip);
            let c = Clip::load(dir, r.start_frame, r.end_frame)?;
            let m = moved.as_ref().map(|m| Clip::load(m, 1, None)).transpose()?;
            Some((Arc::new(c), m.map(Arc::new)))
        }
        None => None,
    };

    // Pre-encode every camera's first pool before the clock starts (both cores), so the run measures framewatch.
    // Real footage is already encoded: nothing to prepare.
    let mut initial = Vec::new();
    for i in (0..args.fleet.cameras).filter(|_| clip.is_none()) {
        let (fleet, pool_n, stride, prescored) = (args.fleet.clone(), args.pool, args.stride, args.prescored);
        let edge = prescored.then_some(if args.packed { Edge::Packed } else { Edge::Named });
        let hold_out = args.hold_out;
        initial.push(tokio::task::spawn_blocking(move || {
            let mut cam = camera(&fleet, i);
            let mut buf = Vec::new();
            for _ in 0..hold_out {
                cam.next_frame(&mut buf);
            }
            let mut scorer =
                prescored.then(|| Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings::default()));
            let pool = synth_pool(&mut cam, pool_n, stride, edge, &mut scorer);
            (cam, pool)
        }));
    }
    let mut initial_pools = Vec::new();
    for t in initial {
        initial_pools.push(Some(t.await?));
    }
    initial_pools.resize_with(args.fleet.cameras, || None);

    // Each camera's drifted clip is rendered before the run, on every core (see `Playback::prerender`).
    let mut playbacks: Vec<Option<Playback>> = (0..args.fleet.cameras)
        .map(|i| {
            clip.as_ref().map(|(c, m)| {
                let seed = args.fleet.seed * 1000 + i as u64;
                Playback::new(c.clone(), m.clone(), clip_args.looping, seed, clip_args.reencode_quality)
            })
        })
        .collect();
    std::thread::scope(|s| {
        for (i, p) in playbacks.iter_mut().enumerate() {
            let name = camera_name(i);
            let kinds: Vec<Drift> = drifts.iter().filter(|d| d.camera == name).map(|d| d.kind).collect();
            if let Some(p) = p.as_mut() {
                s.spawn(move || {
                    if let Err(e) = p.prerender(&kinds) {
                        eprintln!("{name}: cannot pre-render the drifted clip ({e:#}); rendering while streaming");
                    }
                });
            }
        }
    });
    // Watch alerts from the start.
    let mut query = QueryServiceClient::connect(args.target.clone()).await.context("connect to framewatch")?;
    let mut watch = query.watch_alerts(v1::WatchAlertsRequest { include_current: false }).await?.into_inner();
    let started = Instant::now();
    let started_wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let events: Arc<Mutex<Vec<(f64, v1::AlertEvent)>>> = Arc::default();
    let ev = events.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(e)) = watch.message().await {
            ev.lock().await.push((started.elapsed().as_secs_f64(), e));
        }
    });

    let counters = Arc::new(Counters::default());
    let label_counters = Arc::new(LabelCounters::default());
    let labels = (args.labels_share > 0.0 && playbacks.iter().all(Option::is_none) && images.is_empty())
        .then(|| start_labels(args.target.clone(), label_counters.clone()));
    let labels_delay = Duration::from_secs_f64(args.labels_delay_secs.max(0.0));
    let reasons: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for i in 0..args.fleet.cameras {
        let name = camera_name(i);
        let my_drifts: Vec<DriftSpec> = drifts.iter().filter(|d| d.camera == name).cloned().collect();
        let (target, fps, pool_n, stride, prescored) =
            (args.target.clone(), args.fps, args.pool, args.stride, args.prescored);
        let edge = prescored.then_some(if args.packed { Edge::Packed } else { Edge::Named });
        let (counters, reasons, latencies, images) =
            (counters.clone(), reasons.clone(), latencies.clone(), images.clone());
        let first = initial_pools[i].take();
        let seed = args.fleet.seed * 1000 + i as u64;
        let mut playback = playbacks[i].take();
        let kafka = kafka.clone();
        let labels_tx = labels.as_ref().map(|(tx, _)| tx.clone());
        let (label_counters, labels_share) = (label_counters.clone(), args.labels_share);
        tasks.push(tokio::spawn(async move {
            let make_pool = move |mut cam: Camera, drifts: Vec<Drift>| {
                tokio::task::spawn_blocking(move || {
                    // daylight varies with time: applied to each frame as it is sent, not frozen into the pool
                    cam.drifts = drifts.into_iter().filter(|d| !matches!(d, Drift::Daylight(_))).collect();
                    let mut scorer =
                        prescored.then(|| Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings::default()));
                    let pool = synth_pool(&mut cam, pool_n, stride, edge, &mut scorer);
                    (cam, pool)
                })
            };
            let mut synthetic = first;
            let mut active: Vec<Drift> = Vec::new();
            let mut daylight = FootageDrifter::new(seed, 85);
            let sent_at: Arc<std::sync::Mutex<VecDeque<Instant>>> = Arc::default();
            let (tx, acks) = match &kafka {
                Some(_) => (None, None),
                None => {
                    let mut client = IngestServiceClient::connect(target).await?;
                    let (tx, rx) = tokio::sync::mpsc::channel::<v1::Frame>(64);
                    let sent_at_acks = sent_at.clone();
                    let (counters_acks, reasons_acks, latencies_acks) =
                        (counters.clone(), reasons.clone(), latencies.clone());
                    let acks = tokio::spawn(async move {
                        let mut stream =
                            client.stream_frames(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
                        let mut local = Vec::new();
                        while let Some(a) = stream.message().await? {
                            if let Some(t) = sent_at_acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop_front() {
                                local.push(t.elapsed().as_secs_f64() * 1000.0);
                            }
                            if a.accepted {
                                counters_acks.accepted.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counters_acks.rejected.fetch_add(1, Ordering::Relaxed);
                                *reasons_acks.lock().await.entry(a.reason).or_default() += 1;
                            }
                        }
                        latencies_acks.lock().await.extend(local);
                        anyhow::Ok(())
                    });
                    (Some(tx), Some(acks))
                }
            };
            let period = if fps > 0.0 { Some(Duration::from_secs_f64(1.0 / fps)) } else { None };
            let mut next = Instant::now();
            let mut k = 0usize;
            let mut applied = 0usize;
            while Instant::now() < deadline {
                if applied < my_drifts.len() && started.elapsed() >= my_drifts[applied].at {
                    applied = my_drifts.iter().filter(|d| started.elapsed() >= d.at).count();
                    active = my_drifts[..applied].iter().map(|d| d.kind).collect();
                    if let Some((cam, _)) = synthetic.take() {
                        synthetic = Some(make_pool(cam, active.clone()).await?);
                    }
                }
                let day_s = daylight_elapsed(&my_drifts[..applied], started.elapsed());
                let mut frame_id = String::new();
                let (content, detections) = if let Some(p) = playback.as_mut() {
                    let frame = if p.is_heavy(&active) {
                        let (mut owned, kinds, kk) = (playback.take().context("playback")?, active.clone(), k);
                        let (back, f) = tokio::task::spawn_blocking(move || {
                            let f = owned.frame(kk, &kinds, day_s);
                            (owned, f)
                        })
                        .await?;
                        playback = Some(back);
                        f
                    } else {
                        p.frame(k, &active, day_s)
                    };
                    match frame {
                        Some(bytes) => (v1::frame::Content::EncodedImage(bytes?), Vec::new()),
                        None => break, // the clip has ended (without --loop)
                    }
                } else if !images.is_empty() {
                    (v1::frame::Content::EncodedImage(images[(k + i) % images.len()].clone()), Vec::new())
                } else {
                    let (_, pool) = synthetic.as_ref().context("synthetic pool")?;
                    let (content, dets, truth) = pool[k % pool.len()].clone();
                    if let Some(tx) = labels_tx.as_ref().filter(|_| labelled(i, k, labels_share)) {
                        frame_id = format!("{}/{k}", camera_name(i));
                        let labels =
                            v1::FrameLabels { frame_id: frame_id.clone(), no_objects: truth.is_empty(), boxes: truth };
                        if tx.try_send((Instant::now() + labels_delay, labels)).is_err() {
                            label_counters.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    match content {
                        v1::frame::Content::EncodedImage(bytes)
                            if active.iter().any(|d| matches!(d, Drift::Daylight(_))) =>
                        {
                            let kinds: Vec<Drift> =
                                active.iter().copied().filter(|d| matches!(d, Drift::Daylight(_))).collect();
                            let (back, lit) = tokio::task::spawn_blocking(move || {
                                let mut out = Vec::new();
                                let r = daylight.apply(&bytes, &kinds, day_s, &mut out);
                                (daylight, r.map(|()| out))
                            })
                            .await?;
                            daylight = back;
                            (v1::frame::Content::EncodedImage(lit?), dets)
                        }
                        other => (other, dets),
                    }
                };
                // Real footage carries its own clock: frame k was captured k / fps after the clip started.
                let now = match (&playback, fps > 0.0) {
                    (Some(_), true) => started_wall + Duration::from_nanos((k as f64 * 1e9 / fps).round() as u64),
                    _ => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
                };
                k += 1;
                let frame = v1::Frame {
                    camera_id: camera_name(i),
                    labels: [("site".to_string(), site_of(i))].into(),
                    capture_time: Some(prost_types::Timestamp {
                        seconds: now.as_secs() as i64,
                        nanos: now.subsec_nanos() as i32,
                    }),
                    content: Some(content),
                    detections,
                    model_version: "loadtest".into(),
                    frame_id: std::mem::take(&mut frame_id),
                };
                match (&tx, &kafka) {
                    (Some(tx), _) => {
                        sent_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push_back(Instant::now());
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                    (None, Some(k)) => k.send(&camera_name(i), &frame.encode_to_vec()).await,
                    (None, None) => break,
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = period {
                    next += p;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            drop(tx);
            if let Some(acks) = acks {
                acks.await??;
            }
            anyhow::Ok(())
        }));
    }
    // Kafka: framewatch's /metrics tell when each frame was recorded (polled every 100 ms).
    let kafka_progress = kafka.as_ref().map(|k| {
        let k = k.clone();
        tokio::spawn(async move { k.track().await })
    });
    for t in tasks {
        t.await??;
    }
    let mut elapsed = started.elapsed().as_secs_f64();
    // The last labels fall due up to --labels-delay-secs after the last frame.
    if let Some((tx, task)) = labels {
        drop(tx);
        task.await??;
    }
    if let (Some(k), Some(progress)) = (&kafka, kafka_progress) {
        let outcome = k.finish(started, progress).await?;
        elapsed = outcome.caught_up_after_s;
        counters.sent.store(outcome.delivered, Ordering::Relaxed);
        counters.accepted.store(outcome.accepted, Ordering::Relaxed);
        counters.rejected.store(outcome.rejected, Ordering::Relaxed);
        *reasons.lock().await = outcome.reasons;
        *latencies.lock().await = outcome.latencies_ms;
    }
    // give the evaluator a moment to report the last state changes
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.abort();

    let events = events.lock().await.clone();
    let alerts: Vec<AlertRecord> = events.iter().map(|(t, e)| AlertRecord::new(*t, e)).collect();
    let firing = |e: &v1::AlertEvent| e.state == v1::alert_event::State::Firing as i32;
    let drift_results: Vec<DriftResult> = drifts
        .iter()
        .map(|d| {
            let slice = format!("camera_id={}", d.camera);
            let first = events.iter().find(|(t, e)| firing(e) && e.slice == slice && *t >= d.at.as_secs_f64());
            DriftResult {
                drift: d.spec.clone(),
                camera: d.camera.clone(),
                injected_at_s: d.at.as_secs_f64(),
                detected_after_s: first.map(|(t, _)| t - d.at.as_secs_f64()),
                first_alert: first.map(|(_, e)| e.rule.clone()),
                first_cause: first.and_then(|(_, e)| e.labels.get("cause").cloned()),
            }
        })
        .collect();
    let drifted: Vec<String> = drifts.iter().map(|d| format!("camera_id={}", d.camera)).collect();
    let false_alarms: Vec<String> = events
        .iter()
        .filter(|(_, e)| firing(e) && e.slice.starts_with("camera_id=") && !drifted.contains(&e.slice))
        .map(|(t, e)| format!("{} on {} at {t:.0} s", e.rule, e.slice))
        .collect();
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let report = Report {
        transport: if kafka.is_some() { "kafka".into() } else { "grpc".into() },
        target: match &kafka {
            Some(k) => format!("kafka {} topic {}", k.brokers, k.topic),
            None => args.target.clone(),
        },
        cameras: args.fleet.cameras,
        fps_per_camera: args.fps,
        duration_s: elapsed,
        frames_sent: counters.sent.load(Ordering::Relaxed),
        frames_accepted: accepted,
        frames_rejected: counters.rejected.load(Ordering::Relaxed),
        rejected_by_reason: reasons.lock().await.clone(),
        accepted_per_s: accepted as f64 / elapsed,
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        drifts: drift_results,
        false_alarms,
        alerts,
        labels_sent: label_counters.sent.load(Ordering::Relaxed),
        labels_accepted: label_counters.accepted.load(Ordering::Relaxed),
        labels_rejected_by_reason: label_counters.reasons.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone(),
        labels_skipped: label_counters.skipped.load(Ordering::Relaxed),
    };
    if !print {
        return Ok(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "framewatch-loadtest: {} cameras at {} fps for {:.0} s against {}",
            report.cameras,
            if args.fps > 0.0 { args.fps.to_string() } else { "max".into() },
            report.duration_s,
            report.target
        );
        println!(
            "  frames: {} sent, {} accepted, {} rejected {:?}",
            report.frames_sent, report.frames_accepted, report.frames_rejected, report.rejected_by_reason
        );
        println!(
            "  throughput: {:.1} accepted frames/s; ingest latency p50 {:.1} ms, p99 {:.1} ms{}",
            report.accepted_per_s,
            report.latency_p50_ms,
            report.latency_p99_ms,
            if kafka.is_some() { " (produce -> recorded, +-100 ms)" } else { "" }
        );
        for d in &report.drifts {
            match (d.detected_after_s, &d.first_alert) {
                (Some(t), Some(r)) => println!(
                    "  drift {}: detected after {t:.1} s ({r}{})",
                    d.drift,
                    d.first_cause.as_ref().map(|c| format!(", cause {c}")).unwrap_or_default()
                ),
                _ => println!("  drift {}: NOT detected", d.drift),
            }
        }
        println!(
            "  false alarms: {}",
            if report.false_alarms.is_empty() { "none".to_string() } else { report.false_alarms.join("; ") }
        );
    }
    Ok(report)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Baseline(a) if a.clip.clip.is_some() => baseline_clip(&a.args, &a.clip),
        Cmd::Baseline(a) => baseline(a.args),
        Cmd::Grpc(a) => runtime()?.block_on(run_grpc_clip(a.run, a.clip)).map(|_| ()),
        Cmd::Kafka(a) => runtime()?.block_on(run_kafka_clip(a.kafka, a.clip)).map(|_| ()),
        Cmd::Bench(a) => runtime()?.block_on(run_bench(a)).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("framewatch-loadtest").chain(args.iter().copied()))
    }

    #[test]
    fn the_footage_command_lines_parse() {
        let cli =
            parse(&["grpc", "--clip", "f", "--start-frame", "401", "--end-frame", "700", "--loop", "--cameras", "9"])
                .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Grpc(g) = cli.command else { panic!("not grpc") };
        assert_eq!(g.clip.range.clip, Some(PathBuf::from("f")));
        assert_eq!((g.clip.range.start_frame, g.clip.range.end_frame, g.clip.looping), (401, Some(700), true));
        assert_eq!((g.run.fleet.cameras, g.run.fps, g.clip.reencode_quality), (9, 10.0, 90));

        let cli = parse(&["baseline", "--clip", "f", "--end-frame", "400", "--cameras", "9", "-o", "b.json"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Baseline(b) = cli.command else { panic!("not baseline") };
        assert_eq!((b.clip.start_frame, b.clip.end_frame, b.args.fleet.cameras), (1, Some(400), 9));

        let cli = parse(&["bench", "--clip", "f", "--start-frame", "401", "--fault", "blur=blur:2", "-o", "r.json"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Bench(b) = cli.command else { panic!("not bench") };
        assert_eq!((b.at, b.faults.len(), b.clip.range.start_frame), (10.0, 1, 401));

        assert!(parse(&["grpc", "--loop"]).is_err(), "--loop means nothing without --clip");
        assert!(parse(&["grpc", "--clip", "f", "--reencode-quality", "0"]).is_err());
        assert!(parse(&["kafka", "--clip", "f", "--moved-clip", "g"]).is_ok());
    }

    #[test]
    fn daylight_drifts_parse_and_keep_their_own_clock() {
        let d = parse_drift("camera=cam-1,at=30,kind=daylight:600").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.kind, Drift::Daylight(600.0));
        let active = [d];
        assert_eq!(daylight_elapsed(&active, Duration::from_secs(180)), 150.0);
        assert_eq!(daylight_elapsed(&[], Duration::from_secs(180)), 0.0);
    }
}

//! framewatch-loadtest: drives a running framewatch over gRPC or through Kafka with a synthetic camera fleet (or a
//! directory of real images), injects drift on a schedule, and reports what a fleet operator cares about: frames accepted,
//! throughput, ingest latency, how long each injected drift took to raise an alert, and every alert on a camera
//! that had no drift (a false alarm). Depends on the wire types and the metric engine, never on the service.
//!
//!   framewatch-loadtest baseline --cameras 10 -o fleet-baseline.json
//!   framewatch serve --baseline fleet-baseline.json
//!   framewatch-loadtest grpc --cameras 10 --fps 10 --duration 300 --drift camera=cam-3,at=60,kind=darken:0.5
//!   framewatch-loadtest kafka --brokers 127.0.0.1:9092 --topic frames --cameras 10 --fps 10 --duration 300

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
use framewatch_synth::{Camera, Drift, SynthDetection};
use tokio::sync::Mutex;

mod kafka;
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
    Grpc(RunArgs),
    /// Drive framewatch through Kafka: produce frames (keyed by camera id) to the topic framewatch consumes.
    Kafka(KafkaArgs),
    /// Write a baseline of the clean synthetic fleet (global + one reference per camera) for `framewatch serve`.
    Baseline(BaselineArgs),
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
    /// Drift schedule, repeatable: camera=cam-3,at=60,kind=darken:0.5 (kinds: darken, brighten, blur, noise,
    /// colour_cast, jpeg_quality, freeze, moved, confidence_drop, class_shift).
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
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
    let registry = Arc::new(MetricRegistry::standard());
    let settings = ScoreSettings::default();
    let names: Vec<String> = registry.names().map(String::from).collect();
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    let mut builder = BaselineBuilder::new(names, comparable, 100);
    let mut scorer = Scorer::new(registry, settings);
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
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let b = builder.finish(
        format!("unix:{secs}"),
        framewatch_metrics::VERSION.into(),
        format!(
            "framewatch-loadtest synthetic fleet: {} cameras x {} frames, seed {}",
            args.fleet.cameras, args.frames, args.fleet.seed
        ),
    )?;
    std::fs::write(&args.output, b.to_json() + "\n").with_context(|| format!("write {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// One pre-built frame: its content and detections.
type Pooled = (v1::frame::Content, Vec<v1::Detection>);

fn synth_pool(cam: &mut Camera, n: usize, stride: usize, prescored: bool, scorer: &mut Option<Scorer>) -> Vec<Pooled> {
    let mut buf = Vec::new();
    (0..n.max(1))
        .map(|_| {
            for _ in 1..stride.max(1) {
                cam.next_frame(&mut buf);
            }
            let dets = cam.next_frame(&mut buf);
            let content = if prescored {
                // the edge scores locally and sends numbers
                let s = scorer.as_mut().map(|s| {
                    let r = s.score(FramePixels::Encoded(&buf), &to_metrics(&dets));
                    r.map(|r| {
                        let names: Vec<&str> = s_names();
                        (
                            names
                                .iter()
                                .zip(r.values)
                                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
                                .collect::<std::collections::HashMap<_, _>>(),
                            r.perceptual_hash,
                        )
                    })
                });
                match s {
                    Some(Ok((values, hash))) => {
                        v1::frame::Content::MetricValues(v1::MetricValues { values, perceptual_hash: hash })
                    }
                    _ => v1::frame::Content::EncodedImage(buf.clone()),
                }
            } else {
                v1::frame::Content::EncodedImage(buf.clone())
            };
            (content, to_proto(&dets))
        })
        .collect()
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
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the load over gRPC and returns the report (also printed).
pub async fn run_grpc(args: RunArgs) -> anyhow::Result<Report> {
    run_load(args, None).await
}

/// Runs the load through Kafka and returns the report (also printed). Alerts are still watched over gRPC
/// (`--target`); accepted and rejected frames are read from framewatch's /metrics.
pub async fn run_kafka(args: KafkaArgs) -> anyhow::Result<Report> {
    let kafka = KafkaOut::new(&args.brokers, &args.topic, &args.metrics_url)?;
    run_load(args.run, Some(Arc::new(kafka))).await
}

async fn run_load(args: RunArgs, kafka: Option<Arc<KafkaOut>>) -> anyhow::Result<Report> {
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

    // Pre-encode every camera's first pool before the clock starts (both cores), so the run measures framewatch.
    let mut initial = Vec::new();
    for i in 0..args.fleet.cameras {
        let (fleet, pool_n, stride, prescored) = (args.fleet.clone(), args.pool, args.stride, args.prescored);
        initial.push(tokio::task::spawn_blocking(move || {
            let mut cam = camera(&fleet, i);
            let mut scorer =
                prescored.then(|| Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings::default()));
            let pool = synth_pool(&mut cam, pool_n, stride, prescored, &mut scorer);
            (cam, pool)
        }));
    }
    let mut initial_pools = Vec::new();
    for t in initial {
        initial_pools.push(Some(t.await?));
    }

    // Watch alerts from the start.
    let mut query = QueryServiceClient::connect(args.target.clone()).await.context("connect to framewatch")?;
    let mut watch = query.watch_alerts(v1::WatchAlertsRequest { include_current: false }).await?.into_inner();
    let started = Instant::now();
    let events: Arc<Mutex<Vec<(f64, v1::AlertEvent)>>> = Arc::default();
    let ev = events.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(e)) = watch.message().await {
            ev.lock().await.push((started.elapsed().as_secs_f64(), e));
        }
    });

    let counters = Arc::new(Counters::default());
    let reasons: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for i in 0..args.fleet.cameras {
        let name = camera_name(i);
        let my_drifts: Vec<DriftSpec> = drifts.iter().filter(|d| d.camera == name).cloned().collect();
        let (target, fps, pool_n, stride, prescored) =
            (args.target.clone(), args.fps, args.pool, args.stride, args.prescored);
        let (counters, reasons, latencies, images) =
            (counters.clone(), reasons.clone(), latencies.clone(), images.clone());
        let first = initial_pools[i].take().context("initial pool")?;
        let kafka = kafka.clone();
        tasks.push(tokio::spawn(async move {
            let make_pool = move |mut cam: Camera, drifts: Vec<Drift>| {
                tokio::task::spawn_blocking(move || {
                    cam.drifts = drifts;
                    let mut scorer =
                        prescored.then(|| Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings::default()));
                    let pool = synth_pool(&mut cam, pool_n, stride, prescored, &mut scorer);
                    (cam, pool)
                })
            };
            let (mut cam, mut pool) = first;
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
                    let kinds: Vec<Drift> = my_drifts[..applied].iter().map(|d| d.kind).collect();
                    let (c, p) = make_pool(cam, kinds).await?;
                    cam = c;
                    pool = p;
                }
                let (content, detections) = if images.is_empty() {
                    pool[k % pool.len()].clone()
                } else {
                    (v1::frame::Content::EncodedImage(images[(k + i) % images.len()].clone()), Vec::new())
                };
                k += 1;
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
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
    };
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
                (Some(t), Some(r)) => println!("  drift {}: detected after {t:.1} s ({r})", d.drift),
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Baseline(a) => baseline(a),
        Cmd::Grpc(a) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run_grpc(a)).map(|_| ())
        }
        Cmd::Kafka(a) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run_kafka(a)).map(|_| ())
        }
    }
}

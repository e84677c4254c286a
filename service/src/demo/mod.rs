//! `framewatch demo`: the whole service with nothing to set up. A clean synthetic fleet provides the baseline,
//! then the same fleet streams frames over real gRPC on loopback; after a while drift is injected (one camera
//! darkens, one blurs, one freezes; the model grows unsure on dark frames; on a sixth, dark too, the model misses
//! most objects at full confidence) and a live terminal view shows slices, drift and alerts while /metrics and the
//! gRPC API stay reachable. A reviewer's ground truth for a third of the frames follows three seconds later
//! (`SendLabels`), so model test cases judge real performance: only they see the sixth camera's failure.

mod screen;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use framewatch_metrics::cause::Cause;
use framewatch_metrics::{
    Baseline, BaselineBuilder, ComparableSettings, FramePixels, MetricRegistry, ScoreSettings, Scorer,
};
use framewatch_proto::v1;
use framewatch_proto::v1::ingest_service_client::IngestServiceClient;
use framewatch_synth::{Camera, Drift, SynthDetection, SynthObject};

use crate::alerts::{AlertEvent, Phase, default_rules};
use crate::config::{Config, RuleConfig};
use crate::server::Service;
use crate::slice::SliceKey;
use crate::time::SystemClock;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds and print a summary (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Seconds of clean traffic before drift is injected.
    #[arg(long, default_value_t = 30)]
    pub drift_after: u64,
    /// Cameras in the synthetic fleet (at least 5: the faults go to cameras 2 to 6; a fleet of 5 has no sixth).
    #[arg(long, default_value_t = 6)]
    pub cameras: usize,
    /// Frames per second per camera.
    #[arg(long, default_value_t = 5.0)]
    pub fps: f64,
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http_addr: SocketAddr,
    /// Write logs to FILE instead of stderr. On a terminal the demo redraws its screen in place and its logs go
    /// to <temp dir>/framewatch-demo-<pid>.log unless this names another file; the screen shows the path.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl DemoArgs {
    /// Where this run's logs go (`None`: stderr): `--log-file`, else a file of its own while a screen is drawn.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.log_file.clone().or_else(|| {
            std::io::stdout()
                .is_terminal()
                .then(|| std::env::temp_dir().join(format!("framewatch-demo-{}.log", std::process::id())))
        })
    }
}

const WIDTH: usize = 640;
const HEIGHT: usize = 360;

fn camera_id(i: usize) -> String {
    format!("cam-{}", i + 1)
}

fn site(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "lot-a" } else { "lot-b" }
}

/// The drift each camera of a fleet of `cameras` gets (index into the fleet), what it is, and the cause
/// framewatch should name.
fn schedule(cameras: usize) -> Vec<(usize, Drift, &'static str, Cause)> {
    let all = vec![
        (1, Drift::Darken(0.35), "darkened", Cause::Darker),
        (2, Drift::Blur(4), "blurred", Cause::Blur),
        (3, Drift::Freeze, "frozen", Cause::Frozen),
        (4, Drift::ColourCast(1.35, 1.0, 0.7), "orange (white balance)", Cause::ColourCast),
        (5, Drift::Darken(0.35), "darkened, its model missing objects", Cause::Darker),
    ];
    all.into_iter().filter(|(i, ..)| *i < cameras).collect()
}

/// A model failure that drift does not show: on the sixth camera, once dark, the model misses 70 % of the objects
/// and stays as confident as in daylight. Only the ground truth (`CameraMap50`) catches it.
fn model_failure(i: usize) -> Option<Drift> {
    (i == 5).then_some(Drift::MissObjects(0.7))
}

/// Share of frames a reviewer labels, and how long after the frame the labels come.
const LABELLED_SHARE: u64 = 3; // one frame in three
const LABELS_DELAY: Duration = Duration::from_secs(3);

/// Causes that really follow from an injected fault in the synthetic fleet (its model loses confidence in the
/// dark and on blurred frames), so they are not cross-talk.
fn consequence(of: Cause, c: Cause) -> bool {
    matches!(of, Cause::Darker | Cause::Blur) && c == Cause::ConfidenceDrop
}

fn cause_of(e: &AlertEvent) -> Option<Cause> {
    e.labels.get("cause").and_then(|c| c.parse().ok())
}

fn to_proto(d: &[SynthDetection]) -> Vec<v1::Detection> {
    d.iter().map(SynthDetection::to_proto).collect()
}

/// Metric values and class labels of one scored synthetic frame.
type ScoredSynthFrame = (Vec<Option<f64>>, Vec<&'static str>);

/// Scores clean frames of the fleet into a baseline (both cores).
fn build_baseline(cameras: usize, per_camera: usize) -> anyhow::Result<Baseline> {
    let registry = Arc::new(MetricRegistry::standard());
    let settings = ScoreSettings::default();
    let names: Vec<String> = registry.names().map(String::from).collect();
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    // Each camera gets its own reference (cameras legitimately differ), each site too; the fleet-wide one serves
    // the global and predicate slices.
    let results: Vec<Vec<ScoredSynthFrame>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cameras)
            .map(|i| {
                let registry = registry.clone();
                s.spawn(move || {
                    let mut cam = Camera::new(&camera_id(i), WIDTH, HEIGHT, 1000 + i as u64);
                    let mut scorer = Scorer::new(registry, settings);
                    let mut buf = Vec::new();
                    let mut out = Vec::new();
                    for _ in 0..per_camera {
                        let dets = cam.next_frame(&mut buf);
                        let pd: Vec<framewatch_metrics::Detection> =
                            dets.iter().map(SynthDetection::to_detection).collect();
                        if let Ok(sc) = scorer.score(FramePixels::Encoded(&buf), &pd) {
                            out.push((sc.values.to_vec(), dets.iter().map(|d| d.class).collect()));
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut b = BaselineBuilder::new(names, comparable, 100);
    for (i, frames) in results.iter().enumerate() {
        let keys = [format!("camera_id={}", camera_id(i)), format!("site={}", site(i))];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for (values, classes) in frames {
            b.add_to_slices(&keys, values, classes.iter().copied());
        }
    }
    Ok(b.finish(
        crate::time::now_rfc3339(),
        framewatch_metrics::VERSION.into(),
        format!("framewatch demo: {cameras} synthetic cameras x {per_camera} clean frames"),
    )?)
}

/// A model test case of the demo: `statistic [of metric] >= 0.6` on `slice`, judged on 20 values or more.
fn model_test(name: &str, (slice, statistic, metric): (&str, &str, Option<&str>), summary: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        metric: metric.map(String::from),
        class: None,
        slice: slice.into(),
        statistic: statistic.into(),
        op: ">=".into(),
        threshold: 0.6,
        resolve_threshold: None,
        for_secs: 0,
        min_frames: Some(20),
        severity: "warning".into(),
        labels: BTreeMap::new(),
        annotations: [("summary".to_string(), summary.to_string())].into(),
        test: true,
        cause: None,
    }
}

fn demo_config(args: &DemoArgs) -> Config {
    let mut c = Config::default();
    c.server.grpc_addr = args.grpc_addr;
    c.server.http_addr = args.http_addr;
    c.server.shutdown_grace_secs = 3;
    // Short windows so the demo shows drift within a minute; production defaults are 15 min in 1 min steps.
    c.windows.length_secs = 60;
    c.windows.step_secs = 5;
    c.windows.allowed_lateness_secs = 30;
    c.evaluation.interval_secs = 2.0;
    c.evaluation.thresholds.min_frames = 50;
    c.slices.dimensions = vec!["camera_id".into(), "site".into()];
    c.slices.predicates = [("dark".to_string(), "brightness < 0.25".to_string())].into();
    c.prometheus.export_dimensions = vec!["camera_id".into(), "site".into()];
    let mut rules: Vec<RuleConfig> = default_rules()
        .into_iter()
        .map(|mut r| {
            // `distribution` keeps waiting longer than the specific causes (as by default, 2 min vs 1 min): a
            // specific cause still building up (blur crossing its tolerance) takes precedence.
            let wait = if r.cause == Some(Cause::Distribution) { 20 } else { 6 };
            r.for_secs = r.for_secs.min(wait);
            r
        })
        .collect();
    rules.push(model_test(
        "DarkFramesConfidence",
        ("predicate=dark", "mean", Some("confidence_mean")),
        "Model test: mean confidence on dark frames should stay >= 0.6",
    ));
    // The same expectation on real performance, per camera, from the reviewers' ground truth.
    rules.push(model_test(
        "CameraMap50",
        ("camera_id=*", "map50", None),
        "Model test: each camera's mAP@0.5 on reviewed frames should stay >= 0.6",
    ));
    // Labels for the last few minutes of capture time.
    c.labels.window_secs = 120;
    c.alerts.default_rules = false;
    c.alerts.rules = rules;
    c
}

/// `framewatch demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.cameras >= 5, "--cameras must be at least 5 (cameras 2-6 get the faults)");
    anyhow::ensure!(args.fps > 0.0 && args.fps <= 100.0, "--fps must be in (0, 100]");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    eprintln!("framewatch demo: building the baseline from {} clean synthetic frames...", args.cameras * 80);
    let cams = args.cameras;
    let baseline = tokio::task::spawn_blocking(move || build_baseline(cams, 80)).await??;
    let service = Service::start_with_baseline(demo_config(&args), baseline, Arc::new(SystemClock)).await?;
    let grpc = service.grpc_addr;
    let mut events = service.alerts.subscribe();
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let drift_at = Duration::from_secs(args.drift_after);

    // One gRPC stream per camera, and one for the reviewers' labels.
    let (labels_tx, labels_task) = reviewer(grpc, stop.clone());
    let mut fleet = Vec::new();
    for i in 0..args.cameras {
        let (stop, fps, labels_tx) = (stop.clone(), args.fps, labels_tx.clone());
        let drift = schedule(args.cameras).into_iter().find(|(c, ..)| *c == i).map(|(_, d, ..)| d);
        fleet.push(tokio::spawn(async move {
            let mut client = IngestServiceClient::connect(format!("http://{grpc}")).await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<v1::Frame>(16);
            let acks = tokio::spawn(async move {
                let mut stream =
                    client.stream_frames(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
                while stream.message().await?.is_some() {}
                anyhow::Ok(())
            });
            let mut cam = Camera::new(&camera_id(i), WIDTH, HEIGHT, 1000 + i as u64);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
            let mut sent = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Some(d) = drift
                    && started.elapsed() >= drift_at
                    && cam.drifts.is_empty()
                {
                    cam.drifts.push(d);
                    cam.drifts.extend(model_failure(i));
                }
                let (cam2, frame) = tokio::task::spawn_blocking(move || {
                    let mut buf = Vec::new();
                    let dets = cam.next_frame(&mut buf);
                    (cam, (buf, dets))
                })
                .await?;
                cam = cam2;
                sent += 1;
                let frame_id = if sent.is_multiple_of(LABELLED_SHARE) {
                    let id = format!("{}/{sent}", camera_id(i));
                    let boxes: Vec<v1::LabelBox> = cam.truth().iter().map(SynthObject::to_label_proto).collect();
                    let labels = v1::FrameLabels { frame_id: id.clone(), no_objects: boxes.is_empty(), boxes };
                    // The reviewer's queue is bounded: a label that finds it full is simply not given.
                    let _ = labels_tx.try_send((Instant::now() + LABELS_DELAY, labels));
                    id
                } else {
                    String::new()
                };
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                let f = v1::Frame {
                    camera_id: camera_id(i),
                    labels: [("site".to_string(), site(i).to_string())].into(),
                    capture_time: Some(prost_types::Timestamp {
                        seconds: now.as_secs() as i64,
                        nanos: now.subsec_nanos() as i32,
                    }),
                    content: Some(v1::frame::Content::EncodedImage(frame.0)),
                    detections: to_proto(&frame.1),
                    model_version: "detector-v3".into(),
                    frame_id,
                };
                if tx.send(f).await.is_err() {
                    break;
                }
            }
            drop(tx);
            acks.await??;
            anyhow::Ok(())
        }));
    }

    // A screen redrawn in place only when nothing else writes to the terminal: main sends the logs to the file
    // `log_file` names whenever stdout is a terminal.
    let log_file = args.log_file();
    let tty = std::io::stdout().is_terminal() && log_file.is_some();
    let mut timeline: Vec<(Duration, AlertEvent)> = Vec::new();
    let mut view = tokio::time::interval(Duration::from_secs(if tty { 2 } else { 10 }));
    let deadline = args.duration.map(|d| started + Duration::from_secs(d));
    let screen = screen::Screen::open(tty);
    let mut last = Vec::new();
    loop {
        tokio::select! {
            _ = view.tick() => {
                last = render_view(&service, &timeline, started.elapsed(), (drift_at, args.cameras), log_file.as_deref());
                screen.draw(&last);
            }
            ev = events.recv() => {
                if let Ok(e) = ev { timeline.push((started.elapsed(), e)); }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d.into()).await, None => std::future::pending().await } } => break,
        }
    }
    screen.close(&last);
    stop.cancel();
    for f in fleet {
        if let Ok(Err(e)) = f.await {
            tracing::warn!(error = %e, "a demo camera stopped with an error");
        }
    }
    drop(labels_tx);
    if let Ok(Err(e)) = labels_task.await {
        tracing::warn!(error = %e, "the demo's reviewer stopped with an error");
    }
    while let Ok(e) = events.try_recv() {
        timeline.push((started.elapsed(), e));
    }
    print_summary(&timeline, drift_at, args.cameras);
    service.stop().await
}

/// The reviewers: labels handed over with the time they are due, sent over one `SendLabels` stream when due.
fn reviewer(
    grpc: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> (tokio::sync::mpsc::Sender<(Instant, v1::FrameLabels)>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (tx, mut due) = tokio::sync::mpsc::channel::<(Instant, v1::FrameLabels)>(1024);
    let task = tokio::spawn(async move {
        let mut client = IngestServiceClient::connect(format!("http://{grpc}")).await?;
        let (out, rx) = tokio::sync::mpsc::channel::<v1::FrameLabels>(64);
        let acks = tokio::spawn(async move {
            let mut stream = client.send_labels(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            while stream.message().await?.is_some() {}
            anyhow::Ok(())
        });
        // Labels come due in the order they were handed over (one delay for all).
        while let Some((at, labels)) = due.recv().await {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            if out.send(labels).await.is_err() {
                break;
            }
        }
        drop(out);
        acks.await?
    });
    (tx, task)
}

/// One frame of the view from the service's latest evaluation and alert state.
fn render_view(
    service: &Service,
    timeline: &[(Duration, AlertEvent)],
    elapsed: Duration,
    (drift_at, cameras): (Duration, usize),
    log_file: Option<&std::path::Path>,
) -> Vec<String> {
    let eval = service.evaluation.read().unwrap_or_else(|p| p.into_inner()).clone();
    let alerts = service.alert_state.read().unwrap_or_else(|p| p.into_inner()).clone();
    let phase = if elapsed < drift_at {
        format!("clean traffic, drift in {} s", (drift_at - elapsed).as_secs())
    } else {
        let injected: Vec<String> =
            schedule(cameras).iter().map(|(i, _, what, _)| format!("{} {what}", camera_id(*i))).collect();
        format!("faults injected: {}", injected.join(", "))
    };
    screen::render(&screen::View {
        elapsed,
        phase,
        grpc: service.grpc_addr,
        http: service.http_addr,
        log_file,
        rows: screen::slice_rows(&eval, &alerts),
        events: timeline,
    })
}

/// The summary states only what fired: per injected fault, the causes named after it began (right, a real
/// consequence, or wrong), and every alert on a camera without a fault.
fn print_summary(timeline: &[(Duration, AlertEvent)], drift_at: Duration, cameras: usize) {
    println!("\n== framewatch demo summary");
    let fired_on = |slice: &str| -> Vec<(Duration, &AlertEvent)> {
        timeline.iter().filter(|(_, e)| &*e.slice == slice && e.phase == Phase::Firing).map(|(t, e)| (*t, e)).collect()
    };
    let mut right = 0;
    for (i, _, what, expected) in schedule(cameras) {
        let fired: Vec<(Duration, &AlertEvent)> =
            fired_on(&SliceKey::camera(&camera_id(i))).into_iter().filter(|(t, _)| *t >= drift_at).collect();
        let first = fired.iter().find_map(|(t, e)| Some((*t, cause_of(e).filter(|c| *c != Cause::ModelTest)?)));
        // Model test cases are reported on their own line below.
        let wrong: Vec<String> = fired
            .iter()
            .filter_map(|(_, e)| cause_of(e))
            .filter(|c| *c != expected && *c != Cause::ModelTest && !consequence(expected, *c))
            .map(|c| c.to_string())
            .collect();
        let verdict = match first {
            None => "nothing fired yet".to_string(),
            Some((t, c)) if c == expected && wrong.is_empty() => {
                right += 1;
                format!("{c} after {} s (correct)", (t - drift_at).as_secs())
            }
            Some((t, c)) => format!(
                "first {c} after {} s, expected {expected}{}",
                (t - drift_at).as_secs(),
                if wrong.is_empty() { String::new() } else { format!("; also {}", wrong.join(", ")) }
            ),
        };
        let also: Vec<String> = fired
            .iter()
            .filter_map(|(_, e)| cause_of(e))
            .filter(|c| consequence(expected, *c))
            .map(|c| format!("{c} (a real consequence)"))
            .collect();
        let also = if also.is_empty() { String::new() } else { format!("; {}", also.join(", ")) };
        println!("  {} {what}: {verdict}{also}", camera_id(i));
    }
    let drifted: Vec<usize> = schedule(cameras).iter().map(|(i, ..)| *i).collect();
    let false_alarms: Vec<String> = (0..cameras)
        .filter(|i| !drifted.contains(i))
        .flat_map(|i| {
            fired_on(&SliceKey::camera(&camera_id(i)))
                .into_iter()
                .map(|(_, e)| {
                    format!("{} ({}) on {}", e.rule, e.labels.get("cause").map_or("?", String::as_str), e.slice)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    println!(
        "  alerts on cameras without a fault: {}",
        if false_alarms.is_empty() { "none".into() } else { false_alarms.join(", ") }
    );
    println!("  faults named by their one correct cause: {right} of {}", schedule(cameras).len());
    let tests: Vec<String> = timeline
        .iter()
        .filter(|(_, e)| e.model_test && e.phase == Phase::Firing)
        .map(|(_, e)| format!("{} failed on {}", e.rule, e.slice))
        .collect();
    println!("  model test cases: {}", if tests.is_empty() { "all passing".into() } else { tests.join(", ") });
}

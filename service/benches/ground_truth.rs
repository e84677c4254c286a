//! The ground-truth join's cost: memory per frame waiting for labels and per labelled frame, the cost of one label
//! message (check, lock, match), and the evaluation's performance pass at 1,000 slices.
//!     cargo bench -p framewatch --bench ground_truth
//! Frames are realistic for a parking-lot camera: 5 detections (car, person), 3 slices (global, camera, site) and
//! every catalog metric's value.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use framewatch::evaluate::{Evaluation, SliceEval, judge_performance};
use framewatch::slice::SliceKey;
use framewatch::truth::{JoinFrame, JoinSettings, JoinStore, Labels};
use framewatch_metrics::performance::TruthBox;
use framewatch_metrics::{BaselineBuilder, ComparableSettings, Detection, MetricRegistry};

#[path = "common/counting.rs"]
mod counting;
use counting::LIVE;

const NOW: i64 = 1_800_000_000;
const CAMERAS: usize = 1000;

fn boxes(i: usize) -> Vec<(f32, &'static str)> {
    (0..5).map(|k| (((i * 7 + k * 13) % 70) as f32 / 100.0, if k < 4 { "car" } else { "person" })).collect()
}

fn detections(i: usize) -> Vec<Detection> {
    boxes(i)
        .into_iter()
        .enumerate()
        .map(|(k, (x, class))| Detection {
            x_min: x,
            y_min: 0.2,
            x_max: x + 0.1,
            y_max: 0.4,
            class_label: class.into(),
            confidence: 0.9 - k as f32 * 0.05,
            class_probabilities: vec![],
        })
        .collect()
}

/// Labels: the detections' boxes, the last one missed by the model (a box elsewhere).
fn labels(i: usize) -> Labels {
    let mut truth: Vec<TruthBox> = boxes(i)
        .into_iter()
        .map(|(x, class)| TruthBox { x_min: x, y_min: 0.2, x_max: x + 0.1, y_max: 0.4, class_label: class.into() })
        .collect();
    truth.push(TruthBox { x_min: 0.8, y_min: 0.8, x_max: 0.9, y_max: 0.9, class_label: "car".into() });
    Labels { frame_id: format!("cam-{}/{i}", i % CAMERAS), truth, no_objects: false }
}

/// A join holding `n` frames of `CAMERAS` cameras, every catalog metric kept.
fn filled(n: usize, registry: &MetricRegistry) -> JoinStore {
    let kept: Vec<(usize, Arc<str>)> = registry.names().enumerate().map(|(i, n)| (i, Arc::from(n))).collect();
    let settings = JoinSettings { max_frames: n, ..JoinSettings::default() };
    let mut join = JoinStore::new(settings, kept);
    let values: Vec<Option<f64>> = (0..registry.len()).map(|i| Some(i as f64 / 100.0)).collect();
    for i in 0..n {
        let slices = ["global".to_string(), format!("camera_id=cam-{}", i % CAMERAS), format!("site=lot-{}", i % 7)];
        let id = format!("cam-{}/{i}", i % CAMERAS);
        let dets = detections(i);
        let f =
            JoinFrame { frame_id: &id, capture_secs: NOW - 3600, detections: &dets, slices: &slices, values: &values };
        join.offer_frame(&f, NOW - 3600);
    }
    join
}

fn memory(registry: &MetricRegistry) {
    const N: usize = 50_000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut join = filled(N, registry);
    let waiting = LIVE.load(Ordering::Relaxed) - before;
    let estimate = join.size().bytes;
    for i in 0..N {
        join.offer_labels(&labels(i), NOW);
    }
    let labelled = LIVE.load(Ordering::Relaxed) - before;
    // What a checkpoint carries of it, and how long the copy holds the join's lock.
    let started = std::time::Instant::now();
    let saved = join.export_state();
    let copied = started.elapsed();
    let bytes = postcard::to_allocvec(&saved).map_or(0, |b| b.len());
    println!(
        "join in a checkpoint: {:.0} B per labelled frame; the copy of {N} frames holds the join's lock {:.1} ms",
        bytes as f64 / N as f64,
        copied.as_secs_f64() * 1000.0
    );
    println!(
        "join memory: {:.0} B per waiting frame (gauge estimate {:.0} B), {:.0} B per labelled frame (gauge \
         estimate {:.0} B); 5 detections, 6 labels, 3 slices, {} metric values",
        waiting as f64 / N as f64,
        estimate as f64 / N as f64,
        labelled as f64 / N as f64,
        join.size().bytes as f64 / N as f64,
        registry.len()
    );
}

fn bench(c: &mut Criterion) {
    let registry = MetricRegistry::standard();
    memory(&registry);

    // One label message: check, join (match against the frame's detections), counted.
    let mut join = filled(CAMERAS * 50, &registry);
    let all: Vec<Labels> = (0..CAMERAS * 50).map(labels).collect();
    let mut k = 0;
    c.bench_function("label_join", |b| {
        b.iter(|| {
            let l = &all[k % all.len()];
            k += 1;
            l.check(1000).expect("valid");
            join.offer_labels(l, NOW)
        })
    });

    // The evaluation's performance pass: 1,000 camera slices, 50 labelled frames each (and global, 7 sites).
    let join = Mutex::new(join);
    let names: Vec<String> = registry.names().map(String::from).collect();
    let mut b = BaselineBuilder::new(names.clone(), ComparableSettings::default(), 10);
    b.add(&vec![Some(0.5); names.len()], ["car"]);
    let baseline = b.finish("bench".into(), "bench".into(), "bench".into()).expect("baseline");
    let slice = |key: String| SliceEval {
        key: SliceKey::from_canonical(&key),
        frames: 50,
        last_seen_secs: NOW,
        window_start_secs: NOW - 900,
        window_end_secs: NOW,
        metrics: Vec::new(),
        classes: None,
        own_baseline: false,
        causes: Vec::new(),
        performance: None,
    };
    let mut slices: Vec<SliceEval> = (0..CAMERAS).map(|i| slice(format!("camera_id=cam-{i}"))).collect();
    slices.extend((0..7).map(|i| slice(format!("site=lot-{i}"))));
    slices.push(slice("global".into()));
    slices.sort_by(|a, b| a.key.cmp(&b.key));
    let mut evaluation = Evaluation { evaluated_at_secs: NOW, slices, evicted: Vec::new() };
    c.bench_function("judge_performance_1000_slices_50000_labelled", |b| {
        b.iter(|| {
            judge_performance(&mut evaluation, &join, &baseline, &Default::default(), 30, NOW);
            evaluation.slices.iter().filter(|s| s.performance.as_ref().is_some_and(|p| p.enough)).count()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);

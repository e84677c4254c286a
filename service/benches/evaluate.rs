//! Drift evaluation cost versus the number of active slices, and memory held per active slice.
//!     cargo bench -p framewatch --bench evaluate
//! Cost: each slice is a camera with 60 frames spread over its 15 one-minute sub-windows, all 34 metrics tracked
//! (`evaluate/N`); and 100 busy cameras, the realistic windows below (`evaluate/busy-cameras/100`).
//! Memory: also a realistic full window, a camera at 10 frames/s (600 frames in each of the 15 sub-windows) with
//! the scores of real synthetic-camera frames, judged against its own per-camera reference as deployed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use framewatch::config::Config;
use framewatch::evaluate::{EvaluationSettings, evaluate};
use framewatch::store::{FrameRecord, StoreSettings, WindowStore};
use framewatch_metrics::{
    Baseline, BaselineBuilder, ComparableSettings, FramePixels, MetricRegistry, ScoreSettings, Scorer,
};

#[path = "common/counting.rs"]
mod counting;
use counting::LIVE;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn baseline(registry: &MetricRegistry) -> Baseline {
    let names: Vec<String> = registry.names().map(String::from).collect();
    let mut b = BaselineBuilder::new(names.clone(), ComparableSettings::default(), 100);
    let mut r = Rng(42);
    for _ in 0..5000 {
        let v: Vec<Option<f64>> = names.iter().map(|_| Some(r.f())).collect();
        b.add(&v, ["car"]);
    }
    b.finish("bench".into(), "bench".into(), "bench".into()).expect("baseline")
}

fn filled_store(slices: usize, baseline: &Baseline, registry: &MetricRegistry) -> (WindowStore, i64) {
    let mut cfg = Config::default();
    cfg.slices.dimensions = vec!["camera_id".into()];
    cfg.slices.max_slices = slices + 1;
    let index = |n: &str| registry.index_of(n);
    let mut store = WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), baseline, index);
    let now = 1_800_000_020i64;
    let labels = HashMap::new();
    let mut r = Rng(7);
    let values: Vec<Vec<Option<f64>>> = (0..64).map(|_| (0..registry.len()).map(|_| Some(r.f())).collect()).collect();
    for s in 0..slices {
        let cam = format!("cam-{s}");
        for f in 0..60 {
            let t = now - 890 + f * 15;
            let rec = FrameRecord {
                camera_id: &cam,
                model_version: "",
                labels: &labels,
                capture_secs: t,
                values: &values[(s + f as usize) % 64],
                classes: &["car"],
            };
            store.record(&rec, t);
        }
    }
    (store, now)
}

/// Scores `n` frames of a synthetic camera (320x180, with detections).
fn camera_scores(k: u64, n: usize) -> Vec<Vec<Option<f64>>> {
    let mut scorer = Scorer::new(std::sync::Arc::new(MetricRegistry::standard()), ScoreSettings::default());
    let mut cam = framewatch_synth::Camera::new(&format!("cam-{k}"), 320, 180, 1000 + k);
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            let dets: Vec<_> = cam.next_frame(&mut buf).iter().map(|d| d.to_detection()).collect();
            scorer.score(FramePixels::Encoded(&buf), &dets).expect("score").values.to_vec()
        })
        .collect()
}

/// `slices` cameras at 10 frames/s with full 15-minute windows, each with its own reference: the store, its
/// baseline, the time of the last frame, and the memory the store holds per slice (KiB).
fn realistic(registry: &MetricRegistry, slices: usize) -> (WindowStore, Baseline, i64, f64) {
    const CAMERAS: u64 = 4;
    let scores: Vec<Vec<Vec<Option<f64>>>> = (0..CAMERAS).map(|k| camera_scores(k, 1200)).collect();
    let names: Vec<String> = registry.names().map(String::from).collect();
    let mut b = BaselineBuilder::new(names, ComparableSettings::default(), 100);
    for s in 0..slices {
        let key = format!("camera_id=cam-{s}");
        for v in &scores[s % CAMERAS as usize][..600] {
            b.add_to_slices(&[key.as_str()], v, ["car"]);
        }
    }
    let baseline = b.finish("bench".into(), "bench".into(), "bench".into()).expect("baseline");
    let mut cfg = Config::default();
    cfg.slices.dimensions = vec!["camera_id".into()];
    cfg.slices.max_slices = slices + 1;
    let index = |n: &str| registry.index_of(n);
    let labels = HashMap::new();
    let start = LIVE.load(Ordering::Relaxed);
    let mut store = WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline, index);
    let before = LIVE.load(Ordering::Relaxed);
    eprintln!(
        "per-camera references' bin layouts held by the store: {:.1} KiB per referenced camera",
        (before - start) as f64 / slices as f64 / 1024.0
    );
    let now = 1_800_000_000i64 - 1;
    for s in 0..slices {
        let cam = format!("cam-{s}");
        let values = &scores[s % CAMERAS as usize][600..];
        for f in 0..9000i64 {
            let t = now - 899 + f / 10;
            let rec = FrameRecord {
                camera_id: &cam,
                model_version: "",
                labels: &labels,
                capture_secs: t,
                values: &values[f as usize % 600],
                classes: &["car"],
            };
            store.record(&rec, t);
        }
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(store.counters().late, 0);
    (store, baseline, now, held as f64 / slices as f64 / 1024.0)
}

fn bench(c: &mut Criterion) {
    let registry = MetricRegistry::standard();
    let (busy, busy_baseline, busy_now, per_slice) = realistic(&registry, 100);
    eprintln!(
        "100 cameras at 10 frames/s, full 15-minute windows, own references: {per_slice:.1} KiB per slice (global slice included in the total)"
    );
    let baseline = baseline(&registry);
    let settings = EvaluationSettings::from(&framewatch::config::EvaluationConfig::default());
    let mut group = c.benchmark_group("evaluate");
    group.sample_size(10);
    // The same realistic cameras: full windows (600 values in each sub-window's ~100 bins), 9,000 values a window.
    let busy = Mutex::new(busy);
    group.bench_function("busy-cameras/100", |b| {
        b.iter(|| evaluate(&busy, &busy_baseline, &settings, &[], busy_now).slices.len())
    });
    drop(busy);
    for n in [100usize, 1000, 10_000] {
        let before = LIVE.load(Ordering::Relaxed);
        let (store, now) = filled_store(n, &baseline, &registry);
        let held = LIVE.load(Ordering::Relaxed) - before;
        eprintln!("{n} slices (+ global): {:.1} KiB held per slice", held as f64 / (n + 1) as f64 / 1024.0);
        let store = Mutex::new(store);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| evaluate(&store, &baseline, &settings, &[], now).slices.len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

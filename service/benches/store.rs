//! The window store's share of a pre-scored event (issue 12): `WindowStore::record` for a fleet laid out as
//! `framewatch-loadtest grpc --prescored` sends it (8 cameras in 3 sites, one model version, the default slice
//! dimensions, a baseline with a reference per camera and per site), values scored from synthetic-camera frames.
//!     cargo bench -p framewatch --bench store
//! Each iteration records a batch of `BATCH` events, 10 per second per camera, so sub-windows fill and roll over
//! as in a live service. For instruction counts (repeatable on a noisy machine), run the bench binary once in
//! test mode under callgrind and collect only inside `record_batch`:
//!     valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*record_batch*' <bench binary> --test
//! The 8 cameras' windows fit in the CPU's caches. A fleet whose windows do not (memory-bound, as in a large
//! deployment): `FRAMEWATCH_BENCH_CAMERAS=1000 cargo bench -p framewatch --bench store` (each camera replays the
//! scores of one of the 8; at most ~1,990 cameras, under the default `slices.max_slices` of 2,000 with the site,
//! model and global slices; the warm-up then records 15 minutes of the fleet, ~2 minutes).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use framewatch::config::Config;
use framewatch::store::{FrameRecord, StoreSettings, WindowStore};
use framewatch_metrics::{BaselineBuilder, ComparableSettings, FramePixels, MetricRegistry, ScoreSettings, Scorer};

/// Cameras whose frames are scored; a larger fleet replays them.
const SCORED_CAMERAS: usize = 8;
const POOL: usize = 64;
const BATCH: usize = 1000;

/// One pre-scored event: what the pipeline hands the store.
struct Event {
    camera_id: String,
    labels: HashMap<String, String>,
    values: Vec<Option<f64>>,
    classes: Vec<String>,
}

/// Cameras in the fleet: `FRAMEWATCH_BENCH_CAMERAS`, else 8.
fn cameras() -> usize {
    std::env::var("FRAMEWATCH_BENCH_CAMERAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SCORED_CAMERAS)
}

fn events(registry: &Arc<MetricRegistry>) -> Vec<Event> {
    let mut scorer = Scorer::new(registry.clone(), ScoreSettings::default());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for k in 0..SCORED_CAMERAS {
        let mut cam = framewatch_synth::Camera::new(&format!("cam-{k}"), 320, 180, 1000 + k as u64);
        for _ in 0..POOL {
            let dets: Vec<_> = cam.next_frame(&mut buf).iter().map(|d| d.to_detection()).collect();
            let values = scorer.score(FramePixels::Encoded(&buf), &dets).expect("score").values.to_vec();
            out.push(Event {
                camera_id: format!("cam-{k}"),
                labels: [("site".to_string(), format!("site-{}", k % 3))].into(),
                values,
                classes: dets.iter().map(|d| d.class_label.clone()).collect(),
            });
        }
    }
    (0..cameras())
        .flat_map(|k| {
            out[(k % SCORED_CAMERAS) * POOL..][..POOL].iter().map(move |e| Event {
                camera_id: format!("cam-{k}"),
                labels: e.labels.clone(),
                values: e.values.clone(),
                classes: e.classes.clone(),
            })
        })
        .collect()
}

fn store(registry: &MetricRegistry, events: &[Event]) -> WindowStore {
    let names: Vec<String> = registry.names().map(String::from).collect();
    let mut b = BaselineBuilder::new(names, ComparableSettings::default(), 100);
    for e in events {
        let keys = [format!("camera_id={}", e.camera_id), format!("site={}", e.labels["site"])];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        b.add_to_slices(&keys, &e.values, e.classes.iter().map(String::as_str));
    }
    let baseline = b.finish("bench".into(), "bench".into(), "bench".into()).expect("baseline");
    let cfg = Config::default();
    let index = |n: &str| registry.index_of(n);
    WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline, index)
}

/// The measured batch (a function of its own, so that callgrind can collect inside it alone).
#[inline(never)]
fn record_batch(store: &mut WindowStore, events: &[Event], tenths: &mut i64) -> usize {
    record_events(store, events, tenths)
}

/// Records `BATCH` events from `tenths` (tenths of a second since the start), 10 per second per camera.
#[inline(never)]
fn record_events(store: &mut WindowStore, events: &[Event], tenths: &mut i64) -> usize {
    const START: i64 = 1_800_000_000;
    let mut slices = 0;
    let cameras = events.len() / POOL;
    for i in 0..BATCH {
        let cam = i % cameras;
        let e = &events[cam * POOL + (*tenths as usize + i / cameras) % POOL];
        let classes: Vec<&str> = e.classes.iter().map(String::as_str).collect();
        let t = START + *tenths / 10;
        let rec = FrameRecord {
            camera_id: &e.camera_id,
            model_version: "loadtest",
            labels: &e.labels,
            capture_secs: t,
            values: &e.values,
            classes: &classes,
        };
        if let framewatch::store::Recorded::Yes { slices: n } = store.record(&rec, t) {
            slices += n;
        }
        if cam == cameras - 1 {
            *tenths += 1;
        }
    }
    slices
}

fn bench(c: &mut Criterion) {
    let registry = Arc::new(MetricRegistry::standard());
    let events = events(&registry);
    let mut store = store(&registry, &events);
    let mut tenths = 0i64;
    // Warm up past a full window (15 min at 10 frames/s per camera), so every slot of every ring is allocated.
    while tenths < 9_100 {
        black_box(record_events(&mut store, &events, &mut tenths));
    }
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("record_prescored_1000", |b| {
        b.iter(|| black_box(record_batch(&mut store, &events, &mut tenths)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

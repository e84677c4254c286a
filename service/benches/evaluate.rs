//! Drift evaluation cost versus the number of active slices, and memory held per active slice.
//!     cargo bench -p framewatch --bench evaluate
//! Each slice is a camera with 60 frames spread over its 15 one-minute sub-windows, all 34 metrics tracked.

#![allow(unsafe_code)] // the counting allocator below; it only forwards to the system allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use framewatch::config::Config;
use framewatch::evaluate::evaluate;
use framewatch::store::{FrameRecord, StoreSettings, WindowStore};
use framewatch_metrics::drift::DriftThresholds;
use framewatch_metrics::{Baseline, BaselineBuilder, ComparableSettings, MetricRegistry};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
// SAFETY: forwards to the system allocator unchanged; only counts live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: caller's contract.
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

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

fn bench(c: &mut Criterion) {
    let registry = MetricRegistry::standard();
    let baseline = baseline(&registry);
    let thresholds = DriftThresholds::default();
    let mut group = c.benchmark_group("evaluate");
    group.sample_size(10);
    for n in [100usize, 1000, 10_000] {
        let before = LIVE.load(Ordering::Relaxed);
        let (store, now) = filled_store(n, &baseline, &registry);
        let held = LIVE.load(Ordering::Relaxed) - before;
        eprintln!("{n} slices (+ global): {:.1} KiB held per slice", held as f64 / (n + 1) as f64 / 1024.0);
        let store = Mutex::new(store);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| evaluate(&store, &baseline, &thresholds, now).slices.len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

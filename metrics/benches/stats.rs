//! Cost of one metric's comparison as an evaluation runs it for every metric of every slice: the one-pass
//! distances (KS, Wasserstein, and the window's count in each PSI/JS bin) over 100 fine bins, the fused PSI/JS with the
//! reference's logarithms cached, and all of `compare_to` (those plus both p-values). Windows of 60 values (a quiet
//! camera, as the service's evaluate bench lays out) and of 9,000 (10 frames/s over 15 minutes), drawn from a
//! slightly shifted distribution, so the CDFs cross here and there as they do on a live camera.
//!     cargo bench -p framewatch-metrics --bench stats

use criterion::{Criterion, criterion_group, criterion_main};
use framewatch_metrics::baseline::{MetricBaseline, metric_from_sorted};
use framewatch_metrics::histogram::Histogram;
use framewatch_metrics::stats::{EffectiveN, compare_to, distances, psi_js};
use std::hint::black_box;

/// Deterministic, roughly normal values (a sum of four uniforms), centred on `shift`.
fn values(seed: u64, n: usize, shift: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut uniform = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n).map(|_| shift + (0..4).map(|_| uniform()).sum::<f64>() - 2.0).collect()
}

fn reference() -> MetricBaseline {
    let mut base = values(1, 20_000, 0.0);
    base.sort_by(f64::total_cmp);
    metric_from_sorted("x", &base, 0, 100).expect("baseline")
}

/// 64 windows of `n` values each, on the reference's bins.
fn windows(b: &MetricBaseline, n: usize) -> Vec<Histogram> {
    (0..64u64)
        .map(|w| {
            let mut h = Histogram::new(&b.layout);
            for v in values(100 + w, n, 0.02 * (w % 5) as f64) {
                h.record(&b.layout, Some(v));
            }
            h
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let b = reference();
    let mut group = c.benchmark_group("stats");
    for n in [60, 9_000] {
        let windows = windows(&b, n);
        let mut q = Vec::new();
        group.bench_function(format!("distances_64_windows/{n}"), |bench| {
            bench.iter(|| {
                for h in &windows {
                    black_box(distances(&b.layout, &b.histogram, black_box(h), &mut q));
                }
            })
        });
        // Each window's count of values in each PSI/JS bin, as `distances` leaves them for `psi_js`.
        let counts: Vec<(Vec<f64>, u64)> = windows
            .iter()
            .map(|h| {
                let mut counts = Vec::new();
                distances(&b.layout, &b.histogram, h, &mut counts);
                (counts, h.n)
            })
            .collect();
        group.bench_function(format!("psi_js_64_windows/{n}"), |bench| {
            let r = b.reference();
            bench.iter(|| {
                for (counts, n) in &counts {
                    black_box(psi_js(r.proportions, r.ln_proportions, black_box(counts), *n));
                }
            })
        });
        group.bench_function(format!("compare_to_64_windows/{n}"), |bench| {
            bench.iter(|| {
                for h in &windows {
                    let effective = EffectiveN { reference: b.effective_n, current: h.n as f64 / 4.0 };
                    black_box(compare_to(&b.reference(), black_box(h), effective, &mut q));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

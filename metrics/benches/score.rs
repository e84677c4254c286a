//! Per-frame scoring speed on one core: camera-like 1080p and 720p JPEGs and the real-photo corpus, with each
//! downscale path (`dct`, the default: scaled in libjpeg-turbo's IDCT; `box`: full decode, then box-averaged).
//! Inputs come from `.cache/` (scripts/bench/fetch_photos.sh); without it the committed sample photos are used.
//!     cargo bench -p framewatch-metrics --bench score

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use framewatch_metrics::decode::{DecodeLimits, RgbImage, decode_for_analysis, decode_into};
use framewatch_metrics::{AnalysisSettings, Downscale, FramePixels, MetricRegistry, ScoreSettings, Scorer};

const PATHS: [(&str, Downscale); 2] = [("dct", Downscale::Dct), ("box", Downscale::Box)];

fn settings(downscale: Downscale) -> ScoreSettings {
    ScoreSettings {
        analysis: AnalysisSettings { downscale, ..AnalysisSettings::default() },
        ..ScoreSettings::default()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn jpegs(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")));
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn inputs(rel: &str) -> (String, Vec<Vec<u8>>) {
    let v = jpegs(&root().join(rel));
    if v.is_empty() {
        eprintln!("{rel} is missing (run scripts/bench/fetch_photos.sh); using fixtures/images");
        ("fixtures".into(), jpegs(&root().join("fixtures/images")))
    } else {
        (rel.into(), v)
    }
}

fn bench(c: &mut Criterion) {
    let registry = Arc::new(MetricRegistry::standard());
    for (label, rel) in [("1080p", ".cache/camera/1080p"), ("720p", ".cache/camera/720p")] {
        let (src, frames) = inputs(rel);
        let mut group = c.benchmark_group(format!("camera_{label}"));
        group.throughput(Throughput::Elements(1));
        let mut i = 0;
        for (path, downscale) in PATHS {
            let mut scorer = Scorer::new(registry.clone(), settings(downscale));
            group.bench_function(format!("score_full_catalog_{path}/{src}"), |b| {
                b.iter(|| {
                    i = (i + 1) % frames.len();
                    scorer.score(FramePixels::Encoded(&frames[i]), &[]).map(|s| s.values.len()).unwrap_or(0)
                })
            });
        }
        let mut img = RgbImage::default();
        let dct = AnalysisSettings::default();
        group.bench_function(format!("decode_for_analysis_dct/{src}"), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                decode_for_analysis(&frames[i], &DecodeLimits::default(), &dct, &mut img).is_ok()
            })
        });
        group.bench_function(format!("decode_only/{src}"), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                decode_into(&frames[i], &DecodeLimits::default(), &mut img).is_ok()
            })
        });
        group.finish();
    }
    let (src, photos) = inputs(".cache/photos");
    let mut group = c.benchmark_group("photos");
    group.sample_size(10);
    group.throughput(Throughput::Elements(photos.len() as u64));
    for (path, downscale) in PATHS {
        let mut scorer = Scorer::new(registry.clone(), settings(downscale));
        group.bench_function(format!("score_full_catalog_corpus_{path}/{src}"), |b| {
            b.iter(|| photos.iter().filter(|p| scorer.score(FramePixels::Encoded(p), &[]).is_ok()).count())
        });
    }
    let mut img = RgbImage::default();
    group.bench_function(format!("decode_only_corpus/{src}"), |b| {
        b.iter(|| photos.iter().filter(|p| decode_into(p, &DecodeLimits::default(), &mut img).is_ok()).count())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

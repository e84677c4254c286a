//! Cost of model performance on labelled frames: matching one frame's detections to its ground truth (what a
//! streaming join does once per labelled frame), and summing a slice's window of matched frames into mAP, precision
//! and recall (what each evaluation does per slice).
//!     cargo bench -p framewatch-metrics --bench performance

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use framewatch_metrics::Detection;
use framewatch_metrics::performance::{
    FrameMatch, LabelledFrame, PerformanceSettings, TruthBox, match_frame, summarize,
};

const CLASSES: [&str; 3] = ["car", "person", "bicycle"];

/// A street frame: `objects` labelled boxes in 3 classes, the model finding most with a little jitter, plus strays.
fn frame(seed: u64, objects: usize) -> (Vec<Detection>, Vec<TruthBox>) {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) as f32) / (1u64 << 31) as f32
    };
    let (mut dets, mut truth) = (Vec::new(), Vec::new());
    for i in 0..objects {
        let (x, y, w, h) = (next() * 0.8, next() * 0.8, 0.05 + next() * 0.15, 0.05 + next() * 0.15);
        let class = CLASSES[i % 3];
        truth.push(TruthBox { x_min: x, y_min: y, x_max: x + w, y_max: y + h, class_label: class.into() });
        if next() < 0.8 {
            let j = (next() - 0.5) * 0.02;
            dets.push(Detection {
                x_min: x + j,
                y_min: y,
                x_max: x + w + j,
                y_max: y + h,
                class_label: class.into(),
                confidence: 0.3 + next() * 0.69,
                class_probabilities: vec![],
            });
        }
    }
    for i in 0..objects / 4 {
        let (x, y) = (next() * 0.9, next() * 0.9);
        dets.push(Detection {
            x_min: x,
            y_min: y,
            x_max: x + 0.08,
            y_max: y + 0.08,
            class_label: CLASSES[i % 3].into(),
            confidence: next() * 0.7,
            class_probabilities: vec![],
        });
    }
    (dets, truth)
}

fn bench(c: &mut Criterion) {
    let settings = PerformanceSettings::default();
    let mut group = c.benchmark_group("performance");
    let one = frame(1, 10);
    group.bench_function("match_frame_10_objects", |b| {
        b.iter(|| match_frame(&LabelledFrame { detections: &one.0, truth: &one.1 }, &settings))
    });
    // A slice's window: 200 labelled frames of 10 objects (a 15-minute window with labels on 1 frame in 45 at 10 fps).
    let frames: Vec<(Vec<Detection>, Vec<TruthBox>)> = (0..200).map(|i| frame(i, 10)).collect();
    let matched: Vec<FrameMatch> =
        frames.iter().map(|(d, t)| match_frame(&LabelledFrame { detections: d, truth: t }, &settings)).collect();
    group.bench_function("summarize_window_200_frames", |b| {
        b.iter_batched(|| (), |()| summarize(&matched), BatchSize::SmallInput)
    });
    group.finish();
    let bytes: usize = matched
        .iter()
        .map(|m| {
            std::mem::size_of::<FrameMatch>()
                + m.classes
                    .iter()
                    .map(|c| std::mem::size_of_val(c) + c.class.len() + c.detections.len() * 8)
                    .sum::<usize>()
        })
        .sum();
    eprintln!("matched window of 200 frames: {} bytes ({} per frame)", bytes, bytes / matched.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);

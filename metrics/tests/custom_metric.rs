//! The custom-metric path end to end: the shipped `redness` example, and a metric defined right here in the test
//! (as a user would in `custom/`), both go through scoring, a baseline (JSON round trip) and a drift report.

use std::sync::Arc;

use framewatch_metrics::catalog::{FrameContext, FrameMetric, MetricInfo, MetricKind};
use framewatch_metrics::{
    Baseline, BaselineBuilder, ComparableSettings, DriftAccumulator, DriftThresholds, FramePixels, MetricRegistry,
    RawFormat, ScoreSettings, Scorer, Verdict,
};

/// A user's metric: share of pixels brighter in green than in both other channels.
#[derive(Debug)]
struct GreenDominance;

impl FrameMetric for GreenDominance {
    fn info(&self) -> MetricInfo {
        MetricInfo {
            name: "green_dominance",
            kind: MetricKind::Data,
            unit: "ratio",
            range: "[0, 1]",
            description: "share of pixels with G > max(R, B)",
            encord: None,
        }
    }
    fn compute(&self, f: &FrameContext<'_>) -> Option<f64> {
        let img = f.image?;
        let n = img.data.chunks_exact(3).filter(|p| p[1] > p[0].max(p[2])).count();
        Some(n as f64 / img.pixels() as f64)
    }
}

/// Deterministic pseudo-random frame: a textured grey scene with a tint added.
fn frame(seed: u64, tint: [i16; 3]) -> Vec<u8> {
    let (w, h) = (96usize, 64usize);
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let base = ((x * 2 + y * 3) % 160) as i16 + 40 + ((s >> 59) as i16);
            for t in tint {
                px.push((base + t).clamp(0, 255) as u8);
            }
        }
    }
    px
}

#[test]
fn redness_and_a_user_metric_flow_through_score_baseline_and_drift() {
    let mut registry = MetricRegistry::standard();
    registry.register(GreenDominance).expect("register");
    let registry = Arc::new(registry);
    let names: Vec<String> = registry.names().map(String::from).collect();
    let settings = ScoreSettings::default();
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    let mut scorer = Scorer::new(registry.clone(), settings);
    let red = registry.index_of("redness").expect("redness registered");

    let mut builder = BaselineBuilder::new(names, comparable, 100);
    for i in 0..300 {
        let px = frame(i, [0, 0, 0]);
        let scored = scorer
            .score(FramePixels::Raw { pixels: &px, width: 96, height: 64, format: RawFormat::Rgb8 }, &[])
            .expect("score");
        assert_eq!(scored.values[red], Some(0.0), "a grey frame has no redness");
        builder.add(scored.values, []);
    }
    let baseline = builder.finish("2026-11-26T00:00:00Z".into(), "test".into(), "synthetic".into()).expect("baseline");
    // through JSON and back, as a user's baseline file would go
    let baseline = Baseline::from_json(&baseline.to_json()).expect("reload");
    assert!(baseline.metrics.contains_key("redness") && baseline.metrics.contains_key("green_dominance"));

    let run = |tint: [i16; 3], scorer: &mut Scorer| {
        let mut acc = DriftAccumulator::new(&baseline, registry.names(), &comparable).expect("settings match");
        for i in 1000..1200 {
            let px = frame(i, tint);
            let s = scorer
                .score(FramePixels::Raw { pixels: &px, width: 96, height: 64, format: RawFormat::Rgb8 }, &[])
                .expect("score");
            acc.add(s.values, []);
        }
        acc.report(&DriftThresholds::default())
    };
    let clean = run([0, 0, 0], &mut scorer);
    assert_eq!(
        clean.verdict,
        Verdict::Ok,
        "{:?}",
        clean.metrics.iter().filter(|m| m.1.drift == Some(true)).collect::<Vec<_>>()
    );
    let reddened = run([40, -10, -10], &mut scorer);
    assert_eq!(reddened.metrics["redness"].drift, Some(true));
    assert!(reddened.metrics["redness"].stats.mean.expect("mean") > 0.1);
    let greened = run([-10, 30, -10], &mut scorer);
    assert_eq!(greened.metrics["green_dominance"].drift, Some(true));
    assert_eq!(greened.metrics["redness"].drift, Some(false));
}

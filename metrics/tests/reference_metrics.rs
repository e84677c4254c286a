//! Metric values on sample images against the reference script's numpy/OpenCV implementation of the same
//! definitions (fixtures/reference/metrics.json, written by scripts/reference/make_fixtures.py).
//! PNG files decode identically everywhere, so they must match to 1e-9; JPEG decoders differ by a grey level
//! here and there (zune-jpeg vs libjpeg-turbo), so JPEG values get tolerances sized for that.

mod common;

use std::sync::Arc;

use framewatch_metrics::{AnalysisSettings, Downscale, FramePixels, MetricRegistry, ScoreSettings, Scorer};

fn jpeg_tolerance(metric: &str, reference: f64, idct_scaled: bool) -> f64 {
    match metric {
        // The reference box-averages full-resolution pixels; a JPEG scaled inside the IDCT averages its chroma
        // before upsampling it instead, which moves colourfulness (a spread of opponent channels) a little more.
        "colorfulness" if idct_scaled => 1.0,
        // relative: these measure pixel-to-pixel differences, which decoder rounding perturbs most
        "sharpness" | "noise" => 0.08 * reference.abs() + 1e-4,
        "blur" => 0.08 * (1.0 - reference).abs() + 1e-4,
        "colorfulness" => 0.5,
        "entropy" => 0.05,
        // hue boxes: chroma upsampling differs between decoders and moves pixels across hue boundaries
        "red" | "green" | "blue" => 0.03,
        _ => 0.01,
    }
}

/// Metrics added after the reference script (scripts/reference/make_fixtures.py), each verified by its own test:
/// `jpeg_quality` against the encoder's own setting in tests/jpeg_quality.rs.
const NOT_IN_REFERENCE_SCRIPT: [&str; 1] = ["jpeg_quality"];

#[test]
fn metric_values_match_the_reference_script_with_box_downscaling() {
    match_reference(Downscale::Box);
}

/// The same fixtures through the default path, where a JPEG over `max_side` (aloeL.jpg, 1282 px) is scaled in
/// libjpeg-turbo's IDCT rather than box-averaged after a full decode.
#[test]
fn metric_values_match_the_reference_script_with_idct_scaling() {
    match_reference(Downscale::Dct);
}

fn match_reference(downscale: Downscale) {
    let fixture = common::read_json("reference/metrics.json");
    let preds = common::predictions();
    let registry = Arc::new(MetricRegistry::standard());
    let analysis = AnalysisSettings { downscale, ..AnalysisSettings::default() };
    let mut scorer = Scorer::new(registry.clone(), ScoreSettings { analysis, ..ScoreSettings::default() });
    let mut idct_scaled_files = 0;
    let images = fixture["images"].as_array().expect("images");
    assert!(images.len() >= 15, "fixture lists {} images", images.len());
    let mut failures = Vec::new();
    let mut compared = 0;
    for entry in images {
        let file = entry["file"].as_str().expect("file");
        let lossless = entry["lossless"].as_bool().expect("lossless");
        let bytes = std::fs::read(common::fixtures().join("images").join(file)).expect("image");
        let dets = preds.get(file).cloned().unwrap_or_default();
        let scored = scorer.score(FramePixels::Encoded(&bytes), &dets).expect("score");
        let idct_scaled = !lossless
            && downscale == Downscale::Dct
            && analysis.factor(scored.width.expect("width"), scored.height.expect("height")) > 1;
        idct_scaled_files += usize::from(idct_scaled);
        let values = scored.values.to_vec();
        let expected = entry["metrics"].as_object().expect("metrics");
        for name in registry.names().filter(|n| !NOT_IN_REFERENCE_SCRIPT.contains(n)) {
            let got = values[registry.index_of(name).expect("index")];
            let want = expected.get(name).and_then(|v| v.as_f64());
            match (got, want) {
                (Some(g), Some(w)) => {
                    let tol = if lossless { 1e-9 * w.abs().max(1.0) } else { jpeg_tolerance(name, w, idct_scaled) };
                    compared += 1;
                    if (g - w).abs() > tol {
                        failures.push(format!("{file} {name}: got {g}, reference {w} (tolerance {tol:e})"));
                    }
                }
                (None, None) => {}
                (g, w) => failures.push(format!("{file} {name}: got {g:?}, reference {w:?}")),
            }
        }
    }
    assert!(compared > 400, "only {compared} values compared");
    if downscale == Downscale::Dct {
        assert!(idct_scaled_files >= 1, "no fixture took the IDCT-scaled path");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn hsv_and_grey_conversions_are_opencv_exact() {
    let fixture = common::read_json("reference/metrics.json");
    let samples = fixture["colour_samples_rgb_hsv_grey"].as_array().expect("samples");
    assert!(samples.len() >= 10_000);
    for s in samples {
        let v: Vec<i64> = s.as_array().expect("row").iter().map(|x| x.as_i64().expect("int")).collect();
        let (r, g, b) = (v[0] as u8, v[1] as u8, v[2] as u8);
        let (h, sat, val) = framewatch_metrics::analysis::opencv_hsv(r, g, b);
        assert_eq!((i64::from(h), i64::from(sat), i64::from(val)), (v[3], v[4], v[5]), "HSV of {r},{g},{b}");
        assert_eq!(i64::from(framewatch_metrics::analysis::opencv_grey(r, g, b)), v[6], "grey of {r},{g},{b}");
    }
}

//! The IDCT-scaled decode path (`Downscale::Dct`, libjpeg-turbo through metrics/src/libjpeg.rs) on every JPEG
//! variant a camera or a photo library produces, and on broken files: it must score what the box path scores,
//! within small tolerances, and refuse what it refuses, with the same typed reasons and never a panic.

mod common;

use std::sync::Arc;

use framewatch_metrics::decode::{DecodeError, RgbImage, decode_for_analysis};
use framewatch_metrics::{AnalysisSettings, Downscale, FramePixels, MetricRegistry, ScoreError, ScoreSettings, Scorer};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

fn scorer(downscale: Downscale, max_side: u32) -> Scorer {
    let analysis = AnalysisSettings { downscale, max_side, ..AnalysisSettings::default() };
    Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings { analysis, ..ScoreSettings::default() })
}

/// A smooth colour scene with texture: gradients, a bright disc and a little deterministic noise.
fn scene(w: usize, h: usize) -> Vec<u8> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s >> 60) as i32 - 8;
            let (dx, dy) = (x as i32 - w as i32 / 3, y as i32 - h as i32 / 2);
            let disc = if dx * dx + dy * dy < (h as i32 / 4).pow(2) { 90 } else { 0 };
            let r = (40 + 150 * x / w.max(1)) as i32 + disc + noise;
            let g = (60 + 120 * y / h.max(1)) as i32 + disc / 2 + noise;
            let b = (200 - 150 * x / w.max(1)) as i32 + noise;
            out.extend([r, g, b].map(|v| v.clamp(0, 255) as u8));
        }
    }
    out
}

struct Variant {
    name: &'static str,
    width: u16,
    height: u16,
    colour: ColorType,
    sampling: SamplingFactor,
    progressive: bool,
    restart_interval: u16,
}

fn encode(v: &Variant) -> Vec<u8> {
    let rgb = scene(usize::from(v.width), usize::from(v.height));
    let pixels: Vec<u8> = match v.colour {
        ColorType::Luma => rgb.chunks_exact(3).map(|p| p[1]).collect(),
        // naive CMYK of the same scene (K = 0), as an Adobe-style print file would carry
        ColorType::Cmyk => rgb.chunks_exact(3).flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 0]).collect(),
        _ => rgb,
    };
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, 90);
    enc.set_sampling_factor(v.sampling);
    enc.set_progressive(v.progressive);
    if v.restart_interval > 0 {
        enc.set_restart_interval(v.restart_interval);
    }
    enc.encode(&pixels, v.width, v.height, v.colour).expect("encode");
    out
}

fn variants() -> Vec<Variant> {
    let base = Variant {
        name: "4:2:0",
        width: 640,
        height: 480,
        colour: ColorType::Rgb,
        sampling: SamplingFactor::F_2_2,
        progressive: false,
        restart_interval: 0,
    };
    vec![
        Variant { name: "4:4:4", sampling: SamplingFactor::F_1_1, ..base },
        Variant { name: "4:2:2", sampling: SamplingFactor::F_2_1, ..base },
        Variant { name: "progressive", progressive: true, ..base },
        Variant { name: "restart markers", restart_interval: 3, ..base },
        Variant { name: "odd size", width: 643, height: 479, ..base },
        Variant { name: "odd size, tall", width: 97, height: 1001, ..base },
        Variant { name: "greyscale", colour: ColorType::Luma, ..base },
        Variant { name: "CMYK", colour: ColorType::Cmyk, ..base },
        base,
    ]
}

#[test]
fn every_jpeg_variant_scores_through_idct_scaling_as_through_box_averaging() {
    let registry = MetricRegistry::standard();
    let mut dct = scorer(Downscale::Dct, 160);
    for v in variants() {
        let jpeg = encode(&v);
        let (w, h) = (usize::from(v.width), usize::from(v.height));
        let by_dct = dct.score(FramePixels::Encoded(&jpeg), &[]).expect(v.name).values.to_vec();
        let analysed = dct.analysed_image().map(|i| (i.width, i.height)).expect("analysed");
        // The frame keeps the size it was sent at; the analysis image is 1/4 (640 / 160), or 1/8 for 643 and
        // 1001 px (factors 5 and 7, rounded up to a power of two).
        let k = AnalysisSettings { max_side: 160, ..AnalysisSettings::default() }.factor(w, h);
        // The box path at the same factor k, for comparison.
        let box_side = u32::try_from(w.max(h).div_ceil(k)).expect("side");
        let by_box =
            scorer(Downscale::Box, box_side).score(FramePixels::Encoded(&jpeg), &[]).expect(v.name).values.to_vec();
        // The decoder itself scaled the frame (1/4 or 1/8), except the CMYK file, left to zune-jpeg in full.
        let d = k.min(8);
        let analysis = AnalysisSettings { max_side: 160, ..AnalysisSettings::default() };
        let decoded = decode_for_analysis(&jpeg, &Default::default(), &analysis, &mut RgbImage::default());
        let scaled_by = if v.colour == ColorType::Cmyk { 1 } else { d };
        assert_eq!(decoded.expect(v.name).scaled_by, scaled_by, "{}", v.name);
        // libjpeg rounds a scaled size up; the CMYK file is box-averaged instead.
        let expected = if v.colour == ColorType::Cmyk {
            (w / k, h / k)
        } else {
            (w.div_ceil(d) / (k / d), h.div_ceil(d) / (k / d))
        };
        assert_eq!(analysed, expected, "{}", v.name);
        let value = |vals: &[Option<f64>], name: &str| vals[registry.index_of(name).expect(name)].expect(name);
        assert_eq!((value(&by_dct, "width"), value(&by_dct, "height")), (w as f64, h as f64), "{}", v.name);
        // Saturation moves most: chroma is averaged before upsampling, and libjpeg keeps a partial edge block
        // (a 13-px-wide analysis image of the 97-px frame) that box averaging drops.
        for (metric, tolerance) in [("brightness", 0.01), ("contrast", 0.01), ("saturation", 0.03)] {
            let (a, b) = (value(&by_dct, metric), value(&by_box, metric));
            assert!((a - b).abs() <= tolerance, "{} {metric}: IDCT-scaled {a}, box {b}", v.name);
        }
    }
}

#[test]
fn broken_jpegs_are_refused_with_typed_reasons_through_idct_scaling() {
    // max_side 64 sends every committed JPEG photo through libjpeg-turbo's scaled decode.
    let mut s = scorer(Downscale::Dct, 64);
    let dir = common::fixtures().join("images");
    let (mut ok, mut refused) = (0usize, 0usize);
    for name in ["building.jpg", "fruits.jpg", "aero1.jpg"] {
        let bytes = std::fs::read(dir.join(name)).expect("read");
        assert!(s.score(FramePixels::Encoded(&bytes), &[]).is_ok(), "{name} whole");
        let half = &bytes[..bytes.len() / 2];
        let err = s.score(FramePixels::Encoded(half), &[]).expect_err("half a file must not score");
        assert_eq!(err, ScoreError::Decode(DecodeError::Truncated), "{name}");
        let mut seed = 0x5eed_u64 + bytes.len() as u64;
        for cut in (3..bytes.len()).step_by(bytes.len() / 50) {
            match s.score(FramePixels::Encoded(&bytes[..cut]), &[]) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(["truncated_image", "corrupt_image"].contains(&e.reason()), "{name} cut {cut}: {e}");
                    refused += 1
                }
            }
        }
        for _ in 0..40 {
            let mut m = bytes.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % m.len();
                m[i] = (seed >> 20) as u8;
            }
            match s.score(FramePixels::Encoded(&m), &[]) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.reason().is_empty() && !e.to_string().is_empty());
                    refused += 1
                }
            }
        }
    }
    assert!(refused > 100, "corruption should be refused often (ok {ok}, refused {refused})");
    // the scorer is still healthy afterwards
    let good = std::fs::read(dir.join("building.jpg")).expect("read");
    assert!(s.score(FramePixels::Encoded(&good), &[]).is_ok());
}

//! Issue 10 calibration: the cause signatures on real photographs. Every committed JPEG photo is treated as a fixed
//! camera: decoded, re-encoded at the camera's quality (90, jpeg-encoder) and scored as the baseline; then each fault
//! is applied in memory, the frame encoded again the same way (compression: at quality 15) and rescored.
//! `diagnose` must name exactly the fault, and nothing for a clean re-encode.
//!
//! The worst case for a narrow reference is assumed throughout: every metric whose value moved at all is
//! `significant`, so the practical tolerances alone have to keep the verdicts right.
//! Run with `--nocapture` to see the table of shifts (METRICS.md "Causes" quotes it).

mod common;

use std::sync::Arc;

use framewatch_metrics::decode::{RgbImage, decode_into};
use framewatch_metrics::{
    Cause, DecodeLimits, Evidence, FramePixels, MetricRegistry, ScoreSettings, Scorer, Shift, Tolerances, diagnose,
};

const CAMERA_QUALITY: u8 = 90;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Clean,
    Darken,
    Brighten,
    Blur,
    Noise,
    ColourCast,
    Compress,
}

impl Fault {
    const ALL: [Fault; 7] =
        [Fault::Clean, Fault::Darken, Fault::Brighten, Fault::Blur, Fault::Noise, Fault::ColourCast, Fault::Compress];

    fn expected(self) -> &'static [Cause] {
        match self {
            Fault::Clean => &[],
            Fault::Darken => &[Cause::Darker],
            Fault::Brighten => &[Cause::Brighter],
            Fault::Blur => &[Cause::Blur],
            Fault::Noise => &[Cause::Noise],
            Fault::ColourCast => &[Cause::ColourCast],
            Fault::Compress => &[Cause::Compression],
        }
    }

    /// The camera frame after the fault: pixels changed, then encoded.
    fn apply(self, camera_frame: &[u8], seed: u64) -> Vec<u8> {
        let mut img = decode(camera_frame);
        let quality = match self {
            Fault::Compress => 15,
            _ => CAMERA_QUALITY,
        };
        match self {
            Fault::Clean | Fault::Compress => {}
            Fault::Darken => img.data.iter_mut().for_each(|v| *v = (f64::from(*v) * 0.5).round() as u8),
            Fault::Brighten => img.data.iter_mut().for_each(|v| *v = v.saturating_add(60)),
            Fault::Blur => box_blur(&mut img, 3),
            Fault::Noise => {
                let mut rng = Gauss::new(seed);
                img.data
                    .iter_mut()
                    .for_each(|v| *v = (f64::from(*v) + 12.0 * rng.next()).round().clamp(0.0, 255.0) as u8);
            }
            Fault::ColourCast => img.data.chunks_exact_mut(3).for_each(|p| {
                p[0] = (f64::from(p[0]) * 1.25).round().min(255.0) as u8;
                p[2] = (f64::from(p[2]) * 0.75).round() as u8;
            }),
        }
        encode(&img, quality)
    }
}

/// Metrics whose shift the report shows as a difference (the others as a ratio), as their tolerances are.
const ABSOLUTE: &[&str] = &[
    "brightness",
    "jpeg_quality",
    "dark_fraction",
    "bright_fraction",
    "red_mean",
    "blue_mean",
    "saturation",
    "entropy",
];

fn decode(bytes: &[u8]) -> RgbImage {
    let mut img = RgbImage::default();
    decode_into(bytes, &DecodeLimits::default(), &mut img).expect("decode");
    img
}

fn encode(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.encode(&img.data, img.width as u16, img.height as u16, jpeg_encoder::ColorType::Rgb).expect("encode");
    out
}

/// Separable box blur of the given radius (edges clamped): a defocused lens.
fn box_blur(img: &mut RgbImage, radius: usize) {
    let (w, h) = (img.width, img.height);
    let pass = |src: &[u8], dst: &mut [u8], horizontal: bool| {
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut sum = 0u32;
                    for k in 0..=2 * radius {
                        let (xx, yy) = if horizontal {
                            ((x + k).saturating_sub(radius).min(w - 1), y)
                        } else {
                            (x, (y + k).saturating_sub(radius).min(h - 1))
                        };
                        sum += u32::from(src[(yy * w + xx) * 3 + c]);
                    }
                    dst[(y * w + x) * 3 + c] = ((sum as f64) / (2 * radius + 1) as f64).round() as u8;
                }
            }
        }
    };
    let mut tmp = img.data.clone();
    pass(&img.data, &mut tmp, true);
    pass(&tmp, &mut img.data, false);
}

/// Deterministic standard normal deviates (xorshift64* + Box-Muller): no RNG crate needed for a test.
struct Gauss(u64);

impl Gauss {
    fn new(seed: u64) -> Gauss {
        Gauss(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

struct Camera {
    name: String,
    frame: Vec<u8>,
    baseline: Vec<Option<f64>>,
}

fn cameras(scorer: &mut Scorer) -> Vec<Camera> {
    common::photos()
        .iter()
        .map(|p| {
            let original = std::fs::read(p).expect("read photo");
            let frame = encode(&decode(&original), CAMERA_QUALITY);
            let baseline = scorer.score(FramePixels::Encoded(&frame), &[]).expect("score").values.to_vec();
            let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
            Camera { name, frame, baseline }
        })
        .collect()
}

/// Evidence for one camera: one frame each side, so every moved metric counts as significant (worst case).
/// `with_quality: false` leaves `jpeg_quality` out, as for a baseline recorded before the metric existed.
fn evidence(
    registry: &MetricRegistry,
    baseline: &[Option<f64>],
    current: &[Option<f64>],
    with_quality: bool,
) -> Evidence {
    let mut e = Evidence::default();
    for name in registry.names().filter(|n| with_quality || *n != "jpeg_quality") {
        let i = registry.index_of(name).expect("index");
        if let (Some(b), Some(c)) = (baseline[i], current[i]) {
            let moved = b != c;
            let shift = Shift {
                baseline_mean: b,
                current_mean: c,
                n: 1,
                ks_statistic: if moved { 1.0 } else { 0.0 },
                significant: moved,
                wasserstein: Some((c - b).abs()),
            };
            e.set_metric(name, shift);
        }
    }
    e
}

/// Evidence for the whole set as one camera: means over the photos, exact two-sample KS on the values, and again
/// `significant` whenever the mean moved.
fn set_evidence(registry: &MetricRegistry, baseline: &[Vec<Option<f64>>], current: &[Vec<Option<f64>>]) -> Evidence {
    let mut e = Evidence::default();
    for name in registry.names() {
        let i = registry.index_of(name).expect("index");
        let b: Vec<f64> = baseline.iter().filter_map(|v| v[i]).collect();
        let c: Vec<f64> = current.iter().filter_map(|v| v[i]).collect();
        if b.is_empty() || c.is_empty() {
            continue;
        }
        let (mb, mc) = (mean(&b), mean(&c));
        let moved = mb != mc;
        e.set_metric(
            name,
            Shift {
                baseline_mean: mb,
                current_mean: mc,
                n: c.len() as u64,
                ks_statistic: ks(&b, &c),
                significant: moved,
                wasserstein: None,
            },
        );
    }
    e
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn ks(a: &[f64], b: &[f64]) -> f64 {
    let cdf = |v: &[f64], x: f64| v.iter().filter(|&&y| y <= x).count() as f64 / v.len() as f64;
    a.iter().chain(b).map(|&x| (cdf(a, x) - cdf(b, x)).abs()).fold(0.0, f64::max)
}

const SHOWN: [&str; 12] = [
    "brightness",
    "contrast",
    "sharpness",
    "noise",
    "dark_fraction",
    "bright_fraction",
    "red_mean",
    "blue_mean",
    "saturation",
    "bytes_per_pixel",
    "jpeg_quality",
    "entropy",
];

#[test]
fn every_fault_on_every_real_photo_is_named_alone_and_clean_re_encodes_are_silent() {
    let registry = Arc::new(MetricRegistry::standard());
    let mut scorer = Scorer::new(registry.clone(), ScoreSettings::default());
    let cams = cameras(&mut scorer);
    assert!(cams.len() >= 10, "only {} photos", cams.len());
    let tolerances = Tolerances::default();
    let mut failures = Vec::new();
    let ix = |n: &str| registry.index_of(n).expect("metric");
    println!("fault       | {} | causes (per photo)", SHOWN.map(|n| format!("{n:>15}")).join(" | "));
    for fault in Fault::ALL {
        let mut currents = Vec::new();
        let mut found_counts = std::collections::BTreeMap::<String, usize>::new();
        for (k, cam) in cams.iter().enumerate() {
            let frame = fault.apply(&cam.frame, k as u64 + 1);
            let current = scorer.score(FramePixels::Encoded(&frame), &[]).expect("score").values.to_vec();
            for with_quality in [true, false] {
                let findings = diagnose(&evidence(&registry, &cam.baseline, &current, with_quality), &tolerances);
                let causes: Vec<Cause> = findings.iter().map(|f| f.cause).collect();
                if with_quality {
                    *found_counts.entry(format!("{causes:?}")).or_default() += 1;
                }
                if causes != fault.expected() {
                    failures
                        .push(format!("{fault:?} on {} (jpeg_quality known: {with_quality}): {findings:#?}", cam.name));
                }
            }
            currents.push(current);
        }
        // the shifts, as the median over photos of current/baseline (jpeg_quality and fractions: difference)
        let cells = SHOWN.map(|n| {
            let i = ix(n);
            let mut r: Vec<f64> = cams
                .iter()
                .zip(&currents)
                .filter_map(|(c, cur)| {
                    let (b, v) = (c.baseline[i]?, cur[i]?);
                    Some(if ABSOLUTE.contains(&n) { v - b } else { v / b })
                })
                .collect();
            r.sort_by(f64::total_cmp);
            let m = r.get(r.len() / 2).copied().unwrap_or(f64::NAN);
            if ABSOLUTE.contains(&n) { format!("{m:>+15.3}") } else { format!("{m:>14.2}x") }
        });
        println!("{:<11} | {} | {found_counts:?}", format!("{fault:?}"), cells.join(" | "));

        let baselines: Vec<Vec<Option<f64>>> = cams.iter().map(|c| c.baseline.clone()).collect();
        let set = diagnose(&set_evidence(&registry, &baselines, &currents), &tolerances);
        let causes: Vec<Cause> = set.iter().map(|f| f.cause).collect();
        println!("{:<11}   whole set: {:?}", "", set);
        if causes != fault.expected() {
            failures.push(format!("{fault:?} on the whole set: {set:#?}"));
        }
    }
    assert!(failures.is_empty(), "{} wrong diagnoses:\n{}", failures.len(), failures.join("\n"));
}

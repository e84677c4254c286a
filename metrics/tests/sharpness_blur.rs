//! Sharpness must stay sensitive to real blur at the source resolution, even though frames are analysed at a
//! bounded resolution: a Gaussian blur of sigma = 2 px must lower sharpness by a large factor on nearly all photos.

mod common;

use std::sync::Arc;

use framewatch_metrics::decode::{DecodeLimits, RgbImage, decode_into};
use framewatch_metrics::{FramePixels, MetricRegistry, RawFormat, ScoreSettings, Scorer};

/// Separable Gaussian blur (radius 3 sigma, edge pixels replicated), in f32.
fn gaussian_blur(img: &RgbImage, sigma: f32) -> RgbImage {
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    let (w, h) = (img.width as isize, img.height as isize);
    let mut tmp = vec![0f32; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let xx = (x + j as isize - r).clamp(0, w - 1);
                    acc += kv * f32::from(img.data[((y * w + xx) * 3 + c) as usize]);
                }
                tmp[((y * w + x) * 3 + c) as usize] = acc;
            }
        }
    }
    let mut out = img.clone();
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let yy = (y + j as isize - r).clamp(0, h - 1);
                    acc += kv * tmp[((yy * w + x) * 3 + c) as usize];
                }
                out.data[((y * w + x) * 3 + c) as usize] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[test]
fn gaussian_blur_sigma_2_lowers_sharpness_by_a_large_factor() {
    let registry = Arc::new(MetricRegistry::standard());
    let sharp_idx = registry.index_of("sharpness").expect("sharpness");
    let mut scorer = Scorer::new(registry, ScoreSettings::default());
    let mut ratios = Vec::new();
    let mut paths = common::photos();
    paths.push(common::fixtures().join("images/synthetic_1400x900.png"));
    for path in &paths {
        let bytes = std::fs::read(path).expect("read");
        let mut img = RgbImage::default();
        decode_into(&bytes, &DecodeLimits::default(), &mut img).expect("decode");
        let mut sharpness = |im: &RgbImage| {
            let px = FramePixels::Raw { pixels: &im.data, width: im.width, height: im.height, format: RawFormat::Rgb8 };
            scorer.score(px, &[]).expect("score").values[sharp_idx].expect("sharpness")
        };
        let before = sharpness(&img);
        let after = sharpness(&gaussian_blur(&img, 2.0));
        ratios.push((path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), before / after));
    }
    let strong = ratios.iter().filter(|(_, r)| *r >= 3.0).count();
    eprintln!("sharpness before/after sigma=2 blur: {ratios:?}");
    assert!(ratios.len() >= 12);
    // "nearly all": at least 90 % of the photos lose two thirds of their sharpness or more
    assert!(strong * 10 >= ratios.len() * 9, "only {strong} of {} photos dropped >= 3x: {ratios:?}", ratios.len());
    assert!(ratios.iter().all(|(_, r)| *r > 1.5), "every photo must lose sharpness: {ratios:?}");
}

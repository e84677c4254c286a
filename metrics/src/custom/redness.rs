//! The seed's example of a custom metric: how red the frame is, and how red the detected objects are.
//! A pixel's redness is max(0, R - max(G, B)) / 255: 0 for grey, white or any non-red hue, 1 for pure red.

use crate::catalog::{FrameContext, FrameMetric, MetricInfo, MetricKind};
use crate::decode::RgbImage;

#[inline]
fn pixel_redness(px: &[u8]) -> u32 {
    u32::from(px[0].saturating_sub(px[1].max(px[2])))
}

/// Mean redness over all pixels of the frame.
#[derive(Debug, Clone, Copy)]
pub struct Redness;

impl FrameMetric for Redness {
    fn info(&self) -> MetricInfo {
        MetricInfo {
            name: "redness",
            kind: MetricKind::Data,
            unit: "ratio",
            range: "[0, 1]",
            description: "Custom example: mean over pixels of max(0, R - max(G, B)) / 255.",
            encord: None,
        }
    }

    fn compute(&self, frame: &FrameContext<'_>) -> Option<f64> {
        let img = frame.image?;
        let sum: u64 = img.data.chunks_exact(3).map(|px| u64::from(pixel_redness(px))).sum();
        Some(sum as f64 / (img.pixels().max(1) as f64 * 255.0))
    }
}

/// Mean over detections of the redness inside each box (at analysis resolution). Per-box cost is O(1): the frame's
/// redness is summed once into an integral image (summed-area table), so a frame with 2000 full-frame boxes costs
/// one pass over the pixels, not 2000.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRedness;

/// A box's pixel bounds at `img`'s resolution: [x0, x1) x [y0, y1), `None` when empty.
fn box_bounds(img: &RgbImage, x0: f32, y0: f32, x1: f32, y1: f32) -> Option<(usize, usize, usize, usize)> {
    let px = |v: f32, n: usize| ((v as f64 * n as f64).round() as usize).min(n);
    let (cx0, cx1) = (px(x0, img.width), px(x1, img.width));
    let (cy0, cy1) = (px(y0, img.height), px(y1, img.height));
    (cx1 > cx0 && cy1 > cy0).then_some((cx0, cx1, cy0, cy1))
}

/// The direct definition: sums every pixel of the box (the reference the tests hold the table to).
#[cfg(test)]
fn box_redness_direct(img: &RgbImage, (cx0, cx1, cy0, cy1): (usize, usize, usize, usize)) -> f64 {
    let mut sum = 0u64;
    for y in cy0..cy1 {
        let row = &img.data[(y * img.width + cx0) * 3..(y * img.width + cx1) * 3];
        sum += row.chunks_exact(3).map(|p| u64::from(pixel_redness(p))).sum::<u64>();
    }
    sum as f64 / (((cx1 - cx0) * (cy1 - cy0)) as f64 * 255.0)
}

/// Fills `sat` with the summed-area table of pixel redness, (w + 1) x (h + 1), first row and column zero. Entries
/// wrap modulo 2^32: a box's sum read back with wrapping arithmetic is exact whenever the true sum is below 2^32,
/// i.e. for every box of fewer than `EXACT_BOX_PIXELS` pixels.
fn build_integral(img: &RgbImage, sat: &mut Vec<u32>) {
    let stride = img.width + 1;
    sat.clear();
    sat.resize(stride * (img.height + 1), 0);
    for y in 0..img.height {
        let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let (above, below) = sat[y * stride..(y + 2) * stride].split_at_mut(stride);
        let mut run = 0u32;
        for (x, p) in row.chunks_exact(3).enumerate() {
            run = run.wrapping_add(pixel_redness(p));
            below[x + 1] = above[x + 1].wrapping_add(run);
        }
    }
}

/// Boxes below this many pixels sum below 2^32 (255 per pixel), so the wrapping table reads them exactly.
const EXACT_BOX_PIXELS: usize = (u32::MAX / 255) as usize;

/// A box's redness from the table, read in pieces each below `EXACT_BOX_PIXELS` (so each reads exactly): at most
/// area / EXACT_BOX_PIXELS + 2 pieces per row band, O(1) per box at any realistic size (an 8K UHD box: 3
/// pieces). `pieces` counts the table reads' pieces (the work done).
fn box_redness_integral(
    img: &RgbImage,
    sat: &[u32],
    (cx0, cx1, cy0, cy1): (usize, usize, usize, usize),
    pieces: &mut usize,
) -> f64 {
    let stride = img.width + 1;
    let at = |x: usize, y: usize| sat[y * stride + x];
    let piece_width = (cx1 - cx0).min(EXACT_BOX_PIXELS - 1);
    let rows_per_piece = ((EXACT_BOX_PIXELS - 1) / piece_width).max(1);
    let mut sum = 0u64;
    let mut y = cy0;
    while y < cy1 {
        let y2 = (y + rows_per_piece).min(cy1);
        let mut x = cx0;
        while x < cx1 {
            let x2 = (x + piece_width).min(cx1);
            sum += u64::from(at(x2, y2).wrapping_sub(at(x, y2)).wrapping_sub(at(x2, y)).wrapping_add(at(x, y)));
            *pieces += 1;
            x = x2;
        }
        y = y2;
    }
    sum as f64 / (((cx1 - cx0) * (cy1 - cy0)) as f64 * 255.0)
}

impl FrameMetric for ObjectRedness {
    fn info(&self) -> MetricInfo {
        MetricInfo {
            name: "object_redness_mean",
            kind: MetricKind::Prediction,
            unit: "ratio",
            range: "[0, 1]",
            description: "Custom example: mean over detections of the redness inside the box (needs pixels).",
            encord: None,
        }
    }

    fn compute(&self, frame: &FrameContext<'_>) -> Option<f64> {
        let img = frame.image?;
        if frame.detections.is_empty() {
            return None;
        }
        // The scorer's scratch holds the table; should it be borrowed already, a local one does the job.
        let mut local = Vec::new();
        let mut borrowed = frame.scratch.u32s.try_borrow_mut().ok();
        let sat = borrowed.as_deref_mut().unwrap_or(&mut local);
        build_integral(img, sat);
        let (mut sum, mut n, mut pieces) = (0.0, 0usize, 0usize);
        for d in frame.detections {
            if let Some(b) = box_bounds(img, d.x_min, d.y_min, d.x_max, d.y_max) {
                sum += box_redness_integral(img, sat, b, &mut pieces);
                n += 1;
            }
        }
        (n > 0).then(|| sum / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image(w: usize, h: usize, seed: u64) -> RgbImage {
        let mut s = seed | 1;
        let data = (0..w * h * 3)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 56) as u8
            })
            .collect();
        RgbImage { width: w, height: h, data }
    }

    proptest! {
        /// The integral image reads every box exactly as the direct sum over its pixels does.
        #[test]
        fn integral_image_agrees_with_the_direct_sum(
            w in 1usize..64, h in 1usize..64, seed in any::<u64>(),
            boxes in proptest::collection::vec((0f32..=1.0, 0f32..=1.0, 0f32..=1.0, 0f32..=1.0), 1..40),
        ) {
            let img = image(w, h, seed);
            let mut sat = Vec::new();
            build_integral(&img, &mut sat);
            for (a, b, c, d) in boxes {
                if let Some(bounds) = box_bounds(&img, a.min(b), c.min(d), a.max(b), c.max(d)) {
                    let direct = box_redness_direct(&img, bounds);
                    let fast = box_redness_integral(&img, &sat, bounds, &mut 0);
                    prop_assert!((direct - fast).abs() <= 1e-12, "{direct} vs {fast} for {bounds:?}");
                }
            }
        }
    }

    #[test]
    fn the_wrapping_table_stays_exact_for_boxes_whose_sum_passes_2_pow_32() {
        // A table over a frame whose total redness wraps u32 (all pure red: 255 per pixel), read by a box that
        // stays below the exactness bound.
        let (w, h) = (5000, 3400);
        let img = RgbImage { width: w, height: h, data: [255u8, 0, 0].repeat(w * h) };
        let mut sat = Vec::new();
        build_integral(&img, &mut sat);
        let b = (1, 4900, 1, h);
        assert!((b.1 - b.0) * (b.3 - b.2) < EXACT_BOX_PIXELS);
        assert_eq!(box_redness_integral(&img, &sat, b, &mut 0), 1.0);
        assert_eq!(box_redness_direct(&img, b), 1.0);
    }

    #[test]
    fn boxes_past_the_exactness_bound_are_read_exactly_in_a_few_pieces() {
        // 8K UHD, all pure red but a dark stripe: a full-frame box sums to 2^33 and more, past u32.
        let (w, h) = (7680, 4320);
        let mut data = [255u8, 0, 0].repeat(w * h);
        data[..w * 3 * 100].fill(0);
        let img = RgbImage { width: w, height: h, data };
        let mut sat = Vec::new();
        build_integral(&img, &mut sat);
        for b in [(0, w, 0, h), (7, w - 3, 50, h), (0, w, 99, 101)] {
            let mut pieces = 0;
            let fast = box_redness_integral(&img, &sat, b, &mut pieces);
            assert_eq!(fast, box_redness_direct(&img, b), "{b:?}");
            let area = (b.1 - b.0) * (b.3 - b.2);
            assert!(pieces <= area / EXACT_BOX_PIXELS + 2, "{pieces} pieces for {area} pixels");
        }
        // One row wider than the bound (a 1-pixel-tall panorama) is split across the row.
        let img =
            RgbImage { width: EXACT_BOX_PIXELS + 10, height: 1, data: [255u8, 0, 0].repeat(EXACT_BOX_PIXELS + 10) };
        build_integral(&img, &mut sat);
        let mut pieces = 0;
        assert_eq!(box_redness_integral(&img, &sat, (0, img.width, 0, 1), &mut pieces), 1.0);
        assert_eq!(pieces, 2);
    }
}

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

/// Mean over detections of the redness inside each box (at analysis resolution).
#[derive(Debug, Clone, Copy)]
pub struct ObjectRedness;

fn box_redness(img: &RgbImage, x0: f32, y0: f32, x1: f32, y1: f32) -> Option<f64> {
    let px = |v: f32, n: usize| ((v as f64 * n as f64).round() as usize).min(n);
    let (cx0, cx1) = (px(x0, img.width), px(x1, img.width));
    let (cy0, cy1) = (px(y0, img.height), px(y1, img.height));
    if cx1 <= cx0 || cy1 <= cy0 {
        return None;
    }
    let mut sum = 0u64;
    for y in cy0..cy1 {
        let row = &img.data[(y * img.width + cx0) * 3..(y * img.width + cx1) * 3];
        sum += row.chunks_exact(3).map(|p| u64::from(pixel_redness(p))).sum::<u64>();
    }
    Some(sum as f64 / (((cx1 - cx0) * (cy1 - cy0)) as f64 * 255.0))
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
        let (mut sum, mut n) = (0.0, 0usize);
        for d in frame.detections {
            if let Some(r) = box_redness(img, d.x_min, d.y_min, d.x_max, d.y_max) {
                sum += r;
                n += 1;
            }
        }
        (n > 0).then(|| sum / n as f64)
    }
}

//! Prediction metrics: what the model said about a frame (detections with boxes, classes, confidences and optional
//! class probabilities), reduced to per-frame numbers and a class categorical.

use serde::{Deserialize, Serialize};

/// One detection. Box coordinates are normalised to [0, 1] of the image (x right, y down).
///
/// The one serde form of a detection, read by the offline commands' predictions file and the service's Kafka JSON
/// frames: the class is `class` or `class_label` (the protobuf field's name), empty when absent (like the protobuf
/// field's default); `class_probabilities` is optional; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
    #[serde(rename = "class", alias = "class_label", default)]
    pub class_label: String,
    pub confidence: f32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_probabilities: Vec<f32>,
}

/// Longest class label accepted (bytes), on a detection or a labelled box: class names are label values of
/// exported series and keys of per-window class counts.
pub const MAX_CLASS_LABEL_BYTES: usize = 64;

/// Why a set of detections was refused. `reason()` labels counters.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PredictionError {
    #[error("detection {index}: confidence {value} is not a number in [0, 1]")]
    BadConfidence { index: usize, value: f32 },
    #[error("detection {index}: box ({x_min}, {y_min}, {x_max}, {y_max}) is not a normalised box with min <= max")]
    BadBox { index: usize, x_min: f32, y_min: f32, x_max: f32, y_max: f32 },
    #[error("detection {index}: class probability {value} is not a number in [0, 1]")]
    BadProbability { index: usize, value: f32 },
    #[error("{count} detections on one frame, over the limit of {limit}")]
    TooMany { count: usize, limit: usize },
}

impl PredictionError {
    pub fn reason(&self) -> &'static str {
        match self {
            PredictionError::BadConfidence { .. } => "invalid_confidence",
            PredictionError::BadBox { .. } => "invalid_box",
            PredictionError::BadProbability { .. } => "invalid_class_probability",
            PredictionError::TooMany { .. } => "too_many_detections",
        }
    }
}

/// Settings of the prediction metrics (recorded in the baseline with the analysis settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictionSettings {
    /// `low_confidence_fraction` counts confidences in [low_confidence_min, low_confidence_max).
    pub low_confidence_min: f32,
    pub low_confidence_max: f32,
    /// More detections than this on one frame is refused (protects the O(n^2) duplicate search).
    pub max_detections: usize,
}

impl Default for PredictionSettings {
    fn default() -> Self {
        PredictionSettings { low_confidence_min: 0.5, low_confidence_max: 0.8, max_detections: 2000 }
    }
}

/// A share in [0, 1] (a normalised coordinate, a confidence, a probability); NaN and infinities are not.
pub(crate) fn unit(v: f32) -> bool {
    v.is_finite() && (0.0..=1.0).contains(&v)
}

/// A box normalised to the image: every side in [0, 1], min <= max.
pub(crate) fn normalised_box(x_min: f32, y_min: f32, x_max: f32, y_max: f32) -> bool {
    unit(x_min) && unit(y_min) && unit(x_max) && unit(y_max) && x_min <= x_max && y_min <= y_max
}

/// Checks every detection; the first problem found is returned.
pub fn validate(dets: &[Detection], settings: &PredictionSettings) -> Result<(), PredictionError> {
    if dets.len() > settings.max_detections {
        return Err(PredictionError::TooMany { count: dets.len(), limit: settings.max_detections });
    }
    for (index, d) in dets.iter().enumerate() {
        if !unit(d.confidence) {
            return Err(PredictionError::BadConfidence { index, value: d.confidence });
        }
        if !normalised_box(d.x_min, d.y_min, d.x_max, d.y_max) {
            return Err(PredictionError::BadBox {
                index,
                x_min: d.x_min,
                y_min: d.y_min,
                x_max: d.x_max,
                y_max: d.y_max,
            });
        }
        if let Some(&value) = d.class_probabilities.iter().find(|&&p| !unit(p)) {
            return Err(PredictionError::BadProbability { index, value });
        }
    }
    Ok(())
}

/// Per-frame prediction metrics; `None` where undefined (no detections, or no probabilities given).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PredictionMetrics {
    pub object_count: f64,
    pub confidence_mean: Option<f64>,
    pub confidence_min: Option<f64>,
    pub confidence_max: Option<f64>,
    pub low_confidence_fraction: Option<f64>,
    pub box_area_mean: Option<f64>,
    pub box_aspect_ratio_mean: Option<f64>,
    pub border_proximity_max: Option<f64>,
    pub duplicate_iou_max: Option<f64>,
    pub class_entropy_mean: Option<f64>,
    pub class_margin_mean: Option<f64>,
}

fn iou(a: &Detection, b: &Detection) -> f64 {
    let ix = (a.x_max.min(b.x_max) - a.x_min.max(b.x_min)).max(0.0) as f64;
    let iy = (a.y_max.min(b.y_max) - a.y_min.max(b.y_min)).max(0.0) as f64;
    let inter = ix * iy;
    let area = |d: &Detection| ((d.x_max - d.x_min) as f64) * ((d.y_max - d.y_min) as f64);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Entropy in bits and top-1 minus top-2 margin of a probability vector (renormalised when it does not sum to 1).
fn class_uncertainty(p: &[f32]) -> Option<(f64, f64)> {
    let total: f64 = p.iter().map(|&x| f64::from(x)).sum();
    if total <= 0.0 {
        return None;
    }
    let mut entropy = 0.0;
    let (mut top1, mut top2) = (0.0f64, 0.0f64);
    for &x in p {
        let q = f64::from(x) / total;
        if q > 0.0 {
            entropy -= q * q.log2();
        }
        if q > top1 {
            top2 = top1;
            top1 = q;
        } else if q > top2 {
            top2 = q;
        }
    }
    Some((entropy.max(0.0), top1 - top2))
}

/// Computes the prediction metrics. `image_size` (pixels) turns normalised box sides into a pixel aspect ratio
/// like Encord's; without it the ratio of normalised sides is used. Detections must have passed `validate`.
pub fn prediction_metrics(
    dets: &[Detection],
    image_size: Option<(usize, usize)>,
    settings: &PredictionSettings,
) -> PredictionMetrics {
    let mut m = PredictionMetrics { object_count: dets.len() as f64, ..PredictionMetrics::default() };
    if dets.is_empty() {
        return m;
    }
    let n = dets.len() as f64;
    let (sx, sy) = image_size.map_or((1.0, 1.0), |(w, h)| (w as f64, h as f64));
    let (mut csum, mut cmin, mut cmax, mut low) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY, 0usize);
    let (mut area_sum, mut aspect_sum, mut aspect_n, mut border) = (0.0f64, 0.0f64, 0usize, 0.0f64);
    let (mut ent_sum, mut margin_sum, mut prob_n) = (0.0f64, 0.0f64, 0usize);
    for d in dets {
        let c = f64::from(d.confidence);
        csum += c;
        cmin = cmin.min(c);
        cmax = cmax.max(c);
        if d.confidence >= settings.low_confidence_min && d.confidence < settings.low_confidence_max {
            low += 1;
        }
        let (bw, bh) = (f64::from(d.x_max - d.x_min), f64::from(d.y_max - d.y_min));
        area_sum += bw * bh;
        if bh > 0.0 {
            aspect_sum += bw * sx / (bh * sy);
            aspect_n += 1;
        }
        let b = f64::from(d.x_max.max(d.y_max).max(1.0 - d.x_min).max(1.0 - d.y_min));
        border = border.max(b);
        if let Some((e, mg)) = class_uncertainty(&d.class_probabilities) {
            ent_sum += e;
            margin_sum += mg;
            prob_n += 1;
        }
    }
    let mut dup = 0.0f64;
    for (i, a) in dets.iter().enumerate() {
        for b in &dets[i + 1..] {
            if a.class_label == b.class_label {
                dup = dup.max(iou(a, b));
            }
        }
    }
    m.confidence_mean = Some(csum / n);
    m.confidence_min = Some(cmin);
    m.confidence_max = Some(cmax);
    m.low_confidence_fraction = Some(low as f64 / n);
    m.box_area_mean = Some(area_sum / n);
    m.box_aspect_ratio_mean = (aspect_n > 0).then(|| aspect_sum / aspect_n as f64);
    m.border_proximity_max = Some(border);
    m.duplicate_iou_max = Some(dup);
    if prob_n > 0 {
        m.class_entropy_mean = Some(ent_sum / prob_n as f64);
        m.class_margin_mean = Some(margin_sum / prob_n as f64);
    }
    m
}

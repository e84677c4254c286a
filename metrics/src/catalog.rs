//! The metric registry: every per-frame metric, built-in or custom, is a `FrameMetric` with a stable name.
//! Built-in data metrics read the fused pixel statistics (one pass for all); a custom metric gets the same
//! `FrameContext` and may look at the pixels itself. Registry order fixes the index of each metric's value.

use std::collections::HashMap;
use std::fmt;

use crate::analysis::{DataMetrics, PixelStats};
use crate::decode::RgbImage;
use crate::prediction::{Detection, PredictionMetrics};

/// Which part of a frame a metric describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Needs the image pixels (or its encoded size).
    Data,
    /// Needs the model's detections.
    Prediction,
}

/// Public description of a metric: the names are part of framewatch's contract.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: MetricKind,
    pub unit: &'static str,
    pub range: &'static str,
    pub description: &'static str,
    /// The Encord Active metric this one reproduces or approximates, if any.
    pub encord: Option<&'static str>,
}

/// What a metric can look at when scoring one frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameContext<'a> {
    /// The frame at analysis resolution, when the frame carried pixels.
    pub image: Option<&'a RgbImage>,
    /// Grey (OpenCV BT.601) version of `image`, same size; empty without pixels.
    pub grey: &'a [u8],
    /// Width and height of the frame as sent (before any analysis downscale).
    pub source_size: Option<(usize, usize)>,
    /// Encoded size in bytes (JPEG/PNG), absent for raw frames.
    pub encoded_bytes: Option<usize>,
    /// The encoded frame as sent (JPEG/PNG), absent for raw frames: for metrics of the encoding itself.
    pub encoded: Option<&'a [u8]>,
    pub pixel_stats: Option<&'a PixelStats>,
    pub data: Option<&'a DataMetrics>,
    pub predictions: &'a PredictionMetrics,
    pub detections: &'a [Detection],
    /// A buffer the scorer keeps from frame to frame, for a metric's per-frame working data (an integral image):
    /// borrow it for the duration of `compute`, so the hot path does not allocate.
    pub scratch: &'a MetricScratch,
}

/// Reusable working memory for metrics (one per scorer). A metric borrows it inside `compute` and leaves it
/// borrowed no longer; the scorer releases it after a frame that made it grow past its retain limit.
#[derive(Debug, Default)]
pub struct MetricScratch {
    pub u32s: std::cell::RefCell<Vec<u32>>,
}

/// A per-frame metric. Implement this in one file under `custom/` and add one line to `custom::register_all`.
pub trait FrameMetric: Send + Sync + fmt::Debug {
    fn info(&self) -> MetricInfo;
    /// The value for this frame, or `None` when the metric is undefined for it (e.g. no detections).
    fn compute(&self, frame: &FrameContext<'_>) -> Option<f64>;
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RegistryError {
    #[error("metric name {0:?} is already registered")]
    Duplicate(String),
    #[error("metric name {0:?} is not lower_snake_case ASCII (a-z, 0-9, _; starting with a letter)")]
    BadName(String),
}

/// An ordered set of metrics. Value vectors produced by a `Scorer` follow this order.
#[derive(Debug)]
pub struct MetricRegistry {
    metrics: Vec<Box<dyn FrameMetric>>,
    /// By name, for edge values sent by name (35 lookups per such event): foldhash, not SipHash. The keys are the
    /// catalog's own names, so a client's names are only looked up, never inserted.
    index: HashMap<&'static str, usize, foldhash::fast::RandomState>,
    /// Per metric, the values accepted from outside (edge-computed values): `MetricInfo::accepted`.
    accepted: Vec<(f64, f64)>,
    /// `fingerprint()`, kept up to date by `register` (it is checked on every packed event).
    fingerprint: u64,
}

/// FNV-1a's 64-bit offset basis and prime.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Largest magnitude accepted for a metric whose range has no exact numeric bound: far beyond any real value, and
/// small enough that sums of squares over billions of values stay finite.
pub const MAX_VALUE_MAGNITUDE: f64 = 1e12;

impl MetricInfo {
    /// The values framewatch accepts for this metric from outside (edge-computed), from `range`: an exact numeric
    /// bound (`[0, 1]`, `[1, 100]`) holds as written, within 1e-9 for floating-point error; an open or
    /// approximate one (`inf`, `~180`, `log2(K)`) becomes `MAX_VALUE_MAGNITUDE`.
    pub fn accepted(&self) -> (f64, f64) {
        let inner = self.range.trim().trim_start_matches(['[', '(']).trim_end_matches([']', ')']);
        let (lo, hi) = inner.split_once(',').unwrap_or(("", ""));
        let exact = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite());
        const SLACK: f64 = 1e-9;
        (exact(lo).map_or(-MAX_VALUE_MAGNITUDE, |v| v - SLACK), exact(hi).map_or(MAX_VALUE_MAGNITUDE, |v| v + SLACK))
    }
}

impl MetricRegistry {
    /// An empty registry.
    pub fn empty() -> MetricRegistry {
        MetricRegistry { metrics: Vec::new(), index: HashMap::default(), accepted: Vec::new(), fingerprint: FNV_BASIS }
    }

    /// The built-in catalog only.
    pub fn builtin() -> MetricRegistry {
        let mut reg = MetricRegistry::empty();
        for b in BUILTINS {
            // Built-in names are distinct and valid (a unit test checks it), so registration cannot fail.
            let _ = reg.register(*b);
        }
        reg
    }

    /// Built-ins plus every custom metric shipped in `custom/`.
    pub fn standard() -> MetricRegistry {
        let mut reg = MetricRegistry::builtin();
        // Shipped custom metric names are checked by a unit test as well.
        let _ = crate::custom::register_all(&mut reg);
        reg
    }

    pub fn register(&mut self, metric: impl FrameMetric + 'static) -> Result<usize, RegistryError> {
        let name = metric.info().name;
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(RegistryError::BadName(name.to_string()));
        }
        if self.index.contains_key(name) {
            return Err(RegistryError::Duplicate(name.to_string()));
        }
        let i = self.metrics.len();
        self.index.insert(name, i);
        self.accepted.push(metric.info().accepted());
        // FNV-1a runs byte by byte, so the catalog's hash goes on from where the previous name left it.
        for b in name.bytes().chain(std::iter::once(b'\n')) {
            self.fingerprint = (self.fingerprint ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self.metrics.push(Box::new(metric));
        Ok(i)
    }

    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The values accepted from outside for metric `i` (see `MetricInfo::accepted`).
    pub fn accepted(&self, i: usize) -> Option<(f64, f64)> {
        self.accepted.get(i).copied()
    }

    pub fn infos(&self) -> impl Iterator<Item = MetricInfo> + '_ {
        self.metrics.iter().map(|m| m.info())
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.metrics.iter().map(|m| m.info().name)
    }

    /// Names the catalog's order: 64-bit FNV-1a of the metric names, each followed by a newline. An edge device
    /// that sends values in catalog order (`MetricValues.packed`) sends this with them, so values are never read
    /// against another catalog (another version, other custom metrics).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Computes every metric into `out` (cleared first; `out[i]` belongs to metric `i`).
    pub fn compute_all(&self, frame: &FrameContext<'_>, out: &mut Vec<Option<f64>>) {
        out.clear();
        out.extend(self.metrics.iter().map(|m| m.compute(frame).filter(|v| v.is_finite())));
    }
}

/// The standard catalog's descriptions.
pub fn catalog() -> Vec<MetricInfo> {
    MetricRegistry::standard().infos().collect()
}

/// A built-in metric: a description and an accessor into the fused statistics.
#[derive(Clone, Copy)]
struct Builtin {
    info: MetricInfo,
    get: fn(&FrameContext<'_>) -> Option<f64>,
}

impl fmt::Debug for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builtin").field("name", &self.info.name).finish()
    }
}

impl FrameMetric for Builtin {
    fn info(&self) -> MetricInfo {
        self.info
    }
    fn compute(&self, frame: &FrameContext<'_>) -> Option<f64> {
        (self.get)(frame)
    }
}

macro_rules! data {
    ($name:literal, $unit:literal, $range:literal, $encord:expr, $desc:literal, $get:expr) => {
        Builtin {
            info: MetricInfo {
                name: $name,
                kind: MetricKind::Data,
                unit: $unit,
                range: $range,
                description: $desc,
                encord: $encord,
            },
            get: $get,
        }
    };
}

macro_rules! pred {
    ($name:literal, $unit:literal, $range:literal, $encord:expr, $desc:literal, $get:expr) => {
        Builtin {
            info: MetricInfo {
                name: $name,
                kind: MetricKind::Prediction,
                unit: $unit,
                range: $range,
                description: $desc,
                encord: $encord,
            },
            get: $get,
        }
    };
}

fn size(f: &FrameContext<'_>) -> Option<(f64, f64)> {
    f.source_size.map(|(w, h)| (w as f64, h as f64))
}

const BUILTINS: &[Builtin] = &[
    data!(
        "brightness",
        "ratio",
        "[0, 1]",
        Some("Brightness"),
        "Mean of all R, G and B values / 255 (no luma weights).",
        |f| f.data.map(|d| d.brightness)
    ),
    data!(
        "contrast",
        "ratio",
        "[0, 0.5]",
        Some("Contrast"),
        "Population standard deviation of all R, G and B values / 255.",
        |f| f.data.map(|d| d.contrast)
    ),
    data!(
        "sharpness",
        "ratio",
        "[0, 1]",
        Some("Sharpness (normalised form)"),
        "sqrt(variance of the 3x3 Laplacian of grey over interior pixels) / (8*255), clamped to 1.",
        |f| f.data.map(|d| d.sharpness)
    ),
    data!("blur", "ratio", "[0, 1]", Some("Blur"), "1 - sharpness.", |f| f.data.map(|d| 1.0 - d.sharpness)),
    data!("saturation", "ratio", "[0, 1]", None, "Mean HSV saturation (OpenCV 8-bit S) / 255.", |f| f
        .data
        .map(|d| d.saturation)),
    data!(
        "colorfulness",
        "0-255 opponent units",
        "[0, ~180]",
        None,
        "Hasler-Suesstrunk: sqrt(var(rg)+var(yb)) + 0.3*sqrt(mean(rg)^2+mean(yb)^2), rg=R-G, yb=(R+G)/2-B.",
        |f| f.data.map(|d| d.colorfulness)
    ),
    data!("entropy", "bits", "[0, 8]", None, "Shannon entropy of the 256-bin grey histogram.", |f| f
        .data
        .map(|d| d.entropy)),
    data!(
        "red",
        "ratio",
        "[0, 1]",
        Some("Red Values"),
        "Share of pixels with OpenCV HSV S>=50, V>=40, H in [0,10] or [170,179].",
        |f| f.data.map(|d| d.red)
    ),
    data!(
        "green",
        "ratio",
        "[0, 1]",
        Some("Green Values"),
        "Share of pixels with OpenCV HSV S>=50, V>=40, H in [35,75].",
        |f| f.data.map(|d| d.green)
    ),
    data!(
        "blue",
        "ratio",
        "[0, 1]",
        Some("Blue Values"),
        "Share of pixels with OpenCV HSV S>=50, V>=40, H in [90,130].",
        |f| f.data.map(|d| d.blue)
    ),
    data!(
        "red_mean",
        "ratio",
        "[0, 1]",
        None,
        "Relative red intensity: sum(R) / (sum(R)+sum(G)+sum(B)); 1/3 for a neutral frame.",
        |f| f.data.map(|d| d.red_mean)
    ),
    data!("green_mean", "ratio", "[0, 1]", None, "Relative green intensity: sum(G) / (sum(R)+sum(G)+sum(B)).", |f| f
        .data
        .map(|d| d.green_mean)),
    data!("blue_mean", "ratio", "[0, 1]", None, "Relative blue intensity: sum(B) / (sum(R)+sum(G)+sum(B)).", |f| f
        .data
        .map(|d| d.blue_mean)),
    data!(
        "dark_fraction",
        "ratio",
        "[0, 1]",
        None,
        "Share of pixels whose grey level is <= dark_level (default 10): clipped shadows.",
        |f| f.data.map(|d| d.dark_fraction)
    ),
    data!(
        "bright_fraction",
        "ratio",
        "[0, 1]",
        None,
        "Share of pixels whose grey level is >= bright_level (default 245): clipped highlights.",
        |f| f.data.map(|d| d.bright_fraction)
    ),
    data!("noise", "ratio", "[0, ~0.5]", None, "Immerkaer (1996) noise sigma estimate on grey, / 255.", |f| f
        .data
        .map(|d| d.noise)),
    data!("width", "pixels", "[1, inf)", Some("Width"), "Frame width as sent.", |f| size(f).map(|s| s.0)),
    data!("height", "pixels", "[1, inf)", Some("Height"), "Frame height as sent.", |f| size(f).map(|s| s.1)),
    data!("area", "pixels", "[1, inf)", Some("Area"), "width * height.", |f| size(f).map(|s| s.0 * s.1)),
    data!("aspect_ratio", "ratio", "(0, inf)", Some("Aspect Ratio"), "width / height.", |f| size(f).map(|s| s.0 / s.1)),
    data!(
        "bytes_per_pixel",
        "bytes",
        "(0, inf)",
        None,
        "Encoded size / (width*height): lower means harder compression. Undefined for raw frames.",
        |f| Some(f.encoded_bytes? as f64 / size(f).map(|s| s.0 * s.1)?)
    ),
    data!(
        "jpeg_quality",
        "IJG quality",
        "[1, 100]",
        None,
        "Encoder quality estimated from the JPEG luminance quantisation table (nearest IJG-scaled Annex K table). \
         Undefined for PNG and raw frames.",
        |f| crate::decode::jpeg_quality(f.encoded?).map(f64::from)
    ),
    pred!("object_count", "count", "[0, inf)", Some("Object Count"), "Number of detections on the frame.", |f| Some(
        f.predictions.object_count
    )),
    pred!(
        "confidence_mean",
        "ratio",
        "[0, 1]",
        Some("Model Confidence (frame mean)"),
        "Mean detection confidence.",
        |f| f.predictions.confidence_mean
    ),
    pred!("confidence_min", "ratio", "[0, 1]", None, "Lowest detection confidence.", |f| f.predictions.confidence_min),
    pred!("confidence_max", "ratio", "[0, 1]", None, "Highest detection confidence.", |f| f.predictions.confidence_max),
    pred!(
        "low_confidence_fraction",
        "ratio",
        "[0, 1]",
        None,
        "Share of detections with confidence in [0.5, 0.8) (configurable).",
        |f| f.predictions.low_confidence_fraction
    ),
    pred!(
        "box_area_mean",
        "ratio",
        "[0, 1]",
        Some("Object Area - Relative"),
        "Mean box area relative to the image area.",
        |f| f.predictions.box_area_mean
    ),
    pred!(
        "box_aspect_ratio_mean",
        "ratio",
        "(0, inf)",
        Some("Object Aspect Ratio"),
        "Mean box width / height in pixels (in normalised units when the image size is unknown).",
        |f| f.predictions.box_aspect_ratio_mean
    ),
    pred!(
        "border_proximity_max",
        "ratio",
        "[0.5, 1]",
        Some("Border Closeness"),
        "Max over boxes of max(x_max, y_max, 1-x_min, 1-y_min); 1 = touches the border.",
        |f| f.predictions.border_proximity_max
    ),
    pred!(
        "duplicate_iou_max",
        "ratio",
        "[0, 1]",
        Some("Annotation Duplicates"),
        "Highest IoU between two detections of the same class (0 when no such pair).",
        |f| f.predictions.duplicate_iou_max
    ),
    pred!(
        "class_entropy_mean",
        "bits",
        "[0, log2(K)]",
        Some("Entropy (acquisition function)"),
        "Mean entropy of the class-probability vectors (detections that carry one).",
        |f| f.predictions.class_entropy_mean
    ),
    pred!(
        "class_margin_mean",
        "ratio",
        "[0, 1]",
        Some("Margin (acquisition function)"),
        "Mean top-1 minus top-2 class probability.",
        |f| f.predictions.class_margin_mean
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_custom_names_are_valid_and_distinct() {
        let mut reg = MetricRegistry::builtin();
        assert_eq!(reg.len(), BUILTINS.len(), "a built-in failed to register");
        crate::custom::register_all(&mut reg).expect("custom metrics register");
        assert_eq!(reg.len(), MetricRegistry::standard().len());
        assert_eq!(reg.register(crate::custom::Redness), Err(RegistryError::Duplicate("redness".into())));
    }

    /// The fingerprint kept up to date by `register` is the documented one: FNV-1a of the names in catalog order,
    /// each followed by a newline; a refused registration leaves it alone, and order matters.
    #[test]
    fn fingerprint_is_fnv1a_of_the_names_in_order() {
        let from_scratch = |names: &[&str]| {
            let text: String = names.iter().map(|n| format!("{n}\n")).collect();
            text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        };
        let mut reg = MetricRegistry::standard();
        let names: Vec<&str> = reg.names().collect();
        assert_eq!(reg.fingerprint(), from_scratch(&names));
        assert_eq!(MetricRegistry::empty().fingerprint(), from_scratch(&[]));
        assert!(reg.register(crate::custom::Redness).is_err());
        assert_eq!(reg.fingerprint(), from_scratch(&names));
        let mut builtin = MetricRegistry::builtin();
        let custom_first = {
            let mut r = MetricRegistry::empty();
            crate::custom::register_all(&mut r).expect("custom metrics register");
            for b in BUILTINS {
                r.register(*b).expect("built-in registers");
            }
            r.fingerprint()
        };
        crate::custom::register_all(&mut builtin).expect("custom metrics register");
        assert_eq!(builtin.fingerprint(), reg.fingerprint());
        assert_ne!(custom_first, reg.fingerprint(), "the same names in another order are another catalog");
    }

    #[test]
    fn every_metric_accepts_a_real_range_and_refuses_what_would_overflow() {
        for m in MetricRegistry::standard().infos() {
            let (lo, hi) = m.accepted();
            assert!(lo < hi && lo.is_finite() && hi.is_finite(), "{}: {lo} {hi}", m.name);
            assert!(!(lo..=hi).contains(&1e300) && !(lo..=hi).contains(&-1e300), "{}", m.name);
        }
        let info = |range| MetricInfo { range, ..MetricRegistry::builtin().infos().next().expect("a metric") };
        let accepts = |range, v: f64| {
            let (lo, hi) = info(range).accepted();
            (lo..=hi).contains(&v)
        };
        assert!(
            accepts("[0, 1]", 1.0) && accepts("[0, 1]", 0.0) && !accepts("[0, 1]", 1.01) && !accepts("[0, 1]", -0.01)
        );
        assert!(accepts("[1, 100]", 100.0) && !accepts("[1, 100]", 0.5));
        assert!(accepts("[1, inf)", 8e9) && !accepts("[1, inf)", 0.0) && !accepts("[1, inf)", 1e13));
        assert!(accepts("[0, ~180]", 250.0), "an approximate bound is not enforced exactly");
        assert!(accepts("[0, log2(K)]", 12.0) && !accepts("[0, log2(K)]", -1.0));
    }

    #[test]
    fn metrics_md_documents_every_metric() {
        let doc = include_str!("../METRICS.md");
        for m in MetricRegistry::standard().infos() {
            assert!(doc.contains(&format!("| `{}` |", m.name)), "METRICS.md lacks a row for {}", m.name);
        }
    }
}

//! Scoring one frame: decode (or copy raw pixels), bring to analysis resolution, run the fused pixel passes,
//! reduce detections, then ask every registered metric for its value. One `Scorer` per worker thread: it owns
//! the buffers that make the hot path allocation-free after the first frames.

use std::sync::Arc;

use crate::analysis::{AnalysisSettings, DataMetrics, PixelScratch};
use crate::catalog::{FrameContext, MetricRegistry, MetricScratch};
use crate::decode::{DecodeError, DecodeLimits, ImageFormat, RawFormat, RgbImage, decode_into, raw_into};
use crate::prediction::{Detection, PredictionError, PredictionMetrics, PredictionSettings, prediction_metrics};

/// Everything that changes how a frame is scored. The analysis and prediction parts are recorded in baselines.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreSettings {
    pub analysis: AnalysisSettings,
    pub prediction: PredictionSettings,
    pub limits: DecodeLimits,
}

/// The pixels of a frame, in whichever form they arrived.
#[derive(Debug, Clone, Copy)]
pub enum FramePixels<'a> {
    Encoded(&'a [u8]),
    Raw {
        pixels: &'a [u8],
        width: usize,
        height: usize,
        format: RawFormat,
    },
    /// No pixels: only prediction metrics are computed.
    None,
}

/// Why a frame could not be scored.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ScoreError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Prediction(#[from] PredictionError),
}

impl ScoreError {
    /// Stable reason label for counters and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            ScoreError::Decode(e) => e.reason(),
            ScoreError::Prediction(e) => e.reason(),
        }
    }
}

/// The result of scoring one frame; borrows the scorer's buffers until the next frame.
#[derive(Debug)]
pub struct ScoredFrame<'a> {
    /// Metric values in registry order; `None` where a metric is undefined for this frame.
    pub values: &'a [Option<f64>],
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub format: Option<ImageFormat>,
    /// pHash of the frame when it carried pixels.
    pub perceptual_hash: Option<u64>,
}

/// Scorer buffers above this many bytes are released once their frame is scored: a 4K UHD RGB frame (3840 x
/// 2160 x 3 = 24.9 MB). Fleets of 4K and smaller cameras keep their buffers; an outlier frame (a rare 8K still,
/// a hostile 30-megapixel PNG) does not pin its memory to the worker for good.
pub const RETAIN_BYTES: usize = 3840 * 2160 * 3;

/// A reusable per-worker scorer.
#[derive(Debug)]
pub struct Scorer {
    registry: Arc<MetricRegistry>,
    settings: ScoreSettings,
    source: RgbImage,
    scratch: PixelScratch,
    metric_scratch: MetricScratch,
    values: Vec<Option<f64>>,
    retain_bytes: usize,
}

impl Scorer {
    pub fn new(registry: Arc<MetricRegistry>, settings: ScoreSettings) -> Scorer {
        Scorer {
            registry,
            settings,
            source: RgbImage::default(),
            scratch: PixelScratch::default(),
            metric_scratch: MetricScratch::default(),
            values: Vec::new(),
            retain_bytes: RETAIN_BYTES,
        }
    }

    /// Sets the size above which a buffer is released after its frame (default `RETAIN_BYTES`).
    pub fn with_retain_bytes(mut self, bytes: usize) -> Scorer {
        self.retain_bytes = bytes;
        self
    }

    /// Bytes the scorer's pixel buffers hold between frames (their capacity).
    pub fn held_bytes(&self) -> usize {
        self.source.data.capacity() + self.scratch.held_bytes() + self.metric_scratch.u32s.borrow().capacity() * 4
    }

    pub fn registry(&self) -> &Arc<MetricRegistry> {
        &self.registry
    }

    pub fn settings(&self) -> &ScoreSettings {
        &self.settings
    }

    /// Scores one frame. Detections are validated first, so a frame with bad predictions costs no decode.
    pub fn score(&mut self, pixels: FramePixels<'_>, detections: &[Detection]) -> Result<ScoredFrame<'_>, ScoreError> {
        crate::prediction::validate(detections, &self.settings.prediction)?;
        let limits = self.settings.limits;
        let (format, encoded_bytes) = match pixels {
            FramePixels::Encoded(bytes) => (Some(decode_into(bytes, &limits, &mut self.source)?), Some(bytes.len())),
            FramePixels::Raw { pixels, width, height, format } => {
                raw_into(pixels, width, height, format, &limits, &mut self.source)?;
                (None, None)
            }
            FramePixels::None => (None, None),
        };
        let has_pixels = !matches!(pixels, FramePixels::None);
        let source_size = has_pixels.then_some((self.source.width, self.source.height));
        let predictions: PredictionMetrics = prediction_metrics(detections, source_size, &self.settings.prediction);

        let Scorer { registry, settings, source, scratch, metric_scratch, values, retain_bytes } = self;
        let (stats, data, phash, image) = if has_pixels {
            let (st, hash) = scratch.analyse(source, &settings.analysis);
            (
                Some(st),
                Some(DataMetrics::from_stats(&st, &settings.analysis)),
                Some(hash),
                Some(scratch.view(source, &settings.analysis)),
            )
        } else {
            (None, None, None, None)
        };
        let ctx = FrameContext {
            image: image.map(|v| v.0),
            grey: image.map_or(&[][..], |v| v.1),
            source_size,
            encoded_bytes,
            encoded: match pixels {
                FramePixels::Encoded(bytes) => Some(bytes),
                _ => None,
            },
            pixel_stats: stats.as_ref(),
            data: data.as_ref(),
            predictions: &predictions,
            detections,
            scratch: metric_scratch,
        };
        registry.compute_all(&ctx, values);
        // Nothing below borrows the pixel buffers: an outlier's memory goes back now, not at the next frame.
        if source.data.capacity() > *retain_bytes {
            *source = RgbImage::default();
        }
        scratch.release_above(*retain_bytes);
        crate::analysis::release_above(metric_scratch.u32s.get_mut(), *retain_bytes);
        Ok(ScoredFrame {
            values,
            width: source_size.map(|s| s.0),
            height: source_size.map(|s| s.1),
            format,
            perceptual_hash: phash,
        })
    }
}

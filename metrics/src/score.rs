//! Scoring one frame: decode (or copy raw pixels), bring to analysis resolution, run the fused pixel passes,
//! reduce detections, then ask every registered metric for its value. One `Scorer` per worker thread: it owns
//! the buffers that make the hot path allocation-free after the first frames.

use std::sync::Arc;

use crate::analysis::{AnalysisSettings, DataMetrics, PixelScratch};
use crate::catalog::{FrameContext, MetricRegistry};
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

/// A reusable per-worker scorer.
#[derive(Debug)]
pub struct Scorer {
    registry: Arc<MetricRegistry>,
    settings: ScoreSettings,
    source: RgbImage,
    scratch: PixelScratch,
    values: Vec<Option<f64>>,
}

impl Scorer {
    pub fn new(registry: Arc<MetricRegistry>, settings: ScoreSettings) -> Scorer {
        Scorer { registry, settings, source: RgbImage::default(), scratch: PixelScratch::default(), values: Vec::new() }
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

        let Scorer { registry, settings, source, scratch, values } = self;
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
        };
        registry.compute_all(&ctx, values);
        Ok(ScoredFrame {
            values,
            width: source_size.map(|s| s.0),
            height: source_size.map(|s| s.1),
            format,
            perceptual_hash: phash,
        })
    }
}

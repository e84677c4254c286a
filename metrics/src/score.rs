//! Scoring one frame: decode (or copy raw pixels), bring to analysis resolution, run the fused pixel passes,
//! reduce detections, then ask every registered metric for its value. One `Scorer` per worker thread: it owns
//! the buffers that make the hot path allocation-free after the first frames.

use std::sync::Arc;

use crate::analysis::{AnalysisSettings, DataMetrics, PixelScratch};
use crate::catalog::{FrameContext, MetricRegistry, MetricScratch};
use crate::decode::{DecodeError, DecodeLimits, ImageFormat, RawFormat, RgbImage, decode_for_analysis, raw_into};
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
    /// The box factor the last `score` call applied to `source` when it analysed pixels (then `analysed_image`
    /// has them until the next call); None when it did not.
    analysed: Option<usize>,
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
            analysed: None,
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

    /// The last scored frame's pixels as the metrics saw them (at analysis resolution), until the next `score`:
    /// a caller that wants a thumbnail starts from here instead of decoding again. None after a frame without
    /// pixels or a refused one, and when an outlier frame's buffers were released.
    pub fn analysed_image(&self) -> Option<&RgbImage> {
        let img = self.scratch.view(&self.source, self.analysed?).0;
        (img.width > 0 && img.height > 0 && img.data.len() >= img.width * img.height * 3).then_some(img)
    }

    /// Scores one frame. Detections are validated first, so a frame with bad predictions costs no decode.
    pub fn score(&mut self, pixels: FramePixels<'_>, detections: &[Detection]) -> Result<ScoredFrame<'_>, ScoreError> {
        self.analysed = None;
        crate::prediction::validate(detections, &self.settings.prediction)?;
        let limits = self.settings.limits;
        // The frame's size as sent, and the factor by which `source` already is smaller than that.
        let (format, encoded_bytes, sent) = match pixels {
            FramePixels::Encoded(bytes) => {
                let d = decode_for_analysis(bytes, &limits, &self.settings.analysis, &mut self.source)?;
                (Some(d.format), Some(bytes.len()), Some((d.width, d.height, d.scaled_by)))
            }
            FramePixels::Raw { pixels, width, height, format } => {
                raw_into(pixels, width, height, format, &limits, &mut self.source)?;
                (None, None, Some((width, height, 1)))
            }
            FramePixels::None => (None, None, None),
        };
        let source_size = sent.map(|(w, h, _)| (w, h));
        // What is left of the analysis factor after the decoder's own scaling, done by box-averaging.
        let box_factor = sent.map(|(w, h, scaled_by)| (self.settings.analysis.factor(w, h) / scaled_by).max(1));
        let predictions: PredictionMetrics = prediction_metrics(detections, source_size, &self.settings.prediction);

        let Scorer { registry, settings, source, scratch, metric_scratch, values, retain_bytes, analysed } = self;
        *analysed = box_factor;
        let (stats, data, phash, image) = if let Some(k) = box_factor {
            let (st, hash) = scratch.analyse(source, k);
            (
                Some(st),
                Some(DataMetrics::from_stats(&st, &settings.analysis)),
                Some(hash),
                Some(scratch.view(source, k)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::AnalysisSettings;

    #[test]
    fn analysed_image_is_the_downscaled_frame_until_a_frame_without_pixels() {
        let settings = ScoreSettings {
            analysis: AnalysisSettings { max_side: 64, ..AnalysisSettings::default() },
            ..ScoreSettings::default()
        };
        let mut scorer = Scorer::new(Arc::new(MetricRegistry::standard()), settings);
        assert!(scorer.analysed_image().is_none());
        let pixels = vec![100u8; 200 * 100];
        let raw = FramePixels::Raw { pixels: &pixels, width: 200, height: 100, format: RawFormat::Gray8 };
        scorer.score(raw, &[]).expect("scores");
        // 200 px wide with max_side 64: box-averaged by 4.
        let img = scorer.analysed_image().expect("an analysed image");
        assert_eq!((img.width, img.height, img.data[0]), (50, 25, 100));
        scorer.score(FramePixels::None, &[]).expect("scores");
        assert!(scorer.analysed_image().is_none(), "a frame without pixels has none");
    }
}

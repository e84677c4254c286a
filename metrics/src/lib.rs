//! framewatch-metrics: the pure core of framewatch. Decoding inside limits, per-frame quality metrics (data,
//! prediction, custom), fixed-edge histograms and sliding windows, drift statistics and the baseline format.
//! No runtime, no sockets, no clocks, no global mutable state: everything here is a function of its inputs.
//!
//! Metric definitions, ranges and their Encord Active equivalents: `METRICS.md` in this crate.

pub mod analysis;
pub mod baseline;
pub mod catalog;
pub mod cause;
pub mod counts;
pub mod custom;
pub mod decode;
pub mod drift;
pub mod histogram;
pub mod importance;
pub mod label_quality;
mod libjpeg;
pub mod performance;
pub mod phash;
pub mod predicate;
pub mod prediction;
pub mod score;
pub mod stats;

pub use analysis::{AnalysisSettings, Downscale};
pub use baseline::{Baseline, BaselineBuilder, BaselineError, ComparableSettings};
pub use catalog::{FrameContext, FrameMetric, MetricInfo, MetricKind, MetricRegistry, MetricScratch, catalog};
pub use cause::{Cause, ClassShift, Evidence, Finding, Shift, Tolerance, Tolerances, diagnose};
pub use decode::{DecodeError, DecodeLimits, RawFormat, RgbImage};
pub use drift::{DriftAccumulator, DriftReport, DriftThresholds, FailRule, Verdict};
pub use prediction::{Detection, PredictionError, PredictionSettings};
pub use score::{FramePixels, ScoreError, ScoreSettings, ScoredFrame, Scorer};

/// Version written into baselines.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

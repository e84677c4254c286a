//! Why a frame (or a Kafka message) was refused. One enum fixes the set of reasons: `as_str()` is the stable
//! label of `framewatch_frames_rejected_total{reason}` and `framewatch_kafka_messages_rejected_total{reason}`, and
//! the `reason` a gRPC client reads in its acknowledgement. README's list is checked against `RejectReason::ALL`.

use framewatch_metrics::{DecodeError, PredictionError, ScoreError};

macro_rules! reasons {
    ($($variant:ident => $label:literal, $doc:literal;)*) => {
        /// A refusal's reason. Labels are stable: dashboards and alert rules use them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RejectReason {
            $(#[doc = $doc] $variant,)*
        }

        impl RejectReason {
            /// Every reason, in declaration order (counters start at 0 for each).
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(RejectReason::$variant => $label,)*
                }
            }
        }
    };
}

reasons! {
    MissingCameraId => "missing_camera_id", "camera_id is empty.";
    InvalidCameraId => "invalid_camera_id", "camera_id is too long or has control characters.";
    InvalidModelVersion => "invalid_model_version", "model_version is too long or has control characters.";
    InvalidLabels => "invalid_labels", "Too many labels, or a label key/value that is empty, too long or has control characters.";
    InvalidTimestamp => "invalid_timestamp", "capture_time is not a valid time.";
    FutureTimestamp => "future_timestamp", "Captured further in the future than ingest.max_future_secs.";
    TooOld => "too_old", "Captured longer ago than ingest.max_age_secs.";
    TooLate => "too_late", "Captured before the window's allowed lateness: counted as late, not mixed into windows.";
    EmptyFrame => "empty_frame", "No image, no metric values and no detections.";
    InvalidMetricValue => "invalid_metric_value", "An edge-computed metric value is not finite, or outside the range the catalog gives for the metric.";
    UnknownMetric => "unknown_metric", "An edge-computed metric is not in the catalog.";
    BadRawImage => "bad_raw_image", "raw_image has an unknown pixel format or a size that does not match its pixels.";
    EmptyImage => "empty_image", "The encoded image has no bytes.";
    ImageTooManyBytes => "image_too_many_bytes", "The encoded image is larger than pipeline.max_image_bytes.";
    ImageTooManyPixels => "image_too_many_pixels", "The image has more pixels than pipeline.max_image_pixels.";
    UnsupportedFormat => "unsupported_format", "Neither JPEG nor PNG.";
    TruncatedImage => "truncated_image", "The data ends before the image does.";
    CorruptImage => "corrupt_image", "The image data is invalid.";
    InvalidConfidence => "invalid_confidence", "A detection's confidence is not in [0, 1].";
    InvalidBox => "invalid_box", "A detection's box is not a normalised, non-empty box.";
    InvalidClassProbability => "invalid_class_probability", "class_probabilities are not probabilities.";
    TooManyDetections => "too_many_detections", "More detections than the baseline's max_detections.";
    MessageTooLarge => "message_too_large", "A gRPC or Kafka message larger than pipeline.max_image_bytes plus 1 MiB for predictions and labels: the RPC ends with RESOURCE_EXHAUSTED; the Kafka message is refused without being copied and its offset moves on.";
    EmptyMessage => "empty_message", "A Kafka message without a value.";
    InvalidJson => "invalid_json", "A Kafka message that is not framewatch's JSON frame form.";
    InvalidProtobuf => "invalid_protobuf", "A Kafka message that is not a framewatch.v1.Frame.";
    ShuttingDown => "shutting_down", "framewatch is shutting down; send it again to another instance or later.";
    InternalError => "internal_error", "framewatch failed on this frame (a bug): counted, logged, the frame is dropped.";
    InvalidClassLabel => "invalid_class_label", "A detection's class label is longer than 64 bytes or has control characters.";
    DecodeBudgetExceeded => "decode_budget_exceeded", "Decoding the image alone would need more than pipeline.decode_memory_mib.";
    InvalidFrameId => "invalid_frame_id", "frame_id is longer than 256 bytes or has control characters.";
    CatalogMismatch => "catalog_mismatch", "Packed metric values for another catalog: a catalog_fingerprint or a length that is not this framewatch's (ListMetrics).";
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&DecodeError> for RejectReason {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::Empty => RejectReason::EmptyImage,
            DecodeError::TooManyBytes { .. } => RejectReason::ImageTooManyBytes,
            DecodeError::TooManyPixels { .. } => RejectReason::ImageTooManyPixels,
            DecodeError::UnsupportedFormat(_) => RejectReason::UnsupportedFormat,
            DecodeError::Truncated => RejectReason::TruncatedImage,
            DecodeError::Corrupt(_) => RejectReason::CorruptImage,
            DecodeError::BadRawImage(_) => RejectReason::BadRawImage,
        }
    }
}

impl From<&PredictionError> for RejectReason {
    fn from(e: &PredictionError) -> Self {
        match e {
            PredictionError::BadConfidence { .. } => RejectReason::InvalidConfidence,
            PredictionError::BadBox { .. } => RejectReason::InvalidBox,
            PredictionError::BadProbability { .. } => RejectReason::InvalidClassProbability,
            PredictionError::TooMany { .. } => RejectReason::TooManyDetections,
        }
    }
}

impl From<&ScoreError> for RejectReason {
    fn from(e: &ScoreError) -> Self {
        match e {
            ScoreError::Decode(d) => d.into(),
            ScoreError::Prediction(p) => p.into(),
        }
    }
}

/// A refusal: the reason and a message for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Rejection {
        Rejection { reason, message: message.into() }
    }
}

impl Rejection {
    /// A decoder's refusal, with its reason and message.
    pub fn from_decode(e: DecodeError) -> Rejection {
        Rejection::new((&e).into(), e.to_string())
    }
}

impl From<ScoreError> for Rejection {
    fn from(e: ScoreError) -> Self {
        Rejection::new((&e).into(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_snake_case_and_agree_with_the_metrics_crate() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL {
            let l = r.as_str();
            assert!(seen.insert(l), "{l} twice");
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
        }
        let decode = [
            DecodeError::Empty,
            DecodeError::TooManyBytes { size: 2, limit: 1 },
            DecodeError::TooManyPixels { width: 2, height: 2, limit: 1 },
            DecodeError::UnsupportedFormat("gif".into()),
            DecodeError::Truncated,
            DecodeError::Corrupt("x".into()),
            DecodeError::BadRawImage("x".into()),
        ];
        for e in &decode {
            assert_eq!(RejectReason::from(e).as_str(), e.reason());
        }
        let pred = [
            PredictionError::BadConfidence { index: 0, value: 2.0 },
            PredictionError::BadBox { index: 0, x_min: 0.0, y_min: 0.0, x_max: 0.0, y_max: 0.0 },
            PredictionError::BadProbability { index: 0, value: 2.0 },
            PredictionError::TooMany { count: 3, limit: 2 },
        ];
        for e in &pred {
            assert_eq!(RejectReason::from(e).as_str(), e.reason());
        }
    }

    /// README's "Rejection reasons" list names exactly the reasons the type has.
    #[test]
    fn the_readme_lists_every_reason() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
        let start = readme.find("<!-- reject-reasons -->").expect("README marks the reason list");
        let end = readme[start..].find("<!-- /reject-reasons -->").expect("end marker") + start;
        let listed: std::collections::BTreeSet<&str> = readme[start..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let known: std::collections::BTreeSet<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(listed, known, "README's reason list and RejectReason::ALL differ");
    }
}

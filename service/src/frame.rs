//! A frame as it arrives from any source, checked before it costs anything: camera id, timestamps, labels,
//! content shape. Each refusal is a `Rejection` with a stable reason that labels the rejection counter and that
//! the client sees in its acknowledgement.

use std::collections::HashMap;
use std::time::SystemTime;

use framewatch_metrics::prediction::MAX_CLASS_LABEL_BYTES;
use framewatch_metrics::{Detection, RawFormat};
use framewatch_proto::v1;

use crate::config::IngestConfig;
use crate::reject::{RejectReason, Rejection};
use crate::time::unix_secs;

/// Where a frame came from (a label on every ingest counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Grpc,
    Kafka,
    Demo,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Grpc => "grpc",
            Source::Kafka => "kafka",
            Source::Demo => "demo",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Encoded(Vec<u8>),
    Raw {
        pixels: Vec<u8>,
        width: usize,
        height: usize,
        format: RawFormat,
    },
    /// Metric values computed at the edge.
    Values {
        values: Vec<(String, f64)>,
        perceptual_hash: Option<u64>,
    },
    /// Metric values computed at the edge, one per catalog metric in catalog order (NaN: not given), for the
    /// catalog `catalog_fingerprint` names (checked by the scorer, which knows the catalog).
    Packed {
        values: Vec<f64>,
        catalog_fingerprint: u64,
        perceptual_hash: Option<u64>,
    },
    /// Detections only.
    None,
}

/// A validated frame, owned, ready for the scoring queue.
#[derive(Debug, Clone)]
pub struct IncomingFrame {
    pub source: Source,
    pub camera_id: String,
    pub model_version: String,
    pub labels: HashMap<String, String>,
    pub capture_secs: i64,
    pub content: Content,
    pub detections: Vec<Detection>,
    /// Names the frame for ground truth that comes later (`truth`); `None`: the frame is not kept for a join.
    pub frame_id: Option<String>,
}

impl IncomingFrame {
    /// About the memory the frame holds: its image, values and detections (an estimate, for bounding batches).
    pub fn held_bytes(&self) -> usize {
        let content = match &self.content {
            Content::Encoded(b) => b.len(),
            Content::Raw { pixels, .. } => pixels.len(),
            Content::Values { values, .. } => values.iter().map(|(name, _)| name.len() + 32).sum(),
            Content::Packed { values, .. } => values.len() * 8,
            Content::None => 0,
        };
        let detections: usize =
            self.detections.iter().map(|d| 64 + d.class_label.len() + 4 * d.class_probabilities.len()).sum();
        content + detections
    }
}

const MAX_ID_LEN: usize = 256;
const MAX_LABELS: usize = 32;

fn clean_text(s: &str) -> bool {
    s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// Checks and converts a wire frame. `now` is the receive time; a frame without capture time is stamped with it.
pub fn from_proto(
    mut frame: v1::Frame,
    source: Source,
    now: SystemTime,
    cfg: &IngestConfig,
) -> Result<IncomingFrame, Rejection> {
    let detections = std::mem::take(&mut frame.detections).into_iter().map(detection_from_proto).collect();
    from_parts(frame, detections, source, now, cfg)
}

/// Checks and converts a wire frame whose detections are already the metrics crate's type (the Kafka JSON form
/// reads them so); `frame.detections` is ignored.
pub fn from_parts(
    frame: v1::Frame,
    detections: Vec<Detection>,
    source: Source,
    now: SystemTime,
    cfg: &IngestConfig,
) -> Result<IncomingFrame, Rejection> {
    debug_assert!(frame.detections.is_empty(), "detections are passed on their own");
    // Trimmed in place (no copy for the usual id without surrounding blanks).
    let mut camera_id = frame.camera_id;
    camera_id.truncate(camera_id.trim_end().len());
    camera_id.drain(..camera_id.len() - camera_id.trim_start().len());
    if camera_id.is_empty() {
        return Err(Rejection::new(RejectReason::MissingCameraId, "camera_id is empty"));
    }
    if !clean_text(&camera_id) {
        return Err(Rejection::new(
            RejectReason::InvalidCameraId,
            "camera_id is longer than 256 bytes or has control characters",
        ));
    }
    if !clean_text(&frame.model_version) {
        return Err(Rejection::new(
            RejectReason::InvalidModelVersion,
            "model_version is longer than 256 bytes or has control characters",
        ));
    }
    if frame.labels.len() > MAX_LABELS {
        return Err(Rejection::new(
            RejectReason::InvalidLabels,
            format!("{} labels, at most {MAX_LABELS}", frame.labels.len()),
        ));
    }
    if let Some((k, _)) = frame.labels.iter().find(|(k, v)| k.is_empty() || !clean_text(k) || !clean_text(v)) {
        return Err(Rejection::new(
            RejectReason::InvalidLabels,
            format!("label {k:?}: empty key, over 256 bytes or control characters"),
        ));
    }
    if let Some((i, d)) = detections
        .iter()
        .enumerate()
        .find(|(_, d)| d.class_label.len() > MAX_CLASS_LABEL_BYTES || d.class_label.chars().any(char::is_control))
    {
        let shown: String = d.class_label.chars().take(MAX_CLASS_LABEL_BYTES).collect();
        return Err(Rejection::new(
            RejectReason::InvalidClassLabel,
            format!(
                "detection {i}: class label {shown:?} is longer than {MAX_CLASS_LABEL_BYTES} bytes or has control characters"
            ),
        ));
    }
    let frame_id = match frame.frame_id.as_str() {
        "" => None,
        id if crate::truth::valid_frame_id(id) => Some(frame.frame_id),
        _ => {
            return Err(Rejection::new(
                RejectReason::InvalidFrameId,
                format!("frame_id is longer than {} bytes or has control characters", crate::truth::MAX_FRAME_ID_BYTES),
            ));
        }
    };
    let capture_secs = capture_secs(frame.capture_time, now, cfg)?;
    let content = content(frame.content, !detections.is_empty())?;
    Ok(IncomingFrame {
        source,
        camera_id,
        model_version: frame.model_version,
        labels: frame.labels,
        capture_secs,
        content,
        detections,
        frame_id,
    })
}

/// The capture time in Unix seconds, within the ingest limits; a frame without one was captured `now`.
fn capture_secs(
    capture_time: Option<prost_types::Timestamp>,
    now: SystemTime,
    cfg: &IngestConfig,
) -> Result<i64, Rejection> {
    let now_secs = unix_secs(now);
    let capture_secs = match capture_time {
        None => now_secs,
        Some(ts) => {
            if !(0..1_000_000_000).contains(&ts.nanos) || !(0..=253_402_300_799).contains(&ts.seconds) {
                return Err(Rejection::new(
                    RejectReason::InvalidTimestamp,
                    format!("capture_time {}s {}ns is not a valid time", ts.seconds, ts.nanos),
                ));
            }
            ts.seconds
        }
    };
    if capture_secs > now_secs + cfg.max_future_secs as i64 {
        return Err(Rejection::new(
            RejectReason::FutureTimestamp,
            format!(
                "captured {} s in the future (limit {} s): check the camera's clock",
                capture_secs - now_secs,
                cfg.max_future_secs
            ),
        ));
    }
    if capture_secs < now_secs - cfg.max_age_secs as i64 {
        return Err(Rejection::new(
            RejectReason::TooOld,
            format!("captured {} s ago (limit {} s)", now_secs - capture_secs, cfg.max_age_secs),
        ));
    }
    Ok(capture_secs)
}

/// The frame's content; a frame without any needs detections.
fn content(content: Option<v1::frame::Content>, has_detections: bool) -> Result<Content, Rejection> {
    Ok(match content {
        Some(v1::frame::Content::EncodedImage(bytes)) => Content::Encoded(bytes),
        Some(v1::frame::Content::RawImage(raw)) => {
            let format = match v1::raw_image::PixelFormat::try_from(raw.pixel_format) {
                Ok(v1::raw_image::PixelFormat::Rgb8) => RawFormat::Rgb8,
                Ok(v1::raw_image::PixelFormat::Gray8) => RawFormat::Gray8,
                _ => {
                    return Err(Rejection::new(
                        RejectReason::BadRawImage,
                        "raw_image.pixel_format must be RGB8 or GRAY8",
                    ));
                }
            };
            Content::Raw { pixels: raw.pixels, width: raw.width as usize, height: raw.height as usize, format }
        }
        Some(v1::frame::Content::MetricValues(mv)) if !mv.packed.is_empty() => {
            if !mv.values.is_empty() {
                return Err(Rejection::new(
                    RejectReason::InvalidMetricValue,
                    "metric_values has both `packed` and `values`: send one form",
                ));
            }
            if let Some((i, v)) = mv.packed.iter().enumerate().find(|(_, v)| v.is_infinite()) {
                return Err(Rejection::new(
                    RejectReason::InvalidMetricValue,
                    format!("packed value {i} = {v} is not finite (NaN marks a value not given)"),
                ));
            }
            Content::Packed {
                values: mv.packed,
                catalog_fingerprint: mv.catalog_fingerprint,
                perceptual_hash: mv.perceptual_hash,
            }
        }
        Some(v1::frame::Content::MetricValues(mv)) => {
            if let Some((k, v)) = mv.values.iter().find(|(_, v)| !v.is_finite()) {
                return Err(Rejection::new(
                    RejectReason::InvalidMetricValue,
                    format!("metric {k:?} = {v} is not finite"),
                ));
            }
            Content::Values { values: mv.values.into_iter().collect(), perceptual_hash: mv.perceptual_hash }
        }
        None if !has_detections => {
            return Err(Rejection::new(
                RejectReason::EmptyFrame,
                "the frame has no image, no metric values and no detections",
            ));
        }
        None => Content::None,
    })
}

/// The wire detection as the metrics crate's type (validated later, by the scorer).
pub fn detection_from_proto(d: v1::Detection) -> Detection {
    Detection {
        x_min: d.x_min,
        y_min: d.y_min,
        x_max: d.x_max,
        y_max: d.y_max,
        class_label: d.class_label,
        confidence: d.confidence,
        class_probabilities: d.class_probabilities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_class(class: &str) -> Result<IncomingFrame, Rejection> {
        with_camera_and_class("cam-1", class)
    }

    fn with_camera_and_class(camera_id: &str, class: &str) -> Result<IncomingFrame, Rejection> {
        let frame = v1::Frame { camera_id: camera_id.into(), ..Default::default() };
        let detection = Detection {
            x_min: 0.1,
            y_min: 0.1,
            x_max: 0.2,
            y_max: 0.2,
            class_label: class.into(),
            confidence: 0.9,
            class_probabilities: Vec::new(),
        };
        from_parts(frame, vec![detection], Source::Grpc, SystemTime::now(), &IngestConfig::default())
    }

    /// Blanks around a camera id go (Unicode ones too), blanks inside stay, and an id of blanks only is missing.
    #[test]
    fn camera_ids_are_trimmed() {
        let id = |camera_id: &str| with_camera_and_class(camera_id, "car").map(|f| f.camera_id).map_err(|r| r.reason);
        assert_eq!(id("cam-1"), Ok("cam-1".to_string()));
        assert_eq!(id("  cam 1\t\n"), Ok("cam 1".to_string()));
        assert_eq!(id("\u{3000}caméra\u{a0}"), Ok("caméra".to_string()));
        assert_eq!(id(" \t\u{2003}"), Err(RejectReason::MissingCameraId));
    }

    /// Issue 12: the packed edge form is read as is (NaN: not given); mixing forms or an infinite value is refused.
    #[test]
    fn packed_metric_values_are_checked_before_queueing() {
        let with = |mv: v1::MetricValues| {
            let frame = v1::Frame {
                camera_id: "cam-1".into(),
                content: Some(v1::frame::Content::MetricValues(mv)),
                ..Default::default()
            };
            from_proto(frame, Source::Grpc, SystemTime::now(), &IngestConfig::default())
        };
        let packed = |packed: Vec<f64>| v1::MetricValues { packed, catalog_fingerprint: 9, ..Default::default() };
        let ok = with(packed(vec![0.5, f64::NAN])).expect("packed values");
        assert!(matches!(ok.content, Content::Packed { ref values, catalog_fingerprint: 9, .. } if values.len() == 2));
        let reason = |r: Result<IncomingFrame, Rejection>| r.expect_err("refused").reason;
        assert_eq!(reason(with(packed(vec![0.5, f64::INFINITY]))), RejectReason::InvalidMetricValue);
        let mut both = packed(vec![0.5]);
        both.values.insert("brightness".into(), 0.5);
        assert_eq!(reason(with(both)), RejectReason::InvalidMetricValue);
    }

    /// Edge values by name are read in name order (`MetricValues.values` is a B-tree, proto/build.rs), so a frame
    /// with several bad values is refused for the same one every time.
    #[test]
    fn named_metric_values_are_read_in_name_order() {
        let with = |values: &[(&str, f64)]| {
            let values = values.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            let frame = v1::Frame {
                camera_id: "cam-1".into(),
                content: Some(v1::frame::Content::MetricValues(v1::MetricValues { values, ..Default::default() })),
                ..Default::default()
            };
            from_proto(frame, Source::Grpc, SystemTime::now(), &IngestConfig::default())
        };
        let names = ["sharpness", "area", "zeta", "brightness", "blue_ratio"];
        let ok = with(&names.map(|n| (n, 0.5))).expect("named values");
        let Content::Values { values, .. } = ok.content else { panic!("named values") };
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        assert_eq!(values.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), sorted);
        let bad = with(&[("zeta", f64::NAN), ("sharpness", f64::INFINITY), ("brightness", 0.5), ("area", f64::NAN)]);
        let message = bad.expect_err("refused").message;
        assert!(message.starts_with("metric \"area\""), "{message}");
    }

    #[test]
    fn class_labels_are_bounded_in_length_and_charset() {
        assert!(with_class("car").is_ok());
        assert!(with_class(&"x".repeat(64)).is_ok());
        assert!(with_class("").is_ok(), "an absent class is the empty label");
        for bad in ["x".repeat(65), "car\n".into(), "c\u{7}ar".into(), "\u{85}".into()] {
            let r = with_class(&bad).expect_err("refused");
            assert_eq!(r.reason, RejectReason::InvalidClassLabel, "{bad:?}");
            assert!(r.message.contains("detection 0"), "{}", r.message);
        }
    }
}

//! One Kafka message to one frame. Two formats: the protobuf `framewatch.v1.Frame` (the gRPC message) and a JSON
//! form for metric values computed at the edge:
//!
//! ```json
//! {"camera_id": "cam-7", "capture_time": "2026-11-26T10:00:00.250Z", "labels": {"site": "lot-7"},
//!  "model_version": "v3", "metrics": {"brightness": 0.41, "sharpness": 0.012}, "perceptual_hash": "0x8f3c...",
//!  "detections": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.5, "class_label": "car", "confidence": 0.91}]}
//! ```
//!
//! `capture_time` is RFC 3339 text or Unix seconds (a number). Without a camera id the message key names the
//! camera; without a capture time the message's Kafka timestamp is used, so a replay lands in the same windows.
//! Instead of `metrics`, the packed form `"packed": [0.41, null, ...], "catalog_fingerprint": "0x..."` sends one
//! value per catalog metric in catalog order (`null`: not given), as `MetricValues.packed` does.
//! Every refusal is a `Rejection` with a stable reason, like gRPC's.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use framewatch_metrics::Detection;
use framewatch_proto::v1;
use prost::Message as _;
use serde::Deserialize;

use crate::config::{IngestConfig, KafkaFormat};
use crate::frame::{IncomingFrame, Source, detection_from_proto, from_parts};
use crate::reject::{RejectReason, Rejection};
use crate::time::parse_rfc3339;
use crate::truth::{LabelResult, Labels, labels_from_proto};
use framewatch_metrics::performance::TruthBox;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFrame {
    #[serde(default)]
    camera_id: String,
    #[serde(default)]
    labels: HashMap<String, String>,
    #[serde(default)]
    model_version: String,
    capture_time: Option<JsonTime>,
    /// A B-tree, as `MetricValues.values` is (proto/build.rs): no hashing per name, and the same order every time.
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
    /// `MetricValues.packed`: JSON has no NaN, so `null` marks a value not given.
    packed: Option<Vec<Option<f64>>>,
    catalog_fingerprint: Option<JsonFingerprint>,
    perceptual_hash: Option<JsonHash>,
    /// The metrics crate's own serde form (`class_label` or `class`, optional `class_probabilities`).
    #[serde(default)]
    detections: Vec<Detection>,
    /// See `Frame.frame_id`: names the frame for ground truth that comes later.
    #[serde(default)]
    frame_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonTime {
    Unix(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonHash {
    Number(u64),
    /// Hex, with or without 0x (JSON numbers above 2^53 lose precision in many producers).
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonFingerprint {
    /// Checked in `from_json`: only integers a double holds exactly (a producer that parses JSON numbers as doubles,
    /// as JavaScript does, has already rounded a larger one).
    Number(serde_json::Number),
    /// Decimal (protobuf's JSON form of a fixed64, as grpcurl prints ListMetrics) or 0x-prefixed hex.
    Text(String),
}

/// The largest integer every JSON producer sends exactly: 2^53.
const MAX_EXACT_JSON_INTEGER: u64 = 1 << 53;

/// The JSON form of a labels-topic message (`FrameLabels`): boxes as `TruthBox`'s serde form (`class` or
/// `class_label`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLabels {
    #[serde(default)]
    frame_id: String,
    #[serde(default)]
    boxes: Vec<TruthBox>,
    #[serde(default)]
    no_objects: bool,
}

/// Reads a labels-topic message (JSON or a `framewatch.v1.FrameLabels`, as `kafka.format` says); checks come
/// later (`Labels::check`).
pub fn decode_labels(
    msg: RawMessage<'_>,
    format: KafkaFormat,
    max_bytes: usize,
) -> Result<Labels, (LabelResult, String)> {
    let payload = match msg.payload {
        None | Some([]) => return Err((LabelResult::InvalidMessage, "the message has no value".into())),
        Some(p) if p.len() > max_bytes => {
            return Err((LabelResult::InvalidMessage, format!("{} bytes, at most {max_bytes}", p.len())));
        }
        Some(p) => p,
    };
    let json = match format {
        KafkaFormat::Protobuf => false,
        KafkaFormat::Json => true,
        KafkaFormat::Auto => payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    if json {
        let j: JsonLabels = serde_json::from_slice(payload)
            .map_err(|e| (LabelResult::InvalidMessage, format!("not framewatch's JSON labels: {e}")))?;
        Ok(Labels { frame_id: j.frame_id, truth: j.boxes, no_objects: j.no_objects })
    } else {
        let l = v1::FrameLabels::decode(payload)
            .map_err(|e| (LabelResult::InvalidMessage, format!("not a framewatch.v1.FrameLabels: {e}")))?;
        Ok(labels_from_proto(l))
    }
}

/// A Kafka message's parts that matter here.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    pub payload: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    /// The message timestamp (create or log-append time), Unix milliseconds.
    pub timestamp_ms: Option<i64>,
}

pub fn decode(
    msg: RawMessage<'_>,
    format: KafkaFormat,
    now: SystemTime,
    cfg: &IngestConfig,
) -> Result<IncomingFrame, Rejection> {
    let payload = match msg.payload {
        None | Some([]) => return Err(Rejection::new(RejectReason::EmptyMessage, "the message has no value")),
        Some(p) => p,
    };
    let json = match format {
        KafkaFormat::Protobuf => false,
        KafkaFormat::Json => true,
        // '{' would start a protobuf group (field 15), which a Frame never contains.
        KafkaFormat::Auto => payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    let (mut frame, detections) = if json {
        let j: JsonFrame = serde_json::from_slice(payload)
            .map_err(|e| Rejection::new(RejectReason::InvalidJson, format!("not a framewatch JSON frame: {e}")))?;
        from_json(j)?
    } else {
        let mut frame = v1::Frame::decode(payload)
            .map_err(|e| Rejection::new(RejectReason::InvalidProtobuf, format!("not a framewatch.v1.Frame: {e}")))?;
        let detections = std::mem::take(&mut frame.detections).into_iter().map(detection_from_proto).collect();
        (frame, detections)
    };
    if frame.camera_id.trim().is_empty()
        && let Some(key) = msg.key.and_then(|k| std::str::from_utf8(k).ok())
    {
        frame.camera_id = key.to_string();
    }
    if frame.capture_time.is_none()
        && let Some(ms) = msg.timestamp_ms.filter(|&ms| ms > 0)
    {
        frame.capture_time = Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        });
    }
    from_parts(frame, detections, Source::Kafka, now, cfg)
}

/// The JSON form as a wire frame without detections, and its detections (already the metrics crate's type).
fn from_json(j: JsonFrame) -> Result<(v1::Frame, Vec<Detection>), Rejection> {
    let capture_time = match j.capture_time {
        None => None,
        Some(JsonTime::Unix(s)) if s.is_finite() && (0.0..253_402_300_800.0).contains(&s) => {
            Some(prost_types::Timestamp { seconds: s.floor() as i64, nanos: ((s - s.floor()) * 1e9) as i32 })
        }
        Some(JsonTime::Unix(s)) => {
            return Err(Rejection::new(RejectReason::InvalidTimestamp, format!("capture_time {s} is not a Unix time")));
        }
        Some(JsonTime::Text(t)) => Some(
            parse_rfc3339(&t).map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }).ok_or_else(|| {
                Rejection::new(
                    RejectReason::InvalidTimestamp,
                    format!("capture_time {t:?} is not RFC 3339 (e.g. 2026-11-26T10:00:00Z) or Unix seconds"),
                )
            })?,
        ),
    };
    let perceptual_hash = match j.perceptual_hash {
        None => None,
        Some(JsonHash::Number(n)) => Some(n),
        Some(JsonHash::Text(t)) => {
            let hex = t.trim_start_matches("0x").trim_start_matches("0X");
            Some(u64::from_str_radix(hex, 16).map_err(|_| {
                Rejection::new(RejectReason::InvalidJson, format!("perceptual_hash {t:?} is not a 64-bit hex number"))
            })?)
        }
    };
    let catalog_fingerprint = match j.catalog_fingerprint {
        None => 0,
        Some(f) => catalog_fingerprint(f)?,
    };
    let packed: Vec<f64> = j.packed.unwrap_or_default().into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    // The protobuf form's rule (frame.rs), said in this form's field names.
    if !packed.is_empty() && !j.metrics.is_empty() {
        return Err(Rejection::new(
            RejectReason::InvalidMetricValue,
            "the message has both `packed` and `metrics`: send one form",
        ));
    }
    let given = !j.metrics.is_empty() || !packed.is_empty() || perceptual_hash.is_some();
    let content = given.then_some(v1::frame::Content::MetricValues(v1::MetricValues {
        values: j.metrics,
        perceptual_hash,
        packed,
        catalog_fingerprint,
    }));
    let frame = v1::Frame {
        camera_id: j.camera_id,
        labels: j.labels,
        capture_time,
        content,
        detections: Vec::new(),
        model_version: j.model_version,
        frame_id: j.frame_id,
    };
    Ok((frame, j.detections))
}

/// A JSON `catalog_fingerprint` as the u64 of `ListMetricsResponse.catalog_fingerprint`. Fingerprints are nearly
/// always above 2^53, so a number that large is refused rather than read: it may have been rounded on the way, and
/// would then be refused later as `catalog_mismatch`, pointing at the wrong cause.
fn catalog_fingerprint(f: JsonFingerprint) -> Result<u64, Rejection> {
    let refuse = |what: String| {
        Rejection::new(
            RejectReason::InvalidJson,
            format!("catalog_fingerprint {what}: send it as a string, decimal or 0x-prefixed hex (ListMetrics)"),
        )
    };
    match f {
        JsonFingerprint::Number(n) => match n.as_u64() {
            Some(v) if v <= MAX_EXACT_JSON_INTEGER => Ok(v),
            Some(v) => Err(refuse(format!("{v} is a number above 2^53, which JSON producers may round"))),
            None => Err(refuse(format!("{n} is not a 64-bit unsigned integer"))),
        },
        JsonFingerprint::Text(t) => {
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                // from_str_radix alone would take a leading '+'
                Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u64::from_str_radix(hex, 16).ok()
                }
                Some(_) => None,
                None if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
                None => None,
            };
            parsed.ok_or_else(|| refuse(format!("{t:?} is not a 64-bit unsigned integer")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_764_151_200; // 2025-11-26T10:00:00Z

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn msg<'a>(payload: &'a [u8], key: Option<&'a [u8]>, ts: Option<i64>) -> RawMessage<'a> {
        RawMessage { payload: Some(payload), key, timestamp_ms: ts }
    }

    #[test]
    fn json_frames_become_metric_value_frames() {
        let j = br#"{"capture_time": "2025-11-26T09:59:00Z", "labels": {"site": "lot-7"}, "model_version": "v3",
            "metrics": {"brightness": 0.41}, "perceptual_hash": "0x00000000000000ff",
            "detections": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.5, "class_label": "car", "confidence": 0.9}]}"#;
        let f = decode(msg(j, Some(b"cam-7"), None), KafkaFormat::Auto, now(), &IngestConfig::default()).expect("ok");
        assert_eq!((f.camera_id.as_str(), f.capture_secs, f.model_version.as_str()), ("cam-7", NOW as i64 - 60, "v3"));
        assert_eq!(
            f.content,
            crate::frame::Content::Values { values: vec![("brightness".into(), 0.41)], perceptual_hash: Some(255) }
        );
        assert_eq!(f.detections.len(), 1);
        assert_eq!((f.detections[0].class_label.as_str(), f.detections[0].confidence), ("car", 0.9));
        assert!(f.detections[0].class_probabilities.is_empty(), "class_probabilities is optional");
    }

    /// Issue 12: the JSON form's packed values read as `MetricValues.packed`, `null` as NaN (not given).
    #[test]
    fn packed_json_becomes_packed_metric_values_with_nan_for_null() {
        let j: JsonFrame = serde_json::from_str(
            r#"{"camera_id": "c", "packed": [0.41, null, 0.012], "catalog_fingerprint": "0xcbf29ce484222325",
                "perceptual_hash": "ff"}"#,
        )
        .expect("parses");
        let (frame, _) = from_json(j).expect("ok");
        let Some(v1::frame::Content::MetricValues(mv)) = frame.content else { panic!("{:?}", frame.content) };
        assert_eq!((mv.packed.len(), mv.packed[0], mv.packed[2]), (3, 0.41, 0.012));
        assert!(mv.packed[1].is_nan(), "null is NaN: {:?}", mv.packed);
        assert_eq!((mv.catalog_fingerprint, mv.perceptual_hash), (0xcbf2_9ce4_8422_2325, Some(255)));
        assert!(mv.values.is_empty());

        let f = decode(
            msg(br#"{"packed": [null, 0.5], "catalog_fingerprint": 9}"#, Some(b"cam-7"), None),
            KafkaFormat::Auto,
            now(),
            &IngestConfig::default(),
        )
        .expect("ok");
        let crate::frame::Content::Packed { values, catalog_fingerprint: 9, perceptual_hash: None } = f.content else {
            panic!("{:?}", f.content)
        };
        assert!(values[0].is_nan() && values[1] == 0.5, "{values:?}");
    }

    #[test]
    fn catalog_fingerprints_are_hex_or_decimal_strings_or_small_numbers() {
        let fingerprint = |f: &str| {
            let j = format!(r#"{{"camera_id": "c", "packed": [0.5], "catalog_fingerprint": {f}}}"#);
            let j: JsonFrame = serde_json::from_str(&j).expect("parses");
            match from_json(j) {
                Ok((v1::Frame { content: Some(v1::frame::Content::MetricValues(mv)), .. }, _)) => {
                    Ok(mv.catalog_fingerprint)
                }
                Ok((f, _)) => panic!("{f:?}"),
                Err(r) => Err(r.reason),
            }
        };
        assert_eq!(fingerprint(r#""0xcbf29ce484222325""#), Ok(0xcbf2_9ce4_8422_2325));
        assert_eq!(fingerprint(r#""0XCBF29CE484222325""#), Ok(0xcbf2_9ce4_8422_2325));
        assert_eq!(fingerprint(r#""14695981039346656037""#), Ok(14_695_981_039_346_656_037), "decimal, as grpcurl");
        assert_eq!(fingerprint(r#""18446744073709551615""#), Ok(u64::MAX));
        assert_eq!(fingerprint("12345"), Ok(12345));
        assert_eq!(fingerprint("9007199254740992"), Ok(1 << 53), "2^53 is exact in a double");
    }

    #[test]
    fn a_bad_catalog_fingerprint_is_refused_as_invalid_json() {
        let cfg = IngestConfig::default();
        let refused = |f: &str| {
            let j = format!(r#"{{"camera_id": "c", "packed": [0.5], "catalog_fingerprint": {f}}}"#);
            decode(msg(j.as_bytes(), None, None), KafkaFormat::Json, now(), &cfg).expect_err(f)
        };
        for bad in [
            "9007199254740993",     // above 2^53: maybe rounded by the producer
            "14695981039346656037", // a real fingerprint as a number
            "1e30",                 // beyond u64
            "-1",
            "1.5",
            r#""cbf29ce484222325""#, // hex needs 0x
            r#""0x""#,
            r#""0x+ff""#,
            r#""+12""#,
            r#""""#,
            r#""18446744073709551616""#, // u64::MAX + 1
            r#""0x1cbf29ce484222325""#,  // 65 bits
        ] {
            let r = refused(bad);
            assert_eq!(r.reason, RejectReason::InvalidJson, "{bad}: {r:?}");
            assert!(r.message.contains("send it as a string"), "{bad}: {}", r.message);
        }
        // Not a number or a string at all: serde's own refusal, same reason.
        assert_eq!(refused("[1]").reason, RejectReason::InvalidJson);
    }

    /// As the protobuf form: `packed` and `metrics` together are refused, not merged.
    #[test]
    fn packed_and_metrics_together_are_refused() {
        let j = br#"{"camera_id": "c", "metrics": {"brightness": 0.4}, "packed": [0.4], "catalog_fingerprint": 9}"#;
        let r = decode(msg(j, None, None), KafkaFormat::Json, now(), &IngestConfig::default()).expect_err("both");
        assert_eq!(r.reason, RejectReason::InvalidMetricValue, "{r:?}");
        assert!(r.message.contains("`packed` and `metrics`"), "{}", r.message);
    }

    #[test]
    fn json_detections_keep_their_form() {
        let cfg = IngestConfig::default();
        let decode_json = |j: &str| decode(msg(j.as_bytes(), None, None), KafkaFormat::Json, now(), &cfg);
        let f = decode_json(
            r#"{"camera_id": "c", "detections": [{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1, "confidence": 0.5,
                "class_probabilities": [0.5, 0.5]}]}"#,
        )
        .expect("no class_label: empty, like the protobuf default");
        assert_eq!((f.detections[0].class_label.as_str(), f.detections[0].class_probabilities.len()), ("", 2));
        let unknown = decode_json(
            r#"{"camera_id": "c", "detections": [{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1, "confidence": 0.5,
                "colour": "red"}]}"#,
        );
        assert_eq!(unknown.expect_err("unknown field").reason.as_str(), "invalid_json");
        let no_confidence =
            decode_json(r#"{"camera_id": "c", "detections": [{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}]}"#);
        assert_eq!(no_confidence.expect_err("confidence is required").reason.as_str(), "invalid_json");
    }

    #[test]
    fn protobuf_frames_take_key_and_timestamp_when_missing() {
        let frame =
            v1::Frame { content: Some(v1::frame::Content::EncodedImage(vec![0xFF, 0xD8])), ..v1::Frame::default() };
        let bytes = frame.encode_to_vec();
        let ts = (NOW as i64 - 30) * 1000 + 500;
        let f = decode(msg(&bytes, Some(b"cam-1"), Some(ts)), KafkaFormat::Protobuf, now(), &IngestConfig::default())
            .expect("ok");
        assert_eq!((f.camera_id.as_str(), f.capture_secs), ("cam-1", NOW as i64 - 30));
    }

    #[test]
    fn poison_gets_a_reason() {
        let cfg = IngestConfig::default();
        let reason = |m: RawMessage<'_>, fmt| decode(m, fmt, now(), &cfg).expect_err("poison").reason.as_str();
        assert_eq!(
            reason(RawMessage { payload: None, key: None, timestamp_ms: None }, KafkaFormat::Auto),
            "empty_message"
        );
        assert_eq!(reason(msg(&[0xFF, 0xFF, 0xFF], None, None), KafkaFormat::Protobuf), "invalid_protobuf");
        assert_eq!(reason(msg(b"{\"camera_id\": 3}", None, None), KafkaFormat::Auto), "invalid_json");
        assert_eq!(
            reason(msg(b"{\"metrics\": {\"brightness\": 1}}", None, None), KafkaFormat::Json),
            "missing_camera_id"
        );
        assert_eq!(reason(msg(b"{\"camera_id\": \"c\"}", None, None), KafkaFormat::Json), "empty_frame");
        assert_eq!(
            reason(
                msg(b"{\"camera_id\": \"c\", \"capture_time\": \"yesterday\", \"metrics\": {\"a\": 1}}", None, None),
                KafkaFormat::Json
            ),
            "invalid_timestamp"
        );
        assert_eq!(
            reason(msg(b"{\"camera_id\": \"c\", \"colour\": 1}", None, None), KafkaFormat::Json),
            "invalid_json"
        );
    }
}

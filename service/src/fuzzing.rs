//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and the structured-mutation suite
//! (`tests/fuzz_inputs.rs`): each hands outside bytes to a decoder exactly as the service does and says whether
//! they were accepted. A panic, a hang or unbounded memory here is a finding; a `Refusal` with a stable reason is
//! the expected answer to junk.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framewatch_metrics::{
    Baseline, DecodeLimits, FramePixels, MetricRegistry, ScoreSettings, Scorer, decode::jpeg_quality,
};
use framewatch_proto::v1;
use prost::Message;

use crate::cameras::CameraTracker;
use crate::checkpoint::{self, CheckpointError};
use crate::config::{Config, IngestConfig, KafkaFormat};
use crate::frame::{self, Content, IncomingFrame, Source};
use crate::reject::{RejectReason, Rejection};
use crate::sources::kafka::message::{self, RawMessage};
use crate::store::{StoreSettings, WindowStore};
use crate::truth::{JoinFrame, JoinSettings, JoinStore, Labels};

/// A fixed receive time (2026-11-26T10:00:00Z), so a run is reproducible.
pub fn receive_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_687_200)
}

/// Decoding limits for fuzzing: the service's checks, with a pixel cap small enough that one input costs
/// milliseconds (the cap itself is what the service relies on against large images).
fn fuzz_settings() -> ScoreSettings {
    ScoreSettings {
        limits: DecodeLimits { max_encoded_bytes: 1 << 20, max_pixels: 1 << 20 },
        ..ScoreSettings::default()
    }
}

/// Why an entry point refused its input. `reason` is a stable label: the `reason` label of the counter the service
/// increments for it where there is one (frames, Kafka messages, checkpoint restores); `detail` is the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(reason: &'static str, detail: impl ToString) -> Refusal {
        Refusal { reason, detail: detail.to_string() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Refusal { reason: r.reason.as_str(), detail: r.message }
    }
}

/// Scores an accepted frame's pixels and detections the way a worker does.
fn score(scorer: &mut Scorer, f: &IncomingFrame) -> Result<(), Refusal> {
    let pixels = match &f.content {
        Content::Encoded(b) => FramePixels::Encoded(b),
        Content::Raw { pixels, width, height, format } => {
            FramePixels::Raw { pixels, width: *width, height: *height, format: *format }
        }
        Content::Values { .. } | Content::Packed { .. } | Content::None => FramePixels::None,
    };
    scorer.score(pixels, &f.detections).map(|_| ()).map_err(|e| Rejection::from(e).into())
}

/// Reusable state for the frame and image entry points (a worker's scorer).
#[derive(Debug)]
pub struct FrameScorer {
    scorer: Scorer,
    /// The same checks at a tiny `max_side`, so every JPEG also goes through the IDCT-scaled decode (libjpeg-turbo,
    /// the only C that sees outside bytes), whatever its size.
    scaled: Scorer,
    ingest: IngestConfig,
}

impl Default for FrameScorer {
    fn default() -> Self {
        FrameScorer {
            scorer: Scorer::new(Arc::new(MetricRegistry::standard()), fuzz_settings()),
            scaled: Scorer::new(Arc::new(MetricRegistry::standard()), {
                let mut settings = fuzz_settings();
                settings.analysis.max_side = 32;
                settings
            }),
            ingest: IngestConfig::default(),
        }
    }
}

impl FrameScorer {
    /// A protobuf `framewatch.v1.Frame` as gRPC delivers it: decode, validate (`frame::from_proto`), score.
    pub fn grpc_frame(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let wire = v1::Frame::decode(bytes).map_err(|e| Refusal::new(RejectReason::InvalidProtobuf.as_str(), e))?;
        let f = frame::from_proto(wire, Source::Grpc, receive_time(), &self.ingest)?;
        score(&mut self.scorer, &f)
    }

    /// A Kafka message value in the JSON form (and, with `auto`, protobuf), keyed by `key`.
    pub fn kafka_message(&mut self, bytes: &[u8], key: Option<&[u8]>, auto: bool) -> Result<(), Refusal> {
        let msg = RawMessage { payload: Some(bytes), key, timestamp_ms: Some(1_795_687_100_000) };
        let format = if auto { KafkaFormat::Auto } else { KafkaFormat::Json };
        let f = message::decode(msg, format, receive_time(), &self.ingest)?;
        score(&mut self.scorer, &f)
    }

    /// An encoded image (JPEG or PNG): quality estimate, decode and every pixel metric.
    pub fn image(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let _ = jpeg_quality(bytes);
        let _ = self.scaled.score(FramePixels::Encoded(bytes), &[]);
        self.scorer.score(FramePixels::Encoded(bytes), &[]).map(|_| ()).map_err(|e| Rejection::from(e).into())
    }
}

/// The ground-truth join as label sources reach it: a join holding frames `f-0` .. `f-9` (each with a car and a
/// person detected), fed label messages.
#[derive(Debug)]
pub struct LabelJoiner {
    join: JoinStore,
}

impl Default for LabelJoiner {
    fn default() -> Self {
        let mut join = JoinStore::new(JoinSettings::default(), vec![(0, Arc::from("brightness"))]);
        let detections: Vec<framewatch_metrics::Detection> = ["car", "person"]
            .iter()
            .enumerate()
            .map(|(k, class)| framewatch_metrics::Detection {
                x_min: 0.1 + k as f32 * 0.4,
                y_min: 0.2,
                x_max: 0.4 + k as f32 * 0.4,
                y_max: 0.6,
                class_label: class.to_string(),
                confidence: 0.9,
                class_probabilities: vec![],
            })
            .collect();
        let slices = ["global".to_string(), "camera_id=cam-1".to_string()];
        for i in 0..10 {
            let id = format!("f-{i}");
            let f = JoinFrame {
                frame_id: &id,
                capture_secs: LABEL_NOW,
                detections: &detections,
                slices: &slices,
                values: &[Some(0.5)],
            };
            join.offer_frame(&f, LABEL_NOW);
        }
        LabelJoiner { join }
    }
}

const LABEL_NOW: i64 = 1_795_687_200;

impl LabelJoiner {
    /// A labels-topic message (JSON, or with `auto` also `framewatch.v1.FrameLabels`): decoded, checked and joined
    /// as the Kafka source does (gRPC's `SendLabels` shares the check and the join). Accepted results are `Ok`.
    pub fn kafka_labels(&mut self, bytes: &[u8], auto: bool) -> Result<(), Refusal> {
        let msg = RawMessage { payload: Some(bytes), key: None, timestamp_ms: None };
        let format = if auto { KafkaFormat::Auto } else { KafkaFormat::Json };
        let labels = message::decode_labels(msg, format, 1 << 20).map_err(|(r, d)| Refusal::new(r.as_str(), d))?;
        labels.check(self.join.settings().max_objects).map_err(|(r, d)| Refusal::new(r.as_str(), d))?;
        let r = self.join.offer_labels(&labels, LABEL_NOW + 60);
        let _ = self.join.window(LABEL_NOW + 60);
        if r.accepted() { Ok(()) } else { Err(Refusal::new(r.as_str(), "refused by the join")) }
    }
}

/// RFC 3339 text as the Kafka JSON form's `capture_time`: the Unix seconds and nanoseconds it names. The caller
/// checks the round trip through `time::rfc3339` (a property, not a refusal).
pub fn rfc3339(bytes: &[u8]) -> Result<(i64, i32), Refusal> {
    let invalid = |detail: &str| Refusal::new(RejectReason::InvalidTimestamp.as_str(), detail);
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("not UTF-8"))?;
    crate::time::parse_rfc3339(text).ok_or_else(|| invalid("not RFC 3339"))
}

/// The TOML configuration: parsed, validated, and turned into the store's settings as `serve` does. The service
/// refuses to start on any of these, naming the key; the reasons here only sort them.
pub fn config(bytes: &[u8]) -> Result<(), Refusal> {
    let text = std::str::from_utf8(bytes).map_err(|e| Refusal::new("not_utf8", e))?;
    let cfg = Config::from_toml(text, Vec::new()).map_err(|e| Refusal::new("invalid_config", format!("{e:#}")))?;
    let registry = MetricRegistry::standard();
    StoreSettings::from_config(&cfg, |n| registry.index_of(n)).map_err(|e| Refusal::new("invalid_slices", e))?;
    Ok(())
}

/// The checkpoint read path: a file's bytes checked and decoded, then loaded into a store and camera tracker
/// built from `baseline`, then every restored slice read back as the evaluator does.
#[derive(Debug)]
pub struct CheckpointReader {
    baseline: Baseline,
    registry: MetricRegistry,
    config: Config,
}

impl CheckpointReader {
    pub fn new(baseline_json: &str) -> Result<CheckpointReader, String> {
        let baseline = Baseline::from_json(baseline_json).map_err(|e| e.to_string())?;
        Ok(CheckpointReader { baseline, registry: MetricRegistry::standard(), config: Config::default() })
    }

    fn store(&self) -> WindowStore {
        let index = |n: &str| self.registry.index_of(n);
        let settings = StoreSettings::from_config(&self.config, index).unwrap_or_else(|_| unreachable_settings());
        WindowStore::new(settings, &self.baseline, index)
    }

    /// The body bytes wrapped in a valid header (magic, length, checksum), so a fuzzer reaches the decoder.
    pub fn wrap(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + body.len());
        out.extend_from_slice(b"FWCKPT\0\x01");
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crate::fingerprint::fingerprint(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A valid checkpoint of a store that saw `frames` frames of a few cameras (a seed for mutation).
    pub fn sample(&self, frames: usize) -> Vec<u8> {
        let mut store = self.store();
        let mut cameras = CameraTracker::new(16);
        let labels = std::collections::HashMap::from([("site".to_string(), "lot-a".to_string())]);
        let values: Vec<Option<f64>> = (0..self.registry.len()).map(|i| Some(0.1 + (i % 7) as f64 / 10.0)).collect();
        let now = 1_795_687_200;
        for i in 0..frames {
            let camera = format!("cam-{}", i % 3);
            let rec = crate::store::FrameRecord {
                camera_id: &camera,
                model_version: "m1",
                labels: &labels,
                capture_secs: now - (i as i64 % 600),
                values: &values,
                classes: &["car", "person"],
            };
            store.record(&rec, now);
            cameras.observe(&camera, i as u64, Some(i as u64 % 5), now);
        }
        let c = checkpoint::Checkpoint {
            format_version: checkpoint::FORMAT_VERSION,
            written_unix_ms: now * 1000,
            compat: 7,
            group_id: "g".into(),
            offsets: vec![checkpoint::SavedOffset { topic: "frames".into(), partition: 0, next: frames as i64 }],
            store: store.export_state(),
            cameras: cameras.export_state(),
            join: sample_join(frames),
        };
        checkpoint::encode(&c).unwrap_or_default()
    }

    /// Reads a checkpoint file's bytes into a fresh store; the refusal's reason is the `result` label the service
    /// counts a failed restore under (`corrupt`, `incompatible`), with the same mapping as `Checkpointer::restore`.
    pub fn read(&self, bytes: &[u8]) -> Result<usize, Refusal> {
        let path = std::path::Path::new("fuzz.ckpt");
        let refusal = |e: CheckpointError| Refusal::new(e.result_label(), e);
        let c = checkpoint::decode(path, bytes).map_err(refusal)?;
        let mut cameras = CameraTracker::new(2000);
        cameras
            .restore_state(c.cameras)
            .map_err(|e| refusal(CheckpointError::Corrupt { path: path.into(), reason: e.to_string() }))?;
        let mut store = self.store();
        store
            .restore_state(c.store)
            .map_err(|e| refusal(CheckpointError::Incompatible { path: path.into(), reason: e.to_string() }))?;
        let now = 1_795_687_200;
        let keys = store.slice_keys();
        for k in &keys {
            let _ = store.snapshot(k.as_str(), now);
        }
        let _ = store.counters();
        let _ = cameras.snapshot();
        // The join re-matches every labelled frame it restores: arbitrary boxes must not break it either.
        let kept = store.tracked().iter().map(|t| (t.registry_index, t.name.clone())).collect();
        let mut join = JoinStore::new(JoinSettings::default(), kept);
        join.restore(c.join);
        let _ = join.window(now);
        join.expire(now);
        Ok(keys.len())
    }
}

/// A join that saw `frames` frames with ids, every third one labelled (a car, found or missed), and labels held
/// for two frames not seen.
fn sample_join(frames: usize) -> crate::truth::SavedJoin {
    let mut joiner = LabelJoiner::default();
    for i in 0..frames.min(10) {
        let x = if i % 2 == 0 { 0.1 } else { 0.7 };
        let truth = vec![framewatch_metrics::performance::TruthBox {
            x_min: x,
            y_min: 0.2,
            x_max: x + 0.3,
            y_max: 0.6,
            class_label: "car".into(),
        }];
        let id = if i % 3 == 0 { format!("f-{i}") } else { format!("unseen-{i}") };
        let _ = joiner.join.offer_labels(&Labels { frame_id: id, truth, no_objects: false }, LABEL_NOW + 1);
    }
    if frames == 0 {
        return crate::truth::SavedJoin::default();
    }
    joiner.join.export_state()
}

/// The default configuration's settings cannot fail (no predicates); this keeps the type total without a panic.
fn unreachable_settings() -> StoreSettings {
    StoreSettings {
        step_secs: 60,
        steps: 15,
        allowed_lateness_secs: 300,
        max_slices: 2000,
        idle_evict_secs: 3600,
        admit_per_sec: 20.0,
        protect_after_frames: 50,
        max_classes: 256,
        dimensions: vec![vec!["camera_id".into()]],
        predicates: Vec::new(),
    }
}

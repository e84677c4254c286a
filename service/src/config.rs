//! Service configuration: one TOML file with documented defaults, overridable by `FRAMEWATCH_*` environment
//! variables, validated at start-up with errors that name the key. Tests build `Config` values in code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use framewatch_metrics::cause::{Cause, Tolerances};
use framewatch_metrics::drift::DriftThresholds;
use serde::Deserialize;

/// A value of the pass-through tables (`kafka.properties`).
pub use toml::Value as TomlValue;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// Baseline JSON written by `framewatch baseline build`. Required for `serve`.
    pub baseline: Option<PathBuf>,
    pub pipeline: PipelineConfig,
    pub ingest: IngestConfig,
    pub windows: WindowConfig,
    pub slices: SliceConfig,
    pub evaluation: EvaluationConfig,
    pub prometheus: PrometheusConfig,
    pub alerts: AlertsConfig,
    pub kafka: KafkaConfig,
    pub checkpoint: CheckpointConfig,
    pub log: LogConfig,
    pub exemplars: ExemplarsConfig,
    pub labels: LabelsConfig,
}

/// `[labels]`: ground truth joined late with the frames it labels (frames sent with a `frame_id`; labels by
/// `IngestService.SendLabels` or the Kafka labels topic), for model performance per slice and model test cases on
/// it (`statistic = "map50"` etc.).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LabelsConfig {
    /// How long after framewatch received a frame its labels may come.
    pub max_delay_secs: u64,
    /// Performance windows span this much capture time, ending now. Labels for a frame captured earlier count
    /// nowhere (refused as `too_late`).
    pub window_secs: u64,
    /// Frames kept for the join, waiting or labelled (gauge `framewatch_label_join_bytes`); when full, the oldest
    /// goes first, counted.
    pub max_frames: usize,
    /// How long labels wait for a frame not seen yet; 0 refuses them at once as `unknown_frame`.
    pub early_secs: u64,
    /// Labels kept waiting for their frame; when full, the oldest goes first, counted.
    pub max_early: usize,
    /// Labelled objects per frame; more are refused (`too_many_labels`).
    pub max_objects: usize,
    /// Fewer labelled frames than this in a slice's performance window: no verdict for model test cases on
    /// performance (a rule's `min_frames` overrides it).
    pub min_frames: u64,
    /// A detection is a true positive at this IoU or more (precision, recall, F1; mAP@0.5 always uses 0.5).
    pub iou_threshold: f64,
    /// Precision, recall and F1 count detections at this confidence or more (mAP ranks them all).
    pub score_threshold: f32,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig {
            max_delay_secs: 86_400,
            window_secs: 86_400,
            max_frames: 200_000,
            early_secs: 600,
            max_early: 10_000,
            max_objects: 1000,
            min_frames: 30,
            iou_threshold: 0.5,
            score_threshold: 0.5,
        }
    }
}

impl LabelsConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.max_frames == 0 || self.max_early == 0 || self.max_objects == 0 {
            bail!("labels.max_frames, labels.max_early and labels.max_objects must be at least 1");
        }
        if self.max_frames > 50_000_000 || self.max_early > 10_000_000 || self.max_objects > 100_000 {
            bail!("labels: max_frames at most 50000000, max_early at most 10000000, max_objects at most 100000");
        }
        if self.window_secs == 0 || self.window_secs > 90 * 86_400 || self.max_delay_secs > 90 * 86_400 {
            bail!("labels.window_secs must be in [1, 90 days] and labels.max_delay_secs at most 90 days");
        }
        if self.early_secs > 86_400 {
            bail!("labels.early_secs must be at most 86400");
        }
        if !(self.iou_threshold > 0.0 && self.iou_threshold <= 1.0) {
            bail!("labels.iou_threshold must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            bail!("labels.score_threshold must be in [0, 1]");
        }
        Ok(())
    }
}

/// `[exemplars]`: thumbnails of frames from drifting (slice, metric) pairs, for the web view, `GetExemplars` and
/// `/exemplars`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExemplarsConfig {
    /// Memory for exemplar thumbnails, all pairs together (gauge `framewatch_exemplar_bytes`); when full, typical
    /// frames go first (oldest first), then the least extreme ones. 0 turns exemplars off.
    pub memory_mib: u64,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig { memory_mib: 32 }
    }
}

/// `[log]`: how the service writes its log (stderr). Colours only when stderr is a terminal.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one object per line, for log shippers); `--log-format` overrides it.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC (ingest, queries, health, reflection). Port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// HTTP: /metrics, /healthz, /readyz.
    pub http_addr: SocketAddr,
    /// On SIGTERM/SIGINT: health goes NOT_SERVING, in-flight frames drain for at most this long.
    pub shutdown_grace_secs: u64,
    /// Open connections per listener (gRPC and HTTP each). Past it, a new connection is closed at once and
    /// counted (`framewatch_connections_refused_total`).
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (RPCs) per gRPC connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// HTTP/2 keepalive ping interval on gRPC connections, and the TCP keepalive of both listeners: a peer that
    /// vanished (a camera behind NAT) is noticed and its connection closed. 0 turns keepalive off.
    pub keepalive_secs: u64,
    /// How long an HTTP/1 client may take to send a request's headers (and how long an idle keep-alive
    /// connection stays open), and how long a TLS handshake may take on either listener.
    pub header_timeout_secs: u64,
    /// Concurrent `QueryService.WatchAlerts` subscribers; past it, RESOURCE_EXHAUSTED.
    pub max_alert_watchers: usize,
    /// TLS for both listeners (off when `cert_path` is empty).
    pub tls: TlsConfig,
    /// Bearer tokens with roles (off when `tokens_file` is empty).
    pub auth: AuthConfig,
    /// The address people reach this service's HTTP port at (e.g. `https://framewatch.example.com`), for links
    /// in alerts (`exemplars_url`). Empty: alerts carry no link.
    pub external_url: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            shutdown_grace_secs: 10,
            max_connections: 1024,
            max_streams_per_connection: 64,
            keepalive_secs: 30,
            header_timeout_secs: 10,
            max_alert_watchers: 64,
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            external_url: String::new(),
        }
    }
}

/// `[server.tls]`: PEM files, re-read when they change (`reload_secs`), so a rotated certificate is served to
/// new connections without a restart.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (leaf first). Setting it (with `key_path`) turns TLS on for gRPC and HTTP.
    pub cert_path: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// CA bundle for client certificates: when set, every client must present one it signed (mTLS).
    pub client_ca_path: PathBuf,
    /// How often the files are checked for changes.
    pub reload_secs: f64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            client_ca_path: PathBuf::new(),
            reload_secs: 5.0,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_path.as_os_str().is_empty()
    }
}

/// `[server.auth]`: a file of `ROLE TOKEN` lines (roles `ingest`, `query`, `metrics`), re-read when it changes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens_file: PathBuf,
    /// How often the file is checked for changes.
    pub reload_secs: f64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { tokens_file: PathBuf::new(), reload_secs: 5.0 }
    }
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !self.tokens_file.as_os_str().is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Frames queued or being scored. When full, ingest waits (gRPC flow control slows the client; Kafka pauses).
    pub queue_capacity: usize,
    /// Scoring threads; 0 = one per core.
    pub workers: usize,
    /// Largest accepted encoded image.
    pub max_image_bytes: usize,
    /// Largest accepted width * height, checked from the image header before anything is decoded.
    pub max_image_pixels: u64,
    /// Memory the scoring workers may hold for decoding at once, in MiB (shared). A worker reserves an image's
    /// decode memory (`ImageHeader::decode_bytes`, about (2 x channels + 3) bytes per pixel) before decoding and
    /// waits while others hold the rest; an image that alone needs more is refused (`decode_budget_exceeded`).
    pub decode_memory_mib: u64,
    /// Analysis resolution; must equal the baseline's (checked at start-up).
    pub max_side: Option<u32>,
    /// Liveness (`/healthz`) fails when frames are queued and no frame has finished scoring for this long: a hung
    /// worker (a custom metric in an endless loop), which only a restart cures.
    pub stall_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: 256,
            workers: 0,
            max_image_bytes: 16 << 20,
            // 8K UHD (7680 x 4320 = 33.2 MP): the largest frame a camera sends; anything bigger is an outlier or
            // hostile (a 200 KB PNG can declare 50 MP and decode to 200 MB).
            max_image_pixels: 7680 * 4320,
            decode_memory_mib: 512,
            max_side: None,
            stall_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Frames captured more than this far in the future (clock skew) are rejected.
    pub max_future_secs: u64,
    /// Frames captured longer ago than this are rejected outright (`too_old`).
    pub max_age_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { max_future_secs: 300, max_age_secs: 7 * 86_400 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Sliding window length, by capture time.
    pub length_secs: u64,
    /// The window slides in steps of this (sub-window size). `length_secs` must be a multiple.
    pub step_secs: u64,
    /// A frame captured this long before "now" still lands in its window; older frames are counted as late.
    pub allowed_lateness_secs: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { length_secs: 900, step_secs: 60, allowed_lateness_secs: 300 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SliceConfig {
    /// Label dimensions that form slices, alone or combined with '+': "camera_id", "site", "site+model_version".
    /// `camera_id` and `model_version` come from the frame's fields, anything else from its labels.
    pub dimensions: Vec<String>,
    /// Slices defined by a metric: name = "metric < value" (operators < <= > >=).
    pub predicates: BTreeMap<String, String>,
    /// At most this many slices; to make room, the idlest slice that is not yet established is evicted (the
    /// idlest established one only when every slice is established), counted and logged (rate-limited).
    pub max_slices: usize,
    /// A slice with no frame for this long is evicted.
    pub idle_evict_secs: u64,
    /// New slices admitted per second once the first `max_slices` are in (a token bucket as deep as
    /// `max_slices`): a flood of fresh camera ids or label values cannot churn the store. A refused slice's frame
    /// still counts in its other slices; refusals are counted (`framewatch_slices_refused_total`).
    pub admit_per_sec: f64,
    /// A slice that has recorded this many frames is established: evicted only when no other slice can be.
    pub protect_after_frames: u64,
    /// Distinct detection classes counted per slice window; the detections of further classes are counted under
    /// `OTHER_CLASS` (`framewatch_classes_overflowed_total`), so a client inventing labels cannot grow the store.
    pub max_classes: usize,
}

impl Default for SliceConfig {
    fn default() -> Self {
        SliceConfig {
            dimensions: vec!["camera_id".into(), "site".into(), "model_version".into()],
            predicates: BTreeMap::new(),
            max_slices: 2000,
            idle_evict_secs: 3600,
            admit_per_sec: 20.0,
            protect_after_frames: 50,
            max_classes: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Seconds between drift evaluations.
    pub interval_secs: f64,
    /// The default verdict's thresholds (`[evaluation.thresholds]`: min_frames, psi, ks_statistic, cramers_v,
    /// p_value), the metrics crate's own type.
    pub thresholds: DriftThresholds,
    /// Practical tolerance per metric in its own units (`[evaluation.tolerances]`, e.g. `brightness = 0.04`,
    /// `sharpness = 0.6` for a ratio): below it no cause fires, however significant the test (METRICS.md, Causes).
    pub tolerances: Tolerances,
    /// A camera whose identical-picture streak reaches this many frames is `frozen`.
    pub frozen_frames: u64,
    /// A camera that shows another scene for this many frames is `moved`.
    pub moved_frames: u64,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            interval_secs: 5.0,
            thresholds: DriftThresholds::default(),
            tolerances: Tolerances::default(),
            frozen_frames: 30,
            moved_frames: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Slice dimensions whose slices get per-slice series on /metrics ("global" always does).
    /// Everything stays queryable over gRPC.
    pub export_dimensions: Vec<String>,
    /// Upper bound on per-slice series, counted as exported (3 per slice, 10 per metric, 11 cause rows: ~370 per
    /// slice with the whole catalog); slices past it are not exported (counted), fleet-wide slices first.
    pub series_budget: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig { export_dimensions: vec!["camera_id".into(), "site".into()], series_budget: 100_000 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Include framewatch's default rules (brightness drift, blur drift, confidence degradation, frozen camera,
    /// moved camera, class-distribution shift, ingest stalled) besides `rules`.
    pub default_rules: bool,
    pub rules: Vec<RuleConfig>,
    /// Alertmanager base URL (http://host:port, https://host:port, http://[::1]:9093, optionally with a path
    /// prefix); alerts are POSTed to {url}/api/v2/alerts. Empty: no webhook.
    pub alertmanager_url: String,
    /// PEM file of the CA certificate(s) that sign Alertmanager's certificate (https only). Unset: the system's
    /// roots.
    pub tls_ca_path: Option<PathBuf>,
    /// File holding a bearer token sent as `Authorization: Bearer ...` (re-read for every batch).
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication user; the password is read from `basic_auth_password_file` (re-read every batch).
    pub basic_auth_user: String,
    pub basic_auth_password_file: Option<PathBuf>,
    /// Longest wait for a TCP connection to Alertmanager.
    pub connect_timeout_secs: f64,
    /// Longest wait for one whole delivery attempt (connect, TLS handshake, request and answer); also bounds
    /// the final flush at shutdown.
    pub request_timeout_secs: f64,
    /// Pending webhook deliveries; when full, the oldest new batch is dropped and counted.
    pub webhook_queue: usize,
    /// Firing alerts are re-sent this often so Alertmanager keeps them active.
    pub resend_secs: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            default_rules: true,
            rules: Vec::new(),
            alertmanager_url: String::new(),
            tls_ca_path: None,
            bearer_token_file: None,
            basic_auth_user: String::new(),
            basic_auth_password_file: None,
            connect_timeout_secs: 5.0,
            request_timeout_secs: 10.0,
            webhook_queue: 256,
            resend_secs: 60,
        }
    }
}

impl AlertsConfig {
    /// The webhook keys that can be judged without touching the network or the files.
    fn validate_webhook(&self) -> anyhow::Result<()> {
        let url = self.alertmanager_url.trim();
        if url.is_empty() {
            return Ok(());
        }
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            bail!("alerts.alertmanager_url: {url:?} must start with http:// or https://");
        }
        if self.tls_ca_path.is_some() && !https {
            bail!("alerts.tls_ca_path is set but alerts.alertmanager_url is not https");
        }
        if self.bearer_token_file.is_some()
            && (!self.basic_auth_user.is_empty() || self.basic_auth_password_file.is_some())
        {
            bail!("alerts: set either alerts.bearer_token_file or alerts.basic_auth_user, not both");
        }
        if self.basic_auth_user.is_empty() != self.basic_auth_password_file.is_none() {
            bail!("alerts.basic_auth_user and alerts.basic_auth_password_file go together");
        }
        if self.basic_auth_user.contains(':') {
            bail!("alerts.basic_auth_user must not contain ':'");
        }
        for (key, v) in [
            ("alerts.connect_timeout_secs", self.connect_timeout_secs),
            ("alerts.request_timeout_secs", self.request_timeout_secs),
        ] {
            if !(v > 0.0 && v <= 300.0) {
                bail!("{key} must be in (0, 300]");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Metric the statistic is about (metric statistics only).
    #[serde(default)]
    pub metric: Option<String>,
    /// Class a performance statistic is about (e.g. "car"); unset: every class (mAP is then the mean over classes,
    /// precision, recall and F1 are summed over them).
    #[serde(default)]
    pub class: Option<String>,
    /// Slice selector: "*" (every slice but predicate slices), an exact key ("predicate=dark"), or a prefix
    /// ending in '*' ("camera_id=*", "predicate=*").
    #[serde(default = "all_slices")]
    pub slice: String,
    /// cause (1/0, see `cause`), psi, ks_statistic, ks_p_value, js_distance, wasserstein_norm, mean, mean_delta,
    /// outliers_moderate, outliers_severe, out_of_range, drift (1/0), cramers_v (class distribution), frames,
    /// seconds_since_last_frame, frozen_frames, moved_frames, frame_change (camera slices); model performance
    /// against ground truth: map50, map50_95, precision, recall, f1 (labelled frames, `[labels]`; judged once the
    /// slice has `labels.min_frames` of them, or the rule's own `min_frames`).
    pub statistic: String,
    /// ">", ">=", "<" or "<=".
    pub op: String,
    pub threshold: f64,
    /// A firing alert resolves only once the value no longer passes this (default: `threshold`).
    #[serde(default)]
    pub resolve_threshold: Option<f64>,
    /// The condition must hold this long before the alert fires.
    #[serde(default)]
    pub for_secs: u64,
    /// Metric statistics are not judged on fewer values than this (default: evaluation.min_frames).
    #[serde(default)]
    pub min_frames: Option<u64>,
    #[serde(default = "warning")]
    pub severity: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The cause this rule names (label `cause`; one of darker, brighter, blur, noise, colour_cast, compression,
    /// frozen, moved, confidence_drop, class_shift, distribution, ingest, model_test). With `statistic = "cause"`
    /// the rule's value is 1 while the evaluation diagnoses this cause on the slice. Default: `model_test` for
    /// model test cases, `distribution` otherwise.
    #[serde(default)]
    pub cause: Option<Cause>,
    /// A model test case: `statistic op threshold` is what SHOULD hold ("confidence_mean mean >= 0.7 in slice
    /// dark"); the alert fires while it does not, and pass/fail is exported.
    #[serde(default)]
    pub test: bool,
}

fn all_slices() -> String {
    "*".into()
}

fn warning() -> String {
    "warning".into()
}

/// Message format on the Kafka topics.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    /// `framewatch.v1.Frame`, the gRPC message.
    #[default]
    Protobuf,
    /// The JSON form for pre-computed metric values (README, "Kafka message formats").
    Json,
    /// JSON when the value starts with '{' (never a valid Frame encoding), protobuf otherwise.
    Auto,
}

/// librdkafka properties framewatch sets itself; the pass-through table cannot override them.
pub const KAFKA_MANAGED_PROPERTIES: &[&str] =
    &["bootstrap.servers", "group.id", "group.instance.id", "enable.auto.commit", "enable.auto.offset.store"];

/// librdkafka's default `heartbeat.interval.ms`, for checking it against the session timeout when the properties
/// do not set it.
const LIBRDKAFKA_HEARTBEAT_MS: u64 = 3000;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, "host:port,host:port". Empty: no Kafka source.
    pub brokers: String,
    pub topics: Vec<String>,
    pub group_id: String,
    pub format: KafkaFormat,
    /// Rejected messages are copied here with the reason in headers. Empty: not forwarded (still counted).
    pub dead_letter_topic: String,
    /// Ground truth for frames sent with a `frame_id`: one JSON object per message (`{"frame_id": ..., "boxes":
    /// [...], "no_objects": false}`, README "Ground truth"), read by the same consumer group. Empty: none.
    pub labels_topic: String,
    /// Offsets of recorded frames are committed this often (after a checkpoint, when checkpoints are on), and on
    /// partition revoke and shutdown.
    pub commit_interval_secs: f64,
    /// When the scoring queue stays full this long, the partitions are paused until it is half empty (a pause
    /// drops librdkafka's prefetched messages, so brief stalls only wait).
    pub pause_after_ms: u64,
    /// Static group membership (librdkafka `group.instance.id`): an instance restarted with the same id within
    /// the session timeout takes its partitions back without a rebalance. Unique per instance of the group; at
    /// most 249 of `a-z A-Z 0-9 . _ -`. Empty: dynamic membership.
    pub instance_id: String,
    /// Take `instance_id` from the host name (the `HOSTNAME` environment variable, else the kernel's host name),
    /// read once at start: a Kubernetes StatefulSet's pods keep theirs (`framewatch-0`, ...) across restarts.
    pub instance_id_from_hostname: bool,
    /// librdkafka `session.timeout.ms`: how long the group waits for a silent member before giving its
    /// partitions to others; with `instance_id`, also how long a restarting instance's partitions wait for it.
    /// `properties."session.timeout.ms"` overrides it.
    pub session_timeout_ms: u64,
    /// Any librdkafka property (security.protocol, sasl.*, ssl.*, heartbeat.interval.ms, ...), passed through.
    pub properties: BTreeMap<String, toml::Value>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            topics: vec!["framewatch-frames".into()],
            group_id: "framewatch".into(),
            format: KafkaFormat::Protobuf,
            dead_letter_topic: String::new(),
            labels_topic: String::new(),
            commit_interval_secs: 5.0,
            pause_after_ms: 250,
            instance_id: String::new(),
            instance_id_from_hostname: false,
            // librdkafka's default since 2.0 (and Kafka's since 3.0), set explicitly: older librdkafka used 10 s,
            // shorter than a pod restart, so a static member would lose its partitions while restarting.
            session_timeout_ms: 45_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// The static member id librdkafka is given (`group.instance.id`), if any.
    pub fn group_instance_id(&self) -> Option<&str> {
        (!self.instance_id.is_empty()).then_some(self.instance_id.as_str())
    }

    /// The session timeout librdkafka is given: `properties."session.timeout.ms"` when set, else
    /// `session_timeout_ms`. Also checks it against librdkafka's range and the heartbeat interval.
    pub fn session_timeout(&self) -> anyhow::Result<u64> {
        let (key, session) = match self.property_ms("session.timeout.ms")? {
            Some(ms) => ("kafka.properties.\"session.timeout.ms\"", ms),
            None => ("kafka.session_timeout_ms", self.session_timeout_ms),
        };
        // librdkafka's range; brokers narrow it further (Kafka: group.min.session.timeout.ms = 6 s,
        // group.max.session.timeout.ms = 30 min) and refuse a join outside theirs.
        if !(1..=3_600_000).contains(&session) {
            bail!("{key} must be in [1, 3600000] (librdkafka's range), not {session}");
        }
        let heartbeat = self.property_ms("heartbeat.interval.ms")?.unwrap_or(LIBRDKAFKA_HEARTBEAT_MS);
        // A member that heartbeats less often than once per session is dropped from the group between two
        // heartbeats; Kafka's guidance is a third of the session or less.
        if heartbeat >= session {
            bail!(
                "{key} ({session}) must be longer than heartbeat.interval.ms ({heartbeat}; set it in kafka.properties)"
            );
        }
        Ok(session)
    }

    /// A pass-through property that must be a whole number of milliseconds.
    fn property_ms(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let Some(v) = self.properties.get(key) else { return Ok(None) };
        let ms = match v {
            toml::Value::Integer(i) => u64::try_from(*i).ok(),
            toml::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let shown = || match v {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        ms.map(Some)
            .with_context(|| format!("kafka.properties.\"{key}\": {} is not a whole number of milliseconds", shown()))
    }

    /// Fills `instance_id` from the host name when `instance_id_from_hostname` asks for it: `hostname_env` (the
    /// `HOSTNAME` variable, set by Docker and Kubernetes), else `kernel` (the kernel's host name).
    fn resolve_instance_id(
        &mut self,
        hostname_env: Option<&str>,
        kernel: impl FnOnce() -> Option<String>,
    ) -> anyhow::Result<()> {
        if !self.instance_id_from_hostname || !self.enabled() {
            return Ok(());
        }
        if !self.instance_id.is_empty() {
            bail!("kafka.instance_id_from_hostname = true and kafka.instance_id are both set: set one");
        }
        let name = match hostname_env.map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) => h.to_string(),
            None => kernel().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).context(
                "kafka.instance_id_from_hostname: no host name (HOSTNAME is unset and the kernel's cannot be read); \
                 set kafka.instance_id",
            )?,
        };
        check_instance_id(&name).with_context(|| format!("kafka.instance_id_from_hostname: host name {name:?}"))?;
        self.instance_id = name;
        Ok(())
    }

    /// The pass-through properties as librdkafka strings.
    pub fn property_strings(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => bail!("kafka.properties.\"{k}\": {other:?} is not a string, number or boolean"),
                };
                Ok((k.clone(), s))
            })
            .collect()
    }
}

/// Kafka's rule for a `group.instance.id` (the broker refuses others): 1 to 249 of `a-z A-Z 0-9 . _ -`, and not
/// `.` or `..`.
fn check_instance_id(id: &str) -> anyhow::Result<()> {
    let chars_ok = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if id.is_empty() || id.len() > 249 || !chars_ok || id == "." || id == ".." {
        bail!("not a valid group.instance.id: 1 to 249 of a-z A-Z 0-9 . _ -, and not \".\" or \"..\"");
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint file (windows, camera state and Kafka offsets). Empty: no checkpoints.
    pub path: Option<PathBuf>,
    /// How often to checkpoint when there is no Kafka source (with Kafka: every kafka.commit_interval_secs).
    pub interval_secs: f64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { path: None, interval_secs: 30.0 }
    }
}

/// A named predicate slice: the frames on which every comparison holds (`brightness < 0.3 and sharpness < 0.01`).
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub name: String,
    pub predicate: framewatch_metrics::predicate::Predicate,
}

pub fn parse_predicate(name: &str, text: &str) -> anyhow::Result<Predicate> {
    let predicate = framewatch_metrics::predicate::Predicate::parse(text)
        .map_err(|e| anyhow::anyhow!("slices.predicates.{name}: {e}"))?;
    Ok(Predicate { name: name.to_string(), predicate })
}

impl Config {
    /// Reads a TOML file (or starts from defaults), applies `FRAMEWATCH_*` overrides from `env`, validates.
    pub fn load(
        path: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
                text.parse().with_context(|| format!("{}: not valid TOML", p.display()))?
            }
            None => toml::Table::new(),
        };
        Config::from_table(doc, env)
    }

    /// Parses TOML text (a file's contents), applies `FRAMEWATCH_*` overrides from `env`, validates: `load`
    /// without the file, for the config fuzz target.
    pub fn from_toml(text: &str, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
        Config::from_table(text.parse().context("not valid TOML")?, env)
    }

    fn from_table(doc: toml::Table, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let overrides: Vec<(String, String)> =
            env.iter().filter_map(|(k, v)| Some((k.strip_prefix("FRAMEWATCH_")?.to_string(), v.clone()))).collect();
        let mut cfg = with_overrides(doc, &overrides)?;
        let hostname = env.iter().find(|(k, _)| k == "HOSTNAME").map(|(_, v)| v.as_str());
        cfg.kafka.resolve_instance_id(hostname, || std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.labels.validate()?;
        let w = &self.windows;
        if w.step_secs == 0 || w.length_secs == 0 || !w.length_secs.is_multiple_of(w.step_secs) {
            bail!(
                "windows.length_secs ({}) must be a positive multiple of windows.step_secs ({})",
                w.length_secs,
                w.step_secs
            );
        }
        if w.length_secs / w.step_secs > 1440 {
            bail!("windows: at most 1440 steps per window (length_secs / step_secs)");
        }
        if w.allowed_lateness_secs > w.length_secs {
            bail!(
                "windows.allowed_lateness_secs ({}) cannot exceed windows.length_secs ({})",
                w.allowed_lateness_secs,
                w.length_secs
            );
        }
        let srv = &self.server;
        if srv.max_connections == 0 || srv.max_streams_per_connection == 0 || srv.max_alert_watchers == 0 {
            bail!(
                "server.max_connections, server.max_streams_per_connection and server.max_alert_watchers must be at \
                 least 1"
            );
        }
        if srv.header_timeout_secs == 0 {
            bail!("server.header_timeout_secs must be at least 1");
        }
        let url = &srv.external_url;
        if !url.is_empty()
            && (!(url.starts_with("http://") || url.starts_with("https://")) || url.chars().any(char::is_whitespace))
        {
            bail!("server.external_url ({url:?}) must be an http:// or https:// URL without spaces");
        }
        if self.exemplars.memory_mib > 4096 {
            bail!("exemplars.memory_mib ({}) must be at most 4096", self.exemplars.memory_mib);
        }
        let tls = &srv.tls;
        if tls.enabled() == tls.key_path.as_os_str().is_empty() {
            bail!("server.tls: set both cert_path and key_path (or neither)");
        }
        if !tls.enabled() && !tls.client_ca_path.as_os_str().is_empty() {
            bail!("server.tls.client_ca_path needs server.tls.cert_path and key_path (mTLS runs over TLS)");
        }
        for (key, secs) in
            [("server.tls.reload_secs", tls.reload_secs), ("server.auth.reload_secs", srv.auth.reload_secs)]
        {
            if !(secs > 0.0 && secs <= 3600.0) {
                bail!("{key} must be in (0, 3600]");
            }
        }
        if self.pipeline.stall_secs == 0 {
            bail!("pipeline.stall_secs must be at least 1");
        }
        if self.pipeline.queue_capacity == 0 {
            bail!("pipeline.queue_capacity must be at least 1");
        }
        if self.pipeline.decode_memory_mib == 0 {
            bail!("pipeline.decode_memory_mib must be at least 1");
        }
        if !(self.evaluation.interval_secs > 0.0 && self.evaluation.interval_secs <= 3600.0) {
            bail!("evaluation.interval_secs must be in (0, 3600]");
        }
        if !(self.slices.admit_per_sec > 0.0 && self.slices.admit_per_sec.is_finite()) {
            bail!("slices.admit_per_sec must be a positive number");
        }
        if self.slices.max_slices == 0 {
            bail!("slices.max_slices must be at least 1");
        }
        if self.slices.max_classes == 0 {
            bail!("slices.max_classes must be at least 1");
        }
        for d in self.slices.dimensions.iter().chain(&self.prometheus.export_dimensions) {
            if d.is_empty()
                || d.split('+').any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            {
                bail!("slices.dimensions: {d:?} is not a label name or a '+'-joined combination of label names");
            }
        }
        for (name, text) in &self.slices.predicates {
            parse_predicate(name, text)?;
        }
        let k = &self.kafka;
        if k.enabled() {
            if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
                bail!("kafka.topics: list at least one topic (and no empty names)");
            }
            if k.group_id.trim().is_empty() {
                bail!("kafka.group_id must not be empty");
            }
            if !k.labels_topic.is_empty()
                && (k.topics.contains(&k.labels_topic) || k.labels_topic == k.dead_letter_topic)
            {
                bail!("kafka.labels_topic {:?} is also a frames or dead-letter topic", k.labels_topic);
            }
            if k.topics.contains(&k.dead_letter_topic) {
                bail!("kafka.dead_letter_topic {:?} is also in kafka.topics", k.dead_letter_topic);
            }
            if !(k.commit_interval_secs > 0.0 && k.commit_interval_secs <= 3600.0) {
                bail!("kafka.commit_interval_secs must be in (0, 3600]");
            }
            for (key, _) in k.property_strings()? {
                if KAFKA_MANAGED_PROPERTIES.contains(&key.as_str()) {
                    bail!(
                        "kafka.properties.\"{key}\" is set by framewatch (use kafka.brokers / kafka.group_id / \
                         kafka.instance_id; offsets are committed only after frames are recorded)"
                    );
                }
            }
            if let Some(id) = k.group_instance_id() {
                check_instance_id(id).with_context(|| format!("kafka.instance_id {id:?}"))?;
            } else if k.instance_id_from_hostname {
                bail!("kafka.instance_id_from_hostname: the host name was not read (Config::load reads it)");
            }
            k.session_timeout()?;
        }
        self.alerts.validate_webhook()?;
        if !(self.checkpoint.interval_secs > 0.0 && self.checkpoint.interval_secs <= 86_400.0) {
            bail!("checkpoint.interval_secs must be in (0, 86400]");
        }
        Ok(())
    }

    pub fn predicates(&self) -> Vec<Predicate> {
        self.slices.predicates.iter().filter_map(|(n, t)| parse_predicate(n, t).ok()).collect()
    }
}

/// Tables whose values are passed through as strings (librdkafka properties): an override there is always the
/// raw string.
const PASS_THROUGH: &[&[&str]] = &[&["kafka", "properties"]];

/// Applies `FRAMEWATCH_*` overrides (without the prefix) to `doc` and reads the configuration. `SERVER__GRPC_ADDR`
/// sets `server.grpc_addr`; a single segment (`BASELINE`) sets a top-level key. A value is read as the key's
/// type: in a pass-through table it is the raw string; elsewhere a TOML literal when it parses as one (numbers,
/// booleans, arrays) and the key takes it, else the raw string. So a password or group id `1e3`, `007` or `true`
/// stays exactly that text instead of becoming a number.
fn with_overrides(mut doc: toml::Table, overrides: &[(String, String)]) -> anyhow::Result<Config> {
    // Overrides that went in as a non-string literal: retried as strings if the configuration does not read.
    let mut literals = Vec::new();
    for (key, value) in overrides {
        let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            bail!("environment variable FRAMEWATCH_{key}: empty key segment");
        }
        let raw = toml::Value::String(value.clone());
        let passed_through = PASS_THROUGH.iter().any(|t| path.len() > t.len() && path[..t.len()] == **t);
        let literal = (!passed_through)
            .then(|| format!("v = {value}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v")))
            .flatten()
            .filter(|v| !v.is_str());
        if literal.is_some() {
            literals.push((key.as_str(), path.clone(), raw.clone()));
        }
        set_key(&mut doc, key, &path, literal.unwrap_or(raw))?;
    }
    let read = |doc: &toml::Table| toml::Value::Table(doc.clone()).try_into::<Config>();
    let mut result = read(&doc);
    for (key, path, raw) in literals {
        let Err(e) = &result else { break };
        let before = e.to_string();
        let literal = set_key(&mut doc, key, &path, raw)?;
        let retry = read(&doc);
        match &retry {
            // As a string, this key reads (or the first error is now elsewhere): keep the string.
            Ok(_) => result = retry,
            Err(e) if e.to_string() != before => result = retry,
            Err(_) => {
                if let Some(v) = literal {
                    set_key(&mut doc, key, &path, v)?;
                }
            }
        }
    }
    result.context("invalid configuration")
}

/// Sets `path` in `doc` (creating tables on the way); the value it replaces.
fn set_key(
    doc: &mut toml::Table,
    key: &str,
    path: &[String],
    value: toml::Value,
) -> anyhow::Result<Option<toml::Value>> {
    let mut table = doc;
    for seg in &path[..path.len() - 1] {
        let entry = table.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .with_context(|| format!("environment variable FRAMEWATCH_{key}: {seg} is not a table"))?;
    }
    Ok(table.insert(path[path.len() - 1].clone(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_bind_to_loopback_and_validate() {
        let c = Config::load(None, env(&[])).expect("defaults");
        assert_eq!(c.server.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.server.http_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(c.windows.length_secs, 900);
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let c = Config::load(
            None,
            env(&[
                ("FRAMEWATCH_SERVER__GRPC_ADDR", "127.0.0.1:0"),
                ("FRAMEWATCH_PIPELINE__WORKERS", "3"),
                ("FRAMEWATCH_BASELINE", "/tmp/b.json"),
                ("FRAMEWATCH_SLICES__DIMENSIONS", "[\"camera_id\"]"),
                ("OTHER", "ignored"),
            ]),
        )
        .expect("overrides");
        assert_eq!(c.server.grpc_addr.port(), 0);
        assert_eq!(c.pipeline.workers, 3);
        assert_eq!(c.baseline, Some(PathBuf::from("/tmp/b.json")));
        assert_eq!(c.slices.dimensions, vec!["camera_id".to_string()]);
    }

    #[test]
    fn environment_overrides_keep_their_text_where_the_key_is_a_string() {
        let c = Config::load(
            None,
            env(&[
                ("FRAMEWATCH_KAFKA__BROKERS", "b:9092"),
                ("FRAMEWATCH_KAFKA__GROUP_ID", "007"),
                ("FRAMEWATCH_KAFKA__PROPERTIES__SASL.PASSWORD", "1e3"),
                ("FRAMEWATCH_KAFKA__PROPERTIES__SASL.USERNAME", "true"),
                ("FRAMEWATCH_ALERTS__BASIC_AUTH_USER", "12345"),
                ("FRAMEWATCH_PIPELINE__WORKERS", "3"),
                ("FRAMEWATCH_EVALUATION__INTERVAL_SECS", "1e1"),
            ]),
        )
        .expect("overrides");
        assert_eq!(c.kafka.group_id, "007");
        let props = c.kafka.property_strings().expect("strings");
        assert!(props.contains(&("sasl.password".into(), "1e3".into())), "{props:?}");
        assert!(props.contains(&("sasl.username".into(), "true".into())), "{props:?}");
        assert_eq!(c.alerts.basic_auth_user, "12345");
        // Typed keys still take literals, and a value that fits neither way is an error naming the key.
        assert_eq!((c.pipeline.workers, c.evaluation.interval_secs), (3, 10.0));
        let e =
            format!("{:#}", Config::load(None, env(&[("FRAMEWATCH_PIPELINE__WORKERS", "1e3")])).expect_err("float"));
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("fw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("bad.toml");
        std::fs::write(&p, "[windows]\nlength_secs = 100\nstep_secs = 60\n").expect("write");
        let e = Config::load(Some(&p), env(&[])).expect_err("not a multiple");
        assert!(e.to_string().contains("windows.length_secs"), "{e}");
        std::fs::write(&p, "[server]\ngrpc_adr = \"x\"\n").expect("write");
        let e = format!("{:#}", Config::load(Some(&p), env(&[])).expect_err("typo"));
        assert!(e.contains("grpc_adr"), "{e}");
        std::fs::write(&p, "[slices.predicates]\ndark = \"brightness ~ 3\"\n").expect("write");
        let e = Config::load(Some(&p), env(&[])).expect_err("bad predicate");
        assert!(e.to_string().contains("slices.predicates.dark"), "{e}");
        let e =
            format!("{:#}", Config::load(None, env(&[("FRAMEWATCH_PIPELINE__WORKERS", "many")])).expect_err("type"));
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn kafka_settings_are_checked() {
        let c = Config::load(
            None,
            env(&[
                ("FRAMEWATCH_KAFKA__BROKERS", "127.0.0.1:9092"),
                ("FRAMEWATCH_KAFKA__TOPICS", "[\"frames\"]"),
                ("FRAMEWATCH_KAFKA__FORMAT", "auto"),
                ("FRAMEWATCH_KAFKA__PROPERTIES__SESSION.TIMEOUT.MS", "6000"),
            ]),
        )
        .expect("kafka");
        assert!(c.kafka.enabled());
        assert_eq!(c.kafka.format, KafkaFormat::Auto);
        assert_eq!(c.kafka.property_strings().expect("props"), [("session.timeout.ms".into(), "6000".into())]);
        let e = Config::load(
            None,
            env(&[
                ("FRAMEWATCH_KAFKA__BROKERS", "b:9092"),
                ("FRAMEWATCH_KAFKA__PROPERTIES__ENABLE.AUTO.COMMIT", "true"),
            ]),
        )
        .expect_err("managed property");
        assert!(e.to_string().contains("enable.auto.commit"), "{e}");
        let e = Config::load(None, env(&[("FRAMEWATCH_KAFKA__BROKERS", "b:9092"), ("FRAMEWATCH_KAFKA__TOPICS", "[]")]))
            .expect_err("no topics");
        assert!(e.to_string().contains("kafka.topics"), "{e}");
    }

    /// Issue #14: static membership from a configured id or the host name, checked by Kafka's rule with the key
    /// named.
    #[test]
    fn kafka_instance_id_comes_from_the_key_or_the_host_name_and_is_checked() {
        let kafka = [("FRAMEWATCH_KAFKA__BROKERS", "b:9092")];
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, env(&[&kafka[..], pairs].concat())).map_err(|e| format!("{e:#}"))
        };
        assert_eq!(load(&[]).expect("dynamic").kafka.group_instance_id(), None);
        let c = load(&[("FRAMEWATCH_KAFKA__INSTANCE_ID", "framewatch-0"), ("HOSTNAME", "other")]).expect("set");
        assert_eq!(c.kafka.group_instance_id(), Some("framewatch-0"), "the key wins: the host name is not asked for");
        let c = load(&[("FRAMEWATCH_KAFKA__INSTANCE_ID", "123")]).expect("digits stay a string");
        assert_eq!(c.kafka.group_instance_id(), Some("123"));
        let from_host = ("FRAMEWATCH_KAFKA__INSTANCE_ID_FROM_HOSTNAME", "true");
        let c = load(&[from_host, ("HOSTNAME", "framewatch-2")]).expect("from HOSTNAME");
        assert_eq!(c.kafka.group_instance_id(), Some("framewatch-2"));

        for bad in ["a b", "..", "caf\u{e9}", &"x".repeat(250)] {
            let e = load(&[("FRAMEWATCH_KAFKA__INSTANCE_ID", bad)]).expect_err(bad);
            assert!(e.starts_with("kafka.instance_id ") && e.contains("not a valid group.instance.id"), "{e}");
        }
        assert!(load(&[("FRAMEWATCH_KAFKA__INSTANCE_ID", &"x".repeat(249))]).is_ok(), "249 is allowed");
        let e = load(&[from_host, ("HOSTNAME", "pod_with space")]).expect_err("bad host name");
        assert!(e.starts_with("kafka.instance_id_from_hostname: host name \"pod_with space\""), "{e}");
        let e = load(&[from_host, ("FRAMEWATCH_KAFKA__INSTANCE_ID", "a"), ("HOSTNAME", "b")]).expect_err("both");
        assert!(e.contains("set one"), "{e}");

        // Without HOSTNAME the kernel's name is read; neither: the key is named.
        let enabled =
            KafkaConfig { brokers: "b:9092".into(), instance_id_from_hostname: true, ..KafkaConfig::default() };
        let mut k = enabled.clone();
        k.resolve_instance_id(None, || Some("node-7\n".into())).expect("kernel");
        assert_eq!(k.group_instance_id(), Some("node-7"));
        let mut k = enabled;
        let e = k.resolve_instance_id(Some(" "), || None).expect_err("none");
        assert!(e.to_string().starts_with("kafka.instance_id_from_hostname: no host name"), "{e}");
    }

    /// Issue #14: the session timeout is set explicitly (45 s), overridable in the properties, and checked against
    /// librdkafka's range and the heartbeat interval, naming the key that was set.
    #[test]
    fn kafka_session_timeout_has_a_default_and_is_checked() {
        let kafka = [("FRAMEWATCH_KAFKA__BROKERS", "b:9092")];
        let load = |pairs: &[(&str, &str)]| {
            Config::load(None, env(&[&kafka[..], pairs].concat())).map_err(|e| format!("{e:#}"))
        };
        assert_eq!(load(&[]).expect("default").kafka.session_timeout().expect("ok"), 45_000);
        let c = load(&[("FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS", "30000")]).expect("key");
        assert_eq!(c.kafka.session_timeout().expect("ok"), 30_000);
        let c = load(&[
            ("FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS", "30000"),
            ("FRAMEWATCH_KAFKA__PROPERTIES__SESSION.TIMEOUT.MS", "6000"),
        ])
        .expect("property");
        assert_eq!(c.kafka.session_timeout().expect("ok"), 6000, "the pass-through property overrides the key");

        let e = load(&[("FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS", "0")]).expect_err("zero");
        assert!(e.starts_with("kafka.session_timeout_ms must be in [1, 3600000]"), "{e}");
        let e = load(&[("FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS", "3600001")]).expect_err("too long");
        assert!(e.starts_with("kafka.session_timeout_ms must be in"), "{e}");
        let e = load(&[("FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS", "3000")]).expect_err("not above the heartbeat");
        assert!(e.contains("kafka.session_timeout_ms (3000) must be longer than heartbeat.interval.ms (3000"), "{e}");
        let e = load(&[
            ("FRAMEWATCH_KAFKA__PROPERTIES__SESSION.TIMEOUT.MS", "6000"),
            ("FRAMEWATCH_KAFKA__PROPERTIES__HEARTBEAT.INTERVAL.MS", "6000"),
        ])
        .expect_err("heartbeat from the properties");
        assert!(e.starts_with("kafka.properties.\"session.timeout.ms\" (6000) must be longer"), "{e}");
        let e = load(&[("FRAMEWATCH_KAFKA__PROPERTIES__SESSION.TIMEOUT.MS", "soon")]).expect_err("not a number");
        assert!(e.contains("kafka.properties.\"session.timeout.ms\": \"soon\" is not a whole number"), "{e}");
        let e = load(&[("FRAMEWATCH_KAFKA__PROPERTIES__GROUP.INSTANCE.ID", "x")]).expect_err("managed");
        assert!(e.contains("kafka.instance_id"), "{e}");
    }

    #[test]
    fn webhook_settings_are_checked() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs)).map_err(|e| e.to_string());
        let url = ("FRAMEWATCH_ALERTS__ALERTMANAGER_URL", "https://[::1]:9093");
        let c =
            load(&[url, ("FRAMEWATCH_ALERTS__TLS_CA_PATH", "/ca.pem"), ("FRAMEWATCH_ALERTS__BEARER_TOKEN_FILE", "/t")])
                .expect("https with a CA and a token");
        assert_eq!((c.alerts.connect_timeout_secs, c.alerts.request_timeout_secs), (5.0, 10.0));
        let e = load(&[("FRAMEWATCH_ALERTS__ALERTMANAGER_URL", "ftp://am"), ("OTHER", "")]).expect_err("scheme");
        assert!(e.contains("alerts.alertmanager_url"), "{e}");
        let e =
            load(&[("FRAMEWATCH_ALERTS__ALERTMANAGER_URL", "http://am"), ("FRAMEWATCH_ALERTS__TLS_CA_PATH", "/ca")])
                .expect_err("a CA for http");
        assert!(e.contains("alerts.tls_ca_path"), "{e}");
        let e =
            load(&[url, ("FRAMEWATCH_ALERTS__BEARER_TOKEN_FILE", "/t"), ("FRAMEWATCH_ALERTS__BASIC_AUTH_USER", "u")])
                .expect_err("two kinds of auth");
        assert!(e.contains("alerts.bearer_token_file"), "{e}");
        let e = load(&[url, ("FRAMEWATCH_ALERTS__BASIC_AUTH_USER", "u")]).expect_err("user without password");
        assert!(e.contains("alerts.basic_auth_password_file"), "{e}");
        let e = load(&[url, ("FRAMEWATCH_ALERTS__REQUEST_TIMEOUT_SECS", "0")]).expect_err("zero timeout");
        assert!(e.contains("alerts.request_timeout_secs"), "{e}");
    }

    #[test]
    fn predicates_parse() {
        let p = parse_predicate("dark", "brightness < 0.25").expect("parse");
        let c = &p.predicate.conditions;
        assert_eq!((c.len(), c[0].metric.as_str(), c[0].threshold), (1, "brightness", 0.25));
        let rain = parse_predicate("heavy_rain", "brightness < 0.3 and sharpness < 0.01").expect("conjunction");
        assert_eq!(rain.predicate.conditions.len(), 2);
        let e = parse_predicate("x", "brightness <= abc").expect_err("not a number");
        assert!(e.to_string().contains("slices.predicates.x"), "{e}");
    }
}

//! Kafka source: a consumer-group member on its own thread (librdkafka's poll loop and rebalance callbacks run
//! there), feeding the scoring pipeline.
//!
//! Delivery is at-least-once and offsets follow the window store:
//! - a message's offset becomes committable only when its frame is recorded (or refused) and every earlier message
//!   of its partition is too (`Book`); librdkafka never stores or commits offsets on its own
//!   (`enable.auto.offset.store=false`, `enable.auto.commit=false`);
//! - every `kafka.commit_interval_secs`, on partition revoke and on shutdown: with checkpoints, in-flight frames are
//!   awaited, the store is checkpointed together with those offsets, then the offsets are committed (so the
//!   committed offset is never ahead of a checkpoint); without, the committable offsets are committed;
//! - on assignment, a partition found in the restored checkpoint resumes from the larger of the checkpoint's
//!   offset and the group's committed offset, so frames already in the restored windows are not counted twice.
//!
//! Backpressure: when the scoring queue is full, the assigned partitions are paused (librdkafka stops fetching and
//! drops what it prefetched) until the queue has room; memory stays bounded by the queue. The consumer is polled
//! all the while, so rebalances are served and `max.poll.interval.ms` does not expire.
//! Poison messages are refused with a reason, counted, optionally copied to a dead-letter topic, and their offset
//! moves on like any other.

mod backpressure;
mod batch;
mod book;
mod consumer;
mod dead_letter;
mod health;
pub mod message;
mod rebalance;
mod telemetry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::truth::Truth;

use crate::checkpoint::{Checkpointer, SavedOffset};
use crate::config::{IngestConfig, KafkaConfig};
use crate::http::{GroupMembership, NotReadyReason};
use crate::pipeline::PipelineHandle;
use crate::telemetry::Telemetry;
use crate::time::Clock;
use book::Book;
use consumer::{Ctx, ErrorLog, Shared};
use dead_letter::DeadLetters;
use health::LastError;
pub use telemetry::KafkaTelemetry;

/// The running source.
pub struct KafkaSource {
    thread: Option<JoinHandle<()>>,
    /// Closed when the poll thread ends (its consumer closed), however it ends.
    ended: tokio::sync::oneshot::Receiver<()>,
    ready: Arc<AtomicBool>,
    not_ready_reason: NotReadyReason,
    group: GroupMembership,
    /// False once the poll thread has ended, whether by shutdown or by a panic (liveness).
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("ready", &self.ready.load(Ordering::SeqCst)).finish()
    }
}

/// What the source needs from the service.
#[derive(Debug)]
pub struct KafkaDeps {
    pub pipeline: PipelineHandle,
    pub frames: Telemetry,
    pub telemetry: KafkaTelemetry,
    pub clock: Arc<dyn Clock>,
    pub ingest: IngestConfig,
    pub checkpointer: Option<Arc<Checkpointer>>,
    /// Offsets from the restored checkpoint.
    pub resume_from: Vec<SavedOffset>,
    /// For waiting on the runtime from the poll thread (backpressure).
    pub runtime: tokio::runtime::Handle,
    /// Longest wait for in-flight frames at shutdown.
    pub grace: Duration,
    /// The largest message accepted (`pipeline.max_image_bytes` plus room for predictions and labels); larger
    /// ones are refused unread. Also bounds what librdkafka fetches and receives (`client_config`).
    pub max_message_bytes: usize,
    /// The source's branch of the service's shutdown tree: cancelled, it stops consuming and drains.
    pub stop: CancellationToken,
    /// Where messages of `kafka.labels_topic` go (ground truth joined by frame id).
    pub truth: Truth,
}

/// Who a client configuration is for: consumer-only properties are not given to the producer (librdkafka warns).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Consumer,
    DeadLetterProducer,
}

/// Room for the dead-letter headers (reason, error text, origin) beside a message of the largest accepted size.
const DEAD_LETTER_HEADERS: usize = 64 << 10;

/// librdkafka's size limits, from the largest message framewatch accepts (`max_message`:
/// `pipeline.max_image_bytes` plus 1 MiB), instead of its defaults (50 MB fetches, 100 MB responses):
/// - `message.max.bytes`, `fetch.max.bytes` and `max.partition.fetch.bytes`: one accepted message;
/// - `receive.message.max.bytes`: twice that. A broker returns a partition's first record batch even when it is
///   over the fetch limits (so a consumer can always make progress), so a message up to about twice the limit is
///   still received, and refused unread (`message_too_large`). A response over this cannot be received at all and
///   the partition stalls with client errors: keep the topic's `max.message.bytes` below it.
fn size_bounds(max_message: usize, role: Role) -> Vec<(&'static str, String)> {
    // librdkafka's own ranges: message.max.bytes up to 1e9, the others up to INT_MAX.
    let message = max_message.clamp(1000, 1_000_000_000);
    match role {
        Role::Consumer => vec![
            ("message.max.bytes", message.to_string()),
            ("fetch.max.bytes", message.to_string()),
            ("max.partition.fetch.bytes", message.to_string()),
            ("receive.message.max.bytes", (2 * message + 512).min(i32::MAX as usize).to_string()),
        ],
        Role::DeadLetterProducer => {
            vec![("message.max.bytes", (message + DEAD_LETTER_HEADERS).min(1_000_000_000).to_string())]
        }
    }
}

fn client_config(cfg: &KafkaConfig, max_message: usize, role: Role) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("statistics.interval.ms", "5000")
        .set("reconnect.backoff.max.ms", "10000");
    if role == Role::Consumer {
        // Prefetched messages per partition, in KiB (librdkafka's default is 64 MiB): bounds memory while the
        // scoring queue is full. Overridable in kafka.properties.
        c.set("queued.max.messages.kbytes", "16384")
            // When that prefetch queue is full, librdkafka waits this long before fetching again (default 1000
            // ms): with a scoring queue that is quicker to drain than a second, the default starved the workers
            // (pre-scored events: 21k/s with it, 98k/s with 10 ms; BENCHMARKS.md).
            .set("fetch.queue.backoff.ms", "10")
            // Explicit rather than the linked librdkafka's default (10 s before 2.0): with static membership it is
            // how long a restarting instance's partitions wait for it (README, "Restarts and static membership").
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string());
    }
    for (k, v) in size_bounds(max_message, role) {
        c.set(k, v);
    }
    // Last, so kafka.properties can override any of the above.
    for (k, v) in cfg.property_strings()? {
        c.set(k, v);
    }
    Ok(c)
}

/// The group member's configuration: offsets stored and committed only by the book, static membership when
/// configured.
fn consumer_config(cfg: &KafkaConfig, max_message: usize) -> anyhow::Result<ClientConfig> {
    let mut cc = client_config(cfg, max_message, Role::Consumer)?;
    cc.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(id) = cfg.group_instance_id() {
        // Static membership: a restart within the session timeout takes the same partitions back, with no
        // rebalance (and no LeaveGroup on shutdown: the group keeps the partitions for the restarted instance).
        cc.set("group.instance.id", id);
    }
    if !cfg.properties.contains_key("auto.offset.reset") {
        // A new group starts at the beginning: frames already on the topic are part of the stream.
        cc.set("auto.offset.reset", "earliest");
    }
    Ok(cc)
}

/// The group member, subscribed to the topics.
fn subscribe(cfg: &KafkaConfig, shared: Arc<Shared>) -> anyhow::Result<BaseConsumer<Ctx>> {
    let cc = consumer_config(cfg, shared.max_message_bytes)?;
    let consumer: BaseConsumer<Ctx> =
        cc.create_with_context(Ctx { shared }).context("kafka: invalid consumer configuration")?;
    let mut topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    if !cfg.labels_topic.is_empty() {
        topics.push(&cfg.labels_topic);
    }
    consumer.subscribe(&topics).context("kafka: cannot subscribe")?;
    Ok(consumer)
}

impl KafkaSource {
    /// Creates the consumer (no broker contact yet: an unreachable broker is survived and reported on /readyz)
    /// and starts the poll thread.
    pub fn start(cfg: KafkaConfig, deps: KafkaDeps) -> anyhow::Result<KafkaSource> {
        let ready = Arc::new(AtomicBool::new(false));
        let not_ready_reason = NotReadyReason::default();
        let group = GroupMembership::default();
        let shared = Arc::new(Shared {
            dead_letters: DeadLetters::start(&cfg, deps.max_message_bytes, &deps.telemetry)?,
            ingest: deps.ingest,
            telemetry: deps.telemetry,
            frames: deps.frames,
            clock: deps.clock,
            pipeline: deps.pipeline,
            checkpointer: deps.checkpointer,
            book: Mutex::new(Book::default()),
            resume_from: Mutex::new(deps.resume_from.into_iter().map(|o| ((o.topic, o.partition), o.next)).collect()),
            committed: Mutex::new(HashMap::new()),
            ready: ready.clone(),
            group: group.clone(),
            last_error: LastError::new(not_ready_reason.clone()),
            error_log: Mutex::new(ErrorLog::new()),
            revoked: Mutex::new(Vec::new()),
            rebalanced: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            max_message_bytes: deps.max_message_bytes,
            truth: deps.truth,
            config: cfg.clone(),
        });
        let consumer = subscribe(&cfg, shared.clone())?;
        let alive = Arc::new(AtomicBool::new(true));
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let (stop, runtime, grace, alive) = (deps.stop, deps.runtime, deps.grace, alive.clone());
            std::thread::Builder::new()
                .name("framewatch-kafka".into())
                .spawn(move || {
                    // Dropped when this thread ends, after the consumer inside `run` has closed.
                    let _ended = ended_tx;
                    let ready = shared.ready.clone();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        consumer::run(consumer, shared, stop, runtime, grace)
                    }));
                    alive.store(false, Ordering::SeqCst);
                    if r.is_err() {
                        // Never silently: /readyz and /healthz say so and the log has the panic above this line.
                        ready.store(false, Ordering::SeqCst);
                        tracing::error!("kafka source stopped after a panic: no more messages are consumed");
                    }
                })
                .context("cannot start the kafka thread")?
        };
        tracing::info!(
            brokers = %cfg.brokers,
            topics = ?cfg.topics,
            group = %cfg.group_id,
            instance = cfg.group_instance_id().unwrap_or("(dynamic)"),
            "kafka source started"
        );
        Ok(KafkaSource { thread: Some(thread), ended, ready, not_ready_reason, group, alive })
    }

    /// True while at least one broker connection is up.
    pub fn ready(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Why no broker is reachable, while none is (for /readyz).
    pub fn not_ready_reason(&self) -> NotReadyReason {
        self.not_ready_reason.clone()
    }

    /// Where the member stands in its consumer group (for /readyz).
    pub fn group(&self) -> GroupMembership {
        self.group.clone()
    }

    /// False once the poll thread has ended.
    pub fn alive(&self) -> Arc<AtomicBool> {
        self.alive.clone()
    }

    /// Waits at most `limit` for the poll thread, which (once its `stop` token is cancelled) stops consuming,
    /// waits for in-flight frames, writes the final checkpoint, commits and leaves the group. True when it ended.
    ///
    /// Bounded because librdkafka's final commit and consumer close can block for good while no broker answers
    /// (confluentinc/librdkafka#3740, #4519): past the limit the thread is left behind, the service stops anyway
    /// and the process exit ends it. The checkpoint is written before the commit, so nothing is lost; offsets not
    /// committed are read again after a restart (at-least-once) and recognised by the checkpoint's offsets.
    pub async fn stopped_within(mut self, limit: Duration) -> bool {
        let ended = tokio::time::timeout(limit, &mut self.ended).await.is_ok();
        if ended {
            if let Some(t) = self.thread.take() {
                // The thread is past its last statement: joining is immediate.
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        } else {
            tracing::warn!(
                ?limit,
                "kafka: the consumer did not close in time (no broker answers?); stopping without waiting for it"
            );
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig { brokers: "127.0.0.1:9".into(), ..KafkaConfig::default() }
    }

    /// Issue #11 (Kafka): the fetch and receive limits follow `pipeline.max_image_bytes` (16 MiB + 1 MiB by
    /// default) instead of librdkafka's 50 MB / 100 MB, in a combination librdkafka accepts.
    #[test]
    fn fetch_and_message_sizes_follow_the_largest_accepted_message() {
        let max_message = (16 << 20) + (1 << 20);
        let c = client_config(&config(), max_message, Role::Consumer).expect("config");
        let expect = max_message.to_string();
        for key in ["message.max.bytes", "fetch.max.bytes", "max.partition.fetch.bytes"] {
            assert_eq!(c.get(key), Some(expect.as_str()), "{key}");
        }
        assert_eq!(c.get("receive.message.max.bytes"), Some((2 * max_message + 512).to_string().as_str()));
        let consumer: Result<BaseConsumer, _> = c.clone().set("group.id", "g").create();
        assert!(consumer.is_ok(), "librdkafka refuses the bounds: {:?}", consumer.err());

        // A tiny limit stays within librdkafka's ranges.
        let mut c = client_config(&config(), 10, Role::Consumer).expect("config");
        assert_eq!(c.get("fetch.max.bytes"), Some("1000"));
        assert!(c.set("group.id", "g").create::<BaseConsumer>().is_ok());
    }

    /// Issue #14: the member is configured with the session timeout framewatch chose (or the one the properties
    /// set) and, with an instance id, as a static member; librdkafka accepts the combination.
    #[test]
    fn the_consumer_gets_the_session_timeout_and_the_static_member_id() {
        let c = consumer_config(&config(), 1 << 20).expect("config");
        assert_eq!(c.get("session.timeout.ms"), Some("45000"));
        assert_eq!(c.get("group.instance.id"), None, "dynamic membership by default");

        let mut cfg = KafkaConfig { instance_id: "framewatch-0".into(), session_timeout_ms: 30_000, ..config() };
        let c = consumer_config(&cfg, 1 << 20).expect("config");
        assert_eq!((c.get("group.instance.id"), c.get("session.timeout.ms")), (Some("framewatch-0"), Some("30000")));
        assert!(c.create::<BaseConsumer>().is_ok());
        cfg.properties.insert("session.timeout.ms".into(), toml::Value::Integer(6000));
        let c = consumer_config(&cfg, 1 << 20).expect("config");
        assert_eq!(c.get("session.timeout.ms"), Some("6000"), "kafka.properties overrides");
    }

    #[test]
    fn the_pass_through_properties_override_the_bounds() {
        let mut cfg = config();
        cfg.properties.insert("fetch.max.bytes".into(), toml::Value::Integer(5_000_000));
        let c = client_config(&cfg, 1 << 20, Role::Consumer).expect("config");
        assert_eq!(c.get("fetch.max.bytes"), Some("5000000"));
    }
}

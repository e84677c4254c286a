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
//! drops what it prefetched) until the queue has room; memory stays bounded by the queue.
//! Poison messages are refused with a reason, counted, optionally copied to a dead-letter topic, and their offset
//! moves on like any other.

pub mod message;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpointer, SavedOffset};
use crate::config::{IngestConfig, KafkaConfig};
use crate::frame::Source;
use crate::pipeline::{Decode, Job, Outcome, PipelineHandle, TrySubmitError, Work};
use crate::reject::{RejectReason, Rejection};
use crate::telemetry::Telemetry;
use crate::time::Clock;

type Labels = Vec<(String, String)>;

fn topic_labels(topic: &str) -> Labels {
    vec![("topic".into(), topic.into())]
}

fn partition_labels(topic: &str, partition: i32) -> Labels {
    vec![("topic".into(), topic.into()), ("partition".into(), partition.to_string())]
}

/// Kafka source metrics.
#[derive(Debug, Clone, Default)]
pub struct KafkaTelemetry {
    pub consumed: Family<Labels, Counter>,
    pub rejected: Family<Labels, Counter>,
    pub dead_letters: Family<Labels, Counter>,
    pub commits: Family<[(&'static str, &'static str); 1], Counter>,
    pub rebalances: Family<[(&'static str, &'static str); 1], Counter>,
    pub errors: Family<Labels, Counter>,
    pub lag: Family<Labels, Gauge>,
    pub high_watermark: Family<Labels, Gauge>,
    pub committed_offset: Family<Labels, Gauge>,
    pub assigned: Gauge,
    pub paused: Gauge,
    pub pauses: Counter,
    pub brokers_up: Gauge,
}

impl KafkaTelemetry {
    pub fn register(r: &mut Registry) -> KafkaTelemetry {
        let t = KafkaTelemetry::default();
        r.register("framewatch_kafka_messages_consumed", "Kafka messages consumed, by topic", t.consumed.clone());
        r.register(
            "framewatch_kafka_messages_rejected",
            "Kafka messages refused (poison, bad image, late...), by topic and reason",
            t.rejected.clone(),
        );
        r.register(
            "framewatch_kafka_dead_letters",
            "Refused messages copied to the dead-letter topic, by result (sent, failed)",
            t.dead_letters.clone(),
        );
        r.register("framewatch_kafka_commits", "Offset commits, by result (ok, error)", t.commits.clone());
        r.register(
            "framewatch_kafka_rebalances",
            "Consumer-group rebalances, by kind (assign, revoke, error)",
            t.rebalances.clone(),
        );
        r.register("framewatch_kafka_client_errors", "librdkafka client errors, by code", t.errors.clone());
        r.register(
            "framewatch_kafka_consumer_lag",
            "Messages behind the partition's high watermark, as librdkafka reports it (see README: some test \
             brokers report watermarks wrong)",
            t.lag.clone(),
        );
        r.register(
            "framewatch_kafka_high_watermark",
            "High watermark offset per partition, as the broker reports it",
            t.high_watermark.clone(),
        );
        r.register(
            "framewatch_kafka_committed_offset",
            "Next offset committed by this instance per partition (every frame before it is recorded)",
            t.committed_offset.clone(),
        );
        r.register("framewatch_kafka_assigned_partitions", "Partitions assigned to this instance", t.assigned.clone());
        r.register(
            "framewatch_kafka_paused",
            "1 while consumption is paused because the scoring queue is full",
            t.paused.clone(),
        );
        r.register("framewatch_kafka_pauses", "Times consumption was paused for backpressure", t.pauses.clone());
        r.register(
            "framewatch_kafka_brokers_up",
            "Brokers with an open connection (librdkafka state UP)",
            t.brokers_up.clone(),
        );
        // Known label values start at 0, so the series exist (and rate() works) before the first event.
        for result in ["ok", "error"] {
            let _ = t.commits.get_or_create(&[("result", result)]);
        }
        for kind in ["assign", "revoke", "error"] {
            let _ = t.rebalances.get_or_create(&[("kind", kind)]);
        }
        for result in ["sent", "failed"] {
            let _ = t.dead_letters.get_or_create(&vec![("result".into(), result.into())]);
        }
        t
    }
}

/// A message on its way: decoded, scored and recorded (or refused) by a worker as part of a batch.
#[derive(Debug)]
struct Pending {
    offset: i64,
    batch: u64,
    /// Position in the batch (the answer's index).
    index: usize,
    /// Key and value kept for the dead-letter topic, when there is one.
    original: Option<(Option<Vec<u8>>, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct PartitionBook {
    /// Every message before this offset is recorded or refused; `None` until known.
    next: Option<i64>,
    pending: VecDeque<Pending>,
}

/// A batch's answer: received once, then handed out message by message.
#[derive(Debug)]
struct BatchAnswer {
    rx: Option<oneshot::Receiver<Vec<Outcome>>>,
    outcomes: Vec<Outcome>,
    remaining: usize,
}

/// What happened to one message, reported as the book learns it (in offset order per partition).
struct Settled<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    outcome: Outcome,
    original: Option<(Option<Vec<u8>>, Vec<u8>)>,
}

/// Per-partition in-order completion of messages, by topic then partition (looked up without allocating).
#[derive(Debug, Default)]
struct Book {
    parts: HashMap<String, HashMap<i32, PartitionBook>>,
    batches: HashMap<u64, BatchAnswer>,
    next_batch: u64,
}

fn stopped() -> Outcome {
    Err(Rejection::new(RejectReason::InternalError, "the scoring worker stopped"))
}

impl Book {
    fn part(&mut self, topic: &str, partition: i32) -> &mut PartitionBook {
        if !self.parts.contains_key(topic) {
            self.parts.insert(topic.to_string(), HashMap::new());
        }
        self.parts.get_mut(topic).map(|t| t.entry(partition).or_default()).unwrap_or_else(|| unreachable!())
    }

    /// Registers a submitted batch of `len` messages; returns its id for their `Pending`s.
    fn batch(&mut self, rx: oneshot::Receiver<Vec<Outcome>>, len: usize) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(id, BatchAnswer { rx: Some(rx), outcomes: Vec::new(), remaining: len });
        id
    }

    fn push(&mut self, topic: &str, partition: i32, p: Pending) {
        self.part(topic, partition).pending.push_back(p);
    }

    fn remove(&mut self, topic: &str, partition: i32) {
        if let Some(t) = self.parts.get_mut(topic) {
            t.remove(&partition);
        }
    }

    /// Moves each partition's `next` past its answered prefix; with `wait`, until nothing is pending.
    fn advance(&mut self, wait: bool, mut on: impl FnMut(Settled<'_>)) {
        let Book { parts, batches, .. } = self;
        let all = parts.iter_mut().flat_map(|(t, parts)| parts.iter_mut().map(move |(p, b)| (t, p, b)));
        for (topic, partition, book) in all {
            while let Some(front) = book.pending.front() {
                let Some(answer) = batches.get_mut(&front.batch) else {
                    // Cannot happen (a batch lives until its last message is settled); never block on it.
                    let Some(p) = book.pending.pop_front() else { break };
                    book.next = Some(p.offset + 1);
                    on(Settled { topic, partition: *partition, offset: p.offset, outcome: stopped(), original: None });
                    continue;
                };
                if let Some(rx) = answer.rx.as_mut() {
                    let received = match rx.try_recv() {
                        Ok(v) => v,
                        Err(oneshot::error::TryRecvError::Empty) if !wait => break,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            answer.rx.take().and_then(|rx| rx.blocking_recv().ok()).unwrap_or_default()
                        }
                        Err(oneshot::error::TryRecvError::Closed) => Vec::new(),
                    };
                    answer.outcomes = received;
                    answer.rx = None;
                }
                let outcome =
                    answer.outcomes.get_mut(front.index).map_or_else(stopped, |o| std::mem::replace(o, Ok(())));
                answer.remaining -= 1;
                if answer.remaining == 0 {
                    batches.remove(&front.batch);
                }
                let Some(p) = book.pending.pop_front() else { break };
                book.next = Some(p.offset + 1);
                on(Settled { topic, partition: *partition, offset: p.offset, outcome, original: p.original });
            }
        }
    }

    fn offsets(&self) -> Vec<SavedOffset> {
        let mut v: Vec<SavedOffset> = self
            .parts
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().filter_map(|(partition, b)| {
                    b.next.map(|next| SavedOffset { topic: topic.clone(), partition: *partition, next })
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        v
    }
}

#[derive(Debug)]
struct DeadLetterContext {
    telemetry: KafkaTelemetry,
}

impl ClientContext for DeadLetterContext {}

impl ProducerContext for DeadLetterContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let label = if result.is_ok() { "sent" } else { "failed" };
        if let Err((e, _)) = result {
            tracing::warn!(error = %e, "dead-letter message not delivered");
        }
        self.telemetry.dead_letters.get_or_create(&vec![("result".into(), label.into())]).inc();
    }
}

/// State shared by the poll loop and librdkafka's callbacks (which run on the poll thread, inside `poll`).
struct Shared {
    config: KafkaConfig,
    ingest: IngestConfig,
    telemetry: KafkaTelemetry,
    frames: Telemetry,
    clock: Arc<dyn Clock>,
    pipeline: PipelineHandle,
    checkpointer: Option<Arc<Checkpointer>>,
    book: Mutex<Book>,
    /// Checkpoint offsets not yet applied to an assignment.
    resume_from: Mutex<HashMap<(String, i32), i64>>,
    /// Last offsets committed, to skip commits that would change nothing.
    committed: Mutex<HashMap<(String, i32), i64>>,
    dead_letters: Option<ThreadedProducer<DeadLetterContext>>,
    ready: Arc<AtomicBool>,
    error_log: Mutex<ErrorLog>,
    /// Bumped by every revoke, so the poll loop drops what it gathered for the previous assignment.
    generation: std::sync::atomic::AtomicU64,
}

/// Logs client errors with back-off: the first at once, then at most one line per interval (doubling to a
/// minute), with the count of those not logged.
#[derive(Debug)]
struct ErrorLog {
    next: Instant,
    interval: Duration,
    suppressed: u64,
}

impl ErrorLog {
    fn new() -> ErrorLog {
        ErrorLog { next: Instant::now(), interval: Duration::from_secs(1), suppressed: 0 }
    }

    fn log(&mut self, what: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        if now < self.next {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(%error, suppressed = self.suppressed, "kafka: {what} (retrying with back-off)");
        self.suppressed = 0;
        self.next = now + self.interval;
        self.interval = (self.interval * 2).min(Duration::from_secs(60));
    }

    fn reset(&mut self) {
        self.interval = Duration::from_secs(1);
    }
}

struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let t = &self.shared.telemetry;
        let up = stats.brokers.values().filter(|b| b.nodeid >= 0 && b.state == "UP").count();
        t.brokers_up.set(up as i64);
        let was = self.shared.ready.swap(up > 0, Ordering::SeqCst);
        if up > 0 && !was {
            tracing::info!(brokers = up, "kafka: connected");
            self.shared.error_log.lock().unwrap_or_else(|p| p.into_inner()).reset();
        }
        for (topic, tstats) in &stats.topics {
            for (&partition, p) in &tstats.partitions {
                // librdkafka lists an internal partition -1 per topic, and every partition it knows of, not only
                // the assigned ones (for which fetch_state is "none").
                if partition < 0 || p.fetch_state == "none" {
                    continue;
                }
                let labels = partition_labels(topic, partition);
                t.high_watermark.get_or_create(&labels).set(p.hi_offset);
                if p.consumer_lag >= 0 {
                    t.lag.get_or_create(&labels).set(p.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.telemetry.errors.get_or_create(&vec![("code".into(), error_code(&error))]).inc();
        if matches!(error.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)) {
            self.shared.ready.store(false, Ordering::SeqCst);
            self.shared.telemetry.brokers_up.set(0);
        }
        self.shared.error_log.lock().unwrap_or_else(|p| p.into_inner()).log(reason, &error);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Connection failures repeat every reconnect; `error` above reports them with back-off.
        if matches!(
            level,
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error
        ) {
            tracing::debug!(facility = fac, "librdkafka: {message}");
        } else {
            tracing::trace!(facility = fac, "librdkafka: {message}");
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let shared = &self.shared;
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                shared.telemetry.rebalances.get_or_create(&[("kind", "assign")]).inc();
                shared.ready.store(true, Ordering::SeqCst);
                shared.apply_resume_offsets(consumer, tpl);
                let r = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = r {
                    tracing::error!(error = %e, "kafka: cannot take the assigned partitions");
                }
                let parts: Vec<String> =
                    tpl.elements().iter().map(|e| format!("{}[{}]", e.topic(), e.partition())).collect();
                tracing::info!(partitions = ?parts, "kafka: partitions assigned");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                shared.telemetry.rebalances.get_or_create(&[("kind", "revoke")]).inc();
                shared.generation.fetch_add(1, Ordering::SeqCst);
                // Everything recorded from these partitions is checkpointed and committed before another
                // instance takes them over, so it starts after what this one counted.
                let lost = consumer.assignment_lost();
                if lost {
                    tracing::warn!(
                        "kafka: assignment lost (session timed out); frames since the last commit may be counted again by the new owner"
                    );
                } else {
                    shared.checkpoint_and_commit(consumer, true);
                }
                let revoked: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                {
                    let mut book = shared.book.lock().unwrap_or_else(|p| p.into_inner());
                    // Settle what is still in flight (answers must not be lost), then forget the partitions.
                    book.advance(true, |s| shared.settled(s));
                    for k in &revoked {
                        book.remove(&k.0, k.1);
                        shared.committed.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
                        let labels = partition_labels(&k.0, k.1);
                        shared.telemetry.lag.remove(&labels);
                        shared.telemetry.high_watermark.remove(&labels);
                        shared.telemetry.committed_offset.remove(&labels);
                    }
                }
                let r = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = r {
                    tracing::error!(error = %e, "kafka: cannot release the revoked partitions");
                }
                tracing::info!(partitions = revoked.len(), "kafka: partitions revoked");
            }
            other => {
                shared.telemetry.rebalances.get_or_create(&[("kind", "error")]).inc();
                tracing::error!(error = ?other, "kafka: rebalance error");
                let _ = consumer.unassign();
            }
        }
        shared.telemetry.assigned.set(consumer.assignment().map_or(0, |a| a.count()) as i64);
    }
}

impl Shared {
    /// Sets the start offset of assigned partitions that the restored checkpoint covers.
    fn apply_resume_offsets(&self, consumer: &BaseConsumer<Ctx>, tpl: &mut TopicPartitionList) {
        let mut resume = self.resume_from.lock().unwrap_or_else(|p| p.into_inner());
        if resume.is_empty() {
            return;
        }
        let mut mine = TopicPartitionList::new();
        for e in tpl.elements() {
            if resume.contains_key(&(e.topic().to_string(), e.partition())) {
                mine.add_partition(e.topic(), e.partition());
            }
        }
        if mine.count() == 0 {
            return;
        }
        // Another instance may have moved past the checkpoint while this one was away.
        let committed: HashMap<(String, i32), i64> = match consumer.committed_offsets(mine, Duration::from_secs(10)) {
            Ok(list) => list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "kafka: committed offsets unknown; resuming from the checkpoint's");
                HashMap::new()
            }
        };
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let assigned: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        for key in assigned {
            let Some(saved) = resume.remove(&key) else { continue };
            let (topic, partition) = (key.0.as_str(), key.1);
            let start = committed.get(&key).map_or(saved, |&c| c.max(saved));
            if let Err(err) = tpl.set_partition_offset(topic, partition, Offset::Offset(start)) {
                tracing::error!(error = %err, topic, partition, "kafka: cannot set start offset");
                continue;
            }
            tracing::info!(topic, partition, checkpoint = saved, start, "kafka: resuming from checkpoint");
            book.part(topic, partition).next = Some(start);
        }
    }

    /// Counts a settled message and forwards refusals to the dead-letter topic.
    fn settled(&self, s: Settled<'_>) {
        if let Err(r) = &s.outcome {
            self.refused(
                s.topic,
                s.partition,
                s.offset,
                r,
                s.original.as_ref().map(|(k, v)| (k.as_deref(), v.as_slice())),
            );
        }
    }

    fn refused(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        r: &Rejection,
        original: Option<(Option<&[u8]>, &[u8])>,
    ) {
        self.telemetry
            .rejected
            .get_or_create(&vec![("topic".into(), topic.into()), ("reason".into(), r.reason.as_str().into())])
            .inc();
        tracing::debug!(topic, partition, offset, reason = r.reason.as_str(), message = %r.message, "kafka message refused");
        let (Some(producer), Some((key, value))) = (&self.dead_letters, original) else { return };
        let headers = OwnedHeaders::new()
            .insert(Header { key: "framewatch-reason", value: Some(r.reason.as_str()) })
            .insert(Header { key: "framewatch-error", value: Some(r.message.as_str()) })
            .insert(Header { key: "framewatch-source-topic", value: Some(topic) })
            .insert(Header { key: "framewatch-source-partition", value: Some(&partition.to_string()) })
            .insert(Header { key: "framewatch-source-offset", value: Some(&offset.to_string()) });
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.config.dead_letter_topic).payload(value).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Err((e, _)) = producer.send(record) {
            // Never stall the partition for the dead-letter topic: counted and logged.
            tracing::warn!(error = %e, "dead-letter message dropped");
            self.telemetry.dead_letters.get_or_create(&vec![("result".into(), "failed".into())]).inc();
        }
    }

    /// With checkpoints: waits for in-flight frames, checkpoints, then commits the checkpointed offsets. Without:
    /// commits the offsets answered so far, after waiting for in-flight frames when `settle` (revoke, shutdown:
    /// the next owner must start after every frame recorded here).
    fn checkpoint_and_commit(&self, consumer: &BaseConsumer<Ctx>, settle: bool) {
        let offsets = {
            let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            book.advance(settle || self.checkpointer.is_some(), |s| self.settled(s));
            book.offsets()
        };
        if let Some(c) = &self.checkpointer
            && c.write(&offsets).is_err()
        {
            return; // committing past an unwritten checkpoint would lose frames on a crash
        }
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let mut tpl = TopicPartitionList::new();
        for o in &offsets {
            if committed.get(&(o.topic.clone(), o.partition)) != Some(&o.next) {
                let _ = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.telemetry.commits.get_or_create(&[("result", "ok")]).inc();
                for o in offsets {
                    self.telemetry.committed_offset.get_or_create(&partition_labels(&o.topic, o.partition)).set(o.next);
                    committed.insert((o.topic, o.partition), o.next);
                }
            }
            Err(e) => {
                self.telemetry.commits.get_or_create(&[("result", "error")]).inc();
                tracing::warn!(error = %e, "kafka: offset commit failed (retried at the next interval)");
            }
        }
    }
}

/// The running source.
pub struct KafkaSource {
    thread: Option<JoinHandle<()>>,
    ready: Arc<AtomicBool>,
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
    /// The source's branch of the service's shutdown tree: cancelled, it stops consuming and drains.
    pub stop: CancellationToken,
}

fn client_config(cfg: &KafkaConfig) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("statistics.interval.ms", "5000")
        .set("reconnect.backoff.max.ms", "10000")
        // Prefetched messages per partition, in KiB (librdkafka's default is 64 MiB): bounds memory while the
        // scoring queue is full. Overridable in kafka.properties.
        .set("queued.max.messages.kbytes", "16384")
        // When that prefetch queue is full, librdkafka waits this long before fetching again (default 1000 ms):
        // with a scoring queue that is quicker to drain than a second, the default starved the workers
        // (pre-scored events: 21k/s with it, 98k/s with 10 ms; BENCHMARKS.md).
        .set("fetch.queue.backoff.ms", "10");
    for (k, v) in cfg.property_strings()? {
        c.set(k, v);
    }
    Ok(c)
}

impl KafkaSource {
    /// Creates the consumer (no broker contact yet: an unreachable broker is survived and reported on /readyz)
    /// and starts the poll thread.
    pub fn start(cfg: KafkaConfig, deps: KafkaDeps) -> anyhow::Result<KafkaSource> {
        let ready = Arc::new(AtomicBool::new(false));
        let dead_letters = if cfg.dead_letter_topic.is_empty() {
            None
        } else {
            let mut pc = client_config(&cfg)?;
            pc.set("linger.ms", "50");
            let p: ThreadedProducer<DeadLetterContext> = pc
                .create_with_context(DeadLetterContext { telemetry: deps.telemetry.clone() })
                .context("kafka: cannot create the dead-letter producer")?;
            Some(p)
        };
        let shared = Arc::new(Shared {
            ingest: deps.ingest,
            telemetry: deps.telemetry,
            frames: deps.frames,
            clock: deps.clock,
            pipeline: deps.pipeline,
            checkpointer: deps.checkpointer,
            book: Mutex::new(Book::default()),
            resume_from: Mutex::new(deps.resume_from.into_iter().map(|o| ((o.topic, o.partition), o.next)).collect()),
            committed: Mutex::new(HashMap::new()),
            dead_letters,
            ready: ready.clone(),
            error_log: Mutex::new(ErrorLog::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            config: cfg.clone(),
        });
        let mut cc = client_config(&cfg)?;
        cc.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set_log_level(RDKafkaLogLevel::Warning);
        if !cfg.properties.contains_key("auto.offset.reset") {
            // A new group starts at the beginning: frames already on the topic are part of the stream.
            cc.set("auto.offset.reset", "earliest");
        }
        let consumer: BaseConsumer<Ctx> =
            cc.create_with_context(Ctx { shared: shared.clone() }).context("kafka: invalid consumer configuration")?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).context("kafka: cannot subscribe")?;
        let alive = Arc::new(AtomicBool::new(true));
        let thread = {
            let (stop, runtime, grace, alive) = (deps.stop, deps.runtime, deps.grace, alive.clone());
            std::thread::Builder::new()
                .name("framewatch-kafka".into())
                .spawn(move || {
                    let ready = shared.ready.clone();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(consumer, shared, stop, runtime, grace)
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
        tracing::info!(brokers = %cfg.brokers, topics = ?cfg.topics, group = %cfg.group_id, "kafka source started");
        Ok(KafkaSource { thread: Some(thread), ready, alive })
    }

    /// True while at least one broker connection is up.
    pub fn ready(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// False once the poll thread has ended.
    pub fn alive(&self) -> Arc<AtomicBool> {
        self.alive.clone()
    }

    /// Waits for the poll thread, which (once its `stop` token is cancelled) stops consuming, waits for
    /// in-flight frames, writes the final checkpoint, commits and leaves the group. Blocking.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    consumer: BaseConsumer<Ctx>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
    grace: Duration,
) {
    let interval = Duration::from_secs_f64(shared.config.commit_interval_secs);
    let mut last_commit = Instant::now();
    // Counters looked up once, not per message; `topics` doubles as the topic ids of a batch.
    let received = shared.frames.received.get_or_create(&[("source", Source::Kafka.as_str())]).clone();
    let mut topics: Vec<(String, Counter)> = Vec::new();
    let mut batch = Batch::default();
    while !stop.is_cancelled() {
        // Gather what librdkafka has ready (up to a batch), waiting only for the first message.
        let mut wait = Duration::from_millis(100);
        let generation = shared.generation.load(Ordering::SeqCst);
        while !batch.full(shared.pipeline.capacity()) {
            let polled = consumer.poll(wait);
            wait = Duration::ZERO;
            if shared.generation.load(Ordering::SeqCst) != generation {
                // A revoke ran inside poll: what was gathered before it belongs to the previous assignment and
                // is read again (from the committed offsets) if the partitions come back.
                batch.clear();
            }
            match polled {
                None => break,
                Some(Err(e)) => {
                    shared.telemetry.errors.get_or_create(&vec![("code".into(), error_code(&e))]).inc();
                    shared.error_log.lock().unwrap_or_else(|p| p.into_inner()).log("consume error", &e);
                    break;
                }
                Some(Ok(m)) => {
                    shared.ready.store(true, Ordering::SeqCst);
                    let topic = match topics.iter().position(|(t, _)| t == m.topic()) {
                        Some(i) => i,
                        None => {
                            let c = shared.telemetry.consumed.get_or_create(&topic_labels(m.topic())).clone();
                            topics.push((m.topic().to_string(), c));
                            topics.len() - 1
                        }
                    };
                    topics[topic].1.inc();
                    received.inc();
                    batch.add(&shared, topic, &m);
                }
            }
        }
        if !batch.is_empty() {
            let (tx, rx) = oneshot::channel();
            let (decodes, entries) = batch.take();
            let n = decodes.len();
            if !submit(&consumer, &shared, &stop, &runtime, Job { work: Work::Batch(Source::Kafka, decodes, tx) }) {
                // Stopping while the queue was full: these messages stay uncommitted and are read again after
                // the restart.
                break;
            }
            let mut book = shared.book.lock().unwrap_or_else(|p| p.into_inner());
            let id = book.batch(rx, n);
            for (index, (topic, partition, offset, original)) in entries.into_iter().enumerate() {
                book.push(&topics[topic].0, partition, Pending { offset, batch: id, index, original });
            }
        }
        {
            let mut book = shared.book.lock().unwrap_or_else(|p| p.into_inner());
            book.advance(false, |s| shared.settled(s));
        }
        if last_commit.elapsed() >= interval {
            shared.checkpoint_and_commit(&consumer, false);
            last_commit = Instant::now();
        }
    }
    // Shutdown: let other sources' frames finish too, so the final checkpoint has them.
    if !shared.pipeline.wait_idle(grace) {
        tracing::warn!(?grace, "kafka: frames still in flight after the grace period; checkpointing without them");
    }
    shared.checkpoint_and_commit(&consumer, true);
    consumer.unsubscribe();
    if let Some(p) = &shared.dead_letters {
        use rdkafka::producer::Producer as _;
        let _ = p.flush(Duration::from_secs(5));
    }
    tracing::info!("kafka source stopped");
}

/// Messages gathered for one scoring job: copied out of librdkafka, decoded later by a worker.
#[derive(Default)]
struct Batch {
    decodes: Vec<Decode>,
    /// (topic id, partition, offset, original key and value for the dead-letter topic)
    entries: Vec<BatchEntry>,
    bytes: usize,
}

type BatchEntry = (usize, i32, i64, Option<(Option<Vec<u8>>, Vec<u8>)>);

/// A batch closes at this many messages or bytes (images are large; metric events are small).
const BATCH_MESSAGES: usize = 64;
const BATCH_BYTES: usize = 1 << 20;

impl Batch {
    /// Closes at `BATCH_MESSAGES` messages (at most the queue's capacity, which is counted in frames) or
    /// `BATCH_BYTES`.
    fn full(&self, capacity: usize) -> bool {
        self.decodes.len() >= BATCH_MESSAGES.min(capacity) || self.bytes >= BATCH_BYTES
    }

    fn is_empty(&self) -> bool {
        self.decodes.is_empty()
    }

    fn clear(&mut self) {
        self.decodes.clear();
        self.entries.clear();
        self.bytes = 0;
    }

    fn take(&mut self) -> (Vec<Decode>, Vec<BatchEntry>) {
        self.bytes = 0;
        (std::mem::take(&mut self.decodes), std::mem::take(&mut self.entries))
    }

    fn add(&mut self, shared: &Shared, topic: usize, m: &rdkafka::message::BorrowedMessage<'_>) {
        let payload = m.payload().map(<[u8]>::to_vec);
        let key = m.key().map(<[u8]>::to_vec);
        let timestamp_ms = m.timestamp().to_millis();
        self.bytes += payload.as_ref().map_or(0, Vec::len);
        let original = shared.dead_letters.is_some().then(|| (key.clone(), payload.clone().unwrap_or_default()));
        let (format, ingest, clock) = (shared.config.format, shared.ingest.clone(), shared.clock.clone());
        self.decodes.push(Box::new(move || {
            let raw = message::RawMessage { payload: payload.as_deref(), key: key.as_deref(), timestamp_ms };
            message::decode(raw, format, clock.now(), &ingest)
        }));
        self.entries.push((topic, m.partition(), m.offset(), original));
    }
}

fn error_code(e: &KafkaError) -> String {
    e.rdkafka_error_code().map_or_else(|| "other".to_string(), |c| format!("{c:?}"))
}

/// Queues a job. When the queue is full: waits up to `kafka.pause_after_ms` for room (librdkafka keeps
/// prefetching meanwhile, within `queued.max.messages.kbytes`); if the queue is still full, pauses the assigned
/// partitions (fetching stops and the prefetched messages are dropped, to be fetched again) until the queue is
/// down to half, then resumes. Pausing costs a refetch, so short stalls do not pause. False when stopping.
fn submit(
    consumer: &BaseConsumer<Ctx>,
    shared: &Shared,
    stop: &CancellationToken,
    runtime: &tokio::runtime::Handle,
    job: Job,
) -> bool {
    let mut job = match shared.pipeline.try_submit(job) {
        Ok(()) => return true,
        Err(TrySubmitError::ShuttingDown(_)) => return false,
        Err(TrySubmitError::Full(job)) => *job,
    };
    let grace = Duration::from_millis(shared.config.pause_after_ms);
    let frames = job.frames();
    let room = runtime.block_on(async { tokio::time::timeout(grace, shared.pipeline.room(frames)).await });
    if room.is_ok() {
        match shared.pipeline.try_submit(job) {
            Ok(()) => return true,
            Err(TrySubmitError::ShuttingDown(_)) => return false,
            Err(TrySubmitError::Full(j)) => job = *j,
        }
    }
    let assignment = consumer.assignment().unwrap_or_else(|_| TopicPartitionList::new());
    if let Err(e) = consumer.pause(&assignment) {
        tracing::warn!(error = %e, "kafka: cannot pause partitions");
    }
    shared.telemetry.paused.set(1);
    shared.telemetry.pauses.inc();
    let low_water = shared.pipeline.capacity() / 2;
    let queued = loop {
        if stop.is_cancelled() {
            break false;
        }
        if shared.pipeline.depth() > low_water {
            std::thread::sleep(Duration::from_millis(5));
            shared.book.lock().unwrap_or_else(|p| p.into_inner()).advance(false, |s| shared.settled(s));
            continue;
        }
        match shared.pipeline.try_submit(job) {
            Ok(()) => break true,
            Err(TrySubmitError::ShuttingDown(_)) => break false,
            Err(TrySubmitError::Full(j)) => job = *j,
        }
    };
    // Fetching restarts after the last message handed to us, so nothing is skipped.
    if let Err(e) = consumer.resume(&assignment) {
        tracing::warn!(error = %e, "kafka: cannot resume partitions");
    }
    shared.telemetry.paused.set(0);
    queued
}

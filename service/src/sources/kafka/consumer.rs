//! The consumer: state shared by the poll loop and librdkafka's callbacks (which run on the poll thread, inside
//! `poll`), the client callbacks (statistics, errors, logs), and the poll loop itself: gather a batch, submit it,
//! settle what the workers answered, checkpoint and commit on an interval, drain on stop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::backpressure::{self, Submitted};
use super::batch::{Batch, Topics};
use super::book::{Book, Pending, Settled};
use super::dead_letter::{DeadLetters, Origin};
use super::health::{ErrorKind, LastError, WaitLog, waiting_reason};
use super::message;
use super::telemetry::{KafkaTelemetry, error_code, partition_labels};
use crate::checkpoint::Checkpointer;
use crate::config::{IngestConfig, KafkaConfig};
use crate::frame::Source;
use crate::http::{GroupMembership, GroupStatus};
use crate::pipeline::PipelineHandle;
use crate::telemetry::Telemetry;
use crate::time::Clock;
use crate::truth::Truth;

/// State shared by the poll loop and librdkafka's callbacks.
pub(super) struct Shared {
    pub(super) config: KafkaConfig,
    pub(super) ingest: IngestConfig,
    pub(super) telemetry: KafkaTelemetry,
    pub(super) frames: Telemetry,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) pipeline: PipelineHandle,
    pub(super) checkpointer: Option<Arc<Checkpointer>>,
    pub(super) book: Mutex<Book>,
    /// Checkpoint offsets not yet applied to an assignment.
    pub(super) resume_from: Mutex<HashMap<(String, i32), i64>>,
    /// Last offsets committed, to skip commits that would change nothing.
    pub(super) committed: Mutex<HashMap<(String, i32), i64>>,
    pub(super) dead_letters: Option<DeadLetters>,
    pub(super) ready: Arc<AtomicBool>,
    /// Where the member stands in its group (set by the rebalance callback), for /readyz and the wait log.
    pub(super) group: GroupMembership,
    pub(super) last_error: LastError,
    pub(super) error_log: Mutex<ErrorLog>,
    /// Partitions revoked since the poll loop last looked (by a revoke callback, inside `poll`): what it gathered
    /// from them but has not queued yet is dropped; what it gathered from partitions that stay is kept.
    pub(super) revoked: Mutex<Vec<(String, i32)>>,
    /// Set by every assignment and revoke, so the poll loop refreshes its view of the assignment.
    pub(super) rebalanced: AtomicBool,
    /// True while backpressure holds the assignment paused: partitions assigned meanwhile are paused too.
    pub(super) paused: AtomicBool,
    /// Larger messages are refused unread (`pipeline.max_image_bytes` plus 1 MiB).
    pub(super) max_message_bytes: usize,
    /// Messages of `kafka.labels_topic` are joined here, on the poll thread.
    pub(super) truth: Truth,
}

/// Logs client errors with back-off: the first at once, then at most one line per interval (doubling to a
/// minute), with the count of those not logged.
#[derive(Debug)]
pub(super) struct ErrorLog {
    next: Instant,
    interval: Duration,
    suppressed: u64,
}

impl ErrorLog {
    pub(super) fn new() -> ErrorLog {
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

/// librdkafka's callbacks reach the shared state through this context.
pub(super) struct Ctx {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let t = &self.shared.telemetry;
        let up = stats.brokers.values().filter(|b| b.nodeid >= 0 && b.state == "UP").count();
        t.brokers_up.set(up as i64);
        if up > 0 {
            self.shared.connected();
        } else {
            self.shared.ready.store(false, Ordering::SeqCst);
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
        let kind = ErrorKind::of(&error);
        if kind == ErrorKind::Summary {
            // librdkafka's AllBrokersDown
            self.shared.ready.store(false, Ordering::SeqCst);
            self.shared.telemetry.brokers_up.set(0);
        }
        tracing::debug!(code = %error_code(&error), "kafka client error: {reason}");
        // Before the counter: a reader who saw the error counted finds its reason on /readyz.
        self.shared.last_error.record(kind, reason);
        self.shared.client_error(reason, &error);
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

impl Shared {
    /// A broker connection is up (statistics say so, or a message arrived): ready again, the error that kept the
    /// source unready is history, and the next failure is logged at once.
    pub(super) fn connected(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            tracing::info!("kafka: connected");
            self.last_error.clear();
            self.error_log.lock().unwrap_or_else(|p| p.into_inner()).reset();
        }
    }

    /// Says in the log, now and then (`WaitLog`), that the member has no partitions and why.
    fn log_wait(&self, log: &mut WaitLog) {
        let status = self.group.get();
        let Some(waited) = log.due(Instant::now(), status) else { return };
        let connected = self.ready.load(Ordering::SeqCst);
        let why = waiting_reason(connected, self.last_error.get(), status);
        let (group, instance) = (&self.config.group_id, self.config.group_instance_id().unwrap_or("(dynamic)"));
        let (topics, waited_secs) = (&self.config.topics, waited.as_secs());
        if status == GroupStatus::Standby && connected {
            tracing::info!(group, instance, ?topics, waited_secs, "kafka: standing by: {why}");
        } else {
            tracing::warn!(group, instance, ?topics, waited_secs, "kafka: waiting for partitions: {why}");
        }
    }

    /// A subscribed topic the client cannot find or read, while the member waits for partitions: /readyz and the
    /// wait log say so instead of "joining". The next rebalance replaces it (librdkafka joins once a subscribed
    /// topic exists).
    fn topic_unavailable(&self, e: &KafkaError) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let unavailable = matches!(
            e.rdkafka_error_code(),
            Some(Code::UnknownTopic | Code::UnknownTopicOrPartition | Code::TopicAuthorizationFailed)
        );
        if unavailable && matches!(self.group.get(), GroupStatus::Joining | GroupStatus::Rebalancing) {
            self.group.set(GroupStatus::TopicUnavailable);
        }
    }

    pub(super) fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partitions revoked since the last call.
    fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Settles the messages answered so far, without waiting.
    pub(super) fn settle_answered(&self) {
        self.book().advance(false, |s| self.settled(s));
    }

    fn client_error(&self, what: &str, e: &KafkaError) {
        self.telemetry.errors.get_or_create(&vec![("code".into(), error_code(e))]).inc();
        // "1/1 brokers are down" repeats on every failed reconnect and says less than the error before it (the
        // broker and why, which librdkafka reports once and then only now and then): counted, not logged.
        if ErrorKind::of(e) != ErrorKind::Summary {
            self.error_log.lock().unwrap_or_else(|p| p.into_inner()).log(what, e);
        }
    }

    /// Counts a settled message's refusal and forwards it to the dead-letter topic.
    pub(super) fn settled(&self, s: Settled<'_>) {
        let Err(r) = &s.outcome else { return };
        let (topic, partition, offset) = (s.topic, s.partition, s.offset);
        self.telemetry
            .rejected
            .get_or_create(&vec![("topic".into(), topic.into()), ("reason".into(), r.reason.as_str().into())])
            .inc();
        tracing::debug!(topic, partition, offset, reason = r.reason.as_str(), message = %r.message, "kafka message refused");
        if let (Some(dead_letters), Some((key, value))) = (&self.dead_letters, &s.original) {
            dead_letters.send(Origin { topic, partition, offset }, r, key.as_deref(), value);
        }
    }

    /// With checkpoints: waits for in-flight frames, checkpoints, then commits the checkpointed offsets. Without:
    /// commits the offsets answered so far, after waiting for in-flight frames when `settle` (revoke, shutdown:
    /// the next owner must start after every frame recorded here).
    pub(super) fn checkpoint_and_commit(&self, consumer: &BaseConsumer<Ctx>, settle: bool) {
        let offsets = {
            let mut book = self.book();
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

/// What one poll brought.
pub(super) enum Polled {
    Message,
    Nothing,
    Error,
}

/// The poll loop's own state: where it is and what it gathered.
pub(super) struct PollLoop {
    pub(super) consumer: BaseConsumer<Ctx>,
    pub(super) shared: Arc<Shared>,
    pub(super) stop: CancellationToken,
    pub(super) runtime: tokio::runtime::Handle,
    /// The `framewatch_frames_received_total{source="kafka"}` counter, looked up once.
    received: Counter,
    topics: Topics,
    batch: Batch,
    /// The assignment as of the last rebalance, by topic.
    owned: HashMap<String, HashSet<i32>>,
}

/// The poll thread's body: consume until `stop`, then drain (wait for in-flight frames up to `grace`), commit for
/// the last time and leave the group.
pub(super) fn run(
    consumer: BaseConsumer<Ctx>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
    grace: Duration,
) {
    let interval = Duration::from_secs_f64(shared.config.commit_interval_secs);
    let received = shared.frames.received.get_or_create(&[("source", Source::Kafka.as_str())]).clone();
    let mut state = PollLoop {
        consumer,
        shared,
        stop,
        runtime,
        received,
        topics: Topics::default(),
        batch: Batch::default(),
        owned: HashMap::new(),
    };
    let mut last_commit = Instant::now();
    let mut wait_log = WaitLog::new(Instant::now());
    while !state.stop.is_cancelled() {
        state.shared.log_wait(&mut wait_log);
        state.gather();
        if !state.batch.is_empty() && !state.submit() {
            // Stopping while the queue was full: these messages stay uncommitted and are read again after the
            // restart.
            break;
        }
        state.shared.settle_answered();
        if last_commit.elapsed() >= interval {
            state.shared.checkpoint_and_commit(&state.consumer, false);
            last_commit = Instant::now();
        }
    }
    state.finish(grace);
}

impl PollLoop {
    /// Gathers what librdkafka has ready (up to a batch), waiting only for the first message.
    fn gather(&mut self) {
        let mut wait = Duration::from_millis(100);
        while !self.batch.full(self.shared.pipeline.capacity()) {
            let polled = self.poll(wait, None);
            wait = Duration::ZERO;
            if !matches!(polled, Polled::Message) {
                break;
            }
        }
    }

    /// Polls once, which also serves librdkafka's callbacks (rebalances, errors) and tells it the application is
    /// alive (`max.poll.interval.ms`). A message is added to the batch being gathered. After a revoke (which ran
    /// inside `poll`), what was gathered from the revoked partitions, here and in `held` (a batch waiting for room
    /// in the queue), is dropped: the next owner reads it from the committed offset. The message this poll
    /// returned, if any, came after the revoke and is kept.
    pub(super) fn poll(&mut self, wait: Duration, held: Option<&mut Batch>) -> Polled {
        let polled = self.consumer.poll(wait);
        let revoked = self.shared.take_revoked();
        if !revoked.is_empty() {
            let ids = self.topics.ids(&revoked);
            self.batch.forget(&ids);
            if let Some(held) = held {
                held.forget(&ids);
            }
        }
        if self.shared.rebalanced.swap(false, Ordering::SeqCst) {
            match self.consumer.assignment() {
                Ok(assignment) => {
                    self.owned.clear();
                    for e in assignment.elements() {
                        self.owned.entry(e.topic().to_string()).or_default().insert(e.partition());
                    }
                }
                // Tried again at the next poll.
                Err(_) => self.shared.rebalanced.store(true, Ordering::SeqCst),
            }
        }
        let shared = &*self.shared;
        match polled {
            None => Polled::Nothing,
            Some(Err(e)) => {
                shared.topic_unavailable(&e);
                shared.client_error("consume error", &e);
                Polled::Error
            }
            Some(Ok(m)) if !self.owned.get(m.topic()).is_some_and(|p| p.contains(&m.partition())) => {
                // Fetched before its partition was revoked (librdkafka discards those asynchronously, so one can
                // still come out of the queue): the next owner reads it from the committed offset. Recording it
                // here too would count it twice.
                tracing::debug!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "kafka: message of a revoked partition dropped"
                );
                Polled::Nothing
            }
            Some(Ok(m)) if m.topic() == shared.config.labels_topic => {
                shared.connected();
                self.topics.consumed(m.topic(), &shared.telemetry);
                label(shared, &m);
                Polled::Message
            }
            Some(Ok(m)) => {
                shared.connected();
                let topic = self.topics.consumed(m.topic(), &shared.telemetry);
                self.received.inc();
                self.batch.add(shared, topic, &m);
                Polled::Message
            }
        }
    }

    /// Hands the gathered batch to the pipeline (waiting, or pausing, while the queue is full) and enters its
    /// messages in the book. False when stopping.
    fn submit(&mut self) -> bool {
        let mut held = std::mem::take(&mut self.batch);
        let rx = match backpressure::submit(self, &mut held) {
            Submitted::Queued(rx) => rx,
            // Every message of the batch was from partitions revoked while it waited: nothing to enter.
            Submitted::Revoked => return true,
            Submitted::Stopping => return false,
        };
        let mut book = self.shared.book();
        let entries = held.entries();
        let id = book.batch(rx, entries.len());
        for (index, (topic, partition, offset, original)) in entries.into_iter().enumerate() {
            book.push(self.topics.name(topic), partition, Pending { offset, batch: id, index, original });
        }
        true
    }

    /// Shutdown: lets other sources' frames finish too (so the final checkpoint has them), commits, leaves the
    /// group and flushes the dead-letter producer.
    fn finish(self, grace: Duration) {
        let PollLoop { consumer, shared, .. } = self;
        if !shared.pipeline.wait_idle(grace) {
            tracing::warn!(?grace, "kafka: frames still in flight after the grace period; checkpointing without them");
        }
        shared.checkpoint_and_commit(&consumer, true);
        consumer.unsubscribe();
        if let Some(d) = &shared.dead_letters {
            d.flush();
        }
        tracing::info!("kafka source stopped");
    }
}

/// Joins one message of the labels topic at once (a parse, a lock and a match: no queue, no worker) and enters its
/// offset in the book already answered, so it is committed in order with the checkpoint that holds the join. A
/// refused message is counted (`framewatch_labels_received_total{source="kafka"}`) and its offset moves on.
fn label(shared: &Shared, m: &BorrowedMessage<'_>) {
    let raw = message::RawMessage { payload: m.payload(), key: m.key(), timestamp_ms: None };
    let (result, detail) = match message::decode_labels(raw, shared.config.format, shared.max_message_bytes) {
        Ok(labels) => shared.truth.offer(Source::Kafka.as_str(), &labels),
        Err((result, detail)) => {
            shared.truth.telemetry().count(Source::Kafka.as_str(), result);
            (result, detail)
        }
    };
    if !result.accepted() {
        tracing::debug!(offset = m.offset(), reason = result.as_str(), detail, "kafka labels refused");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = tx.send(vec![Ok(())]);
    let mut book = shared.book();
    let id = book.batch(rx, 1);
    book.push(m.topic(), m.partition(), Pending { offset: m.offset(), batch: id, index: 0, original: None });
}

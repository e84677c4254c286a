//! Batching: messages gathered by the poll loop for one scoring job, copied out of librdkafka and decoded later
//! by a worker (the poll thread never decodes). A batch costs one queue slot, one wake-up and one answer.
//! A message over the size limit is not copied: it becomes a refusal (`message_too_large`) that settles like any
//! other, so its offset moves on.

use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::oneshot;

use super::consumer::Shared;
use super::message;
use super::telemetry::{KafkaTelemetry, topic_labels};
use crate::frame::Source;
use crate::pipeline::{Decode, Job, Outcome, Work};
use crate::reject::{RejectReason, Rejection};

/// A batch closes at this many messages or bytes (images are large; metric events are small).
const BATCH_MESSAGES: usize = 64;
const BATCH_BYTES: usize = 1 << 20;

/// (topic id, partition, offset, original key and value for the dead-letter topic)
pub(super) type BatchEntry = (usize, i32, i64, Option<(Option<Vec<u8>>, Vec<u8>)>);

/// Messages gathered for one scoring job.
#[derive(Default)]
pub(super) struct Batch {
    decodes: Vec<Decode>,
    entries: Vec<BatchEntry>,
    /// Payload bytes copied per message (to keep `bytes` right when messages are forgotten).
    sizes: Vec<usize>,
    bytes: usize,
}

impl Batch {
    /// Closes at `BATCH_MESSAGES` messages (at most the queue's capacity, which is counted in frames) or
    /// `BATCH_BYTES`.
    pub(super) fn full(&self, capacity: usize) -> bool {
        self.decodes.len() >= BATCH_MESSAGES.min(capacity) || self.bytes >= BATCH_BYTES
    }

    pub(super) fn is_empty(&self) -> bool {
        self.decodes.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.decodes.len()
    }

    /// Forgets the messages of `revoked` partitions (by topic id): the next owner reads them from the committed
    /// offset. Messages of partitions that stay assigned (a cooperative revoke hands back only some) are kept, in
    /// order: dropping them would let a later offset of the same partition be committed past them.
    pub(super) fn forget(&mut self, revoked: &[(usize, i32)]) {
        if revoked.is_empty() {
            return;
        }
        let (decodes, entries, sizes) =
            (std::mem::take(&mut self.decodes), std::mem::take(&mut self.entries), std::mem::take(&mut self.sizes));
        self.bytes = 0;
        for ((decode, entry), size) in decodes.into_iter().zip(entries).zip(sizes) {
            if !revoked.contains(&(entry.0, entry.1)) {
                self.decodes.push(decode);
                self.entries.push(entry);
                self.sizes.push(size);
                self.bytes += size;
            }
        }
    }

    /// The scoring job for the gathered messages and the receiver of its answer. The entries stay here until
    /// the job is queued (`entries`); a job the queue had no room for comes back with `put_back`.
    pub(super) fn job(&mut self) -> (Job, oneshot::Receiver<Vec<Outcome>>) {
        let (tx, rx) = oneshot::channel();
        (Job { work: Work::Batch(Source::Kafka, std::mem::take(&mut self.decodes), tx) }, rx)
    }

    /// Takes back the messages of a job that was not queued.
    pub(super) fn put_back(&mut self, job: Job) {
        if let Work::Batch(_, decodes, _) = job.work {
            self.decodes = decodes;
        }
    }

    /// The entries of a queued batch, in the order of its answers; the batch is empty again.
    pub(super) fn entries(&mut self) -> Vec<BatchEntry> {
        self.decodes.clear();
        self.sizes.clear();
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }

    pub(super) fn add(&mut self, shared: &Shared, topic: usize, m: &BorrowedMessage<'_>) {
        let len = m.payload().map_or(0, <[u8]>::len);
        let limit = shared.max_message_bytes;
        if len > limit {
            // Refused without a copy (memory stays bounded by the limit, not by what a producer sends); the dead
            // letter carries the key and the reason but not the value.
            let rejection = Rejection::new(
                RejectReason::MessageTooLarge,
                format!(
                    "the message has {len} bytes; at most {limit} are accepted (pipeline.max_image_bytes plus 1 MiB)"
                ),
            );
            let original = shared.dead_letters.is_some().then(|| (m.key().map(<[u8]>::to_vec), Vec::new()));
            self.decodes.push(Box::new(move || Err(rejection)));
            self.entries.push((topic, m.partition(), m.offset(), original));
            self.sizes.push(0);
            return;
        }
        let payload = m.payload().map(<[u8]>::to_vec);
        let key = m.key().map(<[u8]>::to_vec);
        let timestamp_ms = m.timestamp().to_millis();
        self.bytes += len;
        let original = shared.dead_letters.is_some().then(|| (key.clone(), payload.clone().unwrap_or_default()));
        let (format, ingest, clock) = (shared.config.format, shared.ingest.clone(), shared.clock.clone());
        self.decodes.push(Box::new(move || {
            let raw = message::RawMessage { payload: payload.as_deref(), key: key.as_deref(), timestamp_ms };
            message::decode(raw, format, clock.now(), &ingest)
        }));
        self.entries.push((topic, m.partition(), m.offset(), original));
        self.sizes.push(len);
    }
}

/// The topics seen so far, by id (a batch entry's topic), each with its consumed counter looked up once, not per
/// message.
#[derive(Default)]
pub(super) struct Topics {
    topics: Vec<(String, Counter)>,
}

impl Topics {
    /// The topic's id; counts one message consumed from it.
    pub(super) fn consumed(&mut self, topic: &str, telemetry: &KafkaTelemetry) -> usize {
        let id = match self.topics.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                let c = telemetry.consumed.get_or_create(&topic_labels(topic)).clone();
                self.topics.push((topic.to_string(), c));
                self.topics.len() - 1
            }
        };
        self.topics[id].1.inc();
        id
    }

    pub(super) fn name(&self, id: usize) -> &str {
        &self.topics[id].0
    }

    /// `(topic id, partition)` of the partitions given by name; topics never consumed have no messages to forget.
    pub(super) fn ids(&self, partitions: &[(String, i32)]) -> Vec<(usize, i32)> {
        partitions
            .iter()
            .filter_map(|(t, p)| self.topics.iter().position(|(name, _)| name == t).map(|id| (id, *p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `(topic id, partition, offset, size)` messages whose decodes answer with their offset's
    /// rejection message, so a test can tell which decode went with which entry.
    fn batch(messages: &[(usize, i32, i64, usize)]) -> Batch {
        let mut b = Batch::default();
        for &(topic, partition, offset, size) in messages {
            b.decodes.push(Box::new(move || {
                Err(Rejection::new(RejectReason::InternalError, format!("{topic}/{partition}@{offset}")))
            }));
            b.entries.push((topic, partition, offset, None));
            b.sizes.push(size);
            b.bytes += size;
        }
        b
    }

    fn decoded(b: Batch) -> Vec<String> {
        b.decodes.into_iter().map(|d| d().err().map(|r| r.message).unwrap_or_default()).collect()
    }

    /// Issue #11 (Kafka), cooperative-sticky: a revoke that hands back some partitions drops only their messages;
    /// the others stay in the batch, in order, each with its own decode.
    #[test]
    fn forgetting_revoked_partitions_keeps_the_others_in_order() {
        let mut b = batch(&[(0, 0, 10, 100), (0, 1, 20, 200), (1, 0, 5, 50), (0, 0, 11, 100), (0, 1, 21, 200)]);
        b.forget(&[(0, 1)]);
        let offsets: Vec<(usize, i32, i64)> = b.entries.iter().map(|e| (e.0, e.1, e.2)).collect();
        assert_eq!(offsets, [(0, 0, 10), (1, 0, 5), (0, 0, 11)]);
        assert_eq!((b.len(), b.bytes), (3, 250));
        assert_eq!(decoded(b), ["0/0@10", "1/0@5", "0/0@11"]);
    }

    #[test]
    fn forgetting_nothing_or_everything() {
        let mut b = batch(&[(0, 0, 1, 10), (0, 1, 1, 10)]);
        b.forget(&[]);
        assert_eq!(b.len(), 2);
        b.forget(&[(0, 0), (0, 1), (3, 3)]);
        assert!(b.is_empty());
        assert_eq!(b.bytes, 0);
    }

    #[test]
    fn a_job_that_was_not_queued_comes_back_whole() {
        let mut b = batch(&[(0, 0, 7, 10), (0, 0, 8, 10)]);
        let (job, _rx) = b.job();
        assert_eq!(job.frames(), 2);
        b.put_back(job);
        assert_eq!(b.len(), 2);
        let entries = b.entries();
        assert_eq!(entries.iter().map(|e| e.2).collect::<Vec<_>>(), [7, 8]);
        assert!(b.is_empty());
    }
}

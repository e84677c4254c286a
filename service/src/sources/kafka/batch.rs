//! Batching: messages gathered by the poll loop for one scoring job, copied out of librdkafka and decoded later
//! by a worker (the poll thread never decodes). A batch costs one queue slot, one wake-up and one answer.

use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{BorrowedMessage, Message};

use super::consumer::Shared;
use super::message;
use super::telemetry::{KafkaTelemetry, topic_labels};
use crate::pipeline::Decode;

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

    pub(super) fn clear(&mut self) {
        self.decodes.clear();
        self.entries.clear();
        self.bytes = 0;
    }

    pub(super) fn take(&mut self) -> (Vec<Decode>, Vec<BatchEntry>) {
        self.bytes = 0;
        (std::mem::take(&mut self.decodes), std::mem::take(&mut self.entries))
    }

    pub(super) fn add(&mut self, shared: &Shared, topic: usize, m: &BorrowedMessage<'_>) {
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
}

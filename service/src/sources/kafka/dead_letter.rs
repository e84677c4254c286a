//! Dead letters: a refused message's key and value copied to `kafka.dead_letter_topic`, with the reason, the error
//! and where it came from in headers. Never on the partition's critical path: a failed send is counted and logged.
//!
//! The producer's queue is bounded (`queue.buffering.max.messages`, `queue.buffering.max.kbytes`). When it is full
//! (the dead-letter topic's broker is slow or away) a dead letter is dropped at once and counted as
//! `framewatch_kafka_dead_letters_total{result="queue_full"}`: the poll loop never waits for the dead-letter topic,
//! and the refused message's offset moves on like any other.

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::telemetry::KafkaTelemetry;
use crate::config::KafkaConfig;
use crate::reject::Rejection;

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

/// Where a refused message came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
}

/// Dead letters waiting to be sent, at most: a burst of small refusals (poison JSON) is absorbed, and a stuck
/// broker holds at most this many.
const QUEUE_MESSAGES: usize = 10_000;
/// Dead letters' bytes waiting to be sent, at most, in largest accepted messages: a few images' worth.
const QUEUE_LARGEST_MESSAGES: usize = 4;

/// The producer queue's bound: (`queue.buffering.max.messages`, `queue.buffering.max.kbytes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct QueueBound {
    pub(super) messages: usize,
    pub(super) kbytes: usize,
}

impl QueueBound {
    /// Room for `QUEUE_MESSAGES` dead letters or `QUEUE_LARGEST_MESSAGES` of the largest accepted size (a queue
    /// smaller than one message would refuse every large one).
    pub(super) fn for_messages_of(max_message: usize) -> QueueBound {
        QueueBound { messages: QUEUE_MESSAGES, kbytes: (QUEUE_LARGEST_MESSAGES * max_message).div_ceil(1024).max(1) }
    }
}

/// The dead-letter producer.
pub(super) struct DeadLetters {
    producer: ThreadedProducer<DeadLetterContext>,
    topic: String,
    telemetry: KafkaTelemetry,
}

impl DeadLetters {
    /// None without a dead-letter topic.
    pub(super) fn start(
        cfg: &KafkaConfig,
        max_message: usize,
        telemetry: &KafkaTelemetry,
    ) -> anyhow::Result<Option<DeadLetters>> {
        if cfg.dead_letter_topic.is_empty() {
            return Ok(None);
        }
        DeadLetters::with_queue(cfg, max_message, QueueBound::for_messages_of(max_message), telemetry).map(Some)
    }

    fn with_queue(
        cfg: &KafkaConfig,
        max_message: usize,
        bound: QueueBound,
        telemetry: &KafkaTelemetry,
    ) -> anyhow::Result<DeadLetters> {
        let pc = producer_config(cfg, max_message, bound)?;
        let producer: ThreadedProducer<DeadLetterContext> = pc
            .create_with_context(DeadLetterContext { telemetry: telemetry.clone() })
            .context("kafka: cannot create the dead-letter producer")?;
        Ok(DeadLetters { producer, topic: cfg.dead_letter_topic.clone(), telemetry: telemetry.clone() })
    }

    pub(super) fn send(&self, from: Origin<'_>, r: &Rejection, key: Option<&[u8]>, value: &[u8]) {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "framewatch-reason", value: Some(r.reason.as_str()) })
            .insert(Header { key: "framewatch-error", value: Some(r.message.as_str()) })
            .insert(Header { key: "framewatch-source-topic", value: Some(from.topic) })
            .insert(Header { key: "framewatch-source-partition", value: Some(&from.partition.to_string()) })
            .insert(Header { key: "framewatch-source-offset", value: Some(&from.offset.to_string()) });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(value).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Err((e, _)) = self.producer.send(record) {
            // Never stall the partition for the dead-letter topic (send does not wait for room): counted and logged.
            let result = if is_queue_full(&e) { "queue_full" } else { "failed" };
            tracing::debug!(error = %e, result, "dead-letter message dropped");
            self.telemetry.dead_letters.get_or_create(&vec![("result".into(), result.into())]).inc();
        }
    }

    /// Waits (up to five seconds) for messages still in the producer's queue (shutdown).
    pub(super) fn flush(&self) {
        let _ = self.producer.flush(std::time::Duration::from_secs(5));
    }
}

fn is_queue_full(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
}

/// The dead-letter producer's configuration: the shared client settings, a bounded queue, a short linger.
fn producer_config(cfg: &KafkaConfig, max_message: usize, bound: QueueBound) -> anyhow::Result<rdkafka::ClientConfig> {
    let mut pc = super::client_config(cfg, max_message, super::Role::DeadLetterProducer)?;
    pc.set("linger.ms", "50");
    // After kafka.properties: the bound is part of the dead-letter policy, not a tuning knob.
    pc.set("queue.buffering.max.messages", bound.messages.to_string());
    pc.set("queue.buffering.max.kbytes", bound.kbytes.to_string());
    Ok(pc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::RejectReason;

    fn config(brokers: String) -> KafkaConfig {
        KafkaConfig { brokers, dead_letter_topic: "dlq".into(), ..KafkaConfig::default() }
    }

    #[test]
    fn the_producer_queue_is_bounded_by_messages_and_bytes() {
        let max_message = (16 << 20) + (1 << 20);
        let bound = QueueBound::for_messages_of(max_message);
        assert_eq!(bound, QueueBound { messages: 10_000, kbytes: 4 * 17 * 1024 });
        let mut cfg = config("127.0.0.1:9".into());
        // A pass-through property cannot lift the bound.
        cfg.properties.insert("queue.buffering.max.messages".into(), toml::Value::Integer(0));
        let pc = producer_config(&cfg, max_message, bound).expect("config");
        assert_eq!(pc.get("queue.buffering.max.messages"), Some("10000"));
        assert_eq!(pc.get("queue.buffering.max.kbytes"), Some("69632"));
        assert_eq!(pc.get("message.max.bytes"), Some(&*((17 << 20) + (64 << 10)).to_string()));
        assert_eq!(pc.get("fetch.max.bytes"), None, "consumer-only properties stay off the producer");
        // librdkafka accepts it.
        DeadLetters::with_queue(&cfg, max_message, bound, &KafkaTelemetry::default()).expect("producer");
    }

    /// A broker that never answers (nothing listens on the port): dead letters pile up in the producer's queue
    /// until it is full; the rest are counted as `queue_full` at once, without waiting.
    #[test]
    fn a_full_dead_letter_queue_drops_and_counts_without_waiting() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let telemetry = KafkaTelemetry::default();
        let bound = QueueBound { messages: 3, kbytes: 1024 };
        let dl = DeadLetters::with_queue(&config(format!("127.0.0.1:{port}")), 1 << 20, bound, &telemetry)
            .expect("producer");
        let r = Rejection::new(RejectReason::InvalidJson, "not JSON");
        for offset in 0..10 {
            dl.send(Origin { topic: "frames", partition: 0, offset }, &r, Some(b"k"), b"{");
        }
        let count = |result: &str| telemetry.dead_letters.get_or_create(&vec![("result".into(), result.into())]).get();
        assert_eq!(count("queue_full"), 7, "three fit in the queue, the other seven are dropped and counted");
        assert_eq!(count("failed"), 0);
    }
}

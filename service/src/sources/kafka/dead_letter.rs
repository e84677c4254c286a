//! Dead letters: a refused message's key and value copied to `kafka.dead_letter_topic`, with the reason, the error
//! and where it came from in headers. Never on the partition's critical path: a failed send is counted and logged.

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};

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

/// The dead-letter producer.
pub(super) struct DeadLetters {
    producer: ThreadedProducer<DeadLetterContext>,
    topic: String,
    telemetry: KafkaTelemetry,
}

impl DeadLetters {
    /// None without a dead-letter topic.
    pub(super) fn start(cfg: &KafkaConfig, telemetry: &KafkaTelemetry) -> anyhow::Result<Option<DeadLetters>> {
        if cfg.dead_letter_topic.is_empty() {
            return Ok(None);
        }
        let mut pc = super::client_config(cfg)?;
        pc.set("linger.ms", "50");
        let producer: ThreadedProducer<DeadLetterContext> = pc
            .create_with_context(DeadLetterContext { telemetry: telemetry.clone() })
            .context("kafka: cannot create the dead-letter producer")?;
        Ok(Some(DeadLetters { producer, topic: cfg.dead_letter_topic.clone(), telemetry: telemetry.clone() }))
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
            // Never stall the partition for the dead-letter topic: counted and logged.
            tracing::warn!(error = %e, "dead-letter message dropped");
            self.telemetry.dead_letters.get_or_create(&vec![("result".into(), "failed".into())]).inc();
        }
    }

    /// Waits (up to five seconds) for messages still in the producer's queue (shutdown).
    pub(super) fn flush(&self) {
        let _ = self.producer.flush(std::time::Duration::from_secs(5));
    }
}

//! The Kafka source's own metrics (`framewatch_kafka_*`): consumption, refusals, dead letters, commits,
//! rebalances, client errors, lag and backpressure. Label sets are bounded by the assigned topics and partitions.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::error::KafkaError;

pub(super) type Labels = Vec<(String, String)>;

pub(super) fn topic_labels(topic: &str) -> Labels {
    vec![("topic".into(), topic.into())]
}

pub(super) fn partition_labels(topic: &str, partition: i32) -> Labels {
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
            "Refused messages copied to the dead-letter topic, by result (sent; failed; queue_full: dropped because \
             the producer's bounded queue was full)",
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
        for result in ["sent", "failed", "queue_full"] {
            let _ = t.dead_letters.get_or_create(&vec![("result".into(), result.into())]);
        }
        t
    }
}

/// A client error's label: librdkafka's error code, or `other`.
pub(super) fn error_code(e: &KafkaError) -> String {
    e.rdkafka_error_code().map_or_else(|| "other".to_string(), |c| format!("{c:?}"))
}

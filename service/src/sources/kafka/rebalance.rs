//! Rebalances. On assignment, partitions found in the restored checkpoint resume from the larger of the
//! checkpoint's offset and the group's committed one. On revoke, everything recorded from the partitions is
//! settled, checkpointed and committed before another instance takes them over, then the partitions are forgotten.
//! With `cooperative-sticky`, an assignment and a revoke name only the partitions that change hands; the others
//! keep their place in the book and the messages gathered from them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::consumer::{Ctx, Shared};
use super::telemetry::partition_labels;
use crate::http::GroupStatus;

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let shared = &self.shared;
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        shared.rebalanced.store(true, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => assign(shared, consumer, tpl, cooperative),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => revoke(shared, consumer, tpl, cooperative),
            other => {
                shared.telemetry.rebalances.get_or_create(&[("kind", "error")]).inc();
                tracing::error!(error = ?other, "kafka: rebalance error");
                let _ = consumer.unassign();
            }
        }
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        shared.telemetry.assigned.set(assigned as i64);
        // An assignment with nothing in it (eager protocol: the whole assignment) is the group saying it has more
        // members than partitions (librdkafka does not join at all while no subscribed topic exists); an empty
        // assignment after a revoke is a rebalance still under way.
        shared.group.set(match err {
            _ if assigned > 0 => GroupStatus::Assigned(assigned),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => GroupStatus::Standby,
            _ => GroupStatus::Rebalancing,
        });
    }
}

fn assign(shared: &Shared, consumer: &BaseConsumer<Ctx>, tpl: &mut TopicPartitionList, cooperative: bool) {
    shared.telemetry.rebalances.get_or_create(&[("kind", "assign")]).inc();
    shared.connected();
    apply_resume_offsets(shared, consumer, tpl);
    let r = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
    if let Err(e) = r {
        tracing::error!(error = %e, "kafka: cannot take the assigned partitions");
    }
    if shared.paused.load(Ordering::SeqCst) {
        // Assigned while backpressure holds the rest paused: fetching them would only add to a full queue. They
        // are resumed with the rest (backpressure resumes the whole assignment).
        super::backpressure::pause(consumer, tpl);
    }
    let parts: Vec<String> = tpl.elements().iter().map(|e| format!("{}[{}]", e.topic(), e.partition())).collect();
    tracing::info!(partitions = ?parts, "kafka: partitions assigned");
}

fn revoke(shared: &Shared, consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList, cooperative: bool) {
    shared.telemetry.rebalances.get_or_create(&[("kind", "revoke")]).inc();
    // Everything recorded from these partitions is checkpointed and committed before another instance takes
    // them over, so it starts after what this one counted.
    if consumer.assignment_lost() {
        tracing::warn!(
            "kafka: assignment lost (session timed out); frames since the last commit may be counted again by the new owner"
        );
    } else {
        shared.checkpoint_and_commit(consumer, true);
    }
    let revoked: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    // The poll loop drops what it gathered from these and has not queued yet (only these: with cooperative-sticky
    // the others stay assigned, and dropping their messages would commit past them).
    shared.revoked.lock().unwrap_or_else(|p| p.into_inner()).extend(revoked.iter().cloned());
    {
        let mut book = shared.book();
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

/// Sets the start offset of assigned partitions that the restored checkpoint covers.
fn apply_resume_offsets(shared: &Shared, consumer: &BaseConsumer<Ctx>, tpl: &mut TopicPartitionList) {
    let mut resume = shared.resume_from.lock().unwrap_or_else(|p| p.into_inner());
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
    let committed = committed_offsets(consumer, mine);
    let mut book = shared.book();
    let assigned: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    for key in assigned {
        let Some(saved) = resume.remove(&key) else { continue };
        let (topic, partition) = (key.0.as_str(), key.1);
        let start = committed.get(&key).map_or(saved, |&c| c.max(saved));
        if let Err(err) = tpl.set_partition_offset(topic, partition, Offset::Offset(start)) {
            tracing::error!(error = %err, topic, partition, "kafka: cannot set start offset");
            continue;
        }
        tracing::info!(topic, partition, checkpoint = saved, start, "kafka: resuming from checkpoint");
        book.resume_at(topic, partition, start);
    }
}

/// The group's committed offsets of `partitions`: another instance may have moved past the checkpoint while this
/// one was away. Empty (resume from the checkpoint) when the broker cannot say.
fn committed_offsets(consumer: &BaseConsumer<Ctx>, partitions: TopicPartitionList) -> HashMap<(String, i32), i64> {
    match consumer.committed_offsets(partitions, Duration::from_secs(10)) {
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
    }
}

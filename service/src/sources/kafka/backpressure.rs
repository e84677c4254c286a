//! Backpressure: when the scoring queue is full, the poll thread first waits a little for room, then pauses the
//! assigned partitions (librdkafka stops fetching and drops what it prefetched) until the queue is down to half,
//! then resumes. Memory stays bounded by the queue; pausing costs a refetch, so short stalls do not pause.
//!
//! While paused the consumer is still polled (a paused consumer returns no messages of paused partitions), so
//! rebalance callbacks run and `max.poll.interval.ms` never expires: a long pause does not throw the member out of
//! the group. A rebalance during the pause is served like any other: messages of revoked partitions that wait for
//! the queue are dropped (the next owner reads them from the committed offset), and partitions assigned during
//! the pause are paused at once (they would only add to a full queue) and resumed with the rest: the resume
//! covers the assignment as it is then, so no partition stays paused. A message that still arrives (one fetched
//! before its partition was paused) is kept for the next batch, not lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::oneshot;

use super::batch::Batch;
use super::consumer::{Ctx, PollLoop, Polled, Shared};
use crate::pipeline::{Outcome, TrySubmitError};

/// How long one poll waits while paused: the queue's depth is checked this often.
const POLL_WHILE_PAUSED: Duration = Duration::from_millis(10);

/// What a submit attempt came to.
pub(super) enum Submitted {
    /// Queued; the answer comes on this receiver.
    Queued(oneshot::Receiver<Vec<Outcome>>),
    /// Every message of the batch belonged to partitions revoked while it waited: nothing was queued.
    Revoked,
    Stopping,
}

/// One attempt; `None` when the queue has no room (the batch keeps its messages).
fn try_submit(shared: &Shared, held: &mut Batch) -> Option<Submitted> {
    let (job, rx) = held.job();
    match shared.pipeline.try_submit(job) {
        Ok(()) => Some(Submitted::Queued(rx)),
        Err(TrySubmitError::ShuttingDown(_)) => Some(Submitted::Stopping),
        Err(TrySubmitError::Full(job)) => {
            held.put_back(*job);
            None
        }
    }
}

/// Queues the batch. When the queue is full: waits up to `kafka.pause_after_ms` for room (librdkafka keeps
/// prefetching meanwhile, within `queued.max.messages.kbytes`); if the queue is still full, pauses the assigned
/// partitions until the queue is down to half, then resumes.
pub(super) fn submit(lp: &mut PollLoop, held: &mut Batch) -> Submitted {
    if let Some(done) = try_submit(&lp.shared, held) {
        return done;
    }
    let grace = Duration::from_millis(lp.shared.config.pause_after_ms);
    let (frames, pipeline) = (held.len(), lp.shared.pipeline.clone());
    let room = lp.runtime.block_on(async { tokio::time::timeout(grace, pipeline.room(frames)).await });
    if room.is_ok()
        && let Some(done) = try_submit(&lp.shared, held)
    {
        return done;
    }
    paused(lp, held)
}

/// Pauses every partition assigned now; logged, not fatal, when librdkafka refuses.
pub(super) fn pause(consumer: &BaseConsumer<Ctx>, partitions: &TopicPartitionList) {
    if let Err(e) = consumer.pause(partitions) {
        tracing::warn!(error = %e, "kafka: cannot pause partitions");
    }
}

fn assignment(consumer: &BaseConsumer<Ctx>) -> TopicPartitionList {
    consumer.assignment().unwrap_or_else(|_| TopicPartitionList::new())
}

/// Pauses the assignment until the queue has drained to half and the batch is queued (or the source stops, or
/// the batch's partitions are all revoked), polling all the while.
fn paused(lp: &mut PollLoop, held: &mut Batch) -> Submitted {
    let shared = lp.shared.clone();
    shared.paused.store(true, Ordering::SeqCst);
    pause(&lp.consumer, &assignment(&lp.consumer));
    shared.telemetry.paused.set(1);
    shared.telemetry.pauses.inc();
    let low_water = shared.pipeline.capacity() / 2;
    let done = loop {
        if lp.stop.is_cancelled() {
            break Submitted::Stopping;
        }
        if held.is_empty() {
            break Submitted::Revoked;
        }
        if shared.pipeline.depth() > low_water {
            if let Polled::Message = lp.poll(POLL_WHILE_PAUSED, Some(held)) {
                // Fetched before its partition was paused: kept in the next batch. Pausing again is cheap and
                // stops whatever let it through.
                pause(&lp.consumer, &assignment(&lp.consumer));
            }
            shared.settle_answered();
            continue;
        }
        if let Some(done) = try_submit(&shared, held) {
            break done;
        }
    };
    shared.paused.store(false, Ordering::SeqCst);
    // The assignment as it is now (a rebalance may have changed it). Fetching restarts after the last message
    // handed to us, so nothing is skipped.
    if let Err(e) = lp.consumer.resume(&assignment(&lp.consumer)) {
        tracing::warn!(error = %e, "kafka: cannot resume partitions");
    }
    shared.telemetry.paused.set(0);
    done
}

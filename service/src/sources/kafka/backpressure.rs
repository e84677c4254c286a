//! Backpressure: when the scoring queue is full, the poll thread first waits a little for room, then pauses the
//! assigned partitions (librdkafka stops fetching and drops what it prefetched) until the queue is down to half,
//! then resumes. Memory stays bounded by the queue; pausing costs a refetch, so short stalls do not pause.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::consumer::{Ctx, Shared};
use crate::pipeline::{Job, TrySubmitError};

/// What a submit attempt came to.
enum Tried {
    Queued,
    Stopping,
    Full(Job),
}

fn try_submit(shared: &Shared, job: Job) -> Tried {
    match shared.pipeline.try_submit(job) {
        Ok(()) => Tried::Queued,
        Err(TrySubmitError::ShuttingDown(_)) => Tried::Stopping,
        Err(TrySubmitError::Full(job)) => Tried::Full(*job),
    }
}

/// Queues a job. When the queue is full: waits up to `kafka.pause_after_ms` for room (librdkafka keeps
/// prefetching meanwhile, within `queued.max.messages.kbytes`); if the queue is still full, pauses the assigned
/// partitions until the queue is down to half, then resumes. False when stopping.
pub(super) fn submit(
    consumer: &BaseConsumer<Ctx>,
    shared: &Shared,
    stop: &CancellationToken,
    runtime: &tokio::runtime::Handle,
    job: Job,
) -> bool {
    let job = match try_submit(shared, job) {
        Tried::Queued => return true,
        Tried::Stopping => return false,
        Tried::Full(job) => job,
    };
    let grace = Duration::from_millis(shared.config.pause_after_ms);
    let frames = job.frames();
    let room = runtime.block_on(async { tokio::time::timeout(grace, shared.pipeline.room(frames)).await });
    let job = if room.is_ok() {
        match try_submit(shared, job) {
            Tried::Queued => return true,
            Tried::Stopping => return false,
            Tried::Full(job) => job,
        }
    } else {
        job
    };
    paused(consumer, shared, stop, job)
}

/// Pauses the assignment until the queue has drained to half and the job is queued (or the source stops).
fn paused(consumer: &BaseConsumer<Ctx>, shared: &Shared, stop: &CancellationToken, mut job: Job) -> bool {
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
            shared.settle_answered();
            continue;
        }
        match try_submit(shared, job) {
            Tried::Queued => break true,
            Tried::Stopping => break false,
            Tried::Full(j) => job = j,
        }
    };
    // Fetching restarts after the last message handed to us, so nothing is skipped.
    if let Err(e) = consumer.resume(&assignment) {
        tracing::warn!(error = %e, "kafka: cannot resume partitions");
    }
    shared.telemetry.paused.set(0);
    queued
}

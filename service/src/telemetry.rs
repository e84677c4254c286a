//! Ingest telemetry shared by every source and the scoring workers: frames received, accepted and refused (by
//! source and reason), queue depth and scoring time. A leaf: stages take a clone; nothing here knows a stage.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reject::RejectReason;

type SourceLabel = [(&'static str, &'static str); 1];
type ReasonLabels = [(&'static str, &'static str); 2];

/// Ingest-side metrics, shared by every source and worker.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub received: Family<SourceLabel, Counter>,
    pub accepted: Family<SourceLabel, Counter>,
    pub rejected: Family<ReasonLabels, Counter>,
    pub queue_depth: Gauge,
    /// Jobs queued: one per frame, or one per batch of frames (frames received / jobs = the mean batch).
    pub queue_jobs: Counter,
    pub scoring_seconds: Histogram,
}

impl Telemetry {
    /// Registers everything in `registry` (which must not already hold framewatch's metrics).
    pub fn register(registry: &mut Registry, queue_capacity: usize) -> Telemetry {
        let t = Telemetry {
            received: Family::default(),
            accepted: Family::default(),
            rejected: Family::default(),
            queue_depth: Gauge::default(),
            queue_jobs: Counter::default(),
            scoring_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        };
        registry.register("framewatch_frames_received", "Frames received, by source", t.received.clone());
        registry.register("framewatch_frames_accepted", "Frames scored and recorded, by source", t.accepted.clone());
        registry.register(
            "framewatch_frames_rejected",
            "Frames refused, by source and reason (see README for the reasons)",
            t.rejected.clone(),
        );
        registry.register("framewatch_queue_depth", "Frames queued or being scored", t.queue_depth.clone());
        registry.register(
            "framewatch_queue_jobs",
            "Jobs queued for the scoring workers: a frame, or a batch of frames (a gRPC stream's buffered frames, a \
             Kafka batch)",
            t.queue_jobs.clone(),
        );
        let capacity: Gauge = Gauge::default();
        capacity.set(queue_capacity as i64);
        registry.register("framewatch_queue_capacity", "Capacity of the scoring queue", capacity);
        registry.register(
            "framewatch_scoring_duration_seconds",
            "Time to decode and score one frame (worker thread)",
            t.scoring_seconds.clone(),
        );
        // gRPC ingest is always on.
        t.start_at_zero("grpc");
        t
    }

    /// Creates `source`'s counters at 0, every refusal reason included, so rate() rules and scrapes see 0 rather
    /// than no series before the first frame (or the first refusal of a kind).
    pub fn start_at_zero(&self, source: &'static str) {
        let _ =
            (self.received.get_or_create(&[("source", source)]), self.accepted.get_or_create(&[("source", source)]));
        for r in RejectReason::ALL {
            let _ = self.rejected.get_or_create(&[("source", source), ("reason", r.as_str())]);
        }
    }

    pub fn reject(&self, source: &'static str, reason: RejectReason) {
        self.rejected.get_or_create(&[("source", source), ("reason", reason.as_str())]).inc();
    }
}

//! The join as the sources and the workers share it: one lock around the `JoinStore`, the label counters, and the
//! conversion of a wire `FrameLabels` into `Labels`.

use std::sync::{Arc, Mutex, MutexGuard};

use framewatch_metrics::performance::TruthBox;
use framewatch_proto::v1;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{JoinStore, LabelResult, Labels};
use crate::time::{Clock, now_secs};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    source: &'static str,
    result: &'static str,
}

/// `framewatch_labels_received_total{source, result}`.
#[derive(Debug, Clone, Default)]
pub struct LabelTelemetry {
    received: Family<ResultLabels, Counter>,
}

impl LabelTelemetry {
    pub fn register(registry: &mut Registry) -> LabelTelemetry {
        let t = LabelTelemetry::default();
        registry.register(
            "framewatch_labels_received",
            "Ground-truth label messages, by source and result (joined, replaced, held, or the reason they were \
             refused; see README)",
            t.received.clone(),
        );
        t
    }

    /// Every result of `source` starts at 0, so rates and absent-series alerts work before the first label.
    pub fn start_at_zero(&self, source: &'static str) {
        for r in LabelResult::ALL {
            let _ = self.received.get_or_create(&ResultLabels { source, result: r.as_str() });
        }
    }

    pub fn count(&self, source: &'static str, result: LabelResult) {
        self.received.get_or_create(&ResultLabels { source, result: result.as_str() }).inc();
    }
}

/// The shared join: cheap to clone.
#[derive(Debug, Clone)]
pub struct Truth {
    join: Arc<Mutex<JoinStore>>,
    telemetry: LabelTelemetry,
    clock: Arc<dyn Clock>,
    /// `labels.max_objects`, for checks made before the lock is taken.
    max_objects: usize,
}

impl Truth {
    pub fn new(join: JoinStore, telemetry: LabelTelemetry, clock: Arc<dyn Clock>) -> Truth {
        let max_objects = join.settings().max_objects;
        Truth { join: Arc::new(Mutex::new(join)), telemetry, clock, max_objects }
    }

    pub fn lock(&self) -> MutexGuard<'_, JoinStore> {
        self.join.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Arc<Mutex<JoinStore>> {
        &self.join
    }

    pub fn telemetry(&self) -> &LabelTelemetry {
        &self.telemetry
    }

    /// Checks and joins one label message; the result is counted and returned with a message for the client.
    pub fn offer(&self, source: &'static str, labels: &Labels) -> (LabelResult, String) {
        let (result, message) = match labels.check(self.max_objects) {
            Err(refused) => refused,
            Ok(()) => {
                let now = now_secs(self.clock.as_ref());
                let r = self.lock().offer_labels(labels, now);
                (r, message_for(r))
            }
        };
        self.telemetry.count(source, result);
        (result, message)
    }
}

fn message_for(r: LabelResult) -> String {
    match r {
        LabelResult::Joined | LabelResult::Replaced => String::new(),
        LabelResult::Held => "frame not seen yet: held for up to labels.early_secs".into(),
        LabelResult::UnknownFrame => "no frame with this frame_id was seen".into(),
        LabelResult::FrameExpired => {
            "the frame was seen longer ago than labels.max_delay_secs (or dropped at labels.max_frames)".into()
        }
        LabelResult::TooLate => "the frame was captured before the performance window (labels.window_secs)".into(),
        other => other.as_str().replace('_', " "),
    }
}

/// The wire form as `Labels` (checked later, by `Labels::check`).
pub fn labels_from_proto(l: v1::FrameLabels) -> Labels {
    let truth = l
        .boxes
        .into_iter()
        .map(|b| TruthBox {
            x_min: b.x_min,
            y_min: b.y_min,
            x_max: b.x_max,
            y_max: b.y_max,
            class_label: b.class_label,
        })
        .collect();
    Labels { frame_id: l.frame_id, truth, no_objects: l.no_objects }
}

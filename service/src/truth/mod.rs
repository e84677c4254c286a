//! Ground truth, joined late. A frame that carries a `frame_id` leaves here what a join needs (its detections, the
//! slices it was counted in and its tracked metric values); labels that arrive later, or a little earlier, for that
//! id are matched against those detections (`framewatch_metrics::performance::match_frame`), and the match is kept
//! while the frame's capture time is inside the performance window (`labels.window_secs`). The evaluation sums each
//! slice's matches into mAP, precision, recall and F1 (`window`).
//!
//! Bounded, each bound with its policy: at most `labels.max_frames` frames (when full the oldest goes, counted
//! `capacity`), at most `labels.max_early` labels waiting for their frame (when full the oldest goes, counted), and a
//! memory of the last `EXPIRED_MEMORY` expired ids, only to tell `frame_expired` from `unknown_frame`.
//! Stage: beside the window store (the scoring workers offer frames once recorded; the label sources offer labels).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use framewatch_metrics::Detection;
use framewatch_metrics::label_quality::label_quality;
use framewatch_metrics::performance::{
    FrameMatch, LabelError, LabelledFrame, PerformanceSettings, TruthBox, match_frame, validate_truth,
};

use crate::fingerprint::fingerprint;

mod saved;
mod shared;

pub use saved::{SavedEarly, SavedEntry, SavedJoin};
pub use shared::{LabelTelemetry, Truth, labels_from_proto};

/// How the join waits and what it keeps (from `[labels]`).
#[derive(Debug, Clone, PartialEq)]
pub struct JoinSettings {
    /// How long after framewatch received a frame its labels may come.
    pub max_delay_secs: i64,
    /// Performance windows span this much capture time, ending now; a join for a frame captured earlier lands in
    /// no window (`too_late`).
    pub window_secs: i64,
    /// Frames kept for joining (waiting or joined).
    pub max_frames: usize,
    /// How long labels wait for a frame framewatch has not seen yet; 0: labels for an unknown id are refused.
    pub early_secs: i64,
    /// Labels kept waiting for their frame.
    pub max_early: usize,
    /// Labelled objects per frame.
    pub max_objects: usize,
    pub performance: PerformanceSettings,
}

impl From<&crate::config::LabelsConfig> for JoinSettings {
    fn from(c: &crate::config::LabelsConfig) -> Self {
        JoinSettings {
            max_delay_secs: c.max_delay_secs as i64,
            window_secs: c.window_secs as i64,
            max_frames: c.max_frames,
            early_secs: c.early_secs as i64,
            max_early: c.max_early,
            max_objects: c.max_objects,
            performance: PerformanceSettings {
                iou_threshold: c.iou_threshold,
                score_threshold: c.score_threshold,
                ..PerformanceSettings::default()
            },
        }
    }
}

/// The `[labels]` defaults (one place states them: `LabelsConfig::default`).
impl Default for JoinSettings {
    fn default() -> Self {
        JoinSettings::from(&crate::config::LabelsConfig::default())
    }
}

/// Longest frame id, in bytes.
pub const MAX_FRAME_ID_BYTES: usize = 256;
/// Expired frame ids remembered (as 64-bit fingerprints), so late labels for them are refused as `frame_expired`.
const EXPIRED_MEMORY: usize = 100_000;

macro_rules! label_results {
    ($($variant:ident => $label:literal, $accepted:literal, $doc:literal;)*) => {
        /// What became of one label message. `as_str()` is the stable `result` label of
        /// `framewatch_labels_received_total` and the `reason` a refused label's acknowledgement carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum LabelResult {
            $(#[doc = $doc] $variant,)*
        }

        impl LabelResult {
            pub const ALL: &'static [LabelResult] = &[$(LabelResult::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(LabelResult::$variant => $label,)*
                }
            }

            /// Joined, replaced or held: the client need not send it again.
            pub fn accepted(self) -> bool {
                match self {
                    $(LabelResult::$variant => $accepted,)*
                }
            }
        }
    };
}

label_results! {
    Joined => "joined", true, "Matched with its frame's detections; counts in the performance windows.";
    Replaced => "replaced", true, "A frame already labelled got new labels: the last ones count (duplicates are counted so).";
    Held => "held", true, "Its frame has not arrived yet: held for up to labels.early_secs.";
    MissingFrameId => "missing_frame_id", false, "The labels name no frame_id.";
    InvalidFrameId => "invalid_frame_id", false, "The frame_id is longer than 256 bytes or has control characters.";
    EmptyLabels => "empty_labels", false, "No boxes and no_objects unset: say no_objects = true for a frame without objects.";
    ContradictoryLabels => "contradictory_labels", false, "Boxes together with no_objects = true.";
    InvalidLabelBox => "invalid_label_box", false, "A box is not a normalised box with min <= max (NaN, out of [0, 1], inverted).";
    TooManyLabels => "too_many_labels", false, "More labelled objects than labels.max_objects.";
    InvalidLabelClass => "invalid_label_class", false, "A class label is longer than 64 bytes or has control characters.";
    UnknownFrame => "unknown_frame", false, "No frame with this id was seen (and labels.early_secs is 0).";
    FrameExpired => "frame_expired", false, "The frame was seen longer ago than labels.max_delay_secs and is no longer kept.";
    TooLate => "too_late", false, "The frame was captured before the performance window (labels.window_secs): it would count nowhere.";
    InvalidMessage => "invalid_message", false, "A labels message over the message size limit (gRPC or Kafka; the gRPC stream then ends with RESOURCE_EXHAUSTED), or a Kafka one that is empty or neither framewatch's JSON labels nor a framewatch.v1.FrameLabels.";
}

impl From<&LabelError> for LabelResult {
    fn from(e: &LabelError) -> Self {
        match e {
            LabelError::BadBox { .. } => LabelResult::InvalidLabelBox,
            LabelError::TooMany { .. } => LabelResult::TooManyLabels,
            LabelError::BadClass { .. } => LabelResult::InvalidLabelClass,
        }
    }
}

/// Checks a frame id (from a frame or from labels).
pub fn valid_frame_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_FRAME_ID_BYTES && !id.chars().any(char::is_control)
}

/// One frame's labels as a source hands them over; an empty `truth` with `no_objects` means "nothing to find".
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub frame_id: String,
    pub truth: Vec<TruthBox>,
    pub no_objects: bool,
}

impl Labels {
    /// The checks a label message passes before it reaches the join.
    pub fn check(&self, max_objects: usize) -> Result<(), (LabelResult, String)> {
        if self.frame_id.is_empty() {
            return Err((LabelResult::MissingFrameId, "frame_id is empty".into()));
        }
        if !valid_frame_id(&self.frame_id) {
            return Err((
                LabelResult::InvalidFrameId,
                format!("frame_id is longer than {MAX_FRAME_ID_BYTES} bytes or has control characters"),
            ));
        }
        match (self.truth.is_empty(), self.no_objects) {
            (true, false) => {
                return Err((
                    LabelResult::EmptyLabels,
                    "no boxes: set no_objects = true for a frame without objects".into(),
                ));
            }
            (false, true) => {
                return Err((
                    LabelResult::ContradictoryLabels,
                    format!("{} boxes with no_objects = true", self.truth.len()),
                ));
            }
            _ => {}
        }
        validate_truth(&self.truth, max_objects).map_err(|e| (LabelResult::from(&e), e.to_string()))
    }
}

/// A frame offered to the join by a scoring worker, once the window store recorded it.
#[derive(Debug, Clone, Copy)]
pub struct JoinFrame<'a> {
    pub frame_id: &'a str,
    pub capture_secs: i64,
    pub detections: &'a [Detection],
    /// The slice keys the store counted the frame in.
    pub slices: &'a [String],
    /// Metric values in registry order.
    pub values: &'a [Option<f64>],
}

/// A box as the join keeps it (class names interned).
#[derive(Debug, Clone, PartialEq)]
struct KeptBox {
    corners: [f32; 4],
    confidence: f32,
    class: Arc<str>,
}

/// A labelled frame in the performance windows: its match and its metric values (for metric importance).
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// Join order: sums run in this order, so a window's numbers do not depend on map iteration.
    pub seq: u64,
    pub matched: FrameMatch,
    /// Tracked metric values (`JoinStore::metrics` order), NaN where the frame had none.
    pub values: Box<[f32]>,
    /// The labels' quality (`label_quality::LABEL_METRICS` order), NaN where undefined.
    pub label_values: [f32; 4],
}

#[derive(Debug)]
struct Entry {
    capture_secs: i64,
    seen_secs: i64,
    detections: Box<[KeptBox]>,
    slices: Box<[Arc<str>]>,
    values: Box<[f32]>,
    /// The labels, once joined (empty: no objects).
    truth: Option<Box<[KeptBox]>>,
    labelled: Option<Arc<Labelled>>,
}

impl Entry {
    /// Bytes the entry holds beyond the map's own slot (the `framewatch_label_join_bytes` estimate).
    fn heap_bytes(&self, id: &str) -> usize {
        let boxes = |n: usize| n * std::mem::size_of::<KeptBox>();
        let labelled = self.labelled.as_ref().map_or(0, |l| {
            std::mem::size_of::<Labelled>()
                + l.values.len() * 4
                + l.matched.classes.iter().map(|c| 96 + c.class.len() + c.detections.len() * 8).sum::<usize>()
        });
        id.len()
            + boxes(self.detections.len())
            + self.slices.len() * 16
            + self.values.len() * 4
            + self.truth.as_ref().map_or(0, |t| boxes(t.len()))
            + labelled
    }
}

#[derive(Debug)]
struct Early {
    truth: Vec<TruthBox>,
    received_secs: i64,
}

/// The join's counters (exported as Prometheus counters; not checkpointed, they restart with the process).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JoinCounters {
    /// Frames whose id was already kept (the first one stays).
    pub frames_duplicate_id: u64,
    /// Frames dropped before any labels came: waited `max_delay_secs`.
    pub frames_expired_unlabelled: u64,
    /// Frames dropped because `max_frames` were kept (oldest first).
    pub frames_dropped_capacity: u64,
    /// Held labels whose frame never came within `early_secs`.
    pub early_expired: u64,
    /// Held labels dropped because `max_early` were held (oldest first).
    pub early_dropped_capacity: u64,
    /// Held labels whose frame came but was captured before the performance window: they count nowhere.
    pub early_too_late: u64,
}

/// Gauges of what the join holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JoinSize {
    pub waiting: usize,
    pub labelled: usize,
    pub early: usize,
    pub bytes: usize,
}

/// The join: frames waiting for labels, labels waiting for frames, and labelled frames.
#[derive(Debug)]
pub struct JoinStore {
    settings: JoinSettings,
    /// Registry indices of the metric values kept per frame, and their names.
    metrics: Vec<(usize, Arc<str>)>,
    entries: HashMap<Arc<str>, Entry>,
    /// Ids in arrival order, for dropping the oldest when full (ids already gone are skipped).
    order: VecDeque<Arc<str>>,
    early: HashMap<Arc<str>, Early>,
    early_order: VecDeque<Arc<str>>,
    expired: HashSet<u64>,
    expired_order: VecDeque<u64>,
    /// Interned class names and slice keys (pruned with the entries that use them).
    names: HashSet<Arc<str>>,
    next_seq: u64,
    counters: JoinCounters,
    bytes: usize,
    /// Entries with labels (the rest wait for theirs).
    labelled: usize,
}

impl JoinStore {
    /// `metrics`: registry index and name of each metric value a labelled frame keeps (for metric importance).
    pub fn new(settings: JoinSettings, metrics: Vec<(usize, Arc<str>)>) -> JoinStore {
        JoinStore {
            settings,
            metrics,
            entries: HashMap::new(),
            order: VecDeque::new(),
            early: HashMap::new(),
            early_order: VecDeque::new(),
            expired: HashSet::new(),
            expired_order: VecDeque::new(),
            names: HashSet::new(),
            next_seq: 0,
            counters: JoinCounters::default(),
            bytes: 0,
            labelled: 0,
        }
    }

    pub fn settings(&self) -> &JoinSettings {
        &self.settings
    }

    /// Names of the metric values labelled frames keep, in `Labelled::values` order.
    pub fn metric_names(&self) -> Vec<Arc<str>> {
        self.metrics.iter().map(|(_, n)| n.clone()).collect()
    }

    pub fn counters(&self) -> JoinCounters {
        self.counters
    }

    pub fn size(&self) -> JoinSize {
        JoinSize {
            waiting: self.entries.len() - self.labelled,
            labelled: self.labelled,
            early: self.early.len(),
            bytes: self.bytes
                + self.entries.len() * (std::mem::size_of::<Entry>() + 40)
                + self.early.len() * (std::mem::size_of::<Early>() + 40),
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }

    /// Keeps a recorded frame for joining. Labels already held for its id join at once.
    pub fn offer_frame(&mut self, frame: &JoinFrame<'_>, now_secs: i64) {
        if self.entries.contains_key(frame.frame_id) {
            self.counters.frames_duplicate_id += 1;
            return;
        }
        while self.entries.len() >= self.settings.max_frames.max(1) {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(e) = self.entries.remove(&old) {
                self.bytes -= e.heap_bytes(&old);
                self.labelled -= usize::from(e.labelled.is_some());
                self.counters.frames_dropped_capacity += 1;
                self.remember_expired(&old);
            }
        }
        let detections = frame
            .detections
            .iter()
            .map(|d| KeptBox {
                corners: [d.x_min, d.y_min, d.x_max, d.y_max],
                confidence: d.confidence,
                class: self.intern(&d.class_label),
            })
            .collect();
        let slices = frame.slices.iter().map(|s| self.intern(s)).collect();
        let values = self
            .metrics
            .iter()
            .map(|(i, _)| frame.values.get(*i).copied().flatten().map_or(f32::NAN, |v| v as f32))
            .collect();
        let id: Arc<str> = Arc::from(frame.frame_id);
        let entry = Entry {
            capture_secs: frame.capture_secs,
            seen_secs: now_secs,
            detections,
            slices,
            values,
            truth: None,
            labelled: None,
        };
        self.bytes += entry.heap_bytes(&id);
        self.entries.insert(id.clone(), entry);
        self.order.push_back(id.clone());
        if let Some(early) = self.early.remove(frame.frame_id) {
            // Joined at once; whether it lands in a window is the join's usual check.
            if self.join(&id, &early.truth, now_secs) == LabelResult::TooLate {
                self.counters.early_too_late += 1;
            }
        }
    }

    /// Joins one frame's checked labels (see `Labels::check`).
    pub fn offer_labels(&mut self, labels: &Labels, now_secs: i64) -> LabelResult {
        let id = labels.frame_id.as_str();
        if self.entries.contains_key(id) {
            return self.join(id, &labels.truth, now_secs);
        }
        if self.expired.contains(&fingerprint(id.as_bytes())) {
            return LabelResult::FrameExpired;
        }
        if self.settings.early_secs <= 0 {
            return LabelResult::UnknownFrame;
        }
        if let Some(e) = self.early.get_mut(id) {
            e.truth = labels.truth.clone();
            e.received_secs = now_secs;
            return LabelResult::Held;
        }
        while self.early.len() >= self.settings.max_early.max(1) {
            let Some(old) = self.early_order.pop_front() else { break };
            if self.early.remove(&old).is_some() {
                self.counters.early_dropped_capacity += 1;
            }
        }
        let key: Arc<str> = Arc::from(id);
        self.early.insert(key.clone(), Early { truth: labels.truth.clone(), received_secs: now_secs });
        self.early_order.push_back(key);
        LabelResult::Held
    }

    fn join(&mut self, id: &str, truth: &[TruthBox], now_secs: i64) -> LabelResult {
        let window_start = now_secs - self.settings.window_secs;
        let kept: Box<[KeptBox]> = truth
            .iter()
            .map(|t| KeptBox {
                corners: [t.x_min, t.y_min, t.x_max, t.y_max],
                confidence: 1.0,
                class: self.intern(&t.class_label),
            })
            .collect();
        let seq = self.next_seq;
        let settings = self.settings.performance;
        let Some(entry) = self.entries.get_mut(id) else { return LabelResult::UnknownFrame };
        if entry.capture_secs < window_start {
            return LabelResult::TooLate;
        }
        let replaced = entry.truth.is_some();
        self.labelled += usize::from(!replaced);
        self.bytes -= entry.heap_bytes(id);
        let labelled = labelled(entry, &kept, seq, &settings);
        entry.truth = Some(kept);
        entry.labelled = Some(Arc::new(labelled));
        self.bytes += entry.heap_bytes(id);
        self.next_seq += 1;
        if replaced { LabelResult::Replaced } else { LabelResult::Joined }
    }

    fn remember_expired(&mut self, id: &str) {
        let f = fingerprint(id.as_bytes());
        if self.expired.insert(f) {
            self.expired_order.push_back(f);
            if self.expired_order.len() > EXPIRED_MEMORY
                && let Some(old) = self.expired_order.pop_front()
            {
                self.expired.remove(&old);
            }
        }
    }

    /// Ages out what has waited too long: frames unlabelled after `max_delay_secs`, labelled frames once their
    /// capture time leaves the performance window (and `max_delay_secs` has passed), held labels after
    /// `early_secs`. Run on the evaluation's interval.
    pub fn expire(&mut self, now_secs: i64) {
        let (delay, window_start) = (self.settings.max_delay_secs, now_secs - self.settings.window_secs);
        let mut gone = Vec::new();
        self.entries.retain(|id, e| {
            let waited_out = e.seen_secs + delay < now_secs;
            let keep = !waited_out || (e.labelled.is_some() && e.capture_secs >= window_start);
            if !keep {
                gone.push((id.clone(), e.labelled.is_none(), e.heap_bytes(id)));
            }
            keep
        });
        for (id, unlabelled, bytes) in gone {
            self.bytes -= bytes;
            self.labelled -= usize::from(!unlabelled);
            self.counters.frames_expired_unlabelled += u64::from(unlabelled);
            self.remember_expired(&id);
        }
        let early_limit = now_secs - self.settings.early_secs;
        let before = self.early.len();
        self.early.retain(|_, e| e.received_secs >= early_limit);
        self.counters.early_expired += (before - self.early.len()) as u64;
        let (entries, early) = (&self.entries, &self.early);
        self.order.retain(|id| entries.contains_key(id));
        self.early_order.retain(|id| early.contains_key(id));
        // An interned name held only here (and by no entry) is dropped.
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }

    /// The labelled frames captured in the performance window ending at `now_secs`, per slice, in join order.
    pub fn window(&self, now_secs: i64) -> HashMap<Arc<str>, Vec<Arc<Labelled>>> {
        let start = now_secs - self.settings.window_secs;
        let mut out: HashMap<Arc<str>, Vec<Arc<Labelled>>> = HashMap::new();
        for e in self.entries.values() {
            let Some(l) = &e.labelled else { continue };
            if e.capture_secs < start {
                continue;
            }
            for s in e.slices.iter() {
                out.entry(s.clone()).or_default().push(l.clone());
            }
        }
        for v in out.values_mut() {
            v.sort_unstable_by_key(|l| l.seq);
        }
        out
    }
}

impl JoinStore {
    /// One slice's labelled frames captured in the performance window ending at `now_secs`, in join order.
    pub fn slice_window(&self, slice: &str, now_secs: i64) -> Vec<Arc<Labelled>> {
        let start = now_secs - self.settings.window_secs;
        let mut out: Vec<Arc<Labelled>> = self
            .entries
            .values()
            .filter(|e| e.capture_secs >= start && e.slices.iter().any(|s| &**s == slice))
            .filter_map(|e| e.labelled.clone())
            .collect();
        out.sort_unstable_by_key(|l| l.seq);
        out
    }
}

/// Matches an entry's detections against its labels.
fn labelled(entry: &Entry, truth: &[KeptBox], seq: u64, settings: &PerformanceSettings) -> Labelled {
    // The metrics crate's types, built for the match only (labels are a sample: this runs per labelled frame).
    let detections: Vec<Detection> = entry
        .detections
        .iter()
        .map(|k| Detection {
            x_min: k.corners[0],
            y_min: k.corners[1],
            x_max: k.corners[2],
            y_max: k.corners[3],
            class_label: k.class.to_string(),
            confidence: k.confidence,
            class_probabilities: Vec::new(),
        })
        .collect();
    let truth: Vec<TruthBox> = truth.iter().map(truth_box).collect();
    Labelled {
        seq,
        matched: match_frame(&LabelledFrame { detections: &detections, truth: &truth }, settings),
        values: entry.values.clone(),
        label_values: label_quality(&truth).values().map(|v| v.map_or(f32::NAN, |v| v as f32)),
    }
}

fn truth_box(k: &KeptBox) -> TruthBox {
    TruthBox {
        x_min: k.corners[0],
        y_min: k.corners[1],
        x_max: k.corners[2],
        y_max: k.corners[3],
        class_label: k.class.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn det(x0: f32, class: &str, confidence: f32) -> Detection {
        Detection {
            x_min: x0,
            y_min: 0.1,
            x_max: x0 + 0.2,
            y_max: 0.3,
            class_label: class.into(),
            confidence,
            class_probabilities: vec![],
        }
    }

    fn truth(x0: f32, class: &str) -> TruthBox {
        TruthBox { x_min: x0, y_min: 0.1, x_max: x0 + 0.2, y_max: 0.3, class_label: class.into() }
    }

    fn labels(id: &str, truth: Vec<TruthBox>) -> Labels {
        let no_objects = truth.is_empty();
        Labels { frame_id: id.into(), truth, no_objects }
    }

    fn store(settings: JoinSettings) -> JoinStore {
        JoinStore::new(settings, vec![(0, Arc::from("brightness"))])
    }

    /// Offers frame `id`, captured at `capture`, with one car detection at x = 0.1, in slices global and `slice`.
    fn offer(j: &mut JoinStore, id: &str, capture: i64, slice: &str, now: i64) {
        let slices = ["global".to_string(), slice.to_string()];
        let f = JoinFrame {
            frame_id: id,
            capture_secs: capture,
            detections: &[det(0.1, "car", 0.9)],
            slices: &slices,
            values: &[Some(0.25)],
        };
        j.offer_frame(&f, now);
    }

    fn recall(j: &JoinStore, slice: &str, now: i64) -> (usize, Option<f64>) {
        let w = j.window(now);
        let Some(frames) = w.get(slice) else { return (0, None) };
        let p = framewatch_metrics::performance::summarize(frames.iter().map(|l| &l.matched));
        (frames.len(), p.counts.recall())
    }

    #[test]
    fn labels_after_their_frame_join_into_every_slice_of_the_frame() {
        let mut j = store(JoinSettings::default());
        offer(&mut j, "f1", T0, "site=a", T0);
        assert_eq!(j.size().waiting, 1);
        assert_eq!(j.offer_labels(&labels("f1", vec![truth(0.1, "car")]), T0 + 3600), LabelResult::Joined);
        assert_eq!(recall(&j, "global", T0 + 3600), (1, Some(1.0)));
        assert_eq!(recall(&j, "site=a", T0 + 3600), (1, Some(1.0)));
        assert_eq!(j.size().labelled, 1);
        let w = j.window(T0 + 3600);
        assert_eq!(&*w["global"][0].values, &[0.25f32]);
    }

    #[test]
    fn labels_before_their_frame_are_held_then_joined_when_it_comes() {
        let mut j = store(JoinSettings::default());
        assert_eq!(j.offer_labels(&labels("f1", vec![truth(0.5, "car")]), T0), LabelResult::Held);
        assert_eq!(j.size().early, 1);
        offer(&mut j, "f1", T0, "site=a", T0 + 5);
        assert_eq!(j.size().early, 0);
        // The car was labelled elsewhere: the detection missed it.
        assert_eq!(recall(&j, "site=a", T0 + 5), (1, Some(0.0)));
    }

    #[test]
    fn a_second_set_of_labels_replaces_the_first() {
        let mut j = store(JoinSettings::default());
        offer(&mut j, "f1", T0, "site=a", T0);
        assert_eq!(j.offer_labels(&labels("f1", vec![truth(0.5, "car")]), T0 + 1), LabelResult::Joined);
        assert_eq!(recall(&j, "global", T0 + 1), (1, Some(0.0)));
        assert_eq!(j.offer_labels(&labels("f1", vec![truth(0.1, "car")]), T0 + 2), LabelResult::Replaced);
        assert_eq!(recall(&j, "global", T0 + 2), (1, Some(1.0)), "the last labels win, counted once");
        assert_eq!(j.truth_of("f1"), Some(vec![truth(0.1, "car")]));
    }

    #[test]
    fn unknown_and_expired_frames_are_refused_by_reason() {
        let mut j = store(JoinSettings { early_secs: 0, max_delay_secs: 100, ..JoinSettings::default() });
        assert_eq!(j.offer_labels(&labels("nope", vec![]), T0), LabelResult::UnknownFrame);
        offer(&mut j, "f1", T0, "site=a", T0);
        j.expire(T0 + 100);
        assert_eq!(j.size().waiting, 1, "not yet: exactly max_delay_secs");
        j.expire(T0 + 101);
        assert_eq!(j.size().waiting, 0);
        assert_eq!(j.counters().frames_expired_unlabelled, 1);
        assert_eq!(j.offer_labels(&labels("f1", vec![]), T0 + 102), LabelResult::FrameExpired);
    }

    #[test]
    fn a_join_for_a_frame_captured_before_the_window_counts_nowhere() {
        let mut j = store(JoinSettings { window_secs: 3600, ..JoinSettings::default() });
        offer(&mut j, "old", T0 - 4000, "site=a", T0);
        assert_eq!(j.offer_labels(&labels("old", vec![]), T0), LabelResult::TooLate);
        assert_eq!(recall(&j, "global", T0).0, 0);
        // Held labels whose frame turns out to be that old are counted, not lost quietly.
        assert_eq!(j.offer_labels(&labels("older", vec![]), T0), LabelResult::Held);
        offer(&mut j, "older", T0 - 5000, "site=a", T0);
        assert_eq!((j.counters().early_too_late, j.size().early, recall(&j, "global", T0).0), (1, 0, 0));
        offer(&mut j, "new", T0 - 100, "site=a", T0);
        assert_eq!(j.offer_labels(&labels("new", vec![]), T0), LabelResult::Joined);
        assert_eq!(recall(&j, "global", T0).0, 1);
        // The window moves on: the labelled frame leaves it (and, its wait over, the join).
        assert_eq!(recall(&j, "global", T0 + 3600).0, 0);
        j.expire(T0 + 86_401);
        assert_eq!(j.size().labelled, 0);
    }

    #[test]
    fn when_full_the_oldest_frame_goes_and_its_late_labels_are_refused() {
        let mut j = store(JoinSettings { max_frames: 2, ..JoinSettings::default() });
        for id in ["a", "b", "c"] {
            offer(&mut j, id, T0, "site=a", T0);
        }
        assert_eq!(j.size().waiting, 2);
        assert_eq!(j.counters().frames_dropped_capacity, 1);
        assert_eq!(j.offer_labels(&labels("a", vec![]), T0), LabelResult::FrameExpired);
        assert_eq!(j.offer_labels(&labels("c", vec![]), T0), LabelResult::Joined);
        offer(&mut j, "c", T0, "site=b", T0);
        assert_eq!(j.counters().frames_duplicate_id, 1, "a repeated id keeps the first frame");
    }

    #[test]
    fn held_labels_are_bounded_and_expire() {
        let mut j = store(JoinSettings { max_early: 2, early_secs: 60, ..JoinSettings::default() });
        for id in ["a", "b", "c"] {
            assert_eq!(j.offer_labels(&labels(id, vec![]), T0), LabelResult::Held);
        }
        assert_eq!(j.size().early, 2);
        assert_eq!(j.counters().early_dropped_capacity, 1);
        j.expire(T0 + 61);
        assert_eq!(j.size().early, 0);
        assert_eq!(j.counters().early_expired, 2);
    }

    #[test]
    fn label_checks_name_their_reason() {
        let check = |l: Labels| l.check(3).map_err(|(r, _)| r);
        assert_eq!(check(labels("f", vec![truth(0.1, "car")])), Ok(()));
        assert_eq!(check(labels("f", vec![])), Ok(()), "no objects");
        assert_eq!(check(labels("", vec![])), Err(LabelResult::MissingFrameId));
        assert_eq!(check(labels("a\nb", vec![])), Err(LabelResult::InvalidFrameId));
        assert_eq!(check(labels(&"x".repeat(257), vec![])), Err(LabelResult::InvalidFrameId));
        let empty = Labels { frame_id: "f".into(), truth: vec![], no_objects: false };
        assert_eq!(check(empty), Err(LabelResult::EmptyLabels));
        let both = Labels { frame_id: "f".into(), truth: vec![truth(0.1, "car")], no_objects: true };
        assert_eq!(check(both), Err(LabelResult::ContradictoryLabels));
        let mut nan = truth(0.1, "car");
        nan.x_max = f32::NAN;
        assert_eq!(check(labels("f", vec![nan])), Err(LabelResult::InvalidLabelBox));
        assert_eq!(check(labels("f", vec![truth(0.9, "car")])), Err(LabelResult::InvalidLabelBox), "x_max 1.1");
        assert_eq!(check(labels("f", vec![truth(0.1, "car"); 4])), Err(LabelResult::TooManyLabels));
        assert_eq!(check(labels("f", vec![truth(0.1, "c\u{7}")])), Err(LabelResult::InvalidLabelClass));
    }

    /// README's list of label results is the set users alert on; it must match `LabelResult::ALL`.
    #[test]
    fn the_readme_lists_every_label_result() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
        let start = readme.find("<!-- label-results -->").expect("marker");
        let end = readme.find("<!-- /label-results -->").expect("end marker");
        let listed: std::collections::BTreeSet<&str> = readme[start..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let known: std::collections::BTreeSet<&str> = LabelResult::ALL.iter().map(|r| r.as_str()).collect();
        let extra: Vec<_> = listed.difference(&known).collect();
        let missing: Vec<_> = known.difference(&listed).collect();
        // Config keys named in the list (`max_delay_secs`, ...) are not results.
        assert!(missing.is_empty(), "README lacks {missing:?}");
        assert!(
            extra.iter().all(|w| w.ends_with("_secs") || w.ends_with("_objects") || **w == "no_objects"),
            "README lists results that do not exist: {extra:?}"
        );
    }

    #[test]
    fn a_restored_join_holds_the_same_frames_labels_and_windows() {
        let mut j = store(JoinSettings::default());
        offer(&mut j, "a", T0, "site=a", T0);
        offer(&mut j, "b", T0, "site=b", T0);
        assert_eq!(j.offer_labels(&labels("a", vec![truth(0.1, "car"), truth(0.6, "car")]), T0), LabelResult::Joined);
        assert_eq!(j.offer_labels(&labels("z", vec![]), T0), LabelResult::Held);
        let saved = j.export_state();
        let mut r = store(JoinSettings::default());
        r.restore(saved.clone());
        assert_eq!(r.export_state(), saved);
        assert_eq!(r.window(T0), j.window(T0));
        assert_eq!(r.size(), j.size());
        assert_eq!(recall(&r, "site=a", T0), (1, Some(0.5)));
        // Labels for the waiting frame still join after the restore.
        assert_eq!(r.offer_labels(&labels("b", vec![]), T0), LabelResult::Joined);
        offer(&mut r, "z", T0, "site=c", T0);
        assert_eq!(r.size().labelled, 3, "the held labels met their frame");
    }
}

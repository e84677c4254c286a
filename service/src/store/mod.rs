//! The slice/window store: every scored frame lands, by capture time, in the sub-window of each slice it belongs
//! to (global, label dimensions, metric predicates). A window is the ring of its last `steps` sub-windows, so late
//! frames go where they were captured; its bin counts are also kept as running totals, to which each frame adds and
//! from which a sub-window's counts are taken when it leaves (integers: exact), so an evaluation copies them.
//! When a sub-window opens, the sums of those before it in its slice are packed (`SubSums`, bit for bit): they are
//! only read from then on (when a sub-window leaves, a window is merged, or a checkpoint is written), unless a late
//! frame comes for one, which opens it again. A restore packs every sub-window.
//! With a context baseline every label-dimension key also carries the frame's context value
//! (`camera_id=cam-1,context=night`): each (camera, context) has its own window, judged against its own reference.

use std::collections::HashMap;
use std::sync::Arc;

use framewatch_metrics::Baseline;
use framewatch_metrics::baseline::{CONTEXT_DIMENSION, ContextSpec};
use framewatch_metrics::counts::{Layouts, MetricCounts, SubCounts, SubSums};
use framewatch_metrics::histogram::{BinLayout, Histogram, Moments, Observation};
use framewatch_metrics::stats::LagMoments;

use crate::config::{Config, Predicate};
use crate::slice::{GLOBAL, LabelKeyBuilder, SliceKey};

mod lags;
mod saved;

use lags::Lags;
pub use saved::{RestoreError, SavedSlice, SavedStore, SavedSubWindow};

/// The store's maps hash with foldhash instead of SipHash: every frame looks up each of its slices and interns
/// each of its classes, and SipHash was ~12 % of a pre-scored event's time. foldhash is seeded per map, which
/// is not a HashDoS guarantee; what a client can grow here is bounded anyway (`slices.max_slices` with its
/// admission rate, `max_classes` per sub-window, 10,000 interned class names).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How frames are grouped and windowed (derived from `Config`).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub step_secs: i64,
    pub steps: usize,
    pub allowed_lateness_secs: i64,
    pub max_slices: usize,
    pub idle_evict_secs: i64,
    pub admit_per_sec: f64,
    pub protect_after_frames: u64,
    /// Distinct classes per sub-window and per merged window; the rest are counted under `OTHER_CLASS`.
    pub max_classes: usize,
    /// Each entry is one slice dimension: a list of label names joined with '+' in config.
    pub dimensions: Vec<Vec<String>>,
    /// Predicate slices with the registry index of each condition's metric.
    pub predicates: Vec<(Predicate, Vec<usize>)>,
}

impl StoreSettings {
    pub fn from_config(cfg: &Config, index_of: impl Fn(&str) -> Option<usize>) -> anyhow::Result<StoreSettings> {
        let mut predicates = Vec::new();
        for p in cfg.predicates() {
            let indices = p
                .predicate
                .conditions
                .iter()
                .map(|c| {
                    index_of(&c.metric).ok_or_else(|| {
                        anyhow::anyhow!(
                            "slices.predicates.{}: unknown metric {:?} (see `framewatch metrics`)",
                            p.name,
                            c.metric
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<usize>>>()?;
            predicates.push((p, indices));
        }
        Ok(StoreSettings {
            step_secs: cfg.windows.step_secs as i64,
            steps: (cfg.windows.length_secs / cfg.windows.step_secs) as usize,
            allowed_lateness_secs: cfg.windows.allowed_lateness_secs as i64,
            max_slices: cfg.slices.max_slices,
            idle_evict_secs: cfg.slices.idle_evict_secs as i64,
            admit_per_sec: cfg.slices.admit_per_sec,
            protect_after_frames: cfg.slices.protect_after_frames,
            max_classes: cfg.slices.max_classes,
            dimensions: cfg.slices.dimensions.iter().map(|d| d.split('+').map(str::to_string).collect()).collect(),
            predicates,
        })
    }
}

/// The class under which a window counts the detections of classes past `slices.max_classes`. Parenthesised so
/// that it reads as a bucket, not as a model's class (a real class of this name would share the bucket).
pub const OTHER_CLASS: &str = "(other)";

/// A scored frame as the store sees it.
#[derive(Debug)]
pub struct FrameRecord<'a> {
    pub camera_id: &'a str,
    pub model_version: &'a str,
    pub labels: &'a HashMap<String, String>,
    /// Capture time, Unix seconds.
    pub capture_secs: i64,
    /// Metric values in registry order.
    pub values: &'a [Option<f64>],
    pub classes: &'a [&'a str],
}

/// What happened to a frame offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted in this many slices.
    Yes { slices: usize },
    /// Captured before the allowed lateness: counted as late, not mixed into any window.
    TooLate,
}

#[derive(Debug)]
struct SubWindow {
    /// Sub-window number (capture_secs / step); i64::MIN when the slot is empty.
    index: i64,
    frames: u64,
    /// Bin counts of every tracked metric (listed frame by frame while few, then packed).
    counts: SubCounts,
    /// The sums of each tracked metric's values, allocated on first use, packed once a newer sub-window of the
    /// slice has opened (opened again if a late frame comes). Its counts of values and missing ones come from
    /// `counts` and `frames`.
    sums: SubSums,
    classes: ClassCounts,
}

impl SubWindow {
    fn empty() -> SubWindow {
        SubWindow {
            index: i64::MIN,
            frames: 0,
            counts: SubCounts::default(),
            sums: SubSums::default(),
            classes: ClassCounts::default(),
        }
    }
}

/// A sub-window's detections per class, sorted by name: a minute holds a handful of classes (at most
/// `max_classes` and the overflow class), so a lookup is a binary search, and a window's merge walks one small
/// array per sub-window instead of a hash table's control bytes and buckets (most of a snapshot's time, in the
/// evaluate bench, before).
#[derive(Debug, Default)]
struct ClassCounts(Vec<(Arc<str>, u64)>);

impl ClassCounts {
    fn find(&self, class: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(c, _)| (**c).cmp(class))
    }

    fn contains(&self, class: &str) -> bool {
        self.find(class).is_ok()
    }

    /// Adds `n` detections of `class`.
    fn add(&mut self, class: &Arc<str>, n: u64) {
        match self.find(class) {
            Ok(i) => self.0[i].1 += n,
            Err(at) => self.0.insert(at, (class.clone(), n)),
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, u64)> {
        self.0.iter().map(|(c, n)| (c, *n))
    }

    /// Takes away the counts of `other` (added before), dropping classes that reach zero.
    fn subtract(&mut self, other: &ClassCounts) {
        for (c, n) in other.iter() {
            if let Ok(i) = self.find(c) {
                self.0[i].1 = self.0[i].1.saturating_sub(n);
            }
        }
        self.0.retain(|&(_, n)| n > 0);
    }
}

#[derive(Debug)]
struct SliceState {
    ring: Vec<SubWindow>,
    /// The bin counts of every sub-window in `ring`, summed (8-bit cells to start with): a snapshot copies them
    /// instead of merging each sub-window's.
    totals: MetricCounts,
    /// The moments of every sub-window in `ring`, one per tracked metric: merged afresh whenever a sub-window
    /// leaves (`rebuild_moments`), else updated with each value.
    moments: Vec<Moments>,
    /// The classes of every sub-window in `ring`, summed like `totals`.
    classes: ClassCounts,
    last_seen_secs: i64,
    /// Bins per tracked metric: the slice's own baseline's when it has one, else the global baseline's.
    layouts: Arc<Layouts>,
    own_baseline: bool,
    /// The baseline slice whose reference judges this slice (its own key, or its context-free key as a
    /// fallback); `None`: the global reference.
    reference: Option<Arc<str>>,
    /// Lag-1 moments per tracked metric (consecutive frames of one camera), for effective sample sizes.
    lags: Lags,
    /// A camera slice's latest value per tracked metric (NaN: none), to pair with the camera's next frame.
    last: Vec<f64>,
    /// Frames recorded since the slice was created (or restored): established slices are evicted last.
    frames_total: u64,
}

/// Counters the store keeps for the exporter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreCounters {
    pub recorded: u64,
    pub late: u64,
    pub evicted_capacity: u64,
    pub evicted_idle: u64,
}

/// One tracked metric: its registry index, name and baseline layout.
#[derive(Debug)]
pub struct Tracked {
    pub registry_index: usize,
    pub name: Arc<str>,
    pub layout: BinLayout,
    /// The baseline mean, subtracted from values before lag moments are summed (precision).
    pub shift: f64,
}

/// A slice's merged window, ready for statistics.
#[derive(Debug, Clone)]
pub struct WindowSnapshot {
    pub key: SliceKey,
    pub frames: u64,
    pub last_seen_secs: i64,
    pub window_start_secs: i64,
    pub window_end_secs: i64,
    /// Same order as `WindowStore::tracked()`.
    pub hists: Vec<Histogram>,
    pub classes: HashMap<Arc<str>, u64>,
    /// Whether the slice is judged against its own baseline (else the global one).
    pub own_baseline: bool,
    /// Which baseline reference judges the slice: a key of the baseline's `slices` (for a context-keyed slice
    /// whose context value has no reference, its context-free one), or `None` for the global reference.
    pub reference: Option<Arc<str>>,
    /// Lag-1 moments per tracked metric over about the last one to two window lengths.
    pub lags: Vec<LagMoments>,
}

impl WindowSnapshot {
    /// A snapshot of nothing, for `WindowStore::snapshot_into` to fill.
    pub fn empty() -> WindowSnapshot {
        WindowSnapshot {
            key: SliceKey::from_canonical(GLOBAL),
            frames: 0,
            last_seen_secs: 0,
            window_start_secs: 0,
            window_end_secs: 0,
            hists: Vec::new(),
            classes: HashMap::new(),
            own_baseline: false,
            reference: None,
            lags: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct WindowStore {
    settings: StoreSettings,
    tracked: Vec<Tracked>,
    global_layouts: Arc<Layouts>,
    /// Layouts of the slices that have their own baseline.
    slice_layouts: FastMap<String, Arc<Layouts>>,
    slices: FastMap<SliceKey, SliceState>,
    /// Interned class labels, so sub-windows share one allocation per label.
    class_names: FastMap<String, Arc<str>>,
    other_class: Arc<str>,
    /// Class counts recorded under `OTHER_CLASS` because a sub-window already had `max_classes` classes (one per
    /// detection and slice). Not checkpointed: a counter that restarts with the process.
    classes_overflowed: u64,
    counters: StoreCounters,
    /// Reused per frame: the slice keys it belongs to.
    keys: Vec<String>,
    /// Reused per frame: its classes, interned.
    classes: Vec<Arc<str>>,
    /// Reused per frame: its value of each tracked metric, in `tracked` order.
    values: Vec<Option<f64>>,
    /// Reused per frame: its camera's slice key.
    camera_key: String,
    /// Reused per frame: its values observed against each distinct set of layouts among its slices (the first
    /// `observed_sets`; most slices share the global layouts, a camera's and a site's slice have their own), so
    /// that each value is binned once per set of layouts rather than once per slice, in whatever order the slices
    /// come. At most one entry per slice a frame can land in (a number the config bounds).
    observed: Vec<ObservedSet>,
    observed_sets: usize,
    /// Reused per frame: (previous, current) value per tracked metric for the frame's camera (NaN: no pair).
    pairs: Vec<(f64, f64)>,
    /// Whether `camera_id` alone is a slice dimension (then camera slices carry the last values for pairs).
    camera_slices: bool,
    /// The baseline's context: appended to every label-dimension key.
    context: Option<ContextSpec>,
    /// Reused per frame: the frame's context value.
    context_value: String,
    /// New-slice admission (`slices.admit_per_sec`).
    admission: Admission,
    /// Slices evicted for capacity since the evaluation last took them (`take_evicted`), at most
    /// `EVICTED_MEMORY`: their alerts say "evicted" instead of resolving.
    evicted: Vec<SliceKey>,
    /// Evictions and refusals not yet logged (logs are rate-limited to one line per kind per `LOG_EVERY_SECS`).
    unlogged: (u64, u64),
    last_logged_secs: (i64, i64),
}

/// A frame's values observed against one set of layouts (`WindowStore::observed`).
type ObservedSet = (Option<Arc<Layouts>>, Vec<Option<Observation>>);

/// Most slice keys remembered as evicted between two evaluations; past it the oldest are forgotten (their alerts
/// then resolve as `slice_gone`, as before).
const EVICTED_MEMORY: usize = 4096;
/// At most one log line per this many seconds for evictions, and one for refusals.
const LOG_EVERY_SECS: i64 = 10;

/// A token bucket for new slices: `max_slices` deep (a fleet's first slices all get in at start-up), refilled at
/// `admit_per_sec`.
#[derive(Debug, Clone, Copy)]
struct Admission {
    tokens: f64,
    last_secs: Option<i64>,
    refused: u64,
}

impl Admission {
    fn admit(&mut self, settings: &StoreSettings, now_secs: i64) -> bool {
        let depth = settings.max_slices as f64;
        let elapsed = self.last_secs.map_or(0, |l| (now_secs - l).max(0)) as f64;
        self.tokens = (self.tokens + elapsed * settings.admit_per_sec).min(depth);
        self.last_secs = Some(self.last_secs.map_or(now_secs, |l| l.max(now_secs)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

impl WindowStore {
    /// Tracks every metric that the baseline has; `index_of` maps names to registry indices.
    pub fn new(settings: StoreSettings, baseline: &Baseline, index_of: impl Fn(&str) -> Option<usize>) -> WindowStore {
        let camera_slices = settings.dimensions.iter().any(|d| d.len() == 1 && d[0] == "camera_id");
        let settings_depth = settings.max_slices as f64;
        let tracked: Vec<Tracked> = baseline
            .metrics
            .iter()
            .filter_map(|(name, m)| {
                Some(Tracked {
                    registry_index: index_of(name)?,
                    name: Arc::from(name.as_str()),
                    layout: m.layout.clone(),
                    shift: m.mean,
                })
            })
            .collect();
        let global_layouts: Arc<Layouts> = Arc::new(tracked.iter().map(|t| t.layout.clone()).collect());
        let slice_layouts = baseline
            .slices
            .iter()
            .map(|(key, sl)| {
                let layouts: Layouts = tracked
                    .iter()
                    .map(|t| sl.metrics.get(&*t.name).map_or_else(|| t.layout.clone(), |m| m.layout.clone()))
                    .collect();
                let layouts = Arc::new(layouts);
                (key.clone(), layouts)
            })
            .collect::<FastMap<_, _>>();
        WindowStore {
            settings,
            tracked,
            global_layouts,
            slice_layouts,
            slices: FastMap::default(),
            class_names: FastMap::default(),
            other_class: Arc::from(OTHER_CLASS),
            classes_overflowed: 0,
            counters: StoreCounters::default(),
            keys: Vec::new(),
            classes: Vec::new(),
            values: Vec::new(),
            camera_key: String::new(),
            observed: Vec::new(),
            observed_sets: 0,
            pairs: Vec::new(),
            camera_slices,
            context: baseline.context.clone(),
            context_value: String::new(),
            admission: Admission { tokens: settings_depth, last_secs: None, refused: 0 },
            evicted: Vec::new(),
            unlogged: (0, 0),
            last_logged_secs: (i64::MIN, i64::MIN),
        }
    }

    /// The reference that judges slice `key` (the same choice as `Baseline::reference_for`, so windows are
    /// binned as their reference is): its own, else its context-free one, else the global one.
    fn layouts_for(&self, key: &str) -> (Arc<Layouts>, Option<Arc<str>>) {
        let own = self.slice_layouts.get_key_value(key).or_else(|| {
            framewatch_metrics::baseline::without_context(key).and_then(|p| self.slice_layouts.get_key_value(p))
        });
        match own {
            Some((k, l)) => (l.clone(), Some(Arc::from(k.as_str()))),
            None => (self.global_layouts.clone(), None),
        }
    }

    /// The context spec of the baseline, when it is keyed by one.
    pub fn context(&self) -> Option<&ContextSpec> {
        self.context.as_ref()
    }

    pub fn tracked(&self) -> &[Tracked] {
        &self.tracked
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// Class counts recorded under `OTHER_CLASS` since start (`framewatch_classes_overflowed_total`).
    pub fn classes_overflowed(&self) -> u64 {
        self.classes_overflowed
    }

    /// Records one frame at wall-clock time `now_secs`.
    pub fn record(&mut self, frame: &FrameRecord<'_>, now_secs: i64) -> Recorded {
        let step = self.settings.step_secs;
        if frame.capture_secs < now_secs - self.settings.allowed_lateness_secs {
            self.counters.late += 1;
            return Recorded::TooLate;
        }
        // A frame from slightly in the future (clock skew the ingest accepted) counts in the current sub-window.
        let index = frame.capture_secs.min(now_secs).div_euclid(step);
        let mut keys = std::mem::take(&mut self.keys);
        let mut context_value = std::mem::take(&mut self.context_value);
        let context = match &self.context {
            Some(spec) => spec
                .write_value(frame.capture_secs, |name| frame.labels.get(name).map(String::as_str), &mut context_value)
                .then_some(context_value.as_str()),
            None => None,
        };
        let n = slice_keys(&self.settings, frame, context, &mut keys);
        let mut classes = std::mem::take(&mut self.classes);
        classes.clear();
        classes.extend(frame.classes.iter().map(|c| self.intern(c)));
        self.values.clear();
        self.values.extend(self.tracked.iter().map(|t| frame.values.get(t.registry_index).copied().flatten()));
        self.observed_sets = 0;
        let camera = self.camera_pairs(frame.camera_id, context, &keys[..n]);
        for (i, key) in keys[..n].iter().enumerate() {
            self.record_in(key, index, &classes, now_secs, camera == Some(i));
        }
        self.keys = keys;
        self.classes = classes;
        self.context_value = context_value;
        self.counters.recorded += 1;
        Recorded::Yes { slices: n }
    }

    /// The slice keys the last `record` counted its frame in (`slices` from its `Recorded::Yes`): where that
    /// frame's exemplar thumbnail is filed.
    pub fn last_keys(&self, slices: usize) -> &[String] {
        &self.keys[..slices.min(self.keys.len())]
    }

    /// Fills `pairs` with (previous, current) values of the frame's camera; returns the camera slice's position
    /// in `keys`. Without a camera slice every pair is NaN (no lag information: effective n = n).
    /// With a context the camera's slice is the one of its current context (`camera_id=X,context=V`): pairs are
    /// taken within a context, so a change of context starts a new run of pairs.
    fn camera_pairs(&mut self, camera_id: &str, context: Option<&str>, keys: &[String]) -> Option<usize> {
        self.pairs.clear();
        self.pairs.resize(self.tracked.len(), (f64::NAN, f64::NAN));
        if !self.camera_slices {
            return None;
        }
        let mut b = LabelKeyBuilder::new(&mut self.camera_key);
        b.push("camera_id", camera_id);
        if let Some(c) = context {
            b.push(CONTEXT_DIMENSION, c);
        }
        let i = keys.iter().position(|k| *k == self.camera_key)?;
        if let Some(slice) = self.slices.get(keys[i].as_str()) {
            for ((pair, (t, v)), last) in
                self.pairs.iter_mut().zip(self.tracked.iter().zip(&self.values)).zip(&slice.last)
            {
                if let Some(v) = *v {
                    *pair = (*last - t.shift, v - t.shift);
                }
            }
        }
        Some(i)
    }

    fn intern(&mut self, class: &str) -> Arc<str> {
        if let Some(a) = self.class_names.get(class) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(class);
        // Class vocabularies are small; cap the interner anyway so a hostile client cannot grow it without bound.
        if self.class_names.len() < 10_000 {
            self.class_names.insert(class.to_string(), a.clone());
        }
        a
    }

    /// Counts the frame in slice `key`, creating the slice if admitted. `camera`: the slice is the frame's camera
    /// slice, which then remembers the frame's values to pair with the camera's next frame.
    fn record_in(&mut self, key: &str, index: i64, classes: &[Arc<str>], now_secs: i64, camera: bool) {
        if !self.slices.contains_key(key) && !self.create_slice(key, now_secs) {
            return;
        }
        let Some(slice) = self.slices.get_mut(key) else { return };
        slice.last_seen_secs = slice.last_seen_secs.max(now_secs);
        slice.frames_total += 1;
        if camera {
            // Even when the frame's sub-window is gone (below): its values are still the camera's latest.
            slice.last.clear();
            slice.last.extend(self.values.iter().map(|v| v.unwrap_or(f64::NAN)));
        }
        let steps = self.settings.steps as i64;
        if slice.moments.is_empty() {
            slice.moments.resize(slice.layouts.len(), Moments::default());
        }
        let slot_at = index.rem_euclid(steps) as usize;
        let slot = &mut slice.ring[slot_at];
        if slot.index != index {
            if slot.index > index {
                // The slot already holds a newer sub-window: this frame's is gone (cannot happen within lateness).
                return;
            }
            // The sub-window that leaves: out of the totals (and, below, the moments), then emptied for this one.
            let left = slot.frames > 0;
            slice.empty_sub(slot_at);
            slice.ring[slot_at].index = index;
            if left {
                slice.rebuild_moments();
            }
            // A new sub-window: those before it are (nearly always) done with, so their sums are packed (a late
            // frame opens them again). A late frame's new sub-window leaves the newer ones open.
            for sub in slice.ring.iter_mut().filter(|sub| sub.index < index) {
                sub.sums.pack(&slice.layouts);
            }
        }
        let slot = &mut slice.ring[slot_at];
        slot.frames += 1;
        let same = |(l, _): &ObservedSet| l.as_ref().is_some_and(|l| Arc::ptr_eq(l, &slice.layouts));
        let set = match self.observed[..self.observed_sets].iter().position(same) {
            Some(set) => set,
            None => {
                if self.observed_sets == self.observed.len() {
                    self.observed.push((None, Vec::new()));
                }
                let (for_layouts, observed) = &mut self.observed[self.observed_sets];
                observed.clear();
                observed.extend(slice.layouts.iter().zip(&self.values).map(|(layout, &v)| layout.observe(v)));
                *for_layouts = Some(slice.layouts.clone());
                self.observed_sets += 1;
                self.observed_sets - 1
            }
        };
        let observed = &self.observed[set].1;
        let slot = &mut slice.ring[slot_at];
        slot.counts.record_with(&mut slice.totals, &slice.layouts, observed);
        for ((sums, &o), m) in slot.sums.open(&slice.layouts).iter_mut().zip(observed).zip(&mut slice.moments) {
            if let Some(o) = &o {
                sums.record(o);
            }
            m.record(o);
        }
        // Bounded per sub-window: the first `max_classes` classes of the minute keep their own counts, later ones
        // share one bucket, so labels invented by a client cost one map entry, not one per label.
        for c in classes {
            let real = slot.classes.len() - usize::from(slot.classes.contains(&self.other_class));
            let counted = if real < self.settings.max_classes || slot.classes.contains(c) {
                c
            } else {
                self.classes_overflowed += 1;
                &self.other_class
            };
            slot.classes.add(counted, 1);
            slice.classes.add(counted, 1);
        }
        if self.pairs.iter().any(|(p, c)| p.is_finite() && c.is_finite())
            && let Some(lags) = slice.lags.generation(index.div_euclid(steps), self.tracked.len())
        {
            for (m, &(p, c)) in lags.iter_mut().zip(&self.pairs) {
                if p.is_finite() && c.is_finite() {
                    m.push_pair(p, c);
                }
            }
        }
    }

    /// Creates slice `key` if admission lets it in (evicting one if the store is full); false if refused.
    fn create_slice(&mut self, key: &str, now_secs: i64) -> bool {
        if key != GLOBAL && !self.admission.admit(&self.settings, now_secs) {
            self.unlogged.1 += 1;
            self.log_churn(now_secs, key);
            return false;
        }
        if self.slices.len() >= self.settings.max_slices {
            self.evict_one(now_secs);
        }
        let ring = (0..self.settings.steps).map(|_| SubWindow::empty()).collect();
        let (layouts, reference) = self.layouts_for(key);
        let totals = MetricCounts::new(&layouts, 8);
        self.slices.insert(
            SliceKey::from_canonical(key),
            SliceState {
                ring,
                totals,
                moments: Vec::new(),
                classes: ClassCounts::default(),
                last_seen_secs: now_secs,
                layouts,
                own_baseline: reference.is_some(),
                reference,
                lags: Lags::default(),
                last: Vec::new(),
                frames_total: 0,
            },
        );
        true
    }

    /// Makes room: evicts the idlest slice that is not established, else the idlest established one (never
    /// `global`). A flood of new slices thus evicts its own kind, not the slices that have been reporting.
    fn evict_one(&mut self, now_secs: i64) {
        let protect = self.settings.protect_after_frames;
        let victim = self
            .slices
            .iter()
            .filter(|(k, _)| !k.is_global())
            .min_by_key(|(_, s)| (s.frames_total >= protect, s.last_seen_secs))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.slices.remove(&k);
            self.counters.evicted_capacity += 1;
            self.unlogged.0 += 1;
            self.log_churn(now_secs, k.as_str());
            if self.evicted.len() >= EVICTED_MEMORY {
                self.evicted.remove(0);
            }
            self.evicted.push(k);
        }
    }

    /// One log line per kind (evicted, refused) per `LOG_EVERY_SECS`, with the count since the last one.
    fn log_churn(&mut self, now_secs: i64, latest: &str) {
        if self.unlogged.0 > 0 && now_secs.saturating_sub(self.last_logged_secs.0) >= LOG_EVERY_SECS {
            tracing::info!(evicted = self.unlogged.0, latest, "slices evicted: slices.max_slices reached");
            (self.unlogged.0, self.last_logged_secs.0) = (0, now_secs);
        }
        if self.unlogged.1 > 0 && now_secs.saturating_sub(self.last_logged_secs.1) >= LOG_EVERY_SECS {
            tracing::warn!(
                refused = self.unlogged.1,
                latest,
                "new slices refused: arriving faster than slices.admit_per_sec (their frames still count elsewhere)"
            );
            (self.unlogged.1, self.last_logged_secs.1) = (0, now_secs);
        }
    }

    /// The slices evicted for capacity since the last call (oldest first).
    pub fn take_evicted(&mut self) -> Vec<SliceKey> {
        std::mem::take(&mut self.evicted)
    }

    /// Frames whose new slice `slices.admit_per_sec` refused, since start.
    pub fn refused_slices(&self) -> u64 {
        self.admission.refused
    }

    /// Forgets slices without frames for `idle_evict_secs`.
    pub fn evict_idle(&mut self, now_secs: i64) -> usize {
        let limit = now_secs - self.settings.idle_evict_secs;
        let before = self.slices.len();
        self.slices.retain(|k, s| k.is_global() || s.last_seen_secs >= limit);
        let n = before - self.slices.len();
        self.counters.evicted_idle += n as u64;
        n
    }

    pub fn slice_keys(&self) -> Vec<SliceKey> {
        self.slices.keys().cloned().collect()
    }

    /// Merges the live sub-windows of one slice (those within the window ending at `now_secs`).
    pub fn snapshot(&self, key: &str, now_secs: i64) -> Option<WindowSnapshot> {
        let (key, slice) = self.slices.get_key_value(key)?;
        let mut snap = WindowSnapshot::empty();
        self.fill(key, slice, now_secs, &mut snap, false);
        Some(snap)
    }

    /// `snapshot` into `snap`, reusing its buffers (an evaluation walks every slice with one); false, leaving
    /// `snap` as it was, when there is no such slice. Faster than `snapshot` because it may change the slice
    /// first: sub-windows that have left the window are dropped (they would be overwritten by the next frame in
    /// their slot anyway), after which the slice's running totals and moments are the window's, and are copied.
    pub fn snapshot_into(&mut self, key: &str, now_secs: i64, snap: &mut WindowSnapshot) -> bool {
        let Some((key, _)) = self.slices.get_key_value(key) else { return false };
        let key = key.clone();
        let end = now_secs.div_euclid(self.settings.step_secs);
        let start = end - self.settings.steps as i64 + 1;
        let Some(slice) = self.slices.get_mut(&key) else { return false };
        let mut dropped = false;
        for at in 0..slice.ring.len() {
            let sub = &slice.ring[at];
            if sub.index != i64::MIN && (sub.index < start || sub.frames == 0) {
                slice.empty_sub(at);
                dropped = true;
            }
        }
        if dropped {
            slice.rebuild_moments();
        }
        // Sub-windows ahead of `now_secs` (an evaluation at a time before the latest frames) stay: merge.
        let ahead = slice.ring.iter().any(|s| s.index != i64::MIN && s.index > end);
        let slice = &self.slices[&key];
        self.fill(&key, slice, now_secs, snap, !ahead);
        true
    }

    /// Fills `snap` with `slice`'s window ending at `now_secs`. `running`: every sub-window in the ring is in the
    /// window, so the running totals and moments are the window's (else counts are the totals less the
    /// sub-windows outside, and moments are merged from those inside).
    fn fill(&self, key: &SliceKey, slice: &SliceState, now_secs: i64, snap: &mut WindowSnapshot, running: bool) {
        let step = self.settings.step_secs;
        let end = now_secs.div_euclid(step);
        let start = end - self.settings.steps as i64 + 1;
        // The histograms are reused when their bins fit the slice's layouts (the usual case: slices judged
        // against one reference share its layouts). Their counts are the slice's totals ...
        snap.hists.truncate(slice.layouts.len());
        for (i, layout) in slice.layouts.iter().enumerate() {
            match snap.hists.get_mut(i) {
                // Every count is overwritten below.
                Some(h) if h.counts.len() == layout.bins() => h.clear_moments(),
                Some(h) => *h = Histogram::new(layout),
                None => snap.hists.push(Histogram::new(layout)),
            }
        }
        slice.totals.copy_into(&slice.layouts, &mut snap.hists);
        if running {
            for (m, h) in slice.moments.iter().zip(&mut snap.hists) {
                m.merge_into(h);
            }
        }
        // ... less those of the sub-windows still in the ring but not in this window (expired and not yet
        // overwritten: a camera that has not sent a frame this minute, an idle slice).
        let live = |s: &SubWindow| s.index >= start && s.index <= end && s.frames > 0;
        if !running {
            for sub in slice.ring.iter().filter(|s| s.index != i64::MIN && !live(s)) {
                sub.counts.for_each(&slice.layouts, |m, bin, n| {
                    if let Some(c) = snap.hists.get_mut(m).and_then(|h| h.counts.get_mut(bin)) {
                        *c = c.saturating_sub(n);
                    }
                });
            }
        }
        snap.classes.clear();
        let mut frames = 0u64;
        // Oldest first, so float sums are added in the same order every time: sub-window `i` lives in slot
        // `i mod steps`, so the window's `steps` indices are one slot each, walked in order.
        let steps = slice.ring.len() as i64;
        for index in start..=end {
            let sub = &slice.ring[index.rem_euclid(steps) as usize];
            if sub.index != index || !live(sub) {
                continue;
            }
            frames = frames.saturating_add(sub.frames);
            if !running {
                sub.sums.merge_into(&slice.layouts, &mut snap.hists);
            }
            if !running {
                for (c, n) in sub.classes.iter() {
                    *snap.classes.entry(c.clone()).or_default() += n;
                }
            }
        }
        if !running {
            // Values and missing ones, which sub-windows do not keep apart: the counts, and the frames less those.
            for h in &mut snap.hists {
                h.n = h.counts.iter().map(|&c| u64::from(c)).sum();
                h.missing = frames.saturating_sub(h.n);
            }
        }
        if running {
            // The running totals: one small array, where walking each sub-window's classes was a cache miss apiece.
            snap.classes.extend(slice.classes.iter().map(|(c, n)| (c.clone(), n)));
        }
        fold_rare_classes(&mut snap.classes, self.settings.max_classes, &self.other_class);
        snap.key = key.clone();
        snap.frames = frames;
        snap.last_seen_secs = slice.last_seen_secs;
        snap.window_start_secs = start * step;
        snap.window_end_secs = (end + 1) * step;
        snap.own_baseline = slice.own_baseline;
        snap.reference = slice.reference.clone();
        slice.lags.merged_into(self.tracked.len(), &mut snap.lags);
    }
}

impl SliceState {
    /// Empties the sub-window in slot `at`, taking its counts and classes out of the running totals (the moments
    /// are the caller's to rebuild).
    fn empty_sub(&mut self, at: usize) {
        let sub = &mut self.ring[at];
        self.totals.sub_all(&self.layouts, &sub.counts);
        sub.counts.clear();
        sub.sums.clear();
        self.classes.subtract(&sub.classes);
        sub.classes.clear();
        (sub.index, sub.frames) = (i64::MIN, 0);
    }

    /// Recomputes the running moments from the sub-windows in the ring, oldest first (after one has left: a
    /// minimum or maximum cannot be subtracted, and a fresh sum carries no rounding from values long gone). Their
    /// counts of values come from the totals, which already hold exactly the ring's sub-windows (one walk over
    /// the window's bins instead of one per sub-window).
    fn rebuild_moments(&mut self) {
        self.moments.clear();
        self.moments.resize(self.layouts.len(), Moments::default());
        let mut after = i64::MIN;
        let mut frames = 0u64;
        // At most `steps` sub-windows, once a minute or so: a selection walk needs no scratch space.
        while let Some(sub) =
            self.ring.iter().filter(|s| s.index != i64::MIN && s.index > after).min_by_key(|s| s.index)
        {
            let moments = &mut self.moments;
            sub.sums.for_each(&self.layouts, |m, s| {
                if let Some(m) = moments.get_mut(m) {
                    m.merge_sums(s);
                }
            });
            frames = frames.saturating_add(sub.frames);
            after = sub.index;
        }
        let moments = &mut self.moments;
        self.totals.for_each(&self.layouts, |m, _, n| moments[m].add_counts(u64::from(n), 0));
        // Every frame recorded each metric, as a value or as missing.
        for m in &mut self.moments {
            m.add_counts(0, frames.saturating_sub(m.n()));
        }
    }
}

/// Keeps the `max` most frequent classes of a merged window (ties by name, so the choice is repeatable) and
/// counts the rest under `other`: sub-windows are capped one by one, their union is capped here.
fn fold_rare_classes(classes: &mut HashMap<Arc<str>, u64>, max: usize, other: &Arc<str>) {
    let real = classes.len() - usize::from(classes.contains_key(other));
    if real <= max {
        return;
    }
    let mut ranked: Vec<(Arc<str>, u64)> =
        classes.iter().filter(|(c, _)| *c != other).map(|(c, n)| (c.clone(), *n)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut folded = 0;
    for (c, n) in &ranked[max..] {
        classes.remove(c);
        folded += n;
    }
    *classes.entry(other.clone()).or_default() += folded;
}

/// Every slice key a frame belongs to, written into `out[..n]` (reused strings); returns n: "global", one per
/// configured dimension whose labels the frame has (with the frame's `context` value appended, when the
/// baseline is keyed by one and the frame has a value), and one per predicate it satisfies.
fn slice_keys(
    settings: &StoreSettings,
    frame: &FrameRecord<'_>,
    context: Option<&str>,
    out: &mut Vec<String>,
) -> usize {
    fn slot(out: &mut Vec<String>, n: usize) -> &mut String {
        if n == out.len() {
            out.push(String::new());
        }
        &mut out[n]
    }
    let mut n = 0;
    let g = slot(out, n);
    g.clear();
    g.push_str(GLOBAL);
    n += 1;
    'dims: for dim in &settings.dimensions {
        let mut key = LabelKeyBuilder::new(slot(out, n));
        for label in dim {
            let value = match label.as_str() {
                "camera_id" => frame.camera_id,
                "model_version" if !frame.model_version.is_empty() => frame.model_version,
                other => frame.labels.get(other).map_or("", String::as_str),
            };
            if value.is_empty() {
                continue 'dims;
            }
            key.push(label, value);
        }
        if let Some(c) = context {
            key.push(CONTEXT_DIMENSION, c);
        }
        n += 1;
    }
    for (p, indices) in &settings.predicates {
        if p.predicate.holds_with(|i, _| frame.values.get(indices[i]).copied().flatten()) {
            let k = slot(out, n);
            k.clear();
            k.push_str(SliceKey::predicate(&p.name).as_str());
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use framewatch_metrics::{BaselineBuilder, ComparableSettings};

    /// A baseline of the two metrics these tests track, 100 bins each.
    fn builder() -> BaselineBuilder {
        BaselineBuilder::new(vec!["brightness".into(), "confidence_mean".into()], ComparableSettings::default(), 100)
    }

    fn baseline() -> Baseline {
        let mut b = builder();
        for i in 0..1000 {
            b.add(&[Some(0.3 + (i % 100) as f64 / 250.0), Some(0.9)], ["car"]);
        }
        b.finish("t".into(), "v".into(), "s".into()).expect("baseline")
    }

    fn store(max_slices: usize) -> WindowStore {
        store_with(crate::config::SliceConfig { max_slices, max_classes: 3, ..Default::default() })
    }

    fn store_with(slices: crate::config::SliceConfig) -> WindowStore {
        let cfg = Config {
            slices: crate::config::SliceConfig {
                dimensions: vec!["camera_id".into(), "site+model_version".into()],
                predicates: [("dark".to_string(), "brightness < 0.25".to_string())].into(),
                idle_evict_secs: 600,
                ..slices
            },
            ..Config::default()
        };
        let index = |n: &str| ["brightness", "confidence_mean"].iter().position(|m| *m == n);
        WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline(), index)
    }

    fn rec<'a>(cam: &'a str, labels: &'a HashMap<String, String>, t: i64, v: &'a [Option<f64>]) -> FrameRecord<'a> {
        FrameRecord { camera_id: cam, model_version: "v1", labels, capture_secs: t, values: v, classes: &["car"] }
    }

    #[test]
    fn frames_land_in_every_matching_slice_and_window() {
        let mut s = store(100);
        let labels: HashMap<String, String> = [("site".to_string(), "lot-7".to_string())].into();
        let now = 1_000_000;
        assert_eq!(s.record(&rec("cam-1", &labels, now, &[Some(0.2), Some(0.5)]), now), Recorded::Yes { slices: 4 });
        assert_eq!(s.record(&rec("cam-1", &labels, now - 10, &[Some(0.5), None]), now), Recorded::Yes { slices: 3 });
        let mut keys: Vec<String> = s.slice_keys().iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, ["camera_id=cam-1", "global", "predicate=dark", "site=lot-7,model_version=v1"]);
        let g = s.snapshot(GLOBAL, now).expect("global");
        assert_eq!(g.frames, 2);
        assert_eq!(g.hists[0].n, 2);
        assert_eq!((g.hists[1].n, g.hists[1].missing), (1, 1));
        assert_eq!(g.classes.values().sum::<u64>(), 2);
        assert_eq!(s.snapshot("predicate=dark", now).expect("dark").frames, 1);
    }

    #[test]
    fn a_conjunction_predicate_slice_takes_only_frames_on_which_every_condition_holds() {
        let cfg = Config {
            slices: crate::config::SliceConfig {
                predicates: [("dark_unsure".to_string(), "brightness < 0.25 and confidence_mean < 0.6".to_string())]
                    .into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let index = |n: &str| ["brightness", "confidence_mean"].iter().position(|m| *m == n);
        let mut s = WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline(), index);
        let labels = HashMap::new();
        let now = 1_000_000;
        for v in [[Some(0.2), Some(0.5)], [Some(0.2), Some(0.9)], [Some(0.5), Some(0.5)], [Some(0.2), None]] {
            s.record(&rec("cam-1", &labels, now, &v), now);
        }
        assert_eq!(s.snapshot("predicate=dark_unsure", now).expect("slice").frames, 1);
        let unknown = Config {
            slices: crate::config::SliceConfig {
                predicates: [("x".to_string(), "brightness < 0.25 and nope > 1".to_string())].into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let e = StoreSettings::from_config(&unknown, index).expect_err("unknown metric");
        assert!(e.to_string().contains("\"nope\""), "{e}");
    }

    /// A frame's values are binned once per set of layouts, not once per slice: the global slice, a camera with
    /// its own reference in between, then a site slice on the global layouts again. Each slice's counts are those
    /// of its own layouts, whatever the order.
    #[test]
    fn each_slice_counts_against_its_own_layouts_whatever_the_order_of_slices() {
        let mut b = builder();
        for i in 0..1000 {
            let v = [Some(0.3 + (i % 100) as f64 / 250.0), Some(0.9)];
            b.add(&v, ["car"]);
            // cam-1's own reference: a narrower range, so its bins differ from the global ones.
            let own = [Some(0.45 + (i % 100) as f64 / 1000.0), Some(0.5 + (i % 10) as f64 / 50.0)];
            b.add_to_slices(&["camera_id=cam-1"], &own, ["car"]);
        }
        let baseline = b.finish("t".into(), "v".into(), "s".into()).expect("baseline");
        let cfg = Config {
            slices: crate::config::SliceConfig {
                dimensions: vec!["camera_id".into(), "site".into()],
                ..Default::default()
            },
            ..Config::default()
        };
        let index = |n: &str| ["brightness", "confidence_mean"].iter().position(|m| *m == n);
        let mut s = WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline, index);
        let labels: HashMap<String, String> = [("site".to_string(), "lot-7".to_string())].into();
        let now = 1_000_000;
        let frames: Vec<[Option<f64>; 2]> =
            (0..40).map(|i| [Some(0.3 + i as f64 / 100.0), (i % 3 != 0).then(|| 0.4 + i as f64 / 80.0)]).collect();
        for v in &frames {
            assert_eq!(s.record(&rec("cam-1", &labels, now, v), now), Recorded::Yes { slices: 3 });
            assert_eq!(s.observed_sets, 2, "three slices, two sets of layouts: each value binned twice, not thrice");
        }
        let own = baseline.slices.get("camera_id=cam-1").expect("own reference");
        for key in [GLOBAL, "camera_id=cam-1", "site=lot-7"] {
            let snap = s.snapshot(key, now).expect("slice");
            for (m, t) in s.tracked().iter().enumerate() {
                let layout =
                    if key == GLOBAL || key.starts_with("site") { &t.layout } else { &own.metrics[&*t.name].layout };
                let mut want = Histogram::new(layout);
                frames.iter().for_each(|v| want.record(layout, v[m]));
                assert_eq!(snap.hists[m].counts, want.counts, "{key} {}", t.name);
                assert_eq!(snap.hists[m].tail_hi_dist.to_bits(), want.tail_hi_dist.to_bits(), "{key} {}", t.name);
            }
        }
        assert_ne!(
            own.metrics["brightness"].layout.edges(),
            s.tracked()[0].layout.edges(),
            "the camera's bins differ from the global ones"
        );
    }

    #[test]
    fn context_baselines_key_label_slices_by_context_and_pick_their_reference() {
        use framewatch_metrics::baseline::{ContextSpec, context_key};
        let mut b = builder().with_context(ContextSpec::Label("illumination".into()));
        let night = context_key("camera_id=cam-1", "night");
        for i in 0..200 {
            let v = [Some(0.1 + (i % 50) as f64 / 1000.0), Some(0.9)];
            b.add_to_slices(&["camera_id=cam-1", night.as_str()], &v, ["car"]);
        }
        let baseline = b.finish("t".into(), "v".into(), "s".into()).expect("baseline");
        let cfg = Config {
            slices: crate::config::SliceConfig { dimensions: vec!["camera_id".into()], ..Default::default() },
            ..Config::default()
        };
        let index = |n: &str| ["brightness", "confidence_mean"].iter().position(|m| *m == n);
        let mut s = WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline, index);
        let now = 1_000_000;
        let at = |v: &str| -> HashMap<String, String> { [("illumination".to_string(), v.to_string())].into() };
        let (dark, day, none) = (at("night"), at("day"), HashMap::new());
        for t in 0..3 {
            s.record(&rec("cam-1", &dark, now - 10 + t, &[Some(0.1 + t as f64 / 100.0), Some(0.9)]), now);
        }
        s.record(&rec("cam-1", &day, now, &[Some(0.5), Some(0.9)]), now);
        s.record(&rec("cam-1", &none, now, &[Some(0.5), Some(0.9)]), now);
        let mut keys: Vec<String> = s.slice_keys().iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, ["camera_id=cam-1", "camera_id=cam-1,context=day", "camera_id=cam-1,context=night", "global"]);
        let n = s.snapshot(&night, now).expect("night");
        assert_eq!((n.frames, n.reference.as_deref()), (3, Some(night.as_str())));
        assert_eq!(n.lags[0].pairs, 2, "consecutive frames of the camera within its context pair up");
        let d = s.snapshot("camera_id=cam-1,context=day", now).expect("day");
        assert_eq!(d.reference.as_deref(), Some("camera_id=cam-1"), "no day reference: the camera's context-free one");
        assert!(d.own_baseline);
        assert_eq!(s.snapshot(GLOBAL, now).expect("global").reference, None);
        assert_eq!(s.snapshot(GLOBAL, now).expect("global").frames, 5);
        // restored state picks the same references
        let mut r = WindowStore::new(StoreSettings::from_config(&cfg, index).expect("settings"), &baseline, index);
        r.restore_state(s.export_state()).expect("restore");
        assert_eq!(r.snapshot(&night, now).expect("night").reference.as_deref(), Some(night.as_str()));
    }

    #[test]
    fn late_frames_go_where_captured_within_lateness_and_are_counted_beyond() {
        let mut s = store(100);
        let labels = HashMap::new();
        let now = 1_000_000;
        s.record(&rec("c", &labels, now - 200, &[Some(0.5), None]), now);
        assert_eq!(s.record(&rec("c", &labels, now - 301, &[Some(0.5), None]), now), Recorded::TooLate);
        assert_eq!(s.counters().late, 1);
        // 15 minutes later the frame captured at now-200 has left the window
        assert_eq!(s.snapshot(GLOBAL, now).expect("g").frames, 1);
        assert_eq!(s.snapshot(GLOBAL, now + 900).expect("g").frames, 0);
    }

    #[test]
    fn the_window_slides_by_capture_time() {
        let mut s = store(100);
        let labels = HashMap::new();
        let t0 = 600_000; // a multiple of the 60 s step
        for minute in 0..20 {
            let t = t0 + minute * 60;
            s.record(&rec("c", &labels, t, &[Some(0.5), None]), t);
        }
        // window of 15 one-minute steps ending at the last frame
        let snap = s.snapshot(GLOBAL, t0 + 19 * 60).expect("g");
        assert_eq!(snap.frames, 15);
        assert_eq!(snap.window_end_secs - snap.window_start_secs, 900);
    }

    #[test]
    fn a_window_is_the_histogram_of_exactly_its_frames_however_time_moves() {
        // Counts and classes come from running totals less the sub-windows that left (`MetricCounts`,
        // `SubCounts`, `ClassCounts`): check them against a histogram built from scratch of the frames in the window, through
        // late frames, frames too late, idle minutes (stale slots) and long gaps (everything stale), at every step,
        // with sub-windows both listed as rows (few frames) and packed (~60 frames a minute in `global`), and their
        // sums packed (a newer sub-window opened) and opened again (a late frame came).
        const CLASSES: [&[&str]; 4] = [&[], &["car"], &["car", "person", "car"], &["bus"]];
        let mut s = store(100);
        let labels = HashMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        let mut kept: Vec<(&str, i64, [Option<f64>; 2], usize)> = Vec::new();
        let mut forms = [0usize; 2];
        // Sub-windows with frames whose sums were seen packed, and seen open after having been seen packed (opened
        // again by a late frame).
        let mut sums_forms = [0usize; 2];
        let mut seen_packed: HashSet<(SliceKey, i64)> = HashSet::new();
        let mut now = 1_000_000;
        for step in 0..3000 {
            now += match next(1000) {
                0..3 => 1200 + next(600) as i64, // a long gap: the whole window goes stale
                3..12 => 61 + next(200) as i64,
                _ => next(3) as i64,
            };
            let cam = if next(3) == 0 { "cam-2" } else { "cam-1" };
            let capture = now - next(400) as i64; // up to 300 s late is allowed
            let v = [Some(next(1000) as f64 / 1000.0), (next(4) != 0).then(|| 0.5 + next(100) as f64 / 200.0)];
            let classes = next(4) as usize;
            match s.record(&FrameRecord { classes: CLASSES[classes], ..rec(cam, &labels, capture, &v) }, now) {
                Recorded::Yes { .. } => kept.push((cam, capture, v, classes)),
                Recorded::TooLate => assert!(capture < now - 300),
            }
            if step % 7 != 0 {
                continue;
            }
            for (key, sl) in &s.slices {
                for sub in sl.ring.iter().filter(|sub| sub.frames > 0) {
                    forms[usize::from(sub.counts.packed().is_some())] += 1;
                    if sub.sums.is_packed() {
                        sums_forms[0] += 1;
                        seen_packed.insert((key.clone(), sub.index));
                    } else if seen_packed.contains(&(key.clone(), sub.index)) {
                        sums_forms[1] += 1;
                    }
                }
            }
            for key in [GLOBAL, "camera_id=cam-1", "camera_id=cam-2"] {
                // Both ways: merged from the ring as it is, and from the running totals and moments after the
                // sub-windows that left are dropped (what an evaluation does).
                let Some(merged) = s.snapshot(key, now) else { continue };
                let mut running = WindowSnapshot::empty();
                assert!(s.snapshot_into(key, now, &mut running));
                for snap in [&merged, &running] {
                    let in_window = |&&(c, t, _, _): &&(&str, i64, [Option<f64>; 2], usize)| {
                        (key == GLOBAL || key.ends_with(c)) && t >= snap.window_start_secs && t < snap.window_end_secs
                    };
                    let frames: Vec<_> = kept.iter().filter(in_window).collect();
                    assert_eq!(snap.frames, frames.len() as u64, "{key} at {now}");
                    let mut want_classes: BTreeMap<&str, u64> = BTreeMap::new();
                    frames.iter().flat_map(|f| CLASSES[f.3]).for_each(|c| *want_classes.entry(c).or_default() += 1);
                    let got: BTreeMap<&str, u64> = snap.classes.iter().map(|(c, n)| (&**c, *n)).collect();
                    assert_eq!(got, want_classes, "{key} at {now}");
                    for (m, t) in s.tracked().iter().enumerate() {
                        let mut want = Histogram::new(&t.layout);
                        frames.iter().for_each(|f| want.record(&t.layout, f.2[m]));
                        let got = &snap.hists[m];
                        assert_eq!(got.counts, want.counts, "{key} {} at {now}", t.name);
                        let ints = |h: &Histogram| (h.n, h.missing, h.outliers_moderate, h.outliers_severe);
                        assert_eq!((ints(got), got.min, got.max), (ints(&want), want.min, want.max), "{key}");
                        for (g, w) in
                            [(got.sum, want.sum), (got.sum_sq, want.sum_sq), (got.tail_hi_dist, want.tail_hi_dist)]
                        {
                            assert!(
                                (g - w).abs() <= 1e-9 * (1.0 + want.sum_sq + want.tail_hi_dist),
                                "{key} {}",
                                t.name
                            );
                        }
                    }
                }
            }
        }
        assert!(kept.len() > 2000 && s.counters().late > 50, "the walk exercised late frames");
        assert!(forms[0] > 100 && forms[1] > 100, "both forms of sub-window counts were checked: {forms:?}");
        assert!(sums_forms[0] > 100 && sums_forms[1] > 100, "sums packed and reopened were checked: {sums_forms:?}");
    }

    #[test]
    fn a_flood_of_new_slices_neither_evicts_established_ones_nor_grows_past_the_cap() {
        let mut s = store_with(crate::config::SliceConfig {
            max_slices: 10,
            admit_per_sec: 1.0,
            protect_after_frames: 5,
            ..Default::default()
        });
        let labels = HashMap::new();
        let real = ["lot-1", "lot-2", "lot-3", "lot-4"];
        for t in 1_000..1_010 {
            for cam in real {
                s.record(&rec(cam, &labels, t, &[Some(0.5), None]), t);
            }
        }
        // Pre-scored frames with a fresh camera id each, 10 a second for 100 seconds, while the real cameras
        // keep quiet (so they are the idlest slices).
        let fresh: Vec<String> = (0..1_000).map(|i| format!("intruder-{i}")).collect();
        for (i, cam) in fresh.iter().enumerate() {
            let t = 1_100 + i as i64 / 10;
            s.record(&rec(cam, &labels, t, &[Some(0.5), None]), t);
        }
        assert!(s.slice_count() <= 10);
        for cam in real {
            let key = format!("camera_id={cam}");
            assert!(s.snapshot(&key, 1_200).is_some_and(|w| w.frames == 10), "{key} was evicted or lost frames");
        }
        let evicted = s.take_evicted();
        assert!(!evicted.is_empty() && evicted.iter().all(|k| k.as_str().starts_with("camera_id=intruder-")));
        // The bucket (10 deep) refilled while the cameras were quiet, then 1 a second over 99 seconds: everything
        // else was refused.
        let admitted = 10 + 99;
        assert_eq!(s.refused_slices(), 1_000 - admitted);
        assert_eq!(s.counters().evicted_capacity, admitted - 5, "the 5 free places, then one eviction each");
        // Every frame still counted in global.
        assert_eq!(s.snapshot(GLOBAL, 1_200).map(|w| w.frames), Some(40 + 1_000));
    }

    #[test]
    fn slice_cap_evicts_the_idlest_and_idle_slices_expire() {
        let mut s = store(3);
        let labels = HashMap::new();
        for (i, cam) in ["a", "b", "c", "d"].iter().enumerate() {
            let t = 1_000 + i as i64;
            s.record(&rec(cam, &labels, t, &[Some(0.5), None]), t);
        }
        assert_eq!(s.slice_count(), 3);
        assert!(s.snapshot(GLOBAL, 1_004).is_some(), "global is never evicted");
        assert!(s.counters().evicted_capacity >= 2);
        assert_eq!(s.evict_idle(1_004 + 601), 2);
        assert_eq!(s.slice_count(), 1);
    }

    /// Issue #11: a client sending a new class label with every detection must not grow the window store.
    #[test]
    fn classes_past_the_cap_are_counted_under_other_per_sub_window_and_per_window() {
        let mut s = store(100);
        let labels = HashMap::new();
        let t0 = 600_000; // a multiple of the 60 s step
        let v = [Some(0.5), None];
        let frame = |t: i64, classes: &'static [&'static str]| FrameRecord { classes, ..rec("c", &labels, t, &v) };
        // One minute: the first three classes keep their counts (max_classes = 3), later ones share "(other)".
        s.record(&frame(t0, &["car", "bus", "car", "van"]), t0);
        s.record(&frame(t0 + 1, &["x-1", "car", "x-2", OTHER_CLASS]), t0 + 1);
        let g = s.snapshot(GLOBAL, t0 + 1).expect("global");
        let counts: BTreeMap<&str, u64> = g.classes.iter().map(|(c, n)| (&**c, *n)).collect();
        assert_eq!(counts, BTreeMap::from([("car", 3), ("bus", 1), ("van", 1), (OTHER_CLASS, 3)]));
        // x-1 and x-2 overflowed in both slices (global, camera_id=c); the literal "(other)" is the bucket itself
        assert_eq!(s.classes_overflowed(), 4);

        // The next minutes bring other classes, each minute within the cap: their union is folded to the three
        // most frequent in the window, and no detection is lost.
        s.record(&frame(t0 + 60, &["truck", "truck", "truck", "truck", "bike"]), t0 + 60);
        s.record(&frame(t0 + 120, &["tram", "bike"]), t0 + 120);
        let g = s.snapshot(GLOBAL, t0 + 120).expect("global");
        let counts: BTreeMap<&str, u64> = g.classes.iter().map(|(c, n)| (&**c, *n)).collect();
        assert_eq!(counts, BTreeMap::from([("truck", 4), ("car", 3), ("bike", 2), (OTHER_CLASS, 6)]));
        assert_eq!(s.classes_overflowed(), 4, "the window's fold is a view, not a new overflow");
        assert_eq!(counts.values().sum::<u64>(), 15, "every detection is counted once");
    }

    #[test]
    fn exported_state_restores_to_an_equal_store_and_bad_shapes_are_refused() {
        let mut a = store(100);
        let labels: HashMap<String, String> = [("site".to_string(), "lot-7".to_string())].into();
        let now = 1_000_000;
        for i in 0..200 {
            let v = [Some(0.1 + (i % 37) as f64 / 50.0), (i % 3 != 0).then_some(0.8)];
            a.record(&rec(if i % 2 == 0 { "cam-1" } else { "cam-2" }, &labels, now - (i % 240), &v), now);
        }
        let state = a.export_state();
        let mut b = store(100);
        b.restore_state(state.clone()).expect("restore");
        assert_eq!(b.export_state(), state);
        for key in a.slice_keys() {
            let (sa, sb) = (a.snapshot(&key, now).expect("a"), b.snapshot(&key, now).expect("b"));
            assert_eq!((sa.frames, &sa.hists, &sa.classes), (sb.frames, &sb.hists, &sb.classes), "{key}");
            // The running totals, rebuilt on restore (moments are summed in another order: counts only).
            let (mut ra, mut rb) = (WindowSnapshot::empty(), WindowSnapshot::empty());
            assert!(a.snapshot_into(&key, now, &mut ra) && b.snapshot_into(&key, now, &mut rb));
            let counts = |s: &WindowSnapshot| s.hists.iter().map(|h| h.counts.clone()).collect::<Vec<_>>();
            assert_eq!((ra.frames, counts(&ra), &ra.classes), (sa.frames, counts(&sa), &sa.classes), "{key}");
            assert_eq!((rb.frames, counts(&rb), &rb.classes), (sa.frames, counts(&sa), &sa.classes), "{key}");
        }
        let mut bad = state.clone();
        bad.slices[0].subs[0].hists[1].counts.pop();
        assert!(matches!(b.restore_state(bad), Err(RestoreError::Bins { .. })));
        let mut bad = state;
        bad.slices[0].subs[0].hists.pop();
        assert!(matches!(b.restore_state(bad), Err(RestoreError::MetricCount { .. })));
        assert_eq!(b.slice_count(), a.slice_count(), "a refused state leaves the store as it was");

        // restored into a store with a lower slice cap: the most recent slices (and global) are kept
        let mut small = store(2);
        small.restore_state(a.export_state()).expect("restore");
        assert_eq!(small.slice_count(), 2);
        assert!(small.snapshot(GLOBAL, now).is_some());
        assert_eq!(small.counters().evicted_capacity, a.slice_count() as u64 - 2);
    }
}

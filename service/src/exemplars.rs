//! Exemplar frames: for each (slice, metric) whose latest verdict is drift, small JPEG thumbnails of frames from
//! the current window: the ones furthest from the baseline on that metric, and a few typical of the window. The
//! evaluator names the watched pairs after every evaluation (`watch`); the scoring workers ask whether a frame is a
//! candidate (`wants`: one atomic load while no pair drifts; otherwise a shared read lock and a few comparisons
//! per watched pair of the frame's camera and of slices that name no camera) and only then make a thumbnail from
//! the pixels the scorer already downscaled, which `offer` files under the slices the store recorded the frame in.
//! Pre-scored frames (no pixels) have none.
//!
//! Memory: at most `budget_bytes` of thumbnails in all (`[exemplars] memory_mib`, gauge
//! `framewatch_exemplar_bytes`). When full, the least useful exemplar makes room: typical frames first (oldest
//! capture first), then the least extreme of the extreme ones; a new frame less useful than every stored one is
//! dropped (`framewatch_exemplars_dropped_total{reason="budget"}`). A pair that stops drifting frees its exemplars
//! at the next evaluation, and exemplars captured before their window's start are dropped then too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::slice::{SliceKey, SliceKind};

/// Frames furthest from the baseline kept per (slice, metric).
pub const EXTREMES: usize = 6;
/// Frames closest to the window's mean kept per (slice, metric).
pub const TYPICAL: usize = 3;
/// Thumbnails the web view showed recently, kept (a ring) so that a page's pictures can still be fetched after
/// their exemplars were replaced, as happens within seconds on a streaming camera: about 3 MB at 3 KB each.
pub const SHOWN: usize = 1024;
/// Bytes counted per exemplar besides its JPEG (the record, its strings, the map entries): an estimate, so the
/// budget also bounds exemplars whose pictures are tiny.
const OVERHEAD_BYTES: usize = 256;

/// Which of a pair's two sets an exemplar belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExemplarKind {
    /// Among the frames furthest from the baseline median on the metric.
    Extreme,
    /// Among the frames closest to the current window's mean.
    Typical,
}

impl ExemplarKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExemplarKind::Extreme => "extreme",
            ExemplarKind::Typical => "typical",
        }
    }
}

/// One kept frame.
#[derive(Debug, Clone)]
pub struct Exemplar {
    /// Unique while the process runs: `/exemplars/<id>.jpg`.
    pub id: u64,
    pub kind: ExemplarKind,
    pub camera_id: Arc<str>,
    pub capture_secs: i64,
    /// The frame's value of the metric.
    pub value: f64,
    /// Distance from the baseline median in baseline IQR units (the standard deviation when the IQR is 0).
    pub score: f64,
    /// JPEG, at most `charts::THUMBNAIL_SIDE` pixels on the long side; shared by every pair that keeps the frame.
    pub jpeg: Arc<[u8]>,
}

impl Exemplar {
    fn bytes(&self) -> usize {
        self.jpeg.len() + OVERHEAD_BYTES
    }
}

/// A (slice, metric) the evaluator wants exemplars for, with what ranks its frames.
#[derive(Debug, Clone)]
pub struct Watch {
    pub slice: SliceKey,
    pub metric: Arc<str>,
    /// The metric's position in the scorer's values.
    pub registry_index: usize,
    /// Baseline median and scale (IQR, else standard deviation, else 1) of the reference that judges the slice.
    pub median: f64,
    pub scale: f64,
    /// The current window's mean: typical frames are the closest to it.
    pub current_mean: f64,
    /// Exemplars captured before this are out of the window.
    pub window_start_secs: i64,
}

/// The scale outliers are measured in: the IQR, else the standard deviation, else plain units.
pub fn outlier_scale(quartiles: [f64; 3], std: f64) -> f64 {
    let iqr = quartiles[2] - quartiles[0];
    if iqr > 0.0 {
        iqr
    } else if std > 0.0 {
        std
    } else {
        1.0
    }
}

/// The label conditions a frame must meet to be in a slice, as far as labels tell (predicate and context parts
/// are left to the store, so this may say yes for a frame the slice does not take, never no for one it does).
#[derive(Debug, Clone)]
enum Membership {
    Any,
    Labels(Vec<(String, String)>),
}

impl Membership {
    fn of(key: &SliceKey) -> Membership {
        match key.kind() {
            SliceKind::Global | SliceKind::Predicate(_) => Membership::Any,
            SliceKind::Labels(pairs) => Membership::Labels(
                pairs.into_iter().filter(|(d, _)| d != framewatch_metrics::baseline::CONTEXT_DIMENSION).collect(),
            ),
        }
    }

    /// The camera a slice names, if it does.
    fn camera(&self) -> Option<&str> {
        match self {
            Membership::Any => None,
            Membership::Labels(pairs) => pairs.iter().find(|(d, _)| d == "camera_id").map(|(_, v)| v.as_str()),
        }
    }

    fn may_contain(&self, f: &FrameLabels<'_>) -> bool {
        match self {
            Membership::Any => true,
            Membership::Labels(pairs) => pairs.iter().all(|(d, v)| match d.as_str() {
                "camera_id" => f.camera_id == v,
                "model_version" => f.model_version == v,
                _ => f.labels.get(d).is_some_and(|x| x == v),
            }),
        }
    }
}

/// What a frame is grouped by.
#[derive(Debug, Clone, Copy)]
pub struct FrameLabels<'a> {
    pub camera_id: &'a str,
    pub model_version: &'a str,
    pub labels: &'a HashMap<String, String>,
}

#[derive(Debug)]
struct Set {
    watch: Watch,
    membership: Membership,
    extremes: Vec<Exemplar>,
    typical: Vec<Exemplar>,
}

impl Set {
    /// Whether a value would enter either set now.
    fn would_take(&self, v: f64) -> bool {
        let score = (v - self.watch.median).abs() / self.watch.scale;
        let dist = (v - self.watch.current_mean).abs();
        self.extremes.len() < EXTREMES
            || self.extremes.iter().any(|e| e.score < score)
            || self.typical.len() < TYPICAL
            || self.typical.iter().any(|e| (e.value - self.watch.current_mean).abs() > dist)
    }
}

/// How useful an exemplar is when memory is short (lower goes first): typical before extreme, then the older
/// typical or the less extreme one.
fn usefulness(e: &Exemplar) -> (u8, f64) {
    match e.kind {
        ExemplarKind::Typical => (0, e.capture_secs as f64),
        ExemplarKind::Extreme => (1, e.score),
    }
}

type PairKey = (SliceKey, Arc<str>);

#[derive(Debug, Default)]
struct Inner {
    sets: HashMap<PairKey, Set>,
    bytes: usize,
    /// The watched metrics of each slice (`offer` looks up the slices a frame was recorded in).
    by_slice: HashMap<SliceKey, Vec<Arc<str>>>,
    /// Watched pairs of slices that name a camera, by camera, and of all other slices: `wants` looks only at the
    /// frame's camera's and the others, not at every drifting camera of the fleet.
    by_camera: HashMap<String, Vec<PairKey>>,
    elsewhere: Vec<PairKey>,
}

/// The exemplar store; shared by the scoring workers, the evaluator and the readers.
#[derive(Debug)]
pub struct ExemplarStore {
    budget_bytes: usize,
    /// Read by the workers' `wants` (shared), written by `offer` (candidates only) and `watch` (each evaluation).
    inner: RwLock<Inner>,
    /// Whether any pair is watched: the hot path's first (lock-free) question.
    watching: AtomicBool,
    next_id: AtomicU64,
    /// The last `SHOWN` thumbnails a page referred to (id, JPEG), oldest first.
    shown: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<[u8]>)>>,
    bytes: Gauge,
    made: Counter,
    dropped: Family<[(&'static str, &'static str); 1], Counter>,
}

impl ExemplarStore {
    pub fn new(budget_bytes: usize, registry: &mut Registry) -> ExemplarStore {
        let (bytes, made, dropped) = (Gauge::default(), Counter::default(), Family::default());
        registry.register(
            "framewatch_exemplar_bytes",
            "Bytes of exemplar thumbnails held (exemplars.memory_mib bounds it)",
            bytes.clone(),
        );
        registry.register(
            "framewatch_exemplar_thumbnails",
            "Thumbnails made for frames that were exemplar candidates of a drifting (slice, metric)",
            made.clone(),
        );
        registry.register(
            "framewatch_exemplars_dropped",
            "Exemplar candidates not kept, by reason (budget: memory full of more useful ones; \
             thumbnail: the picture could not be encoded)",
            dropped.clone(),
        );
        for reason in ["budget", "thumbnail"] {
            let _ = dropped.get_or_create(&[("reason", reason)]);
        }
        ExemplarStore {
            budget_bytes,
            inner: RwLock::new(Inner::default()),
            watching: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            shown: std::sync::Mutex::default(),
            bytes,
            made,
            dropped,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the watched pairs (after each evaluation): pairs no longer watched free their exemplars, kept ones
    /// take the new ranking and drop what fell out of their window.
    pub fn watch(&self, watches: Vec<Watch>) {
        let mut inner = self.write();
        let mut old = std::mem::take(&mut inner.sets);
        for w in watches {
            let key = (w.slice.clone(), w.metric.clone());
            let mut set = old.remove(&key).unwrap_or_else(|| Set {
                membership: Membership::of(&w.slice),
                watch: w.clone(),
                extremes: Vec::new(),
                typical: Vec::new(),
            });
            for list in [&mut set.extremes, &mut set.typical] {
                list.retain(|e| e.capture_secs >= w.window_start_secs);
                for e in list.iter_mut() {
                    e.score = (e.value - w.median).abs() / w.scale;
                }
            }
            set.watch = w;
            inner.sets.insert(key, set);
        }
        inner.bytes = inner.sets.values().flat_map(|s| s.extremes.iter().chain(&s.typical)).map(Exemplar::bytes).sum();
        let (mut by_slice, mut by_camera, mut elsewhere) = (HashMap::new(), HashMap::new(), Vec::new());
        for (key, set) in &inner.sets {
            by_slice.entry(key.0.clone()).or_insert_with(Vec::new).push(key.1.clone());
            match set.membership.camera() {
                Some(camera) => by_camera.entry(camera.to_string()).or_insert_with(Vec::new).push(key.clone()),
                None => elsewhere.push(key.clone()),
            }
        }
        (inner.by_slice, inner.by_camera, inner.elsewhere) = (by_slice, by_camera, elsewhere);
        self.watching.store(!inner.sets.is_empty(), Ordering::Release);
        self.bytes.set(inner.bytes as i64);
    }

    /// Whether a scored frame is a candidate for some watched pair, so that a thumbnail is worth making. False at
    /// once, without a lock, while nothing drifts.
    pub fn wants(&self, frame: &FrameLabels<'_>, values: &[Option<f64>]) -> bool {
        if !self.watching.load(Ordering::Acquire) {
            return false;
        }
        let inner = self.read();
        let camera = inner.by_camera.get(frame.camera_id).map_or(&[][..], Vec::as_slice);
        camera.iter().chain(&inner.elsewhere).filter_map(|k| inner.sets.get(k)).any(|s| {
            values.get(s.watch.registry_index).copied().flatten().is_some_and(|v| v.is_finite() && s.would_take(v))
                && s.membership.may_contain(frame)
        })
    }

    /// Counts a candidate whose thumbnail could not be made.
    pub fn thumbnail_failed(&self) {
        self.dropped.get_or_create(&[("reason", "thumbnail")]).inc();
    }

    /// Counts a thumbnail made (the candidate then goes to `offer`).
    pub fn thumbnail_made(&self) {
        self.made.inc();
    }

    /// Files a candidate's thumbnail under every watched pair of the slices it was recorded in (`slices`, from the
    /// store) where it ranks.
    pub fn offer(
        &self,
        slices: &[String],
        camera_id: &str,
        capture_secs: i64,
        values: &[Option<f64>],
        jpeg: &Arc<[u8]>,
    ) {
        let mut inner = self.write();
        let Inner { sets, bytes, by_slice, .. } = &mut *inner;
        let camera: Arc<str> = Arc::from(camera_id);
        let mut candidates = Vec::new();
        let pairs = slices
            .iter()
            .filter_map(|s| by_slice.get_key_value(s.as_str()))
            .flat_map(|(slice, metrics)| metrics.iter().map(move |m| (slice.clone(), m.clone())));
        for (slice, metric) in pairs {
            let Some(set) = sets.get(&(slice.clone(), metric.clone())) else { continue };
            let Some(v) = values.get(set.watch.registry_index).copied().flatten().filter(|v| v.is_finite()) else {
                continue;
            };
            let score = (v - set.watch.median).abs() / set.watch.scale;
            let dist = (v - set.watch.current_mean).abs();
            let extreme = set.extremes.len() < EXTREMES || set.extremes.iter().any(|e| e.score < score);
            let typical = set.typical.len() < TYPICAL
                || set.typical.iter().any(|e| (e.value - set.watch.current_mean).abs() > dist);
            for (kind, takes) in [(ExemplarKind::Extreme, extreme), (ExemplarKind::Typical, typical)] {
                if takes {
                    candidates.push((
                        (slice.clone(), metric.clone()),
                        Exemplar {
                            id: 0,
                            kind,
                            camera_id: camera.clone(),
                            capture_secs,
                            value: v,
                            score,
                            jpeg: jpeg.clone(),
                        },
                    ));
                }
            }
        }
        for (key, mut e) in candidates {
            if !make_room(sets, bytes, self.budget_bytes, &e) {
                self.dropped.get_or_create(&[("reason", "budget")]).inc();
                continue;
            }
            let Some(set) = sets.get_mut(&key) else { continue };
            e.id = self.next_id.fetch_add(1, Ordering::Relaxed);
            *bytes += e.bytes();
            let mean = set.watch.current_mean;
            match e.kind {
                ExemplarKind::Extreme => {
                    set.extremes.push(e);
                    set.extremes.sort_by(|a, b| b.score.total_cmp(&a.score));
                    if set.extremes.len() > EXTREMES {
                        set.extremes.pop().into_iter().for_each(|x| *bytes -= x.bytes());
                    }
                }
                ExemplarKind::Typical => {
                    set.typical.push(e);
                    set.typical.sort_by(|a, b| (a.value - mean).abs().total_cmp(&(b.value - mean).abs()));
                    if set.typical.len() > TYPICAL {
                        set.typical.pop().into_iter().for_each(|x| *bytes -= x.bytes());
                    }
                }
            }
        }
        self.bytes.set(*bytes as i64);
    }

    /// A pair's exemplars, extreme ones first (most extreme first), then typical ones; empty when it is not
    /// watched.
    pub fn exemplars(&self, slice: &str, metric: &str) -> Vec<Exemplar> {
        let inner = self.read();
        inner
            .sets
            .get(&(SliceKey::from_canonical(slice), Arc::from(metric)))
            .map(|set| set.extremes.iter().chain(&set.typical).cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps `shown` fetchable by id for a while (the last `SHOWN` shown), whatever happens to the exemplars.
    pub fn pin(&self, shown: &[Exemplar]) {
        let mut ring = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        for e in shown {
            if ring.iter().any(|(id, _)| *id == e.id) {
                continue;
            }
            if ring.len() >= SHOWN {
                ring.pop_front();
            }
            ring.push_back((e.id, e.jpeg.clone()));
        }
    }

    /// One exemplar's JPEG by id: a kept exemplar, or one a page showed recently.
    pub fn jpeg(&self, id: u64) -> Option<Arc<[u8]>> {
        let kept = {
            let inner = self.read();
            inner
                .sets
                .values()
                .flat_map(|s| s.extremes.iter().chain(&s.typical))
                .find(|e| e.id == id)
                .map(|e| e.jpeg.clone())
        };
        kept.or_else(|| {
            let ring = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            ring.iter().find(|(i, _)| *i == id).map(|(_, j)| j.clone())
        })
    }

    /// Bytes held (what the gauge shows).
    pub fn bytes(&self) -> usize {
        self.read().bytes
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }
}

/// Evicts less useful exemplars until `new` fits the budget; false (nothing evicted) when `new` is not more
/// useful than what would have to go, or alone exceeds the budget.
fn make_room(sets: &mut HashMap<PairKey, Set>, bytes: &mut usize, budget: usize, new: &Exemplar) -> bool {
    if new.bytes() > budget {
        return false;
    }
    while *bytes + new.bytes() > budget {
        let victim = sets
            .iter()
            .flat_map(|(k, s)| s.extremes.iter().chain(&s.typical).map(move |e| (k, e.id, e.kind, usefulness(e))))
            .min_by(|a, b| a.3.0.cmp(&b.3.0).then(a.3.1.total_cmp(&b.3.1)))
            .map(|(k, id, kind, u)| (k.clone(), id, kind, u));
        let Some((key, id, kind, u)) = victim else { return false };
        let mine = usefulness(new);
        if mine.0.cmp(&u.0).then(mine.1.total_cmp(&u.1)).is_le() {
            return false;
        }
        let Some(set) = sets.get_mut(&key) else { return false };
        let list = if kind == ExemplarKind::Extreme { &mut set.extremes } else { &mut set.typical };
        if let Some(i) = list.iter().position(|e| e.id == id) {
            *bytes -= list.remove(i).bytes();
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(slice: &str, metric: &str, window_start_secs: i64) -> Watch {
        Watch {
            slice: SliceKey::from_canonical(slice),
            metric: Arc::from(metric),
            registry_index: 0,
            median: 0.5,
            scale: 0.1,
            current_mean: 0.2,
            window_start_secs,
        }
    }

    fn labels<'a>(camera: &'a str, empty: &'a HashMap<String, String>) -> FrameLabels<'a> {
        FrameLabels { camera_id: camera, model_version: "", labels: empty }
    }

    fn jpeg(n: usize) -> Arc<[u8]> {
        Arc::from(vec![0u8; n])
    }

    #[test]
    fn nothing_is_wanted_while_nothing_drifts_and_only_matching_slices_count() {
        let store = ExemplarStore::new(1 << 20, &mut Registry::default());
        let empty = HashMap::new();
        assert!(!store.wants(&labels("cam-1", &empty), &[Some(0.1)]));
        store.watch(vec![watch("camera_id=cam-2", "brightness", 0)]);
        assert!(!store.wants(&labels("cam-1", &empty), &[Some(0.1)]), "another camera's frame");
        assert!(store.wants(&labels("cam-2", &empty), &[Some(0.1)]));
        assert!(!store.wants(&labels("cam-2", &empty), &[None]), "no value for the metric");
        store.watch(Vec::new());
        assert!(!store.wants(&labels("cam-2", &empty), &[Some(0.1)]));
    }

    #[test]
    fn slices_without_a_camera_see_every_frame_and_labels_must_match() {
        let store = ExemplarStore::new(1 << 20, &mut Registry::default());
        store.watch(vec![watch("site=lot-7", "brightness", 0), watch("camera_id=cam-2,site=lot-7", "brightness", 0)]);
        let lot7: HashMap<String, String> = [("site".to_string(), "lot-7".to_string())].into();
        let lot8: HashMap<String, String> = [("site".to_string(), "lot-8".to_string())].into();
        assert!(store.wants(&labels("cam-5", &lot7), &[Some(0.1)]), "site=lot-7 takes any camera there");
        assert!(!store.wants(&labels("cam-2", &lot8), &[Some(0.1)]), "cam-2 at another site");
        assert!(store.wants(&labels("cam-2", &lot7), &[Some(0.1)]));
    }

    #[test]
    fn keeps_the_most_extreme_and_the_most_typical_and_forgets_when_drift_ends() {
        let store = ExemplarStore::new(1 << 20, &mut Registry::default());
        store.watch(vec![watch("camera_id=cam-2", "brightness", 0)]);
        let slices = ["global".to_string(), "camera_id=cam-2".to_string()];
        for i in 0..20 {
            // Values 0.5 (the baseline median) down to 0.02; the window's mean is 0.2.
            let v = 0.5 - f64::from(i) * 0.025;
            store.offer(&slices, "cam-2", 100 + i64::from(i), &[Some(v)], &jpeg(1000));
        }
        let kept = store.exemplars("camera_id=cam-2", "brightness");
        let extreme: Vec<f64> = kept.iter().filter(|e| e.kind == ExemplarKind::Extreme).map(|e| e.value).collect();
        let typical: Vec<f64> = kept.iter().filter(|e| e.kind == ExemplarKind::Typical).map(|e| e.value).collect();
        assert_eq!(extreme.len(), EXTREMES);
        assert!((extreme[0] - 0.025).abs() < 1e-9 && extreme.iter().all(|v| *v <= 0.15 + 1e-9), "{extreme:?}");
        assert_eq!(typical.len(), TYPICAL);
        assert!(typical.iter().all(|v| (v - 0.2).abs() <= 0.025 + 1e-9), "{typical:?}");
        assert_eq!(store.bytes(), (EXTREMES + TYPICAL) * (1000 + OVERHEAD_BYTES));
        assert!(store.jpeg(kept[0].id).is_some());
        // The window moves on: frames captured before its start go.
        store.watch(vec![watch("camera_id=cam-2", "brightness", 110)]);
        assert!(store.exemplars("camera_id=cam-2", "brightness").iter().all(|e| e.capture_secs >= 110));
        let shown = store.exemplars("camera_id=cam-2", "brightness");
        store.pin(&shown);
        store.watch(Vec::new());
        assert!(store.exemplars("camera_id=cam-2", "brightness").is_empty());
        assert_eq!(store.bytes(), 0);
        assert!(store.jpeg(shown[0].id).is_some(), "a shown picture stays fetchable after its exemplar went");
    }

    #[test]
    fn a_full_budget_evicts_typical_then_least_extreme_and_refuses_the_less_useful() {
        let per = 1000 + OVERHEAD_BYTES;
        let store = ExemplarStore::new(4 * per, &mut Registry::default());
        store.watch(vec![watch("global", "brightness", 0)]);
        let slices = ["global".to_string()];
        // 0.2 is both typical (the mean) and 3 IQR from the median: one extreme and one typical exemplar.
        store.offer(&slices, "cam-1", 100, &[Some(0.2)], &jpeg(1000));
        store.offer(&slices, "cam-1", 101, &[Some(0.1)], &jpeg(1000));
        store.offer(&slices, "cam-1", 102, &[Some(0.05)], &jpeg(1000));
        // Full now (4 exemplars): 0.0 is more extreme than all; the typical 0.2 goes first.
        store.offer(&slices, "cam-1", 103, &[Some(0.0)], &jpeg(1000));
        let kept = store.exemplars("global", "brightness");
        assert!(store.bytes() <= 4 * per, "{}", store.bytes());
        assert!(kept.iter().any(|e| e.value == 0.0 && e.kind == ExemplarKind::Extreme), "{kept:?}");
        // A frame less extreme than every kept extreme one, when no typical one is left to evict, is dropped.
        let before: Vec<u64> = kept.iter().map(|e| e.id).collect();
        store.offer(&slices, "cam-1", 104, &[Some(0.45)], &jpeg(1000));
        let after = store.exemplars("global", "brightness");
        assert!(store.bytes() <= 4 * per);
        assert!(after.iter().all(|e| e.value != 0.45 || e.kind == ExemplarKind::Typical), "{after:?}");
        assert!(before.iter().filter(|id| after.iter().any(|e| e.id == **id)).count() >= 3);
    }
}

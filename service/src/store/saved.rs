//! The store's contents as plain data for checkpoints (export under the caller's lock, restore after checks).

use framewatch_metrics::counts::{Layouts, MetricCounts, SubCounts, SubSums};
use framewatch_metrics::histogram::{Histogram, Sums};
use framewatch_metrics::stats::LagMoments;

use super::{ClassCounts, FastMap, Lags, SliceState, StoreCounters, SubWindow, WindowStore};
use crate::slice::{GLOBAL, SliceKey};

/// The store's contents, owned, for checkpoints: every slice with its live sub-windows. Layouts are not included;
/// they come from the baseline, which a checkpoint must match (see `checkpoint`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedStore {
    pub slices: Vec<SavedSlice>,
    pub counters: StoreCounters,
}

/// One slice in a `SavedStore`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedSlice {
    pub key: String,
    pub last_seen_secs: i64,
    /// Non-empty sub-windows, oldest first.
    pub subs: Vec<SavedSubWindow>,
    /// Lag-1 moments per tracked metric: window number of the current generation, then both generations
    /// (empty when the slice has none).
    pub lag_epoch: i64,
    pub lags_current: Vec<LagMoments>,
    pub lags_previous: Vec<LagMoments>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedSubWindow {
    pub index: i64,
    pub frames: u64,
    /// One per tracked metric, in `WindowStore::tracked()` order.
    pub hists: Vec<Histogram>,
    /// Class label counts, sorted by label.
    pub classes: Vec<(String, u64)>,
}

/// Why a `SavedStore` does not fit this store.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("slice {slice:?}: {found} histograms per sub-window, this store tracks {expected} metrics")]
    MetricCount { slice: String, expected: usize, found: usize },
    #[error("slice {slice:?}, metric {metric}: {found} bins, the baseline layout has {expected}")]
    Bins { slice: String, metric: String, expected: usize, found: usize },
    #[error("slice {slice:?}: {found} sub-windows, a window has {expected} steps")]
    Steps { slice: String, expected: usize, found: usize },
    #[error("slice {slice:?}: sub-window {index} appears twice")]
    DuplicateSubWindow { slice: String, index: i64 },
}

impl WindowStore {
    /// Copies the contents out (under the caller's lock; serialising happens after the lock is released).
    pub fn export_state(&self) -> SavedStore {
        let mut slices: Vec<SavedSlice> = self.slices.iter().map(|(key, s)| saved_slice(key, s)).collect();
        slices.sort_by(|a, b| a.key.cmp(&b.key));
        SavedStore { slices, counters: self.counters }
    }

    /// The saved form of those of `keys` (from `slice_keys`) that still exist, in `keys`' order: an export in
    /// parts, which need not hold the lock throughout.
    pub fn export_slices(&self, keys: &[SliceKey]) -> Vec<SavedSlice> {
        keys.iter().filter_map(|k| self.slices.get(k).map(|s| saved_slice(k, s))).collect()
    }

    /// Replaces the contents with `state`, after checking every histogram against this store's layouts. On error
    /// the store is left as it was.
    pub fn restore_state(&mut self, state: SavedStore) -> Result<(), RestoreError> {
        let steps = self.settings.steps;
        let mut slices = state.slices;
        // `slices.max_slices` may have been lowered since: keep the most recently seen (global always).
        let dropped = slices.len().saturating_sub(self.settings.max_slices) as u64;
        if dropped > 0 {
            slices.sort_by_key(|s| (s.key != GLOBAL, std::cmp::Reverse(s.last_seen_secs)));
            slices.truncate(self.settings.max_slices);
        }
        let mut restored = FastMap::with_capacity_and_hasher(slices.len(), Default::default());
        for sl in slices {
            if sl.subs.len() > steps {
                return Err(RestoreError::Steps { slice: sl.key, expected: steps, found: sl.subs.len() });
            }
            let (layouts, reference) = self.layouts_for(&sl.key);
            let own_baseline = reference.is_some();
            let mut ring: Vec<SubWindow> = (0..steps).map(|_| SubWindow::empty()).collect();
            for sub in sl.subs {
                if sub.hists.len() != layouts.len() {
                    return Err(RestoreError::MetricCount {
                        slice: sl.key,
                        expected: layouts.len(),
                        found: sub.hists.len(),
                    });
                }
                for ((h, layout), t) in sub.hists.iter().zip(layouts.iter()).zip(&self.tracked) {
                    if h.counts.len() != layout.bins() {
                        return Err(RestoreError::Bins {
                            slice: sl.key,
                            metric: t.name.to_string(),
                            expected: layout.bins(),
                            found: h.counts.len(),
                        });
                    }
                }
                let slot = &mut ring[sub.index.rem_euclid(steps as i64) as usize];
                if slot.index != i64::MIN {
                    return Err(RestoreError::DuplicateSubWindow { slice: sl.key, index: sub.index });
                }
                let mut classes = ClassCounts::default();
                for (c, n) in sub.classes {
                    classes.add(&self.intern(&c), n);
                }
                let counts: Vec<&[u32]> = sub.hists.iter().map(|h| h.counts.as_slice()).collect();
                let counts = SubCounts::from_counts(&layouts, &counts);
                let mut sums = SubSums::Open(sub.hists.iter().map(Sums::of_histogram).collect());
                sums.pack(&layouts);
                *slot = SubWindow { index: sub.index, frames: sub.frames, counts, sums, classes };
            }
            let lags = if sl.lags_current.len() == self.tracked.len() && sl.lags_previous.len() == self.tracked.len() {
                Lags { epoch: sl.lag_epoch, current: sl.lags_current, previous: sl.lags_previous }
            } else {
                Lags::default()
            };
            // Saturating: a checkpoint's frame counts are outside input.
            let frames_total = ring.iter().map(|w| w.frames).fold(0u64, u64::saturating_add);
            let mut totals = MetricCounts::new(&layouts, 8);
            let mut classes = ClassCounts::default();
            for w in &ring {
                totals.add_all(&layouts, &w.counts);
                for (c, n) in w.classes.iter() {
                    classes.add(c, n);
                }
            }
            let mut state = SliceState {
                ring,
                totals,
                moments: Vec::new(),
                classes,
                last_seen_secs: sl.last_seen_secs,
                layouts,
                own_baseline,
                reference,
                lags,
                last: Vec::new(),
                frames_total,
            };
            state.rebuild_moments();
            restored.insert(SliceKey::from_canonical(&sl.key), state);
        }
        self.slices = restored;
        self.counters = StoreCounters { evicted_capacity: state.counters.evicted_capacity + dropped, ..state.counters };
        Ok(())
    }
}

fn saved_slice(key: &SliceKey, s: &SliceState) -> SavedSlice {
    let mut subs: Vec<SavedSubWindow> = s
        .ring
        .iter()
        .filter(|w| w.index != i64::MIN && w.frames > 0)
        .map(|w| {
            let classes: Vec<(String, u64)> = w.classes.iter().map(|(c, n)| (c.to_string(), n)).collect();
            SavedSubWindow { index: w.index, frames: w.frames, hists: sub_histograms(&s.layouts, w), classes }
        })
        .collect();
    subs.sort_by_key(|w| w.index);
    SavedSlice {
        key: key.to_string(),
        last_seen_secs: s.last_seen_secs,
        subs,
        lag_epoch: s.lags.epoch,
        lags_current: s.lags.current.clone(),
        lags_previous: s.lags.previous.clone(),
    }
}

/// A sub-window's counts and sums as one `Histogram` per tracked metric (values: the metric's counts; missing:
/// the frames less those).
fn sub_histograms(layouts: &Layouts, w: &SubWindow) -> Vec<Histogram> {
    let mut hists: Vec<Histogram> = layouts.iter().map(Histogram::new).collect();
    w.counts.for_each(layouts, |m, bin, n| {
        hists[m].counts[bin] += n;
        hists[m].n += u64::from(n);
    });
    w.sums.merge_into(layouts, &mut hists);
    for h in &mut hists {
        h.missing = w.frames.saturating_sub(h.n);
    }
    hists
}

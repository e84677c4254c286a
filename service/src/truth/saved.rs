//! The join's contents as plain data for checkpoints. Matches are not saved: restoring matches each labelled frame
//! again (the same inputs give the same match), so the saved form is what arrived, not what was derived.

use std::sync::Arc;

use framewatch_metrics::performance::TruthBox;
use serde::{Deserialize, Serialize};

use super::{Early, Entry, JoinStore, KeptBox, labelled, truth_box};

/// A box: corners (x_min, y_min, x_max, y_max), confidence (1 for a label) and class.
type SavedBox = ([f32; 4], f32, String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedEntry {
    pub frame_id: String,
    pub capture_secs: i64,
    pub seen_secs: i64,
    pub detections: Vec<SavedBox>,
    pub slices: Vec<String>,
    pub values: Vec<f32>,
    /// The labels and the join's sequence number, once labelled.
    pub truth: Option<(Vec<SavedBox>, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedEarly {
    pub frame_id: String,
    pub truth: Vec<TruthBox>,
    pub received_secs: i64,
}

/// Everything the join holds, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedJoin {
    pub entries: Vec<SavedEntry>,
    pub early: Vec<SavedEarly>,
    pub next_seq: u64,
}

fn saved_box(k: &KeptBox) -> SavedBox {
    (k.corners, k.confidence, k.class.to_string())
}

impl JoinStore {
    /// Copies the contents out, in arrival order (under the caller's lock).
    pub fn export_state(&self) -> SavedJoin {
        let mut saved = self.export_rest();
        saved.entries = self.export_entries(&self.ids());
        saved
    }

    /// The kept frames' ids, in arrival order: what `export_entries` is then called with, a part at a time, so a
    /// checkpoint of a large join holds its lock for one part at a time (reference counts only; no copy here).
    pub fn ids(&self) -> Vec<Arc<str>> {
        self.order.iter().filter(|id| self.entries.contains_key(*id)).cloned().collect()
    }

    /// The entries of `ids` still kept (those gone since `ids` was taken are left out).
    pub fn export_entries(&self, ids: &[Arc<str>]) -> Vec<SavedEntry> {
        ids.iter()
            .filter_map(|id| self.entries.get(id).map(|e| (id, e)))
            .map(|(id, e)| SavedEntry {
                frame_id: id.to_string(),
                capture_secs: e.capture_secs,
                seen_secs: e.seen_secs,
                detections: e.detections.iter().map(saved_box).collect(),
                slices: e.slices.iter().map(|s| s.to_string()).collect(),
                values: e.values.to_vec(),
                truth: e
                    .truth
                    .as_ref()
                    .zip(e.labelled.as_ref())
                    .map(|(t, l)| (t.iter().map(saved_box).collect(), l.seq)),
            })
            .collect()
    }

    /// Everything but the entries: held labels and the join's sequence number.
    pub fn export_rest(&self) -> SavedJoin {
        let early = self
            .early_order
            .iter()
            .filter_map(|id| self.early.get(id).map(|e| (id, e)))
            .map(|(id, e)| SavedEarly {
                frame_id: id.to_string(),
                truth: e.truth.clone(),
                received_secs: e.received_secs,
            })
            .collect();
        SavedJoin { entries: Vec::new(), early, next_seq: self.next_seq }
    }

    /// Replaces the contents with a saved join (taken under the same baseline: `values` line up with `metrics`).
    /// Entries past this join's bounds are dropped, oldest first, as they would have been.
    pub fn restore(&mut self, saved: SavedJoin) {
        let settings = self.settings.clone();
        let metrics = std::mem::take(&mut self.metrics);
        let counters = self.counters;
        *self = JoinStore::new(settings, metrics);
        self.counters = counters;
        let skip = saved.entries.len().saturating_sub(self.settings.max_frames);
        for s in saved.entries.into_iter().skip(skip) {
            if s.values.len() != self.metrics.len() || self.entries.contains_key(s.frame_id.as_str()) {
                continue;
            }
            let mut kept = |b: &SavedBox| KeptBox { corners: b.0, confidence: b.1, class: self.intern(&b.2) };
            let detections: Box<[KeptBox]> = s.detections.iter().map(&mut kept).collect();
            let truth: Option<(Box<[KeptBox]>, u64)> =
                s.truth.as_ref().map(|(t, seq)| (t.iter().map(&mut kept).collect(), *seq));
            let slices = s.slices.iter().map(|k| self.intern(k)).collect();
            let mut entry = Entry {
                capture_secs: s.capture_secs,
                seen_secs: s.seen_secs,
                detections,
                slices,
                values: s.values.into(),
                truth: None,
                labelled: None,
            };
            if let Some((t, seq)) = truth {
                entry.labelled = Some(Arc::new(labelled(&entry, &t, seq, &self.settings.performance)));
                entry.truth = Some(t);
                self.labelled += 1;
            }
            let id: Arc<str> = Arc::from(s.frame_id.as_str());
            self.bytes += entry.heap_bytes(&id);
            self.entries.insert(id.clone(), entry);
            self.order.push_back(id);
        }
        let skip = saved.early.len().saturating_sub(self.settings.max_early);
        for e in saved.early.into_iter().skip(skip) {
            let id: Arc<str> = Arc::from(e.frame_id.as_str());
            self.early.insert(id.clone(), Early { truth: e.truth, received_secs: e.received_secs });
            self.early_order.push_back(id);
        }
        self.next_seq = saved.next_seq;
    }

    /// The labels of a joined frame, as given (tests and the query API).
    pub fn truth_of(&self, frame_id: &str) -> Option<Vec<TruthBox>> {
        self.entries.get(frame_id)?.truth.as_ref().map(|t| t.iter().map(truth_box).collect())
    }
}

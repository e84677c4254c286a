//! Fixed-edge histograms. Edges come from a baseline (its quantiles), so a histogram of production values is
//! comparable with the baseline at any time, merges with another by adding counts, and a sliding window is the
//! merge of its sub-windows. Values beyond the baseline's range land in open tail bins whose distance to the range
//! is summed, so the Wasserstein distance stays exact in the tails.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Quantile of sorted data, exactly as numpy's default (`method="linear"`, Hyndman-Fan type 7).
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * p;
    let lo = h.floor();
    let t = h - lo;
    let i = (lo as usize).min(n - 1);
    let (a, b) = (sorted[i], sorted[(i + 1).min(n - 1)]);
    // numpy's _lerp: the two-sided form keeps the result monotone and exact at t = 0 and t = 1.
    let d = b - a;
    if t >= 0.5 { b - d * (1.0 - t) } else { a + d * t }
}

/// Where values of one metric fall. Bin `0` is the lower tail (v < edges[0]); bins `1..=K` are
/// [edges[i-1], edges[i]); bin `K+1` holds v == edges[K] (the baseline maximum); bin `K+2` is the upper tail.
/// PSI and JS use coarser bins on top of these: the baseline deciles, open-ended at both ends.
/// The arrays are shared (`Arc`): a baseline and every window store binning against it hold one copy of each
/// layout, not one per holder (a per-camera reference is ~1 KiB per metric).
#[derive(Debug, Clone, PartialEq)]
pub struct BinLayout {
    edges: Arc<[f64]>,
    /// PSI/JS bins ("coarse"): the baseline deciles, the first and last open-ended (the standard PSI bins: a value
    /// below the baseline minimum counts in the first decile, above the maximum in the last; the out-of-range share
    /// is its own statistic). `coarse_of[bin]` maps every fine bin, tails included.
    coarse_cuts: Arc<[f64]>,
    coarse_of: Arc<[u16]>,
    /// Subtracted from values before summing squares, for numerically stable variance of large values.
    center: f64,
    /// Encord's IQR fences: [severe_lo, moderate_lo, moderate_hi, severe_hi].
    fences: [f64; 4],
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LayoutError {
    #[error("edges are empty")]
    NoEdges,
    #[error("edge {index} is not finite ({value})")]
    NotFinite { index: usize, value: f64 },
    #[error("edges are not strictly increasing at index {index} ({prev} then {value})")]
    NotIncreasing { index: usize, prev: f64, value: f64 },
    #[error("psi_cuts[{index}] = {value} is not one of the edges")]
    CutNotAnEdge { index: usize, value: f64 },
    #[error("quartiles {0:?} are not finite and ordered")]
    BadQuartiles([f64; 3]),
    #[error("too many bins ({0}); at most 65000")]
    TooManyBins(usize),
}

impl BinLayout {
    /// Builds a layout from baseline edges, PSI cut points (a subset of the edges) and quartiles (Q1, Q2, Q3).
    pub fn new(edges: Vec<f64>, psi_cuts: &[f64], quartiles: [f64; 3]) -> Result<BinLayout, LayoutError> {
        if edges.is_empty() {
            return Err(LayoutError::NoEdges);
        }
        if edges.len() > 65_000 {
            return Err(LayoutError::TooManyBins(edges.len()));
        }
        for (index, &value) in edges.iter().enumerate() {
            if !value.is_finite() {
                return Err(LayoutError::NotFinite { index, value });
            }
            if index > 0 && value <= edges[index - 1] {
                return Err(LayoutError::NotIncreasing { index, prev: edges[index - 1], value });
            }
        }
        let first = edges[0];
        let mut cuts: Vec<f64> = Vec::new();
        for (index, &value) in psi_cuts.iter().enumerate() {
            if edges.binary_search_by(|e| e.total_cmp(&value)).is_err() {
                return Err(LayoutError::CutNotAnEdge { index, value });
            }
            if value > first && cuts.last().is_none_or(|&c| value > c) {
                cuts.push(value);
            }
        }
        let [q1, q2, q3] = quartiles;
        if !(q1.is_finite() && q2.is_finite() && q3.is_finite() && q1 <= q2 && q2 <= q3) {
            return Err(LayoutError::BadQuartiles(quartiles));
        }
        let iqr = q3 - q1;
        let fences = [q1 - 2.5 * iqr, q1 - 1.5 * iqr, q3 + 1.5 * iqr, q3 + 2.5 * iqr];
        let k = edges.len() - 1;
        let mut coarse_of = Vec::with_capacity(k + 3);
        // The lower tail joins the first decile bin, the upper tail the last one.
        coarse_of.push(0u16);
        for i in 1..=k + 1 {
            // Fine bin i starts at edges[i-1] (bin K+1, the maximum's, starts at edges[K]); no cut lies strictly
            // inside a fine bin because cuts are edges.
            let left = edges[i - 1];
            coarse_of.push(cuts.iter().filter(|&&c| c <= left).count() as u16);
        }
        coarse_of.push(cuts.len() as u16);
        Ok(BinLayout { edges: edges.into(), coarse_cuts: cuts.into(), coarse_of: coarse_of.into(), center: q2, fences })
    }

    pub fn edges(&self) -> &[f64] {
        &self.edges
    }

    /// Interior PSI cut points actually used (deduplicated deciles above the minimum).
    pub fn coarse_cuts(&self) -> &[f64] {
        &self.coarse_cuts
    }

    /// Number of fine bins including tails and the maximum's bin.
    pub fn bins(&self) -> usize {
        self.edges.len() + 2
    }

    /// Number of PSI/JS bins: one more than the cuts (10 unless ties collapse deciles).
    pub fn coarse_bins(&self) -> usize {
        self.coarse_cuts.len() + 1
    }

    pub fn fences(&self) -> [f64; 4] {
        self.fences
    }

    #[inline]
    pub fn bin_of(&self, v: f64) -> usize {
        let k = self.edges.len() - 1;
        if v < self.edges[0] {
            0
        } else if v > self.edges[k] {
            k + 2
        } else if v == self.edges[k] {
            k + 1
        } else {
            self.edges.partition_point(|&e| e <= v)
        }
    }

    /// Where one value falls and what it adds to the moments; None for missing or non-finite values.
    #[inline]
    pub fn observe(&self, v: Option<f64>) -> Option<Observation> {
        let v = v.filter(|v| v.is_finite())?;
        let bin = self.bin_of(v);
        let k = self.edges.len() - 1;
        let [slo, mlo, mhi, shi] = self.fences;
        Some(Observation {
            value: v,
            bin,
            centered: v - self.center,
            tail_lo: if bin == 0 { self.edges[0] - v } else { 0.0 },
            tail_hi: if bin == k + 2 { v - self.edges[k] } else { 0.0 },
            outlier: if v < slo || v > shi { 2 } else { u8::from(v < mlo || v > mhi) },
        })
    }

    #[inline]
    pub fn coarse_of(&self, bin: usize) -> usize {
        usize::from(self.coarse_of[bin])
    }

    /// `coarse_of` for every fine bin: non-decreasing from 0 to `coarse_bins() - 1`, taking every value between.
    pub fn coarse_map(&self) -> &[u16] {
        &self.coarse_of
    }
}

/// One value as a histogram records it (`BinLayout::observe`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub value: f64,
    pub bin: usize,
    /// value - layout center (what the sums add).
    pub centered: f64,
    /// Distance below the first edge (lower-tail values) and above the last (upper-tail values), else 0.
    pub tail_lo: f64,
    pub tail_hi: f64,
    /// 0 inside the IQR fences, 1 moderate outlier, 2 severe outlier (also moderate).
    pub outlier: u8,
}

/// Counts of one metric's values against a `BinLayout`, plus the moments and tail distances the statistics need.
/// Everything is additive, so `merge` is exact for counts (and exact up to float rounding for the sums).
/// Bin counts are 32-bit (a window holds millions of frames, not billions): it halves the memory of every
/// sub-window; additions saturate rather than wrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub counts: Vec<u32>,
    pub n: u64,
    /// Frames on which the metric was undefined (e.g. confidence on a frame without detections).
    pub missing: u64,
    /// Sum and sum of squares of (v - layout.center).
    pub sum: f64,
    pub sum_sq: f64,
    /// Sum of (edges[0] - v) over lower-tail values and of (v - edges[K]) over upper-tail values.
    pub tail_lo_dist: f64,
    pub tail_hi_dist: f64,
    pub min: f64,
    pub max: f64,
    pub outliers_moderate: u64,
    pub outliers_severe: u64,
}

impl Histogram {
    pub fn new(layout: &BinLayout) -> Histogram {
        Histogram::with_bins(layout.bins())
    }

    /// An empty histogram of `bins` fine bins.
    pub fn with_bins(bins: usize) -> Histogram {
        Histogram {
            counts: vec![0; bins],
            n: 0,
            missing: 0,
            sum: 0.0,
            sum_sq: 0.0,
            tail_lo_dist: 0.0,
            tail_hi_dist: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            outliers_moderate: 0,
            outliers_severe: 0,
        }
    }

    /// Records one value (`None` or non-finite counts as missing).
    #[inline]
    pub fn record(&mut self, layout: &BinLayout, v: Option<f64>) {
        let Some(o) = layout.observe(v) else {
            self.missing += 1;
            return;
        };
        self.counts[o.bin] = self.counts[o.bin].saturating_add(1);
        self.n += 1;
        self.sum += o.centered;
        self.sum_sq += o.centered * o.centered;
        self.tail_lo_dist += o.tail_lo;
        self.tail_hi_dist += o.tail_hi;
        self.min = self.min.min(o.value);
        self.max = self.max.max(o.value);
        self.outliers_moderate += u64::from(o.outlier >= 1);
        self.outliers_severe += u64::from(o.outlier >= 2);
    }

    /// Adds `other` (same layout) into `self`.
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(self.counts.len(), other.counts.len());
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.n += other.n;
        self.missing += other.missing;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.tail_lo_dist += other.tail_lo_dist;
        self.tail_hi_dist += other.tail_hi_dist;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.outliers_moderate += other.outliers_moderate;
        self.outliers_severe += other.outliers_severe;
    }

    /// Empties the histogram, keeping its allocation (for reusing sub-window slots).
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.clear_moments();
    }

    /// Empties everything but the bin counts (for a caller about to overwrite every count).
    pub fn clear_moments(&mut self) {
        self.n = 0;
        self.missing = 0;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.tail_lo_dist = 0.0;
        self.tail_hi_dist = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.outliers_moderate = 0;
        self.outliers_severe = 0;
    }

    pub fn mean(&self, layout: &BinLayout) -> Option<f64> {
        (self.n > 0).then(|| layout.center + self.sum / self.n as f64)
    }

    /// Population standard deviation.
    pub fn std(&self) -> Option<f64> {
        (self.n > 0).then(|| {
            let m = self.sum / self.n as f64;
            (self.sum_sq / self.n as f64 - m * m).max(0.0).sqrt()
        })
    }

    /// Share of values outside the baseline's [min, max] (the two tail bins); 0 when empty.
    pub fn out_of_range(&self) -> f64 {
        match (self.counts.first(), self.counts.last()) {
            (Some(&lo), Some(&hi)) if self.n > 0 && self.counts.len() > 1 => {
                (f64::from(lo) + f64::from(hi)) / self.n as f64
            }
            _ => 0.0,
        }
    }

    /// Proportions per PSI/JS bin (tail values counted in the first and last decile bins).
    pub fn coarse_proportions(&self, layout: &BinLayout, out: &mut Vec<f64>) {
        out.clear();
        out.resize(layout.coarse_bins(), 0.0);
        if self.n == 0 {
            return;
        }
        for (bin, &c) in self.counts.iter().enumerate() {
            out[layout.coarse_of(bin)] += c as f64;
        }
        let n = self.n as f64;
        out.iter_mut().for_each(|p| *p /= n);
    }
}

/// Bin counts stored in the smallest form that holds them. A sub-window of a quiet slice (a camera sending a few
/// frames a minute) holds a handful of values in ~100 bins: it lists the bin of each value, 2 bytes per value.
/// Past half as many values as bins a byte per bin is smaller: the counts become an array of the narrowest width
/// that holds them (a camera at 10 frames/s puts a few frames in each bin, so one byte is the common case), and a
/// bin that passes 255 (a metric constant for the camera, or a busy slice) widens the whole array to 16 and then
/// 32 bits.
#[derive(Debug, Clone, PartialEq)]
enum BinCounts {
    /// The bin of each value recorded, in arrival order; `bins` fine bins in all. Kept exactly as long as the
    /// values (no spare capacity): a quiet slice grows it a few times a minute.
    Listed {
        bins: u16,
        values: Box<[u16]>,
    },
    U8(Box<[u8]>),
    U16(Box<[u16]>),
    U32(Box<[u32]>),
}

impl BinCounts {
    fn zeros(bins: usize) -> BinCounts {
        match u16::try_from(bins) {
            Ok(bins) => BinCounts::Listed { bins, values: Box::default() },
            // `BinLayout::new` allows at most 65,002 bins, so this is not reached; a plain array is still right.
            Err(_) => BinCounts::U8(vec![0; bins].into_boxed_slice()),
        }
    }

    fn len(&self) -> usize {
        match self {
            BinCounts::Listed { bins, .. } => usize::from(*bins),
            BinCounts::U8(c) => c.len(),
            BinCounts::U16(c) => c.len(),
            BinCounts::U32(c) => c.len(),
        }
    }

    /// Most values a list holds: from there on an array of bytes is no larger.
    fn list_limit(bins: usize) -> usize {
        bins / 2
    }

    #[inline]
    fn add(&mut self, i: usize, n: u32) {
        // The common case first and small enough to inline into `record`: a byte count that still fits.
        if let BinCounts::U8(c) = self
            && let Some(slot) = c.get_mut(i)
            && let Ok(v) = u8::try_from(u32::from(*slot) + n)
        {
            *slot = v;
            return;
        }
        self.add_other(i, n);
    }

    /// `add` for every other case: a list, a wider array, or a byte count that must widen.
    #[inline(never)]
    fn add_other(&mut self, i: usize, n: u32) {
        match self {
            BinCounts::Listed { bins, values } => {
                let bin = u16::try_from(i).ok().filter(|&b| b < *bins);
                let total = values.len().saturating_add(n as usize);
                match bin {
                    Some(bin) if total <= Self::list_limit(usize::from(*bins)) => {
                        let mut v = std::mem::take(values).into_vec();
                        // Exactly: one reallocation, and the boxed slice below needs no shrinking.
                        v.reserve_exact(n as usize);
                        v.resize(total, bin);
                        *values = v.into_boxed_slice();
                    }
                    // Too many values for a list (or a bin out of range, which indexing below reports as the
                    // arrays do): to an array of bytes, widening from there as needed.
                    _ => {
                        let dense = BinCounts::U8(vec![0; usize::from(*bins)].into_boxed_slice());
                        let listed = std::mem::replace(self, dense);
                        if let BinCounts::Listed { values, .. } = listed {
                            // One value may be listed more than 255 times: `add` widens as it must.
                            values.iter().for_each(|&b| self.add(usize::from(b), 1));
                        }
                        self.add(i, n);
                    }
                }
            }
            BinCounts::U8(c) => match u8::try_from(u32::from(c[i]) + n) {
                Ok(v) => c[i] = v,
                Err(_) => {
                    *self = BinCounts::U16(c.iter().map(|&x| u16::from(x)).collect());
                    self.add(i, n);
                }
            },
            BinCounts::U16(c) => match u16::try_from(u32::from(c[i]) + n) {
                Ok(v) => c[i] = v,
                Err(_) => {
                    *self = BinCounts::U32(c.iter().map(|&x| u32::from(x)).collect());
                    self.add(i, n);
                }
            },
            BinCounts::U32(c) => c[i] = c[i].saturating_add(n),
        }
    }

    /// Adds every count into `into` (one count per fine bin).
    fn add_into(&self, into: &mut [u32]) {
        match self {
            BinCounts::Listed { values, .. } => {
                values.iter().for_each(|&b| into[usize::from(b)] = into[usize::from(b)].saturating_add(1))
            }
            BinCounts::U8(c) => into.iter_mut().zip(c.iter()).for_each(|(a, &b)| *a = a.saturating_add(u32::from(b))),
            BinCounts::U16(c) => into.iter_mut().zip(c.iter()).for_each(|(a, &b)| *a = a.saturating_add(u32::from(b))),
            BinCounts::U32(c) => into.iter_mut().zip(c.iter()).for_each(|(a, &b)| *a = a.saturating_add(b)),
        }
    }

    /// Calls `f(bin, count)` for every count: once per listed value (count 1), once per bin of an array.
    #[inline]
    fn for_each(&self, mut f: impl FnMut(usize, u32)) {
        match self {
            BinCounts::Listed { values, .. } => values.iter().for_each(|&b| f(usize::from(b), 1)),
            BinCounts::U8(c) => c.iter().enumerate().for_each(|(i, &n)| f(i, u32::from(n))),
            BinCounts::U16(c) => c.iter().enumerate().for_each(|(i, &n)| f(i, u32::from(n))),
            BinCounts::U32(c) => c.iter().enumerate().for_each(|(i, &n)| f(i, n)),
        }
    }

    /// Zeroes the counts and goes back to an empty list (a slot reused for a new sub-window starts small again).
    fn clear(&mut self) {
        *self = BinCounts::zeros(self.len());
    }

    /// Heap bytes the counts take.
    fn heap_bytes(&self) -> usize {
        match self {
            BinCounts::Listed { values, .. } => values.len() * 2,
            BinCounts::U8(c) => c.len(),
            BinCounts::U16(c) => c.len() * 2,
            BinCounts::U32(c) => c.len() * 4,
        }
    }

    fn bytes_per_bin(&self) -> Option<usize> {
        match self {
            BinCounts::Listed { .. } => None,
            BinCounts::U8(_) => Some(1),
            BinCounts::U16(_) => Some(2),
            BinCounts::U32(_) => Some(4),
        }
    }
}

/// Everything a `Histogram` holds but its bin counts, compactly (32-bit counters): a sub-window's, or a window's
/// kept up to date as values arrive (`WindowStore` keeps one per tracked metric and slice, so a snapshot copies
/// them instead of merging every sub-window's).
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    n: u32,
    missing: u32,
    outliers_moderate: u32,
    outliers_severe: u32,
    sum: f64,
    sum_sq: f64,
    tail_lo_dist: f64,
    tail_hi_dist: f64,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            n: 0,
            missing: 0,
            outliers_moderate: 0,
            outliers_severe: 0,
            sum: 0.0,
            sum_sq: 0.0,
            tail_lo_dist: 0.0,
            tail_hi_dist: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// Values recorded (not missing).
    pub fn n(&self) -> u64 {
        u64::from(self.n)
    }

    /// Records one observed value (`None`: missing), as `Histogram::record` does.
    #[inline]
    pub fn record(&mut self, o: Option<Observation>) {
        let Some(o) = o else {
            self.missing = self.missing.saturating_add(1);
            return;
        };
        self.n = self.n.saturating_add(1);
        self.sum += o.centered;
        self.sum_sq += o.centered * o.centered;
        self.tail_lo_dist += o.tail_lo;
        self.tail_hi_dist += o.tail_hi;
        self.min = self.min.min(o.value);
        self.max = self.max.max(o.value);
        self.outliers_moderate = self.outliers_moderate.saturating_add(u32::from(o.outlier >= 1));
        self.outliers_severe = self.outliers_severe.saturating_add(u32::from(o.outlier >= 2));
    }

    /// Adds `other` into `self` (saturating counters).
    pub fn merge(&mut self, other: &Moments) {
        self.n = self.n.saturating_add(other.n);
        self.missing = self.missing.saturating_add(other.missing);
        self.outliers_moderate = self.outliers_moderate.saturating_add(other.outliers_moderate);
        self.outliers_severe = self.outliers_severe.saturating_add(other.outliers_severe);
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.tail_lo_dist += other.tail_lo_dist;
        self.tail_hi_dist += other.tail_hi_dist;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Adds these moments into `into`'s (its counts untouched).
    pub fn merge_into(&self, into: &mut Histogram) {
        into.n += u64::from(self.n);
        into.missing += u64::from(self.missing);
        into.sum += self.sum;
        into.sum_sq += self.sum_sq;
        into.tail_lo_dist += self.tail_lo_dist;
        into.tail_hi_dist += self.tail_hi_dist;
        into.min = into.min.min(self.min);
        into.max = into.max.max(self.max);
        into.outliers_moderate += u64::from(self.outliers_moderate);
        into.outliers_severe += u64::from(self.outliers_severe);
    }

    fn of_histogram(h: &Histogram) -> Moments {
        let sat = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        Moments {
            n: sat(h.n),
            missing: sat(h.missing),
            outliers_moderate: sat(h.outliers_moderate),
            outliers_severe: sat(h.outliers_severe),
            sum: h.sum,
            sum_sq: h.sum_sq,
            tail_lo_dist: h.tail_lo_dist,
            tail_hi_dist: h.tail_hi_dist,
            min: h.min,
            max: h.max,
        }
    }
}

/// A compact `Histogram` for the sub-windows a sliding window is made of (a service holds 15 per metric per
/// slice): adaptive-width bin counts and 32-bit counters. Records exactly what `Histogram::record` does, merges
/// into a `Histogram`, and converts to and from one (checkpoints store `Histogram`s).
#[derive(Debug, Clone, PartialEq)]
pub struct SubHistogram {
    counts: BinCounts,
    moments: Moments,
}

impl SubHistogram {
    pub fn new(layout: &BinLayout) -> SubHistogram {
        SubHistogram { counts: BinCounts::zeros(layout.bins()), moments: Moments::default() }
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Bytes per bin count right now (1, 2 or 4), or `None` while the values are listed one by one (few values).
    pub fn bytes_per_bin(&self) -> Option<usize> {
        self.counts.bytes_per_bin()
    }

    /// Heap bytes the bin counts take right now (2 per value while listed, else bins x bytes per bin).
    pub fn count_bytes(&self) -> usize {
        self.counts.heap_bytes()
    }

    /// Most values a sub-histogram of `bins` bins lists one by one before it switches to an array of counts.
    pub fn list_limit(bins: usize) -> usize {
        BinCounts::list_limit(bins)
    }

    /// Values recorded (not missing).
    pub fn n(&self) -> u64 {
        self.moments.n()
    }

    /// Everything but the bin counts.
    pub fn moments(&self) -> &Moments {
        &self.moments
    }

    #[inline]
    pub fn record(&mut self, layout: &BinLayout, v: Option<f64>) {
        self.record_observed(layout.observe(v));
    }

    /// Records a value already observed against this histogram's layout (`BinLayout::observe`; `None`: missing):
    /// slices that share a layout observe a frame's value once.
    #[inline]
    pub fn record_observed(&mut self, o: Option<Observation>) {
        if let Some(o) = o {
            self.counts.add(o.bin, 1);
        }
        self.moments.record(o);
    }

    pub fn clear(&mut self) {
        self.counts.clear();
        self.moments = Moments::default();
    }

    /// Adds this sub-window into `into` (same layout).
    pub fn merge_into(&self, into: &mut Histogram) {
        debug_assert_eq!(into.counts.len(), self.counts.len());
        self.counts.add_into(&mut into.counts);
        self.moments.merge_into(into);
    }

    /// The same contents as a `Histogram`.
    pub fn to_histogram(&self) -> Histogram {
        let mut h = Histogram::with_bins(self.counts.len());
        self.merge_into(&mut h);
        h
    }

    /// From a `Histogram` (counters above u32::MAX saturate, which no sub-window reaches).
    pub fn from_histogram(h: &Histogram) -> SubHistogram {
        let mut counts = BinCounts::zeros(h.counts.len());
        for (i, &c) in h.counts.iter().enumerate() {
            if c > 0 {
                counts.add(i, c);
            }
        }
        SubHistogram { counts, moments: Moments::of_histogram(h) }
    }
}

/// The bin counts of a window's sub-windows, summed as they are recorded, for every tracked metric of a slice in
/// one flat array (metric after metric, each over its layout's bins). A window's counts are then one copy rather
/// than one merge per sub-window: the store adds each recorded value here as well, and subtracts a sub-window's
/// counts when its slot is reused for a new one (and, in a snapshot, those of sub-windows that have left the window
/// but not yet been overwritten). Counts are integers, so the subtraction is exact: the copy equals the merge.
/// Like `BinCounts`, the narrowest width that holds every count: 8 bits (a quiet camera), widened to 16 when a
/// bin would pass 255 and to 32 past 65,535 (saturating at u32::MAX as `Histogram` does, which a window of one
/// slice does not reach). It never narrows back.
#[derive(Debug, Clone, PartialEq)]
pub struct CountTotals(Totals);

#[derive(Debug, Clone, PartialEq)]
enum Totals {
    U8(Box<[u8]>),
    U16(Box<[u16]>),
    U32(Box<[u32]>),
}

impl CountTotals {
    /// `len` zero counts (the sum of the tracked metrics' bins).
    pub fn new(len: usize) -> CountTotals {
        CountTotals(Totals::U8(vec![0; len].into_boxed_slice()))
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Totals::U8(c) => c.len(),
            Totals::U16(c) => c.len(),
            Totals::U32(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes the counts take.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Totals::U8(c) => c.len(),
            Totals::U16(c) => c.len() * 2,
            Totals::U32(c) => c.len() * 4,
        }
    }

    /// Adds `n` to count `i`.
    #[inline]
    pub fn add(&mut self, i: usize, n: u32) {
        let fits = match &mut self.0 {
            Totals::U8(c) => c.get_mut(i).and_then(|slot| u8::try_from(u32::from(*slot) + n).ok().map(|v| *slot = v)),
            Totals::U16(c) => c.get_mut(i).and_then(|slot| u16::try_from(u32::from(*slot) + n).ok().map(|v| *slot = v)),
            Totals::U32(c) => c.get_mut(i).map(|slot| *slot = slot.saturating_add(n)),
        };
        if fits.is_none() {
            self.add_wide(i, n);
        }
    }

    /// `add` where the count does not fit its width: widens as far as it must (or indexes out of range, which
    /// panics as a slice does).
    #[inline(never)]
    fn add_wide(&mut self, i: usize, n: u32) {
        if let Totals::U8(c) = &self.0 {
            self.0 = Totals::U16(c.iter().map(|&x| u16::from(x)).collect());
        }
        if let Totals::U16(c) = &mut self.0 {
            if let Ok(v) = u16::try_from(u32::from(c[i]) + n) {
                c[i] = v;
                return;
            }
            self.0 = Totals::U32(c.iter().map(|&x| u32::from(x)).collect());
        }
        if let Totals::U32(c) = &mut self.0 {
            c[i] = c[i].saturating_add(n);
        }
    }

    /// Adds the counts of `sub`, whose bins start at `offset`.
    pub fn add_sub(&mut self, offset: usize, sub: &SubHistogram) {
        sub.counts.for_each(|i, n| {
            if n > 0 {
                self.add(offset + i, n);
            }
        });
    }

    /// Takes away the counts of `sub`, whose bins start at `offset` (added before with `add`/`add_sub`, so no
    /// count goes below zero; if one would, it stops at zero).
    pub fn subtract_sub(&mut self, offset: usize, sub: &SubHistogram) {
        fn take<T: Copy + TryFrom<u32> + Into<u32>>(c: &mut [T], offset: usize, sub: &SubHistogram) {
            sub.counts.for_each(|i, n| {
                let slot = &mut c[offset + i];
                let have: u32 = (*slot).into();
                debug_assert!(have >= n);
                if let Ok(v) = T::try_from(have.saturating_sub(n)) {
                    *slot = v;
                }
            });
        }
        match &mut self.0 {
            Totals::U8(c) => take(c, offset, sub),
            Totals::U16(c) => take(c, offset, sub),
            Totals::U32(c) => take(c, offset, sub),
        }
    }

    /// Writes the counts from `offset` on into `into` (as many as it holds).
    pub fn copy_into(&self, offset: usize, into: &mut [u32]) {
        let end = offset + into.len();
        match &self.0 {
            Totals::U8(c) => into.iter_mut().zip(&c[offset..end]).for_each(|(a, &b)| *a = u32::from(b)),
            Totals::U16(c) => into.iter_mut().zip(&c[offset..end]).for_each(|(a, &b)| *a = u32::from(b)),
            Totals::U32(c) => into.copy_from_slice(&c[offset..end]),
        }
    }
}

impl SubHistogram {
    /// Takes this sub-window's counts away from `counts` (same layout; they were added to it before).
    pub fn subtract_counts_from(&self, counts: &mut [u32]) {
        self.counts.for_each(|i, n| counts[i] = counts[i].saturating_sub(n));
    }
}

/// A sliding window made of a ring of sub-window histograms: `advance` drops the oldest sub-window, and
/// `window` merges the live ones (so the window never needs subtraction and stays exact).
#[derive(Debug, Clone)]
pub struct SlidingHistogram {
    slots: Vec<Histogram>,
    head: usize,
}

impl SlidingHistogram {
    pub fn new(layout: &BinLayout, sub_windows: usize) -> SlidingHistogram {
        SlidingHistogram { slots: vec![Histogram::new(layout); sub_windows.max(1)], head: 0 }
    }

    /// The sub-window currently being filled.
    pub fn current(&mut self) -> &mut Histogram {
        &mut self.slots[self.head]
    }

    /// Starts a new sub-window, forgetting the oldest one.
    pub fn advance(&mut self) {
        self.head = (self.head + 1) % self.slots.len();
        self.slots[self.head].clear();
    }

    /// Merges all live sub-windows into `out` (cleared first), oldest first.
    pub fn window_into(&self, out: &mut Histogram) {
        out.clear();
        let k = self.slots.len();
        for i in 1..=k {
            out.merge(&self.slots[(self.head + i) % k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wide layout lists up to 500 values; if they all fall in one bin, the switch to an array must widen that
    /// bin past a byte instead of wrapping.
    #[test]
    fn a_list_of_one_repeated_bin_becomes_wide_counts() {
        let edges: Vec<f64> = (0..1000).map(f64::from).collect();
        let layout = BinLayout::new(edges, &[], [250.0, 500.0, 750.0]).expect("layout");
        let mut sub = SubHistogram::new(&layout);
        let mut full = Histogram::new(&layout);
        for _ in 0..SubHistogram::list_limit(layout.bins()) {
            sub.record(&layout, Some(7.5));
            full.record(&layout, Some(7.5));
        }
        assert_eq!(sub.bytes_per_bin(), None, "still a list");
        sub.record(&layout, Some(9.5));
        full.record(&layout, Some(9.5));
        assert_eq!(sub.bytes_per_bin(), Some(2));
        assert_eq!(sub.to_histogram(), full);
        assert_eq!(SubHistogram::from_histogram(&full).to_histogram(), full);
    }

    /// Totals of two metrics' sub-windows: a bin past 255 widens them to 16 bits, past 65,535 to 32, and
    /// subtracting a sub-window (listed or counted) takes back exactly what adding it gave, at every width.
    #[test]
    fn count_totals_widen_as_counts_grow_and_subtract_exactly() {
        let layout = BinLayout::new((0..10).map(f64::from).collect(), &[], [2.0, 5.0, 7.0]).expect("layout");
        let bins = layout.bins();
        let mut totals = CountTotals::new(2 * bins);
        let (mut quiet, mut busy) = (SubHistogram::new(&layout), SubHistogram::new(&layout));
        quiet.record(&layout, Some(3.5));
        for i in 0..80_000 {
            busy.record(&layout, Some(if i % 10 == 0 { 4.5 } else { 0.5 }));
        }
        assert_eq!(quiet.bytes_per_bin(), None, "listed");
        totals.add_sub(bins, &quiet);
        assert_eq!(totals.heap_bytes(), 2 * bins, "8-bit");
        let mut few = SubHistogram::new(&layout);
        (0..300).for_each(|_| few.record(&layout, Some(0.5)));
        totals.add_sub(0, &few);
        assert_eq!(totals.heap_bytes(), 2 * bins * 2, "16-bit past 255");
        totals.subtract_sub(0, &few);
        totals.add_sub(0, &busy);
        assert_eq!(totals.heap_bytes(), 2 * bins * 4, "32-bit past 65,535");
        let counts = |t: &CountTotals, offset| {
            let mut c = vec![0; bins];
            t.copy_into(offset, &mut c);
            c
        };
        assert_eq!(counts(&totals, 0), busy.to_histogram().counts);
        assert_eq!(counts(&totals, bins), quiet.to_histogram().counts);
        totals.subtract_sub(0, &busy);
        assert_eq!(counts(&totals, 0), vec![0; bins]);
        totals.subtract_sub(bins, &quiet);
        assert_eq!(counts(&totals, bins), vec![0; bins]);
        let mut merged = busy.to_histogram();
        merged.merge(&quiet.to_histogram());
        quiet.subtract_counts_from(&mut merged.counts);
        busy.subtract_counts_from(&mut merged.counts);
        assert!(merged.counts.iter().all(|&c| c == 0));
    }
}

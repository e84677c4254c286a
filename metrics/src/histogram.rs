//! Fixed-edge histograms. Edges come from a baseline (its quantiles), so a histogram of production values is
//! comparable with the baseline at any time, merges with another by adding counts, and a sliding window is the
//! merge of its sub-windows. Values beyond the baseline's range land in open tail bins whose distance to the range
//! is summed, so the Wasserstein distance stays exact in the tails.

use std::ops::Range;
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
    /// is its own statistic). PSI/JS bin `j` is the run of fine bins `coarse_ends[j - 1]..coarse_ends[j]` (from 0
    /// for the first), tails included: the last end is `bins()`.
    coarse_cuts: Arc<[f64]>,
    coarse_ends: Arc<[u32]>,
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
        // The lower tail joins the first decile bin, the upper tail and the maximum's bin the last one. Fine bin
        // i (1..=K) starts at edges[i - 1], and no cut lies strictly inside a fine bin because cuts are edges: the
        // PSI/JS bin that starts at a cut starts at the fine bin after that edge's index.
        let mut coarse_ends: Vec<u32> = cuts.iter().map(|&c| (edges.partition_point(|&e| e < c) + 1) as u32).collect();
        coarse_ends.push((edges.len() + 2) as u32);
        Ok(BinLayout {
            edges: edges.into(),
            coarse_cuts: cuts.into(),
            coarse_ends: coarse_ends.into(),
            center: q2,
            fences,
        })
    }

    pub fn edges(&self) -> &[f64] {
        &self.edges
    }

    /// The first and last edges: the baseline's minimum and maximum, where the tails start.
    pub fn range(&self) -> (f64, f64) {
        (self.edges[0], self.edges[self.edges.len() - 1])
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

    /// The fine bins of each PSI/JS bin, in order: runs that cover `0..bins()`, none empty.
    #[inline]
    pub fn coarse_ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = 0;
        self.coarse_ends.iter().map(move |&end| {
            let range = start..end as usize;
            start = end as usize;
            range
        })
    }
}

/// The values in a run of bins, as a float: exact, as any sum of fewer than 2^21 32-bit counts is below 2^53.
#[inline]
pub(crate) fn coarse_count(counts: &[u32]) -> f64 {
    counts.iter().map(|&c| u64::from(c)).sum::<u64>() as f64
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
        for (p, bins) in out.iter_mut().zip(layout.coarse_ranges()) {
            *p = coarse_count(self.counts.get(bins).unwrap_or_default());
        }
        let n = self.n as f64;
        out.iter_mut().for_each(|p| *p /= n);
    }
}

/// What a metric's values add up to, all of a `Histogram` but its bin counts and its two counters (values and
/// missing): sums for the mean and variance, the tails' distances, the extremes and the outlier counts. A
/// sub-window keeps one per tracked metric and takes its two counters from its bin counts and frames (values: the
/// sum of the metric's bin counts; missing: the frames less that, since every frame records every tracked metric,
/// as a value or as missing), so each costs 56 bytes, not 64.
#[derive(Debug, Clone, PartialEq)]
pub struct Sums {
    outliers_moderate: u32,
    outliers_severe: u32,
    sum: f64,
    sum_sq: f64,
    tail_lo_dist: f64,
    tail_hi_dist: f64,
    min: f64,
    max: f64,
}

impl Default for Sums {
    fn default() -> Self {
        Sums {
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

impl Sums {
    /// Adds one observed value, as `Histogram::record` does.
    #[inline]
    pub fn record(&mut self, o: &Observation) {
        self.sum += o.centered;
        self.sum_sq += o.centered * o.centered;
        self.tail_lo_dist += o.tail_lo;
        self.tail_hi_dist += o.tail_hi;
        self.min = self.min.min(o.value);
        self.max = self.max.max(o.value);
        self.outliers_moderate = self.outliers_moderate.saturating_add(u32::from(o.outlier >= 1));
        self.outliers_severe = self.outliers_severe.saturating_add(u32::from(o.outlier >= 2));
    }

    /// Every field's bits (the floats' `to_bits`, then the two counters): for comparing sums exactly, NaNs and
    /// signed zeros included.
    pub fn bits(&self) -> [u64; 8] {
        [
            self.sum.to_bits(),
            self.sum_sq.to_bits(),
            self.tail_lo_dist.to_bits(),
            self.tail_hi_dist.to_bits(),
            self.min.to_bits(),
            self.max.to_bits(),
            u64::from(self.outliers_moderate),
            u64::from(self.outliers_severe),
        ]
    }

    /// Adds `other` into `self` (saturating counters).
    pub fn merge(&mut self, other: &Sums) {
        self.outliers_moderate = self.outliers_moderate.saturating_add(other.outliers_moderate);
        self.outliers_severe = self.outliers_severe.saturating_add(other.outliers_severe);
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.tail_lo_dist += other.tail_lo_dist;
        self.tail_hi_dist += other.tail_hi_dist;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Adds these into `into`'s (its counts and counters of values and missing untouched).
    pub fn merge_into(&self, into: &mut Histogram) {
        into.sum += self.sum;
        into.sum_sq += self.sum_sq;
        into.tail_lo_dist += self.tail_lo_dist;
        into.tail_hi_dist += self.tail_hi_dist;
        into.min = into.min.min(self.min);
        into.max = into.max.max(self.max);
        into.outliers_moderate += u64::from(self.outliers_moderate);
        into.outliers_severe += u64::from(self.outliers_severe);
    }

    /// The sums of `h` (counters above u32::MAX saturate, which no sub-window reaches).
    pub fn of_histogram(h: &Histogram) -> Sums {
        let sat = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        Sums {
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

/// How `Sums::pack_into` wrote one metric's sums: a flag byte, then only what the flags do not give.
mod packed {
    /// `Sums::default()`: nothing follows.
    pub const EMPTY: u8 = 1;
    /// min == max: one extreme follows, for both.
    pub const ONE_EXTREME: u8 = 2;
    /// The sum is +0.0 (not written).
    pub const SUM_ZERO: u8 = 4;
    /// The sum of squares is +0.0 (not written).
    pub const SQ_ZERO: u8 = 8;
    /// Two bits per tail (lower at bit 4, upper at bit 6): what its distance is.
    pub const TAIL_ZERO: u8 = 0;
    /// One value in the tail bin: its distance is the extreme's (edges[0] - min, or max - edges[K]).
    pub const TAIL_OF_EXTREME: u8 = 1;
    pub const TAIL_WRITTEN: u8 = 2;
    pub const TAIL_LO_SHIFT: u32 = 4;
    pub const TAIL_HI_SHIFT: u32 = 6;
}

impl Sums {
    /// Appends these sums to `out` in the fewest bytes their values allow (`Sums::unpack` reads them back bit
    /// for bit): a flag byte, then min (and max unless equal), the two sums unless +0.0, each tail's distance
    /// unless +0.0 or its extreme's (a tail bin of one value: that value is the extreme), and the outlier
    /// counters as LEB128. A closed sub-window's sums take ~34 bytes a metric this way, not 56. Every shortcut
    /// is taken only when it gives back the very same bits, so the form is exact for any sums, recorded or
    /// restored.
    pub fn pack_into(&self, layout: &BinLayout, out: &mut Vec<u8>) {
        use packed::*;
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits();
        if self.bits() == Sums::default().bits() {
            out.push(EMPTY);
            return;
        }
        let (lo_edge, hi_edge) = layout.range();
        let tail = |dist: f64, of_extreme: f64| {
            if same(dist, 0.0) {
                TAIL_ZERO
            } else if !of_extreme.is_nan() && same(dist, of_extreme) {
                // (Not for a NaN: the bits of a NaN that arithmetic returns are not specified.)
                TAIL_OF_EXTREME
            } else {
                TAIL_WRITTEN
            }
        };
        let lo = tail(self.tail_lo_dist, lo_edge - self.min);
        let hi = tail(self.tail_hi_dist, self.max - hi_edge);
        let mut flags = (lo << TAIL_LO_SHIFT) | (hi << TAIL_HI_SHIFT);
        let one_extreme = same(self.min, self.max);
        flags |= if one_extreme { ONE_EXTREME } else { 0 };
        flags |= if same(self.sum, 0.0) { SUM_ZERO } else { 0 };
        flags |= if same(self.sum_sq, 0.0) { SQ_ZERO } else { 0 };
        out.push(flags);
        out.extend_from_slice(&self.min.to_le_bytes());
        if !one_extreme {
            out.extend_from_slice(&self.max.to_le_bytes());
        }
        for (skip, v) in [(flags & SUM_ZERO != 0, self.sum), (flags & SQ_ZERO != 0, self.sum_sq)] {
            if !skip {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for (t, v) in [(lo, self.tail_lo_dist), (hi, self.tail_hi_dist)] {
            if t == TAIL_WRITTEN {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for mut n in [self.outliers_moderate, self.outliers_severe] {
            while n >= 0x80 {
                out.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
    }

    /// Reads back sums that `pack_into` wrote at `bytes[*at..]` against the same layout, moving `at` past them.
    /// The bytes are the store's own; past their end every read gives zero (no panic) and `at` stops at the end.
    pub fn unpack(layout: &BinLayout, bytes: &[u8], at: &mut usize) -> Sums {
        use packed::*;
        let mut byte = || {
            let b = bytes.get(*at).copied().unwrap_or(0);
            *at = (*at + 1).min(bytes.len());
            b
        };
        let flags = byte();
        if flags & EMPTY != 0 {
            return Sums::default();
        }
        let mut float = || f64::from_le_bytes(std::array::from_fn(|_| byte()));
        let min = float();
        let max = if flags & ONE_EXTREME != 0 { min } else { float() };
        let sum = if flags & SUM_ZERO != 0 { 0.0 } else { float() };
        let sum_sq = if flags & SQ_ZERO != 0 { 0.0 } else { float() };
        let (lo_edge, hi_edge) = layout.range();
        let mut tail = |shift: u32, of_extreme: f64| match (flags >> shift) & 3 {
            TAIL_OF_EXTREME => of_extreme,
            TAIL_WRITTEN => float(),
            _ => 0.0,
        };
        let tail_lo_dist = tail(TAIL_LO_SHIFT, lo_edge - min);
        let tail_hi_dist = tail(TAIL_HI_SHIFT, max - hi_edge);
        let mut counter = || {
            let mut n = 0u32;
            for shift in (0..35).step_by(7) {
                let b = byte();
                n |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
                if b & 0x80 == 0 {
                    break;
                }
            }
            n
        };
        let outliers_moderate = counter();
        let outliers_severe = counter();
        Sums { outliers_moderate, outliers_severe, sum, sum_sq, tail_lo_dist, tail_hi_dist, min, max }
    }
}

/// Everything a `Histogram` holds but its bin counts, compactly (32-bit counters): a window's, kept up to date as
/// values arrive (`WindowStore` keeps one per tracked metric and slice, so a snapshot copies them instead of
/// merging every sub-window's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    n: u32,
    missing: u32,
    sums: Sums,
}

impl Moments {
    /// Values recorded (not missing).
    pub fn n(&self) -> u64 {
        u64::from(self.n)
    }

    /// Records one observed value (`None`: missing), as `Histogram::record` does.
    #[inline]
    pub fn record(&mut self, o: Option<Observation>) {
        match o {
            Some(o) => {
                self.n = self.n.saturating_add(1);
                self.sums.record(&o);
            }
            None => self.missing = self.missing.saturating_add(1),
        }
    }

    /// Adds `n` values and `missing` missing ones (saturating), their sums added apart (`merge_sums`).
    pub fn add_counts(&mut self, n: u64, missing: u64) {
        let sat = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        self.n = self.n.saturating_add(sat(n));
        self.missing = self.missing.saturating_add(sat(missing));
    }

    /// Adds a sub-window's sums (its counters added apart, `add_counts`).
    pub fn merge_sums(&mut self, sums: &Sums) {
        self.sums.merge(sums);
    }

    /// Adds these moments into `into`'s (its counts untouched).
    pub fn merge_into(&self, into: &mut Histogram) {
        into.n += u64::from(self.n);
        into.missing += u64::from(self.missing);
        self.sums.merge_into(into);
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

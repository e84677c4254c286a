//! A slice's bin counts, laid out flat: every tracked metric's bins one after another (`Layouts`), counted in
//! cells no wider than the counts need (`MetricCounts`) or, while a sub-window has few frames, listed frame by
//! frame (`SubCounts`). Every form is exact: it changes how a count is held, never what it is.
//!
//! Why: a slice keeps 15 sub-windows of ~100 bins for each of ~35 metrics. A camera at 10 frames/s puts ~600
//! values a minute into a metric's ~100 bins, about 6 a bin, which 4 bits hold; a bin that holds more (a metric
//! constant for the camera, a slice of many cameras) keeps its full count in a short side list, so one busy bin
//! does not widen the other hundred. And one allocation holds a sub-window's counts of every metric, where one
//! per metric cost a pointer, a length and a form tag apiece.

use std::ops::{Deref, Range};

use crate::histogram::{BinLayout, Histogram, Observation, Sums};

/// The bin layouts of a slice's tracked metrics, and where each one's bins start in the slice's flat count
/// arrays (metric after metric, each over its layout's bins, tails included).
#[derive(Debug, Clone, PartialEq)]
pub struct Layouts {
    layouts: Box<[BinLayout]>,
    /// `starts[m]`: the flat index of metric `m`'s first bin; one more entry, the total. 32 bits: a layout has at
    /// most 65,002 bins and a registry a few dozen metrics.
    starts: Box<[u32]>,
    /// Whether some metric has more than 255 bins (a listed bin then takes two bytes).
    wide: bool,
}

impl FromIterator<BinLayout> for Layouts {
    fn from_iter<I: IntoIterator<Item = BinLayout>>(iter: I) -> Layouts {
        let layouts: Box<[BinLayout]> = iter.into_iter().collect();
        let starts = std::iter::once(0)
            .chain(layouts.iter().scan(0u32, |next, l| {
                *next = next.saturating_add(u32::try_from(l.bins()).unwrap_or(u32::MAX));
                Some(*next)
            }))
            .collect();
        let wide = layouts.iter().any(|l| l.bins() > 255);
        Layouts { layouts, starts, wide }
    }
}

impl Deref for Layouts {
    type Target = [BinLayout];

    fn deref(&self) -> &[BinLayout] {
        &self.layouts
    }
}

impl Layouts {
    /// Bins of all metrics together: the length of the slice's flat count arrays.
    pub fn total_bins(&self) -> usize {
        self.starts.last().map_or(0, |&s| s as usize)
    }

    /// The flat index of metric `m`'s first bin.
    #[inline]
    pub fn start(&self, m: usize) -> usize {
        self.starts[m] as usize
    }

    /// Metric `m`'s bins.
    #[inline]
    pub fn bins(&self, m: usize) -> usize {
        (self.starts[m + 1] - self.starts[m]) as usize
    }

    /// Flat indices of metric `m`'s bins.
    pub fn range(&self, m: usize) -> Range<usize> {
        self.start(m)..self.start(m + 1)
    }

    /// Bytes a listed bin takes in `SubCounts`: one when every metric has at most 255 bins (so that bin numbers
    /// stop at 254 and 255 can mark a missing value), else two.
    fn entry_bytes(&self) -> usize {
        if self.wide { 2 } else { 1 }
    }
}

/// An overflow entry: a flat bin index (as `Layouts` numbers bins) and its full count.
type Spill = (u32, u32);
const SPILL_BYTES: usize = size_of::<Spill>();

/// Bytes `bins` cells of `bits` take.
#[inline]
fn cell_bytes(bins: usize, bits: u32) -> usize {
    (bins * bits as usize).div_ceil(8)
}

/// The cell value that means "the count is in the side list"; `None` for 32-bit cells, which saturate instead.
#[inline]
fn escape(bits: u32) -> Option<u32> {
    (bits < 32).then(|| (1 << bits) - 1)
}

/// Cell `b` of the cells of `bits` starting at byte `off` (4-bit cells two a byte, low nibble first; wider ones
/// little-endian).
#[inline(always)]
fn read(data: &[u8], off: usize, bits: u32, b: usize) -> u32 {
    match bits {
        4 => u32::from((data[off + (b >> 1)] >> ((b & 1) * 4)) & 0xf),
        8 => u32::from(data[off + b]),
        16 => u32::from(u16::from_le_bytes([data[off + 2 * b], data[off + 2 * b + 1]])),
        _ => {
            let at = off + 4 * b;
            u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
        }
    }
}

/// Sets cell `b` (to at most the width's largest value).
#[inline(always)]
fn write(data: &mut [u8], off: usize, bits: u32, b: usize, v: u32) {
    match bits {
        4 => {
            let shift = (b & 1) * 4;
            let byte = &mut data[off + (b >> 1)];
            *byte = (*byte & !(0xf << shift)) | (((v & 0xf) as u8) << shift);
        }
        8 => data[off + b] = v as u8,
        16 => data[off + 2 * b..off + 2 * b + 2].copy_from_slice(&(v as u16).to_le_bytes()),
        _ => data[off + 4 * b..off + 4 * b + 4].copy_from_slice(&v.to_le_bytes()),
    }
}

/// The bin counts of every tracked metric of a slice (as `Layouts` lays them out), each metric's in cells of its
/// own width: 4, 8, 16 or 32 bits. One allocation holds the widths (a byte per metric) and then the cells, metric
/// after metric. A count too large for its cell is kept in full in a side list (sorted by flat index), its cell
/// set to the width's largest value, which means "see the list": a metric constant for a camera puts all its
/// values in one bin, which costs one entry, not wider cells for its hundred bins. When a metric's entries would
/// take more bytes than its cells, its cells double in width (and the counts that now fit leave the list). Widths
/// never narrow again. 32-bit cells saturate at u32::MAX, as `Histogram` does. Every method takes the `Layouts`
/// the counts were made for.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCounts {
    data: Box<[u8]>,
    spill: Vec<Spill>,
}

/// Where one metric's cells start: a cursor through `data`, moved forward metric by metric.
#[derive(Clone, Copy)]
struct At {
    m: usize,
    off: usize,
}

impl MetricCounts {
    /// Zero counts for `layouts`, every metric's in cells of `bits` (4, 8, 16 or 32; anything else means 32).
    pub fn new(layouts: &Layouts, bits: u32) -> MetricCounts {
        let bits = if [4, 8, 16].contains(&bits) { bits } else { 32 };
        let cells: usize = (0..layouts.len()).map(|m| cell_bytes(layouts.bins(m), bits)).sum();
        let mut data = vec![0u8; layouts.len() + cells];
        data[..layouts.len()].fill(bits as u8);
        MetricCounts { data: data.into_boxed_slice(), spill: Vec::new() }
    }

    /// Metric `m`'s cell width in bits.
    pub fn bits(&self, m: usize) -> u32 {
        u32::from(self.data[m])
    }

    /// Counts of metric `m` held in the side list.
    pub fn spilled_in(&self, layouts: &Layouts, m: usize) -> usize {
        let (lo, hi) = self.spill_range(layouts, m);
        hi - lo
    }

    /// Heap bytes: widths and cells, and the side list's capacity.
    pub fn heap_bytes(&self) -> usize {
        self.data.len() + self.spill.capacity() * SPILL_BYTES
    }

    fn first(layouts: &Layouts) -> At {
        At { m: 0, off: layouts.len() }
    }

    /// Moves `at` to metric `m` (from the start if `m` is behind it).
    #[inline]
    fn seek(&self, layouts: &Layouts, at: &mut At, m: usize) {
        if m < at.m {
            *at = Self::first(layouts);
        }
        while at.m < m {
            at.off += cell_bytes(layouts.bins(at.m), self.bits(at.m));
            at.m += 1;
        }
    }

    fn spill_range(&self, layouts: &Layouts, m: usize) -> (usize, usize) {
        let r = layouts.range(m);
        let lo = self.spill.partition_point(|&(j, _)| (j as usize) < r.start);
        let hi = lo + self.spill[lo..].partition_point(|&(j, _)| (j as usize) < r.end);
        (lo, hi)
    }

    /// Count `b` of the metric at `at`.
    fn get_at(&self, layouts: &Layouts, at: At, b: usize) -> u32 {
        let bits = self.bits(at.m);
        let c = read(&self.data, at.off, bits, b);
        match escape(bits) {
            Some(esc) if c == esc => {
                let flat = (layouts.start(at.m) + b) as u32;
                self.spill.binary_search_by_key(&flat, |s| s.0).map_or(c, |i| self.spill[i].1)
            }
            _ => c,
        }
    }

    /// Count `bin` of metric `m` (panics when either is out of range, as a slice does).
    pub fn get(&self, layouts: &Layouts, m: usize, bin: usize) -> u32 {
        assert!(bin < layouts.bins(m), "bin {bin} of metric {m}");
        let mut at = Self::first(layouts);
        self.seek(layouts, &mut at, m);
        self.get_at(layouts, at, bin)
    }

    /// Adds one to each metric's bin in `observed` (a frame; `None`: missing), in `layouts` order.
    pub fn record(&mut self, layouts: &Layouts, observed: &[Option<Observation>]) {
        let mut off = layouts.len();
        for (m, o) in observed.iter().enumerate().take(layouts.len()) {
            if let Some(o) = o {
                self.add_at(layouts, At { m, off }, o.bin, 1);
            }
            // After the add, which may have widened this metric's cells.
            off += cell_bytes(layouts.bins(m), self.bits(m));
        }
    }

    /// `record` into two sets of counts over the same layouts at once (a sub-window's and the window's totals):
    /// one walk over the frame's metrics instead of two.
    pub fn record_both(
        a: &mut MetricCounts,
        b: &mut MetricCounts,
        layouts: &Layouts,
        observed: &[Option<Observation>],
    ) {
        let (mut off_a, mut off_b) = (layouts.len(), layouts.len());
        for (m, o) in observed.iter().enumerate().take(layouts.len()) {
            let bins = layouts.bins(m);
            if let Some(o) = o {
                a.add_at(layouts, At { m, off: off_a }, o.bin, 1);
                b.add_at(layouts, At { m, off: off_b }, o.bin, 1);
            }
            off_a += cell_bytes(bins, a.bits(m));
            off_b += cell_bytes(bins, b.bits(m));
        }
    }

    /// Adds `n` to count `bin` of metric `m`.
    pub fn add(&mut self, layouts: &Layouts, m: usize, bin: usize, n: u32) {
        let mut at = Self::first(layouts);
        self.seek(layouts, &mut at, m);
        self.add_at(layouts, at, bin, n);
    }

    #[inline(always)]
    fn add_at(&mut self, layouts: &Layouts, at: At, b: usize, n: u32) {
        debug_assert!(b < layouts.bins(at.m), "bin {b} of metric {}", at.m);
        // The common cases first, small enough to inline into `record`: a 4-, 8- or 16-bit count that still fits.
        match self.data[at.m] {
            4 => {
                let shift = (b & 1) * 4;
                let byte = &mut self.data[at.off + (b >> 1)];
                let c = u32::from((*byte >> shift) & 0xf);
                if n < 0xf - c {
                    *byte += (n as u8) << shift;
                    return;
                }
            }
            8 => {
                let cell = &mut self.data[at.off + b];
                let c = u32::from(*cell);
                if n < 0xff - c {
                    *cell = (c + n) as u8;
                    return;
                }
            }
            16 => {
                let i = at.off + 2 * b;
                let c = u32::from(u16::from_le_bytes([self.data[i], self.data[i + 1]]));
                if n < 0xffff - c {
                    self.data[i..i + 2].copy_from_slice(&((c + n) as u16).to_le_bytes());
                    return;
                }
            }
            _ => {}
        }
        self.add_other(layouts, at, b, n);
    }

    /// `add_at` for every other case: wider cells, or a count that reaches its cell's escape value.
    #[inline(never)]
    fn add_other(&mut self, layouts: &Layouts, at: At, b: usize, n: u32) {
        let bits = self.bits(at.m);
        let c = read(&self.data, at.off, bits, b);
        match escape(bits) {
            None => write(&mut self.data, at.off, bits, b, c.saturating_add(n)),
            Some(esc) if c < esc && c + n.min(esc) < esc => write(&mut self.data, at.off, bits, b, c + n),
            Some(esc) => self.add_spilled(layouts, at, b, c, n, esc),
        }
    }

    /// `add` where the count is or becomes too large for its cell.
    fn add_spilled(&mut self, layouts: &Layouts, at: At, b: usize, c: u32, n: u32, esc: u32) {
        let flat = (layouts.start(at.m) + b) as u32;
        match self.spill.binary_search_by_key(&flat, |s| s.0) {
            Ok(i) => self.spill[i].1 = self.spill[i].1.saturating_add(n),
            Err(i) => {
                // `c` is the cell's count (an escape value without an entry does not arise; if it did, it would
                // count as itself). The list grows by one entry, not by doubling: spills are few and rare events.
                self.spill.reserve_exact(1);
                self.spill.insert(i, (flat, c.saturating_add(n)));
                let bits = self.bits(at.m);
                write(&mut self.data, at.off, bits, b, esc);
                let cells = cell_bytes(layouts.bins(at.m), bits);
                if self.spilled_in(layouts, at.m) * SPILL_BYTES > cells {
                    self.widen(layouts, at);
                }
            }
        }
    }

    /// Doubles the width of the metric at `at`'s cells: the counts that now fit leave the side list (those that
    /// still do not may widen it again). Only that metric's cells move; the cursor stays valid.
    fn widen(&mut self, layouts: &Layouts, at: At) {
        let bins = layouts.bins(at.m);
        let bits = self.bits(at.m);
        let counts: Vec<u32> = (0..bins).map(|b| self.get_at(layouts, at, b)).collect();
        let (lo, hi) = self.spill_range(layouts, at.m);
        self.spill.drain(lo..hi);
        let (old, new) = (cell_bytes(bins, bits), cell_bytes(bins, bits * 2));
        let mut data = Vec::with_capacity(self.data.len() - old + new);
        data.extend_from_slice(&self.data[..at.off]);
        data.resize(at.off + new, 0);
        data.extend_from_slice(&self.data[at.off + old..]);
        data[at.m] = (bits * 2) as u8;
        self.data = data.into_boxed_slice();
        for (b, c) in counts.into_iter().enumerate() {
            if c > 0 {
                self.add_at(layouts, at, b, c);
            }
        }
    }

    /// Takes `n` from count `b` of the metric at `at` (it stops at zero: the store only takes what it added).
    fn sub_at(&mut self, layouts: &Layouts, at: At, b: usize, n: u32) {
        let bits = self.bits(at.m);
        let c = read(&self.data, at.off, bits, b);
        if escape(bits) == Some(c) {
            let flat = (layouts.start(at.m) + b) as u32;
            if let Ok(i) = self.spill.binary_search_by_key(&flat, |s| s.0) {
                let left = self.spill[i].1.saturating_sub(n);
                if left < c {
                    self.spill.remove(i);
                    write(&mut self.data, at.off, bits, b, left);
                } else {
                    self.spill[i].1 = left;
                }
                return;
            }
        }
        debug_assert!(c >= n, "metric {} bin {b}: taking {n} from {c}", at.m);
        write(&mut self.data, at.off, bits, b, c.saturating_sub(n));
    }

    /// Takes `n` from count `bin` of metric `m`.
    pub fn sub(&mut self, layouts: &Layouts, m: usize, bin: usize, n: u32) {
        let mut at = Self::first(layouts);
        self.seek(layouts, &mut at, m);
        self.sub_at(layouts, at, bin, n);
    }

    /// Adds every count of `sub` (a sub-window counted over the same layouts).
    pub fn add_all(&mut self, layouts: &Layouts, sub: &SubCounts) {
        let mut at = Self::first(layouts);
        sub.for_each(layouts, |m, b, n| {
            self.seek(layouts, &mut at, m);
            self.add_at(layouts, at, b, n);
        });
    }

    /// Takes away every count of `sub` (added before with `record` or `add_all`).
    pub fn sub_all(&mut self, layouts: &Layouts, sub: &SubCounts) {
        let mut at = Self::first(layouts);
        sub.for_each(layouts, |m, b, n| {
            self.seek(layouts, &mut at, m);
            self.sub_at(layouts, at, b, n);
        });
    }

    /// Calls `f(metric, bin, count)` for every non-zero count, metric after metric, bins in order.
    pub fn for_each(&self, layouts: &Layouts, mut f: impl FnMut(usize, usize, u32)) {
        let mut at = Self::first(layouts);
        for m in 0..layouts.len() {
            self.seek(layouts, &mut at, m);
            let bits = self.bits(m);
            for b in 0..layouts.bins(m) {
                if read(&self.data, at.off, bits, b) != 0 {
                    f(m, b, self.get_at(layouts, at, b));
                }
            }
        }
    }

    /// Writes each metric's counts into its histogram in `hists` (as many as each holds), walking the cells once
    /// (a snapshot copies every metric's; seeking each from the first took a step per metric before it).
    pub fn copy_into(&self, layouts: &Layouts, hists: &mut [Histogram]) {
        let mut at = Self::first(layouts);
        for (m, h) in hists.iter_mut().enumerate().take(layouts.len()) {
            self.seek(layouts, &mut at, m);
            self.copy_metric(layouts, at, &mut h.counts);
        }
    }

    /// The counts of the metric at `at` into `into`.
    fn copy_metric(&self, layouts: &Layouts, at: At, into: &mut [u32]) {
        let m = at.m;
        let bits = self.bits(m);
        let n = into.len().min(layouts.bins(m));
        let cells = &self.data[at.off..at.off + cell_bytes(n, bits)];
        match bits {
            4 => into[..n].iter_mut().enumerate().for_each(|(b, a)| *a = read(cells, 0, 4, b)),
            8 => into.iter_mut().zip(cells).for_each(|(a, &c)| *a = u32::from(c)),
            16 => into
                .iter_mut()
                .zip(cells.chunks_exact(2))
                .for_each(|(a, c)| *a = u32::from(u16::from_le_bytes([c[0], c[1]]))),
            _ => into
                .iter_mut()
                .zip(cells.chunks_exact(4))
                .for_each(|(a, c)| *a = u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        }
        let start = layouts.start(m);
        let (lo, hi) = self.spill_range(layouts, m);
        for &(j, c) in &self.spill[lo..hi] {
            if let Some(a) = into.get_mut(j as usize - start) {
                *a = c;
            }
        }
    }
}

/// A sub-window's bin counts of every tracked metric, in the smaller of two forms. While the sub-window has few
/// frames, one row per frame lists each metric's bin (a byte per bin when every layout has at most 255 bins, else
/// two, little-endian; the largest value marks a missing one): a quiet camera's minute of a few frames takes a few
/// dozen bytes a frame. Once the rows would outgrow 4-bit counts of every bin (after half as many frames as a
/// metric has bins on average: ~50 at ~100 bins), they become `MetricCounts`, starting at 4 bits a cell. The rows
/// grow a whole number of rows at a time, doubling, but never past that limit. A cleared sub-window starts as rows
/// again.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubCounts(SubForm);

#[derive(Debug, Clone, PartialEq)]
enum SubForm {
    Rows(Vec<u8>),
    Packed(MetricCounts),
}

impl Default for SubForm {
    fn default() -> Self {
        SubForm::Rows(Vec::new())
    }
}

/// The bytes 4-bit counts of every bin take: past this many bytes of rows, counts are smaller.
fn rows_limit(layouts: &Layouts) -> usize {
    layouts.total_bins().div_ceil(2)
}

impl SubCounts {
    /// `record`, and the same frame into `totals` (the window's counts over the same layouts).
    #[inline]
    pub fn record_with(&mut self, totals: &mut MetricCounts, layouts: &Layouts, observed: &[Option<Observation>]) {
        match &mut self.0 {
            SubForm::Packed(p) => MetricCounts::record_both(p, totals, layouts, observed),
            SubForm::Rows(_) => {
                self.record(layouts, observed);
                totals.record(layouts, observed);
            }
        }
    }

    /// Records one frame: its observation of each metric (`None`: missing), in `layouts` order.
    #[inline]
    pub fn record(&mut self, layouts: &Layouts, observed: &[Option<Observation>]) {
        if let SubForm::Rows(rows) = &mut self.0 {
            let w = layouts.entry_bytes();
            let (row, limit) = (layouts.len() * w, rows_limit(layouts));
            if rows.len() + row <= limit {
                if rows.capacity() - rows.len() < row {
                    // Room for as many rows again as there are (at least one), within the limit.
                    let want = (rows.len() * 2).clamp(rows.len() + row, limit);
                    rows.reserve_exact(want.div_ceil(row) * row - rows.len());
                }
                for m in 0..layouts.len() {
                    let bin = observed.get(m).copied().flatten().map(|o| o.bin);
                    if w == 1 {
                        rows.push(bin.map_or(u8::MAX, |b| b as u8));
                    } else {
                        rows.extend_from_slice(&bin.map_or(u16::MAX, |b| b as u16).to_le_bytes());
                    }
                }
                return;
            }
            self.pack(layouts);
        }
        if let SubForm::Packed(p) = &mut self.0 {
            p.record(layouts, observed);
        }
    }

    /// From rows to packed counts.
    fn pack(&mut self, layouts: &Layouts) {
        let mut p = MetricCounts::new(layouts, 4);
        p.add_all(layouts, self);
        self.0 = SubForm::Packed(p);
    }

    /// Calls `f(metric, bin, count)` for every non-zero count (while rows: once per listed value, count 1).
    pub fn for_each(&self, layouts: &Layouts, mut f: impl FnMut(usize, usize, u32)) {
        match &self.0 {
            SubForm::Rows(rows) => {
                let metrics = layouts.len();
                if metrics == 0 {
                    return;
                }
                if layouts.entry_bytes() == 1 {
                    for row in rows.chunks_exact(metrics) {
                        for (m, &b) in row.iter().enumerate() {
                            if b != u8::MAX {
                                f(m, usize::from(b), 1);
                            }
                        }
                    }
                } else {
                    for row in rows.chunks_exact(metrics * 2) {
                        for (m, b) in row.chunks_exact(2).enumerate() {
                            let b = u16::from_le_bytes([b[0], b[1]]);
                            if b != u16::MAX {
                                f(m, usize::from(b), 1);
                            }
                        }
                    }
                }
            }
            SubForm::Packed(p) => p.for_each(layouts, f),
        }
    }

    /// Counts `values` of each metric at once (a restored sub-window): `counts[m]` has one count per bin of
    /// metric `m`. Rows when they are the smaller form, else packed counts.
    pub fn from_counts(layouts: &Layouts, counts: &[&[u32]]) -> SubCounts {
        let values = |c: &[u32]| c.iter().map(|&n| u64::from(n)).sum::<u64>();
        let most = counts.iter().map(|c| values(c)).max().unwrap_or(0);
        let w = layouts.entry_bytes() as u64;
        if most.saturating_mul(layouts.len() as u64 * w) <= rows_limit(layouts) as u64 {
            // Column by column: metric m's bins, then missing marks up to `most` rows.
            let metrics = layouts.len();
            let missing = if w == 1 { u16::from(u8::MAX) } else { u16::MAX };
            let mut grid = vec![missing; most as usize * metrics];
            for (m, c) in counts.iter().enumerate().take(metrics) {
                let c = &c[..c.len().min(layouts.bins(m))];
                let bins = c.iter().enumerate().flat_map(|(b, &n)| std::iter::repeat_n(b as u16, n as usize));
                for (row, b) in bins.enumerate() {
                    grid[row * metrics + m] = b;
                }
            }
            let rows = if w == 1 {
                grid.iter().map(|&b| b as u8).collect()
            } else {
                grid.iter().flat_map(|b| b.to_le_bytes()).collect()
            };
            return SubCounts(SubForm::Rows(rows));
        }
        let mut p = MetricCounts::new(layouts, 4);
        let mut at = MetricCounts::first(layouts);
        for (m, c) in counts.iter().enumerate().take(layouts.len()) {
            p.seek(layouts, &mut at, m);
            for (b, &n) in c.iter().enumerate().take(layouts.bins(m)) {
                if n > 0 {
                    p.add_at(layouts, at, b, n);
                }
            }
        }
        SubCounts(SubForm::Packed(p))
    }

    /// Back to empty rows, freeing the counts.
    pub fn clear(&mut self) {
        self.0 = SubForm::default();
    }

    /// Heap bytes the counts take (a row list's capacity, or the packed cells and side list).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            SubForm::Rows(rows) => rows.capacity(),
            SubForm::Packed(p) => p.heap_bytes(),
        }
    }

    /// The packed counts; `None` while the frames are listed as rows.
    pub fn packed(&self) -> Option<&MetricCounts> {
        match &self.0 {
            SubForm::Rows(_) => None,
            SubForm::Packed(p) => Some(p),
        }
    }
}

/// A sub-window's sums of every tracked metric (`Sums`), in one of two forms. Open: one `Sums` per metric (56
/// bytes each), which values are added to. Packed: each metric's `Sums::pack_into` bytes, one after another, in
/// one allocation (~34 bytes a metric on real frames). A sub-window that no longer receives frames is packed
/// (`pack`); one that does again is opened (`open`). Both forms hold the same bits.
#[derive(Debug, Clone, PartialEq)]
pub enum SubSums {
    /// Empty until the sub-window's first frame.
    Open(Box<[Sums]>),
    Packed(Box<[u8]>),
}

impl Default for SubSums {
    fn default() -> Self {
        SubSums::Open(Box::default())
    }
}

impl SubSums {
    /// One `Sums` per metric of `layouts`, to add values to: unpacked if packed, allocated if empty.
    pub fn open(&mut self, layouts: &Layouts) -> &mut [Sums] {
        let opened = match &*self {
            SubSums::Open(s) if !s.is_empty() => None,
            SubSums::Open(_) => Some(vec![Sums::default(); layouts.len()].into_boxed_slice()),
            SubSums::Packed(_) => {
                let mut sums = Vec::with_capacity(layouts.len());
                self.for_each(layouts, |_, s| sums.push(s.clone()));
                Some(sums.into_boxed_slice())
            }
        };
        if let Some(sums) = opened {
            *self = SubSums::Open(sums);
        }
        match self {
            SubSums::Open(s) => &mut s[..],
            SubSums::Packed(_) => unreachable!("opened above"),
        }
    }

    /// Packs open sums (nothing to do when empty or packed already).
    pub fn pack(&mut self, layouts: &Layouts) {
        if let SubSums::Open(sums) = self
            && !sums.is_empty()
        {
            let mut out = Vec::with_capacity(sums.len() * 40);
            for (s, layout) in sums.iter().zip(layouts.iter()) {
                s.pack_into(layout, &mut out);
            }
            *self = SubSums::Packed(out.into_boxed_slice());
        }
    }

    /// Whether the sums are packed.
    pub fn is_packed(&self) -> bool {
        matches!(self, SubSums::Packed(_))
    }

    /// Calls `f(metric, sums)` for every metric of `layouts` (none while empty).
    pub fn for_each(&self, layouts: &Layouts, mut f: impl FnMut(usize, &Sums)) {
        match self {
            SubSums::Open(sums) => sums.iter().enumerate().for_each(|(m, s)| f(m, s)),
            SubSums::Packed(bytes) => {
                let mut at = 0;
                for (m, layout) in layouts.iter().enumerate() {
                    f(m, &Sums::unpack(layout, bytes, &mut at));
                }
            }
        }
    }

    /// Adds each metric's sums into `hists[metric]` (`Sums::merge_into`).
    pub fn merge_into(&self, layouts: &Layouts, hists: &mut [Histogram]) {
        self.for_each(layouts, |m, s| {
            if let Some(h) = hists.get_mut(m) {
                s.merge_into(h);
            }
        });
    }

    /// Back to empty, freeing the sums.
    pub fn clear(&mut self) {
        *self = SubSums::default();
    }

    /// Heap bytes the sums take.
    pub fn heap_bytes(&self) -> usize {
        match self {
            SubSums::Open(sums) => std::mem::size_of_val(&**sums),
            SubSums::Packed(bytes) => bytes.len(),
        }
    }
}

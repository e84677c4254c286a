//! Property tests for the math: merges are associative and exact, PSI >= 0 and 0 on identical inputs, KS symmetric
//! and in [0, 1], p-values in [0, 1]; a sliding window equals the histogram of the values it covers; lag-1 moments
//! merged from pieces equal those of the whole series.

use framewatch_metrics::baseline::metric_from_sorted;
use framewatch_metrics::counts::{Layouts, MetricCounts, SubCounts, SubSums};
use framewatch_metrics::histogram::{BinLayout, Histogram, SlidingHistogram, Sums};
use framewatch_metrics::stats::{
    Distances, LagMoments, LagSeries, distances, effective_sample_size, js_distance, kolmogorov_sf, ks_p_value,
    ks_statistic, psi, psi_js, psi_logs, wasserstein,
};
use proptest::prelude::*;

fn layout_from(mut base: Vec<f64>) -> BinLayout {
    base.sort_by(f64::total_cmp);
    metric_from_sorted("x", &base, 0, 100).expect("layout").layout
}

fn hist(layout: &BinLayout, values: &[f64]) -> Histogram {
    let mut h = Histogram::new(layout);
    for &v in values {
        h.record(layout, Some(v));
    }
    h
}

fn values() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        proptest::collection::vec(-1e3f64..1e3, 1..300),
        proptest::collection::vec((0u8..6).prop_map(f64::from), 1..300),
        proptest::collection::vec(0.0f64..1.0, 1..50),
    ]
}

fn repeats() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(300), Just(70_000)]
}

/// Increasing edges of every shape a baseline gives: spread evenly, piled at one end (a heavy tail), a few, many,
/// tiny and huge spans.
fn edge_sets() -> impl Strategy<Value = Vec<f64>> {
    let grow = |steps: Vec<f64>, start: f64| {
        let mut e = Vec::with_capacity(steps.len());
        let mut x = start;
        for s in steps {
            e.push(x);
            x += s;
        }
        e.dedup();
        e
    };
    prop_oneof![
        (proptest::collection::vec(0.01f64..1.0, 1..300), -50.0f64..50.0).prop_map(move |(s, a)| grow(s, a)),
        // geometric gaps: most edges crowd the first cells of a uniform grid
        (proptest::collection::vec(1.0f64..1.3, 1..200), 1e-9f64..1e-3).prop_map(move |(r, a)| {
            let mut g = a;
            grow(
                r.iter()
                    .map(|k| {
                        g *= k;
                        g
                    })
                    .collect(),
                0.0,
            )
        }),
        (proptest::collection::vec(1e-300f64..1e-290, 1..20), 0.0f64..1.0).prop_map(move |(s, a)| grow(s, a)),
        (proptest::collection::vec(1e290f64..1e300, 1..8), -1e305f64..0.0).prop_map(move |(s, a)| grow(s, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The bin search finds what the definition says (the tails, the maximum's bin, and otherwise the
    /// number of edges at or below the value) for values on, next to, between and beyond the edges.
    #[test]
    fn bin_of_is_the_definition(edges in edge_sets(), probes in proptest::collection::vec(0.0f64..1.0, 0..200)) {
        let k = edges.len() - 1;
        let quartile = edges[k / 2];
        let layout = BinLayout::new(edges.clone(), &[], [quartile; 3]).expect("layout");
        let defined = |v: f64| {
            if v < edges[0] { 0 } else if v > edges[k] { k + 2 } else if v == edges[k] { k + 1 }
            else { edges.iter().filter(|&&e| e <= v).count() }
        };
        let (lo, hi) = (edges[0], edges[k]);
        let mut at: Vec<f64> = edges.iter().flat_map(|&e| [e, e.next_down(), e.next_up()]).collect();
        at.extend(probes.iter().map(|&p| lo + (hi - lo) * p));
        at.extend(probes.iter().map(|&p| lo + (hi - lo) * p * p * p));
        at.extend([lo - 1.0, hi + 1.0, f64::MIN, f64::MAX]);
        for v in at.into_iter().filter(|v| v.is_finite()) {
            prop_assert_eq!(layout.bin_of(v), defined(v), "value {:e} over {} edges {:e}..{:e}", v, edges.len(), lo, hi);
        }
    }

    /// A sub-window's counts of several metrics hold exactly what one `Histogram` per metric does, whatever
    /// their form: rows of bins while few frames (one byte a bin, two where a layout has more than 255 bins),
    /// then packed cells (a first frame repeated 300 or 70,000 times spills past 4 and 8 bits). Restoring them
    /// from the histograms' counts gives the same counts, in the form the rule picks.
    #[test]
    fn sub_counts_equal_histograms(
        base_a in values(),
        base_b in values(),
        wide in any::<bool>(),
        frames in proptest::collection::vec((-1e3f64..1e3, 0u8..8), 1..120),
        repeat in repeats(),
    ) {
        let mut layouts = vec![layout_from(base_a), layout_from(base_b)];
        if wide {
            layouts.push(BinLayout::new((0..400).map(f64::from).collect(), &[], [100.0, 200.0, 300.0]).expect("layout"));
        }
        let shape: Layouts = layouts.iter().cloned().collect();
        let mut sub = SubCounts::default();
        let mut full: Vec<Histogram> = layouts.iter().map(Histogram::new).collect();
        let mut rows = 0usize;
        for (i, &(x, missing)) in frames.iter().enumerate() {
            let times = if i == 0 { repeat } else { 1 };
            // metric m is missing in this frame when bit m of `missing` is set
            let v: Vec<Option<f64>> = (0..layouts.len()).map(|m| (missing & (1 << m) == 0).then_some(x * (m as f64 + 1.0))).collect();
            let observed: Vec<_> = layouts.iter().zip(&v).map(|(l, &v)| l.observe(v)).collect();
            for _ in 0..times {
                sub.record(&shape, &observed);
                for ((h, l), &v) in full.iter_mut().zip(&layouts).zip(&v) {
                    h.record(l, v);
                }
                rows += 1;
            }
        }
        let counts_of = |sub: &SubCounts| {
            let mut c: Vec<Vec<u32>> = layouts.iter().map(|l| vec![0; l.bins()]).collect();
            sub.for_each(&shape, |m, bin, n| c[m][bin] += n);
            c
        };
        let expected: Vec<Vec<u32>> = full.iter().map(|h| h.counts.clone()).collect();
        prop_assert_eq!(counts_of(&sub), expected.clone());
        let entry = if wide { 2 } else { 1 };
        let limit = shape.total_bins().div_ceil(2);
        if rows * layouts.len() * entry <= limit {
            prop_assert!(sub.packed().is_none(), "{} rows of {} bytes fit in {}", rows, layouts.len() * entry, limit);
            prop_assert!(sub.heap_bytes() >= rows * layouts.len() * entry);
        } else {
            let p = sub.packed().expect("packed past the rows' limit");
            for (m, counts) in expected.iter().enumerate() {
                let most = counts.iter().copied().max().unwrap_or(0);
                if most < 15 {
                    prop_assert_eq!(p.bits(m), 4, "no count of metric {} reaches a 4-bit cell's escape", m);
                }
            }
        }
        let slices: Vec<&[u32]> = expected.iter().map(Vec::as_slice).collect();
        let restored = SubCounts::from_counts(&shape, &slices);
        prop_assert_eq!(counts_of(&restored), expected.clone());
        let most_values = full.iter().map(|h| h.n as usize).max().unwrap_or(0);
        prop_assert_eq!(restored.packed().is_none(), most_values * layouts.len() * entry <= limit);
        sub.clear();
        prop_assert_eq!(sub.heap_bytes(), 0, "a cleared sub-window starts as empty rows");
        prop_assert_eq!(counts_of(&sub), layouts.iter().map(|l| vec![0; l.bins()]).collect::<Vec<_>>());
    }

    /// Packed sums give back the very bits they were given: sums recorded from values (tails of one value or
    /// many, constant values, values on the median, none at all) and sums of any floats (NaNs of either sign and
    /// any payload, signalling ones, infinities, -0.0, the extremes swapped) with any counters; through
    /// `SubSums`' pack, walk and open. Compared field by field, bit for bit (`Sums::bits`).
    #[test]
    fn packed_sums_give_back_the_same_bits(
        base_a in values(),
        base_b in values(),
        frames in proptest::collection::vec((prop_oneof![-1e3f64..1e3, (0u8..6).prop_map(f64::from)], 0u8..4), 0..40),
        floats in proptest::collection::vec(prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            // NaNs: signalling, negative, with a payload in the low bits.
            any::<u64>().prop_map(|b| f64::from_bits(0x7ff0_0000_0000_0001 | (b & 0x8007_ffff_ffff_ffff))),
        ], 6),
        counters in (prop_oneof![Just(0u64), 0u64..200, any::<u64>()], prop_oneof![Just(0u64), 0u64..200, any::<u64>()]),
    ) {
        let layouts = vec![layout_from(base_a), layout_from(base_b)];
        let shape: Layouts = layouts.iter().chain(&layouts).cloned().collect();
        let mut sums = vec![Sums::default(); 2];
        for &(x, missing) in &frames {
            for (m, (s, l)) in sums.iter_mut().zip(&layouts).enumerate() {
                if missing & (1 << m) == 0 && let Some(o) = l.observe(Some(x)) {
                    s.record(&o);
                }
            }
        }
        // Any floats and counters, through a checkpoint's histogram.
        let mut h = Histogram::new(&layouts[0]);
        [h.sum, h.sum_sq, h.tail_lo_dist, h.tail_hi_dist, h.min, h.max] = std::array::from_fn(|i| floats[i]);
        (h.outliers_moderate, h.outliers_severe) = counters;
        sums.push(Sums::of_histogram(&h));
        sums.push(Sums::default());
        let bits = |s: &Sums| s.bits();
        let expected: Vec<[u64; 8]> = sums.iter().map(bits).collect();
        for (s, l) in sums.iter().zip(shape.iter()) {
            let mut out = Vec::new();
            s.pack_into(l, &mut out);
            let mut at = 0;
            prop_assert_eq!(bits(&Sums::unpack(l, &out, &mut at)), bits(s));
            prop_assert_eq!(at, out.len(), "unpack reads exactly what pack wrote");
        }
        let mut sub = SubSums::Open(sums.into_boxed_slice());
        sub.pack(&shape);
        prop_assert!(sub.is_packed());
        let mut walked = Vec::new();
        sub.for_each(&shape, |m, s| walked.push((m, bits(s))));
        prop_assert_eq!(walked, expected.iter().cloned().enumerate().collect::<Vec<_>>());
        let opened: Vec<[u64; 8]> = sub.open(&shape).iter().map(bits).collect();
        prop_assert_eq!(opened, expected);
        prop_assert!(!sub.is_packed());
        sub.clear();
        prop_assert_eq!(sub.heap_bytes(), 0);
        prop_assert_eq!(sub.open(&shape).iter().map(bits).collect::<Vec<_>>(), vec![bits(&Sums::default()); 4]);
    }

    /// Metric counts are plain arrays of counts under any mix of adds and takes, at any starting width: counts
    /// that outgrow their cells spill to the side list, a metric's entries never take more bytes than its cells
    /// (they widen first, one metric at a time), and widths only grow.
    #[test]
    fn metric_counts_are_arrays_of_counts(
        bins in proptest::collection::vec(1usize..300, 1..5),
        start in prop_oneof![Just(4u32), Just(8), Just(16)],
        ops in proptest::collection::vec((0usize..5, 0usize..300, prop_oneof![Just(1u32), Just(3), Just(14), Just(300), Just(70_000)], any::<bool>()), 0..400),
    ) {
        let layouts: Layouts = bins
            .iter()
            .map(|&k| BinLayout::new((0..k - 1).map(|e| e as f64).collect::<Vec<_>>().into_iter().chain([1e9]).collect(), &[], [0.0; 3]).expect("layout"))
            .collect();
        let mut p = MetricCounts::new(&layouts, start);
        let mut model: Vec<Vec<u32>> = (0..layouts.len()).map(|m| vec![0u32; layouts.bins(m)]).collect();
        let mut widths: Vec<u32> = (0..layouts.len()).map(|m| p.bits(m)).collect();
        for (m, b, n, take) in ops {
            let m = m % layouts.len();
            let b = b % layouts.bins(m);
            if take {
                let n = n.min(model[m][b]);
                p.sub(&layouts, m, b, n);
                model[m][b] -= n;
            } else {
                p.add(&layouts, m, b, n);
                model[m][b] = model[m][b].saturating_add(n);
            }
            prop_assert_eq!(p.get(&layouts, m, b), model[m][b]);
            for (k, w) in widths.iter_mut().enumerate() {
                prop_assert!(p.bits(k) >= *w, "widths only grow");
                *w = p.bits(k);
                let cells = (layouts.bins(k) * *w as usize).div_ceil(8);
                prop_assert!(p.spilled_in(&layouts, k) * 8 <= cells, "metric {}: {} spilled, {} bytes of {}-bit cells", k, p.spilled_in(&layouts, k), cells, *w);
            }
        }
        let mut copied: Vec<Histogram> = layouts.iter().map(Histogram::new).collect();
        copied.iter_mut().for_each(|h| h.counts.fill(u32::MAX));
        p.copy_into(&layouts, &mut copied);
        for (h, want) in copied.iter().zip(&model) {
            prop_assert_eq!(&h.counts, want);
        }
        let mut seen: Vec<Vec<u32>> = model.iter().map(|c| vec![0; c.len()]).collect();
        p.for_each(&layouts, |m, b, n| seen[m][b] = n);
        prop_assert_eq!(&seen, &model);
    }

    #[test]
    fn merge_is_associative_and_equals_recording_everything(base in values(), a in values(), b in values(), c in values()) {
        let l = layout_from(base);
        let (ha, hb, hc) = (hist(&l, &a), hist(&l, &b), hist(&l, &c));
        let mut left = ha.clone();
        left.merge(&hb);
        left.merge(&hc);
        let mut bc = hb.clone();
        bc.merge(&hc);
        let mut right = ha.clone();
        right.merge(&bc);
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        let direct = hist(&l, &all);
        for h in [&left, &right] {
            prop_assert_eq!(&h.counts, &direct.counts);
            prop_assert_eq!(h.n, direct.n);
            prop_assert_eq!(h.outliers_moderate, direct.outliers_moderate);
            prop_assert_eq!(h.outliers_severe, direct.outliers_severe);
            prop_assert_eq!(h.min, direct.min);
            prop_assert_eq!(h.max, direct.max);
            let tol = 1e-9 * (1.0 + direct.sum_sq.abs());
            prop_assert!((h.sum - direct.sum).abs() <= tol);
            prop_assert!((h.sum_sq - direct.sum_sq).abs() <= tol);
        }
    }

    #[test]
    fn psi_is_nonnegative_and_zero_on_identical(base in values(), cur in values()) {
        let l = layout_from(base.clone());
        let (hb, hc) = (hist(&l, &base), hist(&l, &cur));
        let (mut p, mut q) = (Vec::new(), Vec::new());
        hb.coarse_proportions(&l, &mut p);
        hc.coarse_proportions(&l, &mut q);
        // The standard PSI bins: deciles, open-ended, so every value (out of range too) lands in one of them.
        prop_assert_eq!(p.len(), l.coarse_bins());
        prop_assert!(p.len() <= 10);
        prop_assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        prop_assert!((0.0..=1.0).contains(&hc.out_of_range()));
        prop_assert_eq!(hb.out_of_range(), 0.0);
        prop_assert!(psi(&p, &q) >= 0.0);
        prop_assert_eq!(psi(&p, &p), 0.0);
        prop_assert_eq!(psi(&q, &q), 0.0);
        let js = js_distance(&p, &q);
        prop_assert!((0.0..=1.0).contains(&js));
        prop_assert!((js - js_distance(&q, &p)).abs() < 1e-12);
        prop_assert_eq!(js_distance(&p, &p), 0.0);
    }

    /// The fused pass an evaluation runs (`psi_js`, the reference's logarithms cached, the window's as counts)
    /// against the two definitions, on windows of the baseline's bins and on arbitrary counts with empty bins on
    /// either side, small (the table's logarithms) and large (past the table).
    #[test]
    fn fused_psi_js_match_the_definitions(
        base in values(),
        cur in values(),
        raw in prop::collection::vec((0u32..4, 0u32..4), 1..12),
        scale in prop_oneof![Just(1u32), Just(300), Just(1_000_003)],
    ) {
        let l = layout_from(base.clone());
        let (hb, hc) = (hist(&l, &base), hist(&l, &cur));
        let coarse = |h: &Histogram| -> (Vec<f64>, u64) {
            (l.coarse_ranges().map(|r| h.counts[r].iter().map(|&c| f64::from(c)).sum()).collect(), h.n)
        };
        let shares = |(counts, n): &(Vec<f64>, u64)| -> Vec<f64> {
            counts.iter().map(|&c| if *n > 0 { c / *n as f64 } else { 0.0 }).collect()
        };
        let raw_counts = |pick: fn(&(u32, u32)) -> u32| -> (Vec<f64>, u64) {
            let counts: Vec<f64> = raw.iter().map(|x| f64::from(pick(x) * scale)).collect();
            let n = counts.iter().sum::<f64>() as u64;
            (counts, n)
        };
        let (wb, wc) = (coarse(&hb), coarse(&hc));
        let (wa, wz) = (raw_counts(|x| x.0), raw_counts(|x| x.1));
        let mut ln_p = Vec::new();
        for (p, window) in [(&wb, &wc), (&wc, &wb), (&wb, &wb), (&wa, &wz), (&wz, &wa), (&wa, &wa)] {
            let (p, q) = (shares(p), shares(window));
            psi_logs(&p, &mut ln_p);
            let (fused_psi, fused_js) = psi_js(&p, &ln_p, &window.0, window.1);
            let (def_psi, def_js) = (psi(&p, &q), js_distance(&p, &q));
            prop_assert!((fused_psi - def_psi).abs() <= 1e-12 * (1.0 + def_psi), "psi {} vs {}", fused_psi, def_psi);
            // The distance is a square root: compare the divergences, which rounding moves by ~1e-16.
            prop_assert!((fused_js * fused_js - def_js * def_js).abs() <= 1e-12, "js {} vs {}", fused_js, def_js);
            if p == q {
                prop_assert_eq!((fused_psi, fused_js), (0.0, 0.0));
            }
        }
    }

    /// The PSI/JS bins by their definition: a value's bin is the number of cut points at or below it, so the tails
    /// join the first and last deciles.
    #[test]
    fn coarse_proportions_count_the_values_between_the_cuts(base in values(), cur in values()) {
        let l = layout_from(base);
        let h = hist(&l, &cur);
        let mut defined = vec![0u64; l.coarse_bins()];
        for &v in &cur {
            defined[l.coarse_cuts().iter().filter(|&&c| c <= v).count()] += 1;
        }
        let mut shares = Vec::new();
        h.coarse_proportions(&l, &mut shares);
        let defined: Vec<f64> = defined.iter().map(|&k| k as f64 / cur.len() as f64).collect();
        prop_assert_eq!(shares, defined);
        // Runs of fine bins that cover them all, in order, none empty.
        let ranges: Vec<_> = l.coarse_ranges().collect();
        prop_assert_eq!(ranges.len(), l.coarse_bins());
        prop_assert_eq!(ranges[0].start, 0);
        prop_assert_eq!(ranges[ranges.len() - 1].end, l.bins());
        prop_assert!(ranges.windows(2).all(|w| w[0].end == w[1].start && w[0].start < w[0].end));
    }

    #[test]
    fn ks_is_symmetric_bounded_and_zero_on_identical(base in values(), a in values(), b in values()) {
        let l = layout_from(base);
        let (ha, hb) = (hist(&l, &a), hist(&l, &b));
        let d = ks_statistic(&ha, &hb);
        prop_assert!((0.0..=1.0).contains(&d));
        prop_assert_eq!(d, ks_statistic(&hb, &ha));
        prop_assert_eq!(ks_statistic(&ha, &ha), 0.0);
        let w = wasserstein(&l, &ha, &hb);
        prop_assert!(w >= 0.0);
        prop_assert!((w - wasserstein(&l, &hb, &ha)).abs() <= 1e-9 * (1.0 + w));
    }

    #[test]
    fn one_pass_distances_match_the_three_definitions(base in values(), a in values(), b in values(), empty in 0u8..3) {
        let l = layout_from(base);
        let (mut ha, mut hb) = (hist(&l, &a), hist(&l, &b));
        // Either side empty too (a slice without values yet, or a reference without any).
        match empty {
            1 => ha = Histogram::new(&l),
            2 => hb = Histogram::new(&l),
            _ => {}
        }
        let (mut q, mut defined) = (vec![7.0], Vec::new());
        let Distances { ks, wasserstein: w } = distances(&l, &ha, &hb, &mut q);
        hb.coarse_proportions(&l, &mut defined);
        let shares: Vec<f64> = q.iter().map(|&c| if hb.n > 0 { c / hb.n as f64 } else { c }).collect();
        prop_assert_eq!(&shares, &defined);
        let d = ks_statistic(&ha, &hb);
        prop_assert!((ks - d).abs() <= 1e-12, "{} vs {}", ks, d);
        let defined = wasserstein(&l, &ha, &hb);
        prop_assert!((w - defined).abs() <= 1e-12 * (1.0 + defined), "{} vs {}", w, defined);
    }

    #[test]
    fn p_values_are_probabilities(d in 0.0f64..=1.0, n in 1u64..10_000_000, m in 1u64..10_000_000, f in 0.0f64..1.0) {
        let (n, m) = (n as f64, m as f64);
        let p = ks_p_value(d, n, m);
        prop_assert!((0.0..=1.0).contains(&p));
        prop_assert_eq!(ks_p_value(0.0, n, m), 1.0);
        // Fewer effective values can only make the same gap less significant.
        let fewer = ks_p_value(d, 1.0 + f * (n - 1.0), m);
        prop_assert!((0.0..=1.0).contains(&fewer));
        prop_assert!(fewer + 1e-12 >= p);
    }

    #[test]
    fn lag_moments_merged_from_pieces_equal_the_whole_series(
        values in proptest::collection::vec(-1e3f64..1e3, 0..300),
        cuts in proptest::collection::vec(0usize..300, 0..6),
    ) {
        // Pieces as sub-windows see them: a pair belongs to the piece of its later value.
        let mut whole = LagSeries::default();
        values.iter().for_each(|&v| whole.push(v));
        let mut merged = LagMoments::default();
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(values.len())).collect();
        bounds.push(0);
        bounds.push(values.len());
        bounds.sort_unstable();
        for w in bounds.windows(2) {
            let mut piece = LagMoments::default();
            for t in w[0].max(1)..w[1] {
                piece.push_pair(values[t - 1], values[t]);
            }
            merged.merge(&piece);
        }
        let a = whole.moments;
        prop_assert_eq!(a.pairs, merged.pairs);
        prop_assert_eq!(a.pairs, values.len().saturating_sub(1) as u64);
        let tol = 1e-9 * (1.0 + a.sum_xx + a.sum_yy);
        for (x, y) in [(a.sum_x, merged.sum_x), (a.sum_y, merged.sum_y), (a.sum_xx, merged.sum_xx),
                       (a.sum_yy, merged.sum_yy), (a.sum_xy, merged.sum_xy)] {
            prop_assert!((x - y).abs() <= tol, "{x} vs {y}");
        }
        match (a.lag1_autocorrelation(), merged.lag1_autocorrelation()) {
            (Some(r), Some(s)) => {
                prop_assert!((-1.0..=1.0).contains(&r));
                prop_assert!((r - s).abs() < 1e-6, "{r} vs {s}");
            }
            (None, None) => {}
            (r, s) => prop_assert!(false, "whole {r:?}, merged {s:?}"),
        }
        let n = values.len() as u64;
        let e = whole.effective_n(n);
        prop_assert!((n == 0 && e == 0.0) || (1.0..=n as f64).contains(&e));
    }

    #[test]
    fn effective_sample_size_is_within_one_and_n(n in 0u64..1_000_000_000, r in -2.0f64..2.0) {
        let e = effective_sample_size(n, r);
        if n == 0 {
            prop_assert_eq!(e, 0.0);
        } else {
            prop_assert!((1.0..=n as f64).contains(&e));
        }
    }

    #[test]
    fn kolmogorov_sf_is_monotone(a in 0.0f64..5.0, b in 0.0f64..5.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(kolmogorov_sf(lo) + 1e-12 >= kolmogorov_sf(hi));
    }

    #[test]
    fn sliding_window_equals_the_histogram_of_its_sub_windows(base in values(), batches in proptest::collection::vec(values(), 1..12), k in 1usize..6) {
        let l = layout_from(base);
        let mut sliding = SlidingHistogram::new(&l, k);
        for (i, batch) in batches.iter().enumerate() {
            if i > 0 {
                sliding.advance();
            }
            for &v in batch {
                sliding.current().record(&l, Some(v));
            }
        }
        let live: Vec<f64> = batches.iter().rev().take(k).flatten().copied().collect();
        let mut window = Histogram::new(&l);
        sliding.window_into(&mut window);
        let direct = hist(&l, &live);
        prop_assert_eq!(&window.counts, &direct.counts);
        prop_assert_eq!(window.n, direct.n);
    }
}

/// CDFs that cross in nearly every bin of a long layout (the crossing correction of the one-pass Wasserstein sum
/// taken bin after bin, where random windows take it now and then) give the definitions' KS and Wasserstein.
#[test]
fn distances_that_cross_in_every_bin_match_the_definitions() {
    for edges in [64usize, 65, 200, 1000] {
        let l = BinLayout::new((0..edges).map(|i| (i as f64).sqrt()).collect(), &[], [1.0, 2.0, 3.0]).expect("layout");
        let (mut reference, mut current) = (Histogram::new(&l), Histogram::new(&l));
        for bin in 0..l.bins() {
            // The window leads in even bins and the reference in odd ones, by a different amount each time.
            let (r, c) = if bin % 2 == 0 { (1, 2 + bin as u32 % 3) } else { (3 + bin as u32 % 5, 1) };
            reference.counts[bin] = r;
            current.counts[bin] = c;
        }
        reference.n = reference.counts.iter().map(|&c| u64::from(c)).sum();
        current.n = current.counts.iter().map(|&c| u64::from(c)).sum();
        let mut q = Vec::new();
        let Distances { ks, wasserstein: w } = distances(&l, &reference, &current, &mut q);
        let d = ks_statistic(&reference, &current);
        assert!((ks - d).abs() <= 1e-12, "{edges} edges: {ks} vs {d}");
        let defined = wasserstein(&l, &reference, &current);
        assert!((w - defined).abs() <= 1e-12 * (1.0 + defined), "{edges} edges: {w} vs {defined}");
    }
}

#[test]
fn ks_p_value_is_fast_and_exact_at_the_extremes() {
    assert_eq!(ks_p_value(0.0, 1e9, 1e9), 1.0);
    assert_eq!(ks_p_value(1.0, 1e9, 1e9), 0.0);
    assert!(ks_p_value(1e-9, 10.0, 10.0) > 0.999);
    assert_eq!(ks_p_value(0.5, 0.0, 10.0), 1.0);
    assert_eq!(ks_p_value(0.5, f64::NAN, 10.0), 1.0);
    // Known values of the Kolmogorov distribution: Q(1.36) ~= 0.0494, Q(1.0) ~= 0.2700, Q(0.5) ~= 0.9639
    assert!((kolmogorov_sf(1.358) - 0.05).abs() < 5e-4);
    assert!((kolmogorov_sf(1.0) - 0.26999967).abs() < 1e-6);
    assert!((kolmogorov_sf(0.5) - 0.96394524).abs() < 1e-6);
}

/// Counts too large for `distances`' integer path (n m past 2^62) take its floating-point one: the distances are
/// scale-free, so scaling both histograms by a power of two must change nothing but rounding.
#[test]
fn huge_counts_take_the_floating_point_path_with_the_same_distances() {
    let l = layout_from((0..500).map(|i| (f64::from(i) * 0.37).sin()).collect());
    let a: Vec<f64> = (0..400).map(|i| (f64::from(i) * 0.11).cos() * 1.2).collect();
    let b: Vec<f64> = (0..300).map(|i| (f64::from(i) * 0.07).sin() * 0.8 + 0.1).collect();
    let (ha, hb) = (hist(&l, &a), hist(&l, &b));
    let scale = |h: &Histogram| {
        let f = 1u32 << 23;
        let mut g = h.clone();
        g.counts.iter_mut().for_each(|c| *c = c.checked_mul(f).expect("fits"));
        g.n *= u64::from(f);
        g.tail_lo_dist *= f64::from(f);
        g.tail_hi_dist *= f64::from(f);
        g
    };
    let (big_a, big_b) = (scale(&ha), scale(&hb));
    assert!(u128::from(big_a.n) * u128::from(big_b.n) > 1 << 62, "past the integer path");
    let (mut q_small, mut q_big) = (Vec::new(), Vec::new());
    let small = distances(&l, &ha, &hb, &mut q_small);
    let big = distances(&l, &big_a, &big_b, &mut q_big);
    assert!(small.ks > 0.05 && small.wasserstein > 0.01, "{small:?}");
    assert!((small.ks - big.ks).abs() <= 1e-12, "{small:?} vs {big:?}");
    assert!((small.wasserstein - big.wasserstein).abs() <= 1e-12 * small.wasserstein, "{small:?} vs {big:?}");
    let scaled: Vec<f64> = q_small.iter().map(|&c| c * f64::from(1u32 << 23)).collect();
    assert_eq!(scaled, q_big);
    assert!((big.ks - ks_statistic(&big_a, &big_b)).abs() <= 1e-12);
    assert!((big.wasserstein - wasserstein(&l, &big_a, &big_b)).abs() <= 1e-12 * big.wasserstein);
}

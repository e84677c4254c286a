//! Metric importance: which quality metrics explain how well the model does, Encord Active's "metric importance"
//! and "performance by metric" charts. Over labelled frames each metric is related to the frame's F1 (2TP / (2TP +
//! FP + FN) at the evaluation's thresholds) by a rank correlation (Spearman's rho, as scipy's `spearmanr`) and a
//! mutual-information estimate (plug-in, on quantile bins of both, in nats, as scikit-learn's
//! `mutual_info_score` on those bins); over every frame, labelled or not, it is related to the model's mean
//! confidence the same way. Each metric's values are then cut into quantile buckets and performance is computed
//! per bucket.

use serde::{Deserialize, Serialize};

use crate::performance::{Counts, FrameMatch, LabelledFrame, PerformanceSettings, match_frame, summarize};

/// 1-based ranks, ties sharing their average rank (scipy's `rankdata(method="average")`). NaN is not expected:
/// callers pass metric values, which are finite.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && values[order[j]] == values[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        i = j;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxx > 0.0 && syy > 0.0).then(|| (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation; `None` with fewer than 3 pairs or when either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "spearman: paired samples");
    if x.len() < 3 {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Equal-frequency bins by rank: value i goes to bin floor((rank_i - 1) * k / n), tied values to the same bin.
pub fn quantile_bins(values: &[f64], k: usize) -> Vec<usize> {
    let n = values.len() as f64;
    let k = k.max(1);
    average_ranks(values).iter().map(|r| (((r - 1.0) * k as f64 / n) as usize).min(k - 1)).collect()
}

/// Plug-in mutual information of two binned variables, in nats: sum p(x,y) ln(p(x,y) / (p(x) p(y))).
pub fn mutual_information(x: &[usize], y: &[usize]) -> f64 {
    assert_eq!(x.len(), y.len(), "mutual_information: paired samples");
    if x.is_empty() {
        return 0.0;
    }
    let (kx, ky) = (x.iter().max().map_or(0, |m| m + 1), y.iter().max().map_or(0, |m| m + 1));
    let mut joint = vec![0u64; kx * ky];
    let (mut px, mut py) = (vec![0u64; kx], vec![0u64; ky]);
    for (&a, &b) in x.iter().zip(y) {
        joint[a * ky + b] += 1;
        px[a] += 1;
        py[b] += 1;
    }
    let n = x.len() as f64;
    let mut mi = 0.0;
    for a in 0..kx {
        for b in 0..ky {
            let c = joint[a * ky + b];
            if c > 0 {
                let c = c as f64;
                mi += c / n * (c * n / (px[a] as f64 * py[b] as f64)).ln();
            }
        }
    }
    mi.max(0.0)
}

/// How to cut and relate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportanceSettings {
    /// Quantile buckets of each metric for "performance by metric".
    pub buckets: usize,
    /// Quantile bins of each side for the mutual-information estimate (few bins: the plug-in estimate is biased
    /// upward by about (bins - 1)^2 / 2n nats, the same for every metric, so the ranking holds).
    pub mi_bins: usize,
    /// Fewer frames with a value than this: no importance for the metric.
    pub min_frames: usize,
}

impl Default for ImportanceSettings {
    fn default() -> Self {
        ImportanceSettings { buckets: 5, mi_bins: 5, min_frames: 20 }
    }
}

/// Performance on the frames whose metric value falls in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Smallest and largest metric value in the bucket.
    pub min: f64,
    pub max: f64,
    pub frames: u64,
    pub counts: Counts,
    pub map50: Option<f64>,
}

/// One metric's relation to performance (labelled frames) and to confidence (all frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricImportance {
    pub metric: String,
    /// Labelled frames with a value of the metric and a defined F1.
    pub labelled_frames: u64,
    /// Spearman's rho of the metric and per-frame F1.
    pub f1_spearman: Option<f64>,
    /// Mutual information of the metric and per-frame F1, nats.
    pub f1_mutual_information: Option<f64>,
    /// Frames (labelled or not) with a value of the metric and of mean confidence.
    pub frames: u64,
    pub confidence_spearman: Option<f64>,
    pub confidence_mutual_information: Option<f64>,
    /// Performance per quantile bucket of the metric, lowest values first.
    pub buckets: Vec<Bucket>,
}

/// One frame as importance sees it: its metric values (in the caller's metric order), its mean confidence, and its
/// ground truth when it has been labelled.
#[derive(Debug, Clone, Copy)]
pub struct ImportanceFrame<'a> {
    pub values: &'a [Option<f64>],
    pub confidence_mean: Option<f64>,
    pub labelled: Option<LabelledFrame<'a>>,
}

fn relate(x: &[f64], y: &[f64], settings: &ImportanceSettings) -> (Option<f64>, Option<f64>) {
    if x.len() < settings.min_frames.max(3) {
        return (None, None);
    }
    let mi = mutual_information(&quantile_bins(x, settings.mi_bins), &quantile_bins(y, settings.mi_bins));
    (spearman(x, y), Some(mi))
}

/// Ranks every metric by how much it explains performance: sorted by |f1_spearman|, largest first (metrics without
/// one last, then by |confidence_spearman|).
pub fn metric_importance(
    metrics: &[&str],
    frames: &[ImportanceFrame<'_>],
    performance: &PerformanceSettings,
    settings: &ImportanceSettings,
) -> Vec<MetricImportance> {
    let matches: Vec<Option<FrameMatch>> =
        frames.iter().map(|f| f.labelled.map(|l| match_frame(&l, performance))).collect();
    let matched: Vec<MatchedFrame<'_>> = frames
        .iter()
        .zip(&matches)
        .map(|(f, m)| MatchedFrame { values: f.values, confidence_mean: f.confidence_mean, matched: m.as_ref() })
        .collect();
    matched_importance(metrics, &matched, settings)
}

/// One frame as `matched_importance` sees it: like `ImportanceFrame`, with the labelled frame already matched (what
/// a streaming window keeps).
#[derive(Debug, Clone, Copy)]
pub struct MatchedFrame<'a> {
    pub values: &'a [Option<f64>],
    pub confidence_mean: Option<f64>,
    pub matched: Option<&'a FrameMatch>,
}

/// `metric_importance` over frames whose detections are already matched to their labels.
pub fn matched_importance(
    metrics: &[&str],
    frames: &[MatchedFrame<'_>],
    settings: &ImportanceSettings,
) -> Vec<MetricImportance> {
    let labelled: Vec<(usize, &FrameMatch)> =
        frames.iter().enumerate().filter_map(|(i, f)| f.matched.map(|m| (i, m))).collect();
    let f1: Vec<Option<f64>> = labelled.iter().map(|(_, m)| m.counts().f1()).collect();
    let mut out = Vec::with_capacity(metrics.len());
    let (mut x, mut y, mut members) = (Vec::new(), Vec::new(), Vec::new());
    for (mi, &name) in metrics.iter().enumerate() {
        let value = |i: usize| frames[i].values.get(mi).copied().flatten().filter(|v| v.is_finite());
        x.clear();
        y.clear();
        for ((i, _), f) in labelled.iter().zip(&f1) {
            if let (Some(v), Some(f)) = (value(*i), f) {
                x.push(v);
                y.push(*f);
            }
        }
        let labelled_frames = x.len() as u64;
        let (f1_spearman, f1_mutual_information) = relate(&x, &y, settings);
        x.clear();
        y.clear();
        for (i, f) in frames.iter().enumerate() {
            if let (Some(v), Some(c)) = (value(i), f.confidence_mean) {
                x.push(v);
                y.push(c);
            }
        }
        let all_frames = x.len() as u64;
        let (confidence_spearman, confidence_mutual_information) = relate(&x, &y, settings);
        // Performance by metric: labelled frames with a value, cut into quantile buckets of that value.
        members.clear();
        members.extend(labelled.iter().filter_map(|(i, m)| value(*i).map(|v| (v, *m))));
        let mut buckets = Vec::new();
        if members.len() >= settings.min_frames.max(settings.buckets) {
            let values: Vec<f64> = members.iter().map(|(v, _)| *v).collect();
            let bins = quantile_bins(&values, settings.buckets);
            for b in 0..settings.buckets {
                let chosen: Vec<(f64, &FrameMatch)> =
                    members.iter().zip(&bins).filter(|(_, k)| **k == b).map(|(m, _)| *m).collect();
                if chosen.is_empty() {
                    continue;
                }
                let p = summarize(chosen.iter().map(|(_, m)| *m));
                buckets.push(Bucket {
                    min: chosen.iter().map(|c| c.0).fold(f64::INFINITY, f64::min),
                    max: chosen.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max),
                    frames: p.frames,
                    counts: p.counts,
                    map50: p.map50,
                });
            }
        }
        out.push(MetricImportance {
            metric: name.to_owned(),
            labelled_frames,
            f1_spearman,
            f1_mutual_information,
            frames: all_frames,
            confidence_spearman,
            confidence_mutual_information,
            buckets,
        });
    }
    let key = |m: &MetricImportance| {
        (m.f1_spearman.is_none(), -m.f1_spearman.unwrap_or(0.0).abs(), -m.confidence_spearman.unwrap_or(0.0).abs())
    };
    out.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(ka.2.total_cmp(&kb.2))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties_like_scipy() {
        assert_eq!(average_ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
    }

    #[test]
    fn spearman_is_one_for_any_increasing_relation_and_none_for_a_constant() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| v.powi(3) + 2.0).collect();
        assert_eq!(spearman(&x, &y), Some(1.0));
        let z: Vec<f64> = x.iter().map(|v| -v.exp()).collect();
        assert_eq!(spearman(&x, &z), Some(-1.0));
        assert_eq!(spearman(&x, &[1.0; 20]), None);
    }

    #[test]
    fn mutual_information_is_the_entropy_for_identical_variables_and_zero_for_independent() {
        let a = [0, 1, 2, 3, 0, 1, 2, 3];
        assert!((mutual_information(&a, &a) - 4f64.ln()).abs() < 1e-12);
        let (x, y) = ([0, 0, 1, 1], [0, 1, 0, 1]);
        assert!(mutual_information(&x, &y).abs() < 1e-12);
    }

    #[test]
    fn quantile_bins_are_equal_frequency_and_keep_ties_together() {
        let v: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(quantile_bins(&v, 5), vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(quantile_bins(&[1.0, 1.0, 1.0, 2.0], 2), vec![0, 0, 0, 1]);
    }
}

//! Label quality metrics: numbers about a frame's ground truth itself, not about the model, so that a labelled
//! validation set and the labels a reviewer sends later can be compared like any other metric ("label drift": the
//! reviewers started boxing smaller objects, or duplicating boxes). Encord Active's label quality metrics, reduced
//! to one value per frame; the per-object definitions and the per-frame aggregation are on each `LabelMetric`.
//!
//! Pure: a function of one frame's validated `TruthBox`es (`performance::validate_truth`).

use crate::performance::TruthBox;

/// Two boxes of the same class overlapping at least this much (IoU) are counted as a duplicate pair. Encord
/// Active's `AnnotationDuplicates` uses 0.6: above the 0.5 at which a detection is matched, so two separate
/// neighbouring objects (a row of parked cars) rarely reach it, while a box drawn twice nearly always does.
pub const DUPLICATE_IOU: f64 = 0.6;

/// Public description of a label quality metric: names are part of framewatch's contract (baseline keys, later
/// exported series), like `catalog::MetricInfo`'s.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LabelMetricInfo {
    pub name: &'static str,
    /// The smallest and largest value the metric takes.
    pub range: (f64, f64),
    pub description: &'static str,
    /// The Encord Active metric it reproduces.
    pub encord: &'static str,
}

/// The label quality metrics in value order (the order of `LabelQuality::values`).
pub const LABEL_METRICS: &[LabelMetricInfo] = &[
    LabelMetricInfo {
        name: "label_object_count",
        range: (0.0, f64::INFINITY),
        description: "labelled objects on the frame (0 for a frame labelled as holding nothing)",
        encord: "Object Count",
    },
    LabelMetricInfo {
        name: "label_duplicates",
        range: (0.0, 1.0),
        description: "share of the frame's boxes that overlap another box of the same class at IoU >= 0.6",
        encord: "Annotation Duplicates",
    },
    LabelMetricInfo {
        name: "label_border_closeness",
        range: (0.5, 1.0),
        description: "the closest any box comes to the image border: max over boxes of max(x_max, y_max, \
                      1 - x_min, 1 - y_min); 1 = a box touches the border",
        encord: "Border Proximity",
    },
    LabelMetricInfo {
        name: "label_relative_area",
        range: (0.0, 1.0),
        description: "mean over the frame's boxes of the box area as a share of the image area",
        encord: "Object Area - Relative",
    },
];

/// One frame's label quality values. All but the count are undefined (`None`) for a frame without objects: "no
/// objects" has no border closeness or box area, and a zero would drag the distributions towards a value no box has.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LabelQuality {
    pub object_count: f64,
    pub duplicates: Option<f64>,
    pub border_closeness: Option<f64>,
    pub relative_area: Option<f64>,
}

impl LabelQuality {
    /// The values in `LABEL_METRICS` order.
    pub fn values(&self) -> [Option<f64>; 4] {
        [Some(self.object_count), self.duplicates, self.border_closeness, self.relative_area]
    }
}

/// The names of `LABEL_METRICS`, in value order.
pub fn label_metric_names() -> impl Iterator<Item = &'static str> {
    LABEL_METRICS.iter().map(|m| m.name)
}

/// IoU of two labelled boxes. Two boxes without area (a point or a line) share no area: 0, not 0/0.
fn truth_iou(a: &TruthBox, b: &TruthBox) -> f64 {
    let w = f64::from(a.x_max.min(b.x_max)) - f64::from(a.x_min.max(b.x_min));
    let h = f64::from(a.y_max.min(b.y_max)) - f64::from(a.y_min.max(b.y_min));
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

fn area(t: &TruthBox) -> f64 {
    (f64::from(t.x_max) - f64::from(t.x_min)) * (f64::from(t.y_max) - f64::from(t.y_min))
}

/// Encord Active's border proximity of one box (normalised coordinates): in [0.5, 1].
fn border_closeness(t: &TruthBox) -> f64 {
    let (x0, y0, x1, y1) = (f64::from(t.x_min), f64::from(t.y_min), f64::from(t.x_max), f64::from(t.y_max));
    x1.max(y1).max(1.0 - x0).max(1.0 - y0)
}

/// The label quality of one frame's ground truth. `truth` must have passed `validate_truth` (normalised boxes,
/// bounded count): duplicates compare every pair of same-class boxes, quadratic in the frame's object count.
pub fn label_quality(truth: &[TruthBox]) -> LabelQuality {
    let n = truth.len();
    if n == 0 {
        return LabelQuality::default();
    }
    // Same-class pairs only: sort indices by class so each class is one run.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| truth[a].class_label.cmp(&truth[b].class_label));
    let mut duplicate = vec![false; n];
    for (i, &a) in order.iter().enumerate() {
        for &b in &order[i + 1..] {
            if truth[b].class_label != truth[a].class_label {
                break;
            }
            if truth_iou(&truth[a], &truth[b]) >= DUPLICATE_IOU {
                duplicate[a] = true;
                duplicate[b] = true;
            }
        }
    }
    let duplicates = duplicate.iter().filter(|&&d| d).count();
    LabelQuality {
        object_count: n as f64,
        duplicates: Some(duplicates as f64 / n as f64),
        border_closeness: truth.iter().map(border_closeness).reduce(f64::max),
        relative_area: Some(truth.iter().map(area).sum::<f64>() / n as f64),
    }
}

/// One label quality metric summed up over a set of labelled frames (what `framewatch evaluate` prints).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelMetricSummary {
    pub metric: &'static str,
    /// Frames with a value, and labelled frames without one (no objects).
    pub values: u64,
    pub missing: u64,
    /// `None` when no frame has a value.
    pub mean: Option<f64>,
    pub min: Option<f64>,
    /// Q1, median, Q3 (numpy's linear interpolation, as the baseline's quartiles).
    pub quartiles: Option<[f64; 3]>,
    pub max: Option<f64>,
}

/// The label quality metrics of every frame's ground truth, summed up per metric in `LABEL_METRICS` order. Holds
/// one value per frame and metric (exact quartiles need them all).
pub fn summarize_labels<'a>(frames: impl IntoIterator<Item = &'a [TruthBox]>) -> Vec<LabelMetricSummary> {
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); LABEL_METRICS.len()];
    let mut missing = vec![0u64; LABEL_METRICS.len()];
    for truth in frames {
        for ((vals, miss), v) in values.iter_mut().zip(missing.iter_mut()).zip(label_quality(truth).values()) {
            match v {
                Some(v) => vals.push(v),
                None => *miss += 1,
            }
        }
    }
    LABEL_METRICS
        .iter()
        .zip(values)
        .zip(missing)
        .map(|((info, mut vals), missing)| {
            vals.sort_by(f64::total_cmp);
            let any = !vals.is_empty();
            LabelMetricSummary {
                metric: info.name,
                values: vals.len() as u64,
                missing,
                mean: any.then(|| vals.iter().sum::<f64>() / vals.len() as f64),
                min: vals.first().copied(),
                quartiles: any.then(|| [0.25, 0.5, 0.75].map(|p| crate::histogram::quantile_sorted(&vals, p))),
                max: vals.last().copied(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(x0: f32, y0: f32, x1: f32, y1: f32, class: &str) -> TruthBox {
        TruthBox { x_min: x0, y_min: y0, x_max: x1, y_max: y1, class_label: class.into() }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    #[test]
    fn a_frame_without_objects_has_a_zero_count_and_no_other_value() {
        let q = label_quality(&[]);
        assert_eq!(q.values(), [Some(0.0), None, None, None]);
    }

    #[test]
    fn one_centred_box_has_no_duplicate_its_area_and_its_border_distance() {
        // 0.2 x 0.5 box from (0.4, 0.25): area 0.1; farthest reach max(0.6, 0.75, 0.6, 0.75) = 0.75.
        let q = label_quality(&[truth(0.4, 0.25, 0.6, 0.75, "car")]);
        assert_eq!(q.object_count, 1.0);
        assert_eq!(q.duplicates, Some(0.0));
        assert!(close(q.border_closeness, 0.75), "{q:?}");
        assert!(close(q.relative_area, 0.1), "{q:?}");
    }

    #[test]
    fn a_box_drawn_twice_counts_both_boxes_as_duplicates_but_not_across_classes() {
        // Two cars: the second is the first shifted by 0.05 of 0.5 wide boxes: IoU = 0.45*0.5/(2*0.25-0.225) =
        // 0.225/0.275 = 0.818 >= 0.6. A person on the same spot is another class: not a duplicate. Third car apart.
        let t = [
            truth(0.1, 0.1, 0.6, 0.6, "car"),
            truth(0.15, 0.1, 0.65, 0.6, "car"),
            truth(0.1, 0.1, 0.6, 0.6, "person"),
            truth(0.7, 0.7, 0.8, 0.8, "car"),
        ];
        let q = label_quality(&t);
        assert_eq!(q.object_count, 4.0);
        assert_eq!(q.duplicates, Some(0.5), "2 of 4 boxes are in a same-class pair at IoU >= 0.6");
        // areas 0.25, 0.25, 0.25, 0.01: mean 0.19; the largest reach is 1 - 0.1 = 0.9.
        assert!(close(q.relative_area, 0.19), "{q:?}");
        assert!(close(q.border_closeness, 0.9), "{q:?}");
    }

    #[test]
    fn neighbours_overlapping_below_the_threshold_are_not_duplicates() {
        // Shifted by 0.25 of 0.5: IoU = 0.25*0.5/(0.5-0.125) = 1/3.
        let t = [truth(0.0, 0.0, 0.5, 0.5, "car"), truth(0.25, 0.0, 0.75, 0.5, "car")];
        assert_eq!(label_quality(&t).duplicates, Some(0.0));
        // Nested boxes of the full width: IoU is the ratio of their heights, 0.31/0.5 = 0.62 and 0.29/0.5 = 0.58.
        let above = [truth(0.0, 0.0, 1.0, 0.5, "car"), truth(0.0, 0.0, 1.0, 0.31, "car")];
        assert_eq!(label_quality(&above).duplicates, Some(1.0));
        let below = [truth(0.0, 0.0, 1.0, 0.5, "car"), truth(0.0, 0.0, 1.0, 0.29, "car")];
        assert_eq!(label_quality(&below).duplicates, Some(0.0));
    }

    #[test]
    fn boxes_on_the_border_score_one_and_degenerate_boxes_do_not_divide_by_zero() {
        let edge = label_quality(&[truth(0.0, 0.3, 0.2, 0.5, "car")]);
        assert_eq!(edge.border_closeness, Some(1.0));
        let full = label_quality(&[truth(0.0, 0.0, 1.0, 1.0, "car")]);
        assert_eq!((full.border_closeness, full.relative_area), (Some(1.0), Some(1.0)));
        // Two identical points: no area, no overlap, finite values everywhere.
        let points = label_quality(&[truth(0.5, 0.5, 0.5, 0.5, "car"), truth(0.5, 0.5, 0.5, 0.5, "car")]);
        assert_eq!(points.values(), [Some(2.0), Some(0.0), Some(0.5), Some(0.0)]);
    }

    #[test]
    fn the_catalog_names_every_value_in_order_and_the_values_stay_in_their_ranges() {
        let names: Vec<_> = label_metric_names().collect();
        assert_eq!(names, ["label_object_count", "label_duplicates", "label_border_closeness", "label_relative_area"]);
        let t = [truth(0.0, 0.0, 0.3, 0.3, "a"), truth(0.0, 0.0, 0.3, 0.3, "a"), truth(0.45, 0.45, 0.55, 0.55, "b")];
        let q = label_quality(&t);
        for (info, v) in LABEL_METRICS.iter().zip(q.values()) {
            let v = v.unwrap_or_else(|| panic!("{} defined", info.name));
            assert!(v >= info.range.0 && v <= info.range.1, "{}: {v} outside {:?}", info.name, info.range);
        }
    }

    #[test]
    fn summaries_count_frames_without_objects_as_missing_except_for_the_count() {
        let a = [truth(0.0, 0.0, 0.5, 0.5, "car")];
        let b = [truth(0.0, 0.0, 0.5, 0.5, "car"), truth(0.5, 0.5, 1.0, 1.0, "car"), truth(0.2, 0.2, 0.4, 0.4, "car")];
        let frames: [&[TruthBox]; 3] = [&a, &[], &b];
        let s = summarize_labels(frames);
        assert_eq!(s.len(), LABEL_METRICS.len());
        let count = &s[0];
        assert_eq!((count.metric, count.values, count.missing), ("label_object_count", 3, 0));
        assert_eq!((count.mean, count.min, count.max), (Some(4.0 / 3.0), Some(0.0), Some(3.0)));
        assert_eq!(count.quartiles, Some([0.5, 1.0, 2.0]));
        let area = &s[3];
        assert_eq!((area.values, area.missing), (2, 1), "the empty frame has no box area");
        // frame a: 0.25; frame b: (0.25 + 0.25 + 0.04) / 3 = 0.18
        assert!(close(area.mean, (0.25 + 0.18) / 2.0), "{area:?}");
        let none = summarize_labels(std::iter::empty());
        assert_eq!((none[1].values, none[1].mean, none[1].quartiles), (0, None, None));
    }
}

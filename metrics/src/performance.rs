//! Model performance against ground truth: the numbers a model test case judges ("the model should reach X in the
//! scenario where Y"). Detections are matched to labelled boxes the way COCO's evaluation (pycocotools `COCOeval`,
//! bbox, area "all", no crowd boxes) does it, so mAP@0.5 and mAP@[.5:.95] with 101-point interpolation match
//! pycocotools to rounding (fixtures/reference/coco.json), and precision, recall and F1 at one IoU threshold and one
//! confidence threshold come from the same matching.
//!
//! Pure: a function of the labelled frames it is given. The service keeps the frames of a window; the offline
//! `framewatch evaluate` reads files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::prediction::{Detection, MAX_CLASS_LABEL_BYTES, normalised_box};

/// One ground-truth object: a normalised box (like `Detection`'s) and its class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthBox {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
    #[serde(rename = "class", alias = "class_label", default)]
    pub class_label: String,
}

impl TruthBox {
    /// A detection of exactly this box and class at `confidence`: what a perfect model reports (synthetic fleets,
    /// benches and tests).
    pub fn detected(&self, confidence: f32) -> Detection {
        Detection {
            x_min: self.x_min,
            y_min: self.y_min,
            x_max: self.x_max,
            y_max: self.y_max,
            class_label: self.class_label.clone(),
            confidence,
            class_probabilities: Vec::new(),
        }
    }
}

/// Why a frame's ground truth was refused. `reason()` labels counters.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LabelError {
    #[error("label {index}: box ({x_min}, {y_min}, {x_max}, {y_max}) is not a normalised box with min <= max")]
    BadBox { index: usize, x_min: f32, y_min: f32, x_max: f32, y_max: f32 },
    #[error("{count} labelled objects on one frame, over the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("label {index}: class label is longer than {limit} bytes or has control characters")]
    BadClass { index: usize, limit: usize },
}

impl LabelError {
    pub fn reason(&self) -> &'static str {
        match self {
            LabelError::BadBox { .. } => "invalid_label_box",
            LabelError::TooMany { .. } => "too_many_labels",
            LabelError::BadClass { .. } => "invalid_label_class",
        }
    }
}

/// Checks every labelled box; the first problem found is returned.
pub fn validate_truth(truth: &[TruthBox], max_objects: usize) -> Result<(), LabelError> {
    if truth.len() > max_objects {
        return Err(LabelError::TooMany { count: truth.len(), limit: max_objects });
    }
    for (index, t) in truth.iter().enumerate() {
        if !normalised_box(t.x_min, t.y_min, t.x_max, t.y_max) {
            let TruthBox { x_min, y_min, x_max, y_max, .. } = *t;
            return Err(LabelError::BadBox { index, x_min, y_min, x_max, y_max });
        }
        if t.class_label.len() > MAX_CLASS_LABEL_BYTES || t.class_label.chars().any(char::is_control) {
            return Err(LabelError::BadClass { index, limit: MAX_CLASS_LABEL_BYTES });
        }
    }
    Ok(())
}

/// How detections are judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerformanceSettings {
    /// A detection is a true positive when it overlaps an unmatched labelled box of its class by at least this
    /// IoU (precision, recall, F1; mAP@0.5 always uses 0.5).
    pub iou_threshold: f64,
    /// Precision, recall and F1 count the detections with at least this confidence (mAP ranks them all).
    pub score_threshold: f32,
    /// Per frame and class, only the most confident this many detections count (COCO's `maxDets`, 100).
    pub max_detections: usize,
}

impl Default for PerformanceSettings {
    fn default() -> Self {
        PerformanceSettings { iou_threshold: 0.5, score_threshold: 0.5, max_detections: 100 }
    }
}

/// The frames a performance figure is computed over: each frame's detections and its ground truth.
#[derive(Debug, Clone, Copy)]
pub struct LabelledFrame<'a> {
    pub detections: &'a [Detection],
    pub truth: &'a [TruthBox],
}

/// Matched counts at the settings' IoU and confidence thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
}

impl Counts {
    /// `None` when nothing was detected (above the confidence threshold).
    pub fn precision(&self) -> Option<f64> {
        let d = self.true_positives + self.false_positives;
        (d > 0).then(|| self.true_positives as f64 / d as f64)
    }

    /// `None` when there was nothing to find.
    pub fn recall(&self) -> Option<f64> {
        let t = self.true_positives + self.false_negatives;
        (t > 0).then(|| self.true_positives as f64 / t as f64)
    }

    /// Harmonic mean of precision and recall, 2TP / (2TP + FP + FN); `None` for a frame with nothing detected and
    /// nothing to find.
    pub fn f1(&self) -> Option<f64> {
        let d = 2 * self.true_positives + self.false_positives + self.false_negatives;
        (d > 0).then(|| 2.0 * self.true_positives as f64 / d as f64)
    }

    fn add(&mut self, o: &Counts) {
        self.true_positives += o.true_positives;
        self.false_positives += o.false_positives;
        self.false_negatives += o.false_negatives;
    }
}

/// One class's performance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassPerformance {
    /// Labelled objects of the class.
    pub truths: u64,
    pub counts: Counts,
    /// Average precision at IoU 0.5 and averaged over IoU 0.50:0.05:0.95; `None` when the class has no labelled
    /// object (COCO leaves such a class out of the mean).
    pub ap50: Option<f64>,
    pub ap50_95: Option<f64>,
}

/// Performance over a set of labelled frames.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    /// Labelled frames judged.
    pub frames: u64,
    /// Summed over classes (micro-averaged precision, recall and F1).
    pub counts: Counts,
    /// Mean over the classes that have labelled objects; `None` when none has.
    pub map50: Option<f64>,
    pub map50_95: Option<f64>,
    pub classes: BTreeMap<String, ClassPerformance>,
}

/// COCO's IoU thresholds, computed as numpy's `linspace(.5, .95, 10)` does, so a pair overlapping at exactly a
/// threshold is judged as pycocotools judges it.
fn iou_thresholds() -> [f64; 10] {
    let step = (0.95f64 - 0.5) / 9.0;
    let mut t = [0.0; 10];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as f64 * step + 0.5;
    }
    t[9] = 0.95;
    t
}

/// COCO's 101 recall points, as numpy's `linspace(0, 1, 101)`.
fn recall_points() -> [f64; 101] {
    let step = 1.0f64 / 100.0;
    let mut r = [0.0; 101];
    for (i, v) in r.iter_mut().enumerate() {
        *v = i as f64 * step;
    }
    r[100] = 1.0;
    r
}

/// Intersection over union of two boxes, as pycocotools' `bbIou` computes it (no crowd boxes).
fn box_iou(d: &Detection, t: &TruthBox) -> f64 {
    let (dx0, dy0, dx1, dy1) = (f64::from(d.x_min), f64::from(d.y_min), f64::from(d.x_max), f64::from(d.y_max));
    let (tx0, ty0, tx1, ty1) = (f64::from(t.x_min), f64::from(t.y_min), f64::from(t.x_max), f64::from(t.y_max));
    let w = dx1.min(tx1) - dx0.max(tx0);
    if w <= 0.0 {
        return 0.0;
    }
    let h = dy1.min(ty1) - dy0.max(ty0);
    if h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let union = (dx1 - dx0) * (dy1 - dy0) + (tx1 - tx0) * (ty1 - ty0) - inter;
    inter / union
}

/// Greedy matching in descending confidence: each detection takes the labelled box it overlaps most (at least
/// `threshold`; on equal overlap the later box) among those not yet taken. `dets` is already in confidence order.
fn greedy_match(ious: &[f64], n_truth: usize, threshold: f64, matched: &mut [bool], taken: &mut [bool]) {
    taken.iter_mut().for_each(|t| *t = false);
    for (di, m) in matched.iter_mut().enumerate() {
        let row = &ious[di * n_truth..(di + 1) * n_truth];
        let mut best = threshold.min(1.0 - 1e-10);
        let mut found = None;
        for (gi, &iou) in row.iter().enumerate() {
            if taken[gi] || iou < best {
                continue;
            }
            best = iou;
            found = Some(gi);
        }
        *m = found.is_some();
        if let Some(gi) = found {
            taken[gi] = true;
        }
    }
}

/// One class of one labelled frame, matched: what a streaming window keeps of a labelled frame (a few bytes per
/// detection), from which any set of frames' performance is summed up exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMatch {
    pub class: String,
    /// Labelled objects of the class on the frame.
    pub truths: u32,
    /// At the settings' IoU and confidence thresholds.
    pub counts: Counts,
    /// The class's detections in confidence order (at most `max_detections`): confidence, and whether it matched
    /// at each COCO IoU threshold (bit t for 0.50 + 0.05 t).
    pub detections: Vec<(f32, u16)>,
}

/// A labelled frame's detections matched against its ground truth, class by class (sorted by class).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameMatch {
    pub classes: Vec<ClassMatch>,
}

impl FrameMatch {
    /// The frame's counts over all classes.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for m in &self.classes {
            c.add(&m.counts);
        }
        c
    }
}

/// Matches one frame's detections to its ground truth, class by class.
pub fn match_frame(frame: &LabelledFrame<'_>, settings: &PerformanceSettings) -> FrameMatch {
    let thresholds = iou_thresholds();
    let mut classes: Vec<&str> = frame
        .detections
        .iter()
        .map(|d| d.class_label.as_str())
        .chain(frame.truth.iter().map(|t| t.class_label.as_str()))
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let mut out = FrameMatch { classes: Vec::with_capacity(classes.len()) };
    let (mut ious, mut matched, mut taken, mut at_threshold) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for class in classes {
        let mut dets: Vec<&Detection> = frame.detections.iter().filter(|d| d.class_label == class).collect();
        // Stable, as numpy's mergesort in pycocotools: equal confidences keep their order.
        dets.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        dets.truncate(settings.max_detections);
        let truth: Vec<&TruthBox> = frame.truth.iter().filter(|t| t.class_label == class).collect();
        let n = truth.len();
        ious.clear();
        for d in &dets {
            ious.extend(truth.iter().map(|t| box_iou(d, t)));
        }
        matched.clear();
        matched.resize(dets.len(), false);
        taken.clear();
        taken.resize(n, false);
        let mut detections: Vec<(f32, u16)> = dets.iter().map(|d| (d.confidence, 0u16)).collect();
        for (ti, &t) in thresholds.iter().enumerate() {
            greedy_match(&ious, n, t, &mut matched, &mut taken);
            for (slot, &m) in detections.iter_mut().zip(&matched) {
                slot.1 |= u16::from(m) << ti;
            }
        }
        // Precision and recall at the configured IoU: a detection under the confidence threshold never takes a box
        // from a more confident one, so matching all and counting those above it is the same as matching only
        // those above it.
        at_threshold.clear();
        at_threshold.resize(dets.len(), false);
        greedy_match(&ious, n, settings.iou_threshold, &mut at_threshold, &mut taken);
        let mut c = Counts::default();
        for (d, &m) in dets.iter().zip(&at_threshold) {
            if d.confidence >= settings.score_threshold {
                if m {
                    c.true_positives += 1;
                } else {
                    c.false_positives += 1;
                }
            }
        }
        c.false_negatives = n as u64 - c.true_positives;
        out.classes.push(ClassMatch { class: class.to_owned(), truths: n as u32, counts: c, detections });
    }
    out
}

/// A class's detections across frames, in frame order and, within a frame, in confidence order.
#[derive(Default)]
struct ClassRun {
    truths: u64,
    dets: Vec<(f32, u16)>,
    counts: Counts,
}

/// Average precision at each COCO IoU threshold; `None` without labelled objects.
fn average_precisions(run: &mut ClassRun) -> Option<[f64; 10]> {
    if run.truths == 0 {
        return None;
    }
    // Stable: equal confidences keep frame order, as numpy's mergesort does in pycocotools.
    run.dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let recalls = recall_points();
    let npig = run.truths as f64;
    let mut aps = [0.0; 10];
    let mut precision = Vec::with_capacity(run.dets.len());
    let mut recall = Vec::with_capacity(run.dets.len());
    for (t, ap) in aps.iter_mut().enumerate() {
        precision.clear();
        recall.clear();
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        for &(_, bits) in &run.dets {
            if bits & (1 << t) != 0 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            recall.push(tp / npig);
            precision.push(tp / (fp + tp + f64::EPSILON));
        }
        // The precision envelope: at each rank, the best precision at that recall or beyond.
        for i in (1..precision.len()).rev() {
            if precision[i] > precision[i - 1] {
                precision[i - 1] = precision[i];
            }
        }
        let mut sum = 0.0;
        for &r in &recalls {
            let at = recall.partition_point(|&x| x < r);
            if at >= precision.len() {
                break;
            }
            sum += precision[at];
        }
        *ap = sum / recalls.len() as f64;
    }
    Some(aps)
}

/// The performance of a set of matched frames, in the order given (the order breaks ties in confidence, as the
/// order of images does in pycocotools).
pub fn summarize<'a>(frames: impl IntoIterator<Item = &'a FrameMatch>) -> Performance {
    let mut runs: BTreeMap<&str, ClassRun> = BTreeMap::new();
    let mut n = 0u64;
    for f in frames {
        n += 1;
        for c in &f.classes {
            let run = runs.entry(c.class.as_str()).or_default();
            run.truths += u64::from(c.truths);
            run.counts.add(&c.counts);
            run.dets.extend_from_slice(&c.detections);
        }
    }
    let mut perf = Performance { frames: n, ..Performance::default() };
    let (mut sum50, mut sum_all, mut with_truth) = (0.0, 0.0, 0usize);
    for (class, mut run) in runs {
        let aps = average_precisions(&mut run);
        if let Some(aps) = aps {
            sum50 += aps[0];
            sum_all += aps.iter().sum::<f64>() / aps.len() as f64;
            with_truth += 1;
        }
        perf.counts.add(&run.counts);
        perf.classes.insert(
            class.to_owned(),
            ClassPerformance {
                truths: run.truths,
                counts: run.counts,
                ap50: aps.map(|a| a[0]),
                ap50_95: aps.map(|a| a.iter().sum::<f64>() / a.len() as f64),
            },
        );
    }
    if with_truth > 0 {
        perf.map50 = Some(sum50 / with_truth as f64);
        perf.map50_95 = Some(sum_all / with_truth as f64);
    }
    perf
}

/// Evaluates detections against ground truth over a set of frames. Returns the performance and each frame's
/// matched counts (in the order given; what metric importance relates metrics to).
pub fn evaluate(frames: &[LabelledFrame<'_>], settings: &PerformanceSettings) -> (Performance, Vec<Counts>) {
    let matches: Vec<FrameMatch> = frames.iter().map(|f| match_frame(f, settings)).collect();
    let per_frame = matches.iter().map(FrameMatch::counts).collect();
    (summarize(&matches), per_frame)
}

/// A performance figure a model test case can judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceStatistic {
    Map50,
    Map50_95,
    Precision,
    Recall,
    F1,
}

impl PerformanceStatistic {
    pub const ALL: [PerformanceStatistic; 5] = [
        PerformanceStatistic::Map50,
        PerformanceStatistic::Map50_95,
        PerformanceStatistic::Precision,
        PerformanceStatistic::Recall,
        PerformanceStatistic::F1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PerformanceStatistic::Map50 => "map50",
            PerformanceStatistic::Map50_95 => "map50_95",
            PerformanceStatistic::Precision => "precision",
            PerformanceStatistic::Recall => "recall",
            PerformanceStatistic::F1 => "f1",
        }
    }

    pub fn from_name(name: &str) -> Option<PerformanceStatistic> {
        PerformanceStatistic::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The figure over every class, or for one class (a class's mAP is its AP); `None` where undefined.
    pub fn value(self, perf: &Performance, class: Option<&str>) -> Option<f64> {
        let (counts, map50, map50_95) = match class {
            None => (&perf.counts, perf.map50, perf.map50_95),
            Some(c) => {
                let c = perf.classes.get(c)?;
                (&c.counts, c.ap50, c.ap50_95)
            }
        };
        match self {
            PerformanceStatistic::Map50 => map50,
            PerformanceStatistic::Map50_95 => map50_95,
            PerformanceStatistic::Precision => counts.precision(),
            PerformanceStatistic::Recall => counts.recall(),
            PerformanceStatistic::F1 => counts.f1(),
        }
    }
}

/// A model test case on performance: `[class.]statistic OP number`, e.g. `map50 >= 0.6` or `car.recall >= 0.8`.
/// The test passes while the comparison holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceTest {
    pub class: Option<String>,
    pub statistic: PerformanceStatistic,
    pub op: crate::drift::Comparison,
    pub threshold: f64,
}

/// Why a performance test's text was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PerformanceTestError {
    #[error("{0:?} has no comparison (write e.g. \"map50 >= 0.6\" or \"car.recall >= 0.8\")")]
    NoComparison(String),
    #[error("{0:?} is not a performance statistic (map50, map50_95, precision, recall, f1)")]
    UnknownStatistic(String),
    #[error("{0:?} is not a number in [0, 1]")]
    BadThreshold(String),
}

impl PerformanceTest {
    pub fn parse(text: &str) -> Result<PerformanceTest, PerformanceTestError> {
        let (lhs, op, rhs) =
            crate::drift::Comparison::split(text).ok_or_else(|| PerformanceTestError::NoComparison(text.into()))?;
        let lhs = lhs.trim();
        // The class is everything before the last dot: class names may hold dots themselves.
        let (class, stat) = match lhs.rsplit_once('.') {
            Some((c, s)) if !c.is_empty() => (Some(c.to_owned()), s),
            _ => (None, lhs),
        };
        let statistic =
            PerformanceStatistic::from_name(stat).ok_or_else(|| PerformanceTestError::UnknownStatistic(stat.into()))?;
        let threshold: f64 = rhs.trim().parse().map_err(|_| PerformanceTestError::BadThreshold(rhs.trim().into()))?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PerformanceTestError::BadThreshold(rhs.trim().into()));
        }
        Ok(PerformanceTest { class, statistic, op, threshold })
    }

    /// The judged figure, and whether the test passes; `None` when the figure is undefined on these frames.
    pub fn judge(&self, perf: &Performance) -> Option<(f64, bool)> {
        let v = self.statistic.value(perf, self.class.as_deref())?;
        Some((v, self.op.holds(v, self.threshold)))
    }
}

impl std::fmt::Display for PerformanceTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.class {
            write!(f, "{c}.")?;
        }
        write!(f, "{} {} {}", self.statistic.name(), self.op.symbol(), self.threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pycocotools' precision is TP / (TP + FP + machine epsilon), so a perfect score is 1 - 2e-16.
    fn about(v: Option<f64>, want: f64) -> bool {
        v.is_some_and(|v| (v - want).abs() < 1e-12)
    }

    fn det(x0: f32, y0: f32, x1: f32, y1: f32, class: &str, confidence: f32) -> Detection {
        Detection {
            x_min: x0,
            y_min: y0,
            x_max: x1,
            y_max: y1,
            class_label: class.into(),
            confidence,
            class_probabilities: vec![],
        }
    }

    fn truth(x0: f32, y0: f32, x1: f32, y1: f32, class: &str) -> TruthBox {
        TruthBox { x_min: x0, y_min: y0, x_max: x1, y_max: y1, class_label: class.into() }
    }

    #[test]
    fn perfect_detections_score_one_everywhere() {
        let d = [det(0.1, 0.1, 0.4, 0.4, "car", 0.9), det(0.5, 0.5, 0.9, 0.8, "person", 0.7)];
        let t = [truth(0.1, 0.1, 0.4, 0.4, "car"), truth(0.5, 0.5, 0.9, 0.8, "person")];
        let (p, frames) = evaluate(&[LabelledFrame { detections: &d, truth: &t }], &PerformanceSettings::default());
        assert!(about(p.map50, 1.0) && about(p.map50_95, 1.0), "{p:?}");
        assert_eq!(p.counts, Counts { true_positives: 2, false_positives: 0, false_negatives: 0 });
        assert_eq!(frames[0].f1(), Some(1.0));
    }

    #[test]
    fn a_missed_object_halves_recall_and_a_stray_box_costs_precision() {
        let d = [det(0.1, 0.1, 0.4, 0.4, "car", 0.9), det(0.6, 0.0, 0.7, 0.1, "car", 0.8)];
        let t = [truth(0.1, 0.1, 0.4, 0.4, "car"), truth(0.5, 0.5, 0.9, 0.8, "car")];
        let (p, _) = evaluate(&[LabelledFrame { detections: &d, truth: &t }], &PerformanceSettings::default());
        assert_eq!(p.counts, Counts { true_positives: 1, false_positives: 1, false_negatives: 1 });
        assert_eq!(p.counts.precision(), Some(0.5));
        assert_eq!(p.counts.recall(), Some(0.5));
        // Ranked: a hit then a miss, recall reaches 0.5 at precision 1: 51 of 101 recall points.
        assert!(about(p.map50, 51.0 / 101.0), "{p:?}");
    }

    #[test]
    fn the_confidence_threshold_drops_weak_detections_from_precision_not_from_map() {
        let d = [det(0.1, 0.1, 0.4, 0.4, "car", 0.3)];
        let t = [truth(0.1, 0.1, 0.4, 0.4, "car")];
        let (p, _) = evaluate(&[LabelledFrame { detections: &d, truth: &t }], &PerformanceSettings::default());
        assert_eq!(p.counts, Counts { true_positives: 0, false_positives: 0, false_negatives: 1 });
        assert_eq!(p.counts.precision(), None);
        assert!(about(p.map50, 1.0), "{p:?}");
    }

    #[test]
    fn classes_without_ground_truth_count_as_false_positives_but_not_in_map() {
        let d = [det(0.1, 0.1, 0.4, 0.4, "car", 0.9), det(0.5, 0.5, 0.6, 0.6, "dog", 0.9)];
        let t = [truth(0.1, 0.1, 0.4, 0.4, "car")];
        let (p, _) = evaluate(&[LabelledFrame { detections: &d, truth: &t }], &PerformanceSettings::default());
        assert!(about(p.map50, 1.0), "{p:?}");
        assert_eq!(p.classes["dog"].ap50, None);
        assert_eq!(p.counts.false_positives, 1);
    }

    #[test]
    fn frames_with_nothing_to_find_and_nothing_found_have_no_f1_and_no_map() {
        let (p, frames) = evaluate(&[LabelledFrame { detections: &[], truth: &[] }], &PerformanceSettings::default());
        assert_eq!(p.frames, 1);
        assert_eq!(p.map50, None);
        assert_eq!(frames[0].f1(), None);
    }

    #[test]
    fn performance_tests_parse_and_judge_overall_and_per_class() {
        let t = PerformanceTest::parse("map50 >= 0.6").expect("overall");
        assert_eq!((t.class.as_deref(), t.statistic), (None, PerformanceStatistic::Map50));
        let car = PerformanceTest::parse("traffic.car.recall>=0.8").expect("class with a dot");
        assert_eq!(car.class.as_deref(), Some("traffic.car"));
        assert_eq!(car.to_string(), "traffic.car.recall >= 0.8");
        assert!(matches!(PerformanceTest::parse("psi > 1"), Err(PerformanceTestError::UnknownStatistic(_))));
        assert!(matches!(PerformanceTest::parse("f1 > 2"), Err(PerformanceTestError::BadThreshold(_))));
        assert!(matches!(PerformanceTest::parse("f1"), Err(PerformanceTestError::NoComparison(_))));

        let d = [det(0.1, 0.1, 0.4, 0.4, "traffic.car", 0.9)];
        let t2 = [truth(0.1, 0.1, 0.4, 0.4, "traffic.car"), truth(0.5, 0.5, 0.9, 0.9, "traffic.car")];
        let (p, _) = evaluate(&[LabelledFrame { detections: &d, truth: &t2 }], &PerformanceSettings::default());
        assert_eq!(car.judge(&p), Some((0.5, false)));
        assert_eq!(PerformanceTest::parse("bus.recall >= 0.5").expect("parse").judge(&p), None);
        let (v, pass) = PerformanceTest::parse("precision >= 0.9").expect("parse").judge(&p).expect("defined");
        assert_eq!((v, pass), (1.0, true));
    }

    #[test]
    fn labels_out_of_range_are_refused_with_a_reason() {
        let bad = [truth(0.5, 0.1, 0.4, 0.4, "car")];
        assert_eq!(validate_truth(&bad, 10).expect_err("min > max").reason(), "invalid_label_box");
        let nan = [truth(f32::NAN, 0.1, 0.4, 0.4, "car")];
        assert_eq!(validate_truth(&nan, 10).expect_err("nan").reason(), "invalid_label_box");
        let many = vec![truth(0.1, 0.1, 0.2, 0.2, "car"); 11];
        assert_eq!(validate_truth(&many, 10).expect_err("too many").reason(), "too_many_labels");
        let long = [truth(0.1, 0.1, 0.2, 0.2, &"x".repeat(MAX_CLASS_LABEL_BYTES + 1))];
        assert_eq!(validate_truth(&long, 10).expect_err("long class").reason(), "invalid_label_class");
        assert!(validate_truth(&[truth(0.0, 0.0, 1.0, 1.0, "car")], 10).is_ok());
    }
}

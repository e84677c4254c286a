//! Detection performance against pycocotools (fixtures/reference/coco.json from
//! scripts/reference/make_coco_fixtures.py): mAP@0.5, mAP@[.5:.95] and per-class AP to 1e-6 (the same
//! computation in another language: only the order of float sums differs), and true/false positives and false
//! negatives at IoU 0.5 and the case's confidence threshold exactly, on crowded frames, empty frames, classes only
//! detected or only labelled, ties in confidence, overlaps exactly at a threshold and over 100 detections a class;
//! and metric importance's statistics against scipy's `spearmanr` and scikit-learn's `mutual_info_score` (to 1e-9).

mod common;

use framewatch_metrics::Detection;
use framewatch_metrics::importance::{mutual_information, quantile_bins, spearman};
use framewatch_metrics::performance::{LabelledFrame, PerformanceSettings, TruthBox, evaluate};

fn boxed(v: &serde_json::Value) -> [f32; 4] {
    let b = v["box"].as_array().expect("box");
    std::array::from_fn(|i| b[i].as_f64().expect("coordinate") as f32)
}

fn frames(case: &serde_json::Value) -> Vec<(Vec<Detection>, Vec<TruthBox>)> {
    let frames = case["frames"].as_array().expect("frames");
    frames
        .iter()
        .map(|f| {
            let dets = f["detections"].as_array().expect("detections");
            let truth = f["truth"].as_array().expect("truth");
            (
                dets.iter()
                    .map(|d| {
                        let [x_min, y_min, x_max, y_max] = boxed(d);
                        Detection {
                            x_min,
                            y_min,
                            x_max,
                            y_max,
                            class_label: d["class"].as_str().expect("class").into(),
                            confidence: d["confidence"].as_f64().expect("confidence") as f32,
                            class_probabilities: vec![],
                        }
                    })
                    .collect(),
                truth
                    .iter()
                    .map(|t| {
                        let [x_min, y_min, x_max, y_max] = boxed(t);
                        TruthBox { x_min, y_min, x_max, y_max, class_label: t["class"].as_str().expect("class").into() }
                    })
                    .collect(),
            )
        })
        .collect()
}

fn close(got: Option<f64>, want: &serde_json::Value, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-6, "{what}: framewatch {g}, pycocotools {w}"),
        (g, w) => panic!("{what}: framewatch {g:?}, pycocotools {w:?}"),
    }
}

#[test]
fn map_precision_and_recall_match_pycocotools() {
    let fixture = common::read_json("reference/coco.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let data = frames(case);
        let labelled: Vec<LabelledFrame<'_>> =
            data.iter().map(|(d, t)| LabelledFrame { detections: d, truth: t }).collect();
        let settings = PerformanceSettings {
            score_threshold: case["score_threshold"].as_f64().expect("threshold") as f32,
            ..PerformanceSettings::default()
        };
        let (perf, per_frame) = evaluate(&labelled, &settings);
        let want = &case["expected"];
        assert!(perf.map50.is_some(), "{name}: every case has labelled objects");
        close(perf.map50, &want["map50"], &format!("{name}: map50"));
        close(perf.map50_95, &want["map50_95"], &format!("{name}: map50_95"));
        let count = |k: &str| want[k].as_u64().expect("count");
        assert_eq!(perf.counts.true_positives, count("true_positives"), "{name}: true positives");
        assert_eq!(perf.counts.false_positives, count("false_positives"), "{name}: false positives");
        assert_eq!(perf.counts.false_negatives, count("false_negatives"), "{name}: false negatives");
        let classes = want["classes"].as_object().expect("classes");
        assert_eq!(perf.classes.len(), classes.len(), "{name}: classes");
        for (class, w) in classes {
            let got = &perf.classes[class];
            close(got.ap50, &w["ap50"], &format!("{name}/{class}: ap50"));
            close(got.ap50_95, &w["ap50_95"], &format!("{name}/{class}: ap50_95"));
            assert_eq!(got.truths, w["truths"].as_u64().expect("truths"), "{name}/{class}: truths");
            assert_eq!(got.counts.true_positives, w["true_positives"].as_u64().expect("tp"), "{name}/{class}: tp");
            assert_eq!(got.counts.false_positives, w["false_positives"].as_u64().expect("fp"), "{name}/{class}: fp");
            assert_eq!(got.counts.false_negatives, w["false_negatives"].as_u64().expect("fn"), "{name}/{class}: fn");
        }
        // Per-frame counts add up to the totals: what metric importance relates to each frame's metrics.
        let tp: u64 = per_frame.iter().map(|c| c.true_positives).sum();
        let fn_: u64 = per_frame.iter().map(|c| c.false_negatives).sum();
        assert_eq!((tp, fn_), (perf.counts.true_positives, perf.counts.false_negatives), "{name}: per frame");
    }
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

#[test]
fn importance_statistics_match_scipy_and_scikit_learn() {
    let fixture = common::read_json("reference/importance.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (x, y) = (floats(&case["x"]), floats(&case["y"]));
        let bins = case["bins"].as_u64().expect("bins") as usize;
        let rho = spearman(&x, &y).expect("defined");
        let want = case["spearman"].as_f64().expect("spearman");
        assert!((rho - want).abs() <= 1e-9, "{name}: spearman {rho}, scipy {want}");
        let mi = mutual_information(&quantile_bins(&x, bins), &quantile_bins(&y, bins));
        let want = case["mutual_information"].as_f64().expect("mi");
        assert!((mi - want).abs() <= 1e-9, "{name}: mutual information {mi}, scikit-learn {want}");
    }
}

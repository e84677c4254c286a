//! `framewatch evaluate` driven as a CI job would: the synthetic fleet knows where its objects are, so it gives
//! ground truth; one camera is dark and its model misses most objects while staying confident. The model test case
//! on the dark scenario must fail on performance (exit code 3) while the clean camera's passes, and metric importance
//! must name brightness as what explains the misses.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use framewatch_e2e::{between, chromium, root, scratch};
use framewatch_synth::{Camera, Drift};

fn framewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framewatch")).args(args).current_dir(root()).output().expect("run framewatch")
}

/// Writes `frames` JPEGs of one camera under `dir/<camera>/`, and its predictions and (for two frames in three)
/// ground-truth lines. Returns how many frames got labels.
fn write_camera(dir: &Path, cam: &mut Camera, frames: usize, preds: &mut String, labels: &mut String) -> usize {
    let sub = dir.join(&cam.id);
    std::fs::create_dir_all(&sub).expect("mkdir");
    let mut jpeg = Vec::new();
    let mut labelled = 0;
    for i in 0..frames {
        let dets = cam.next_frame(&mut jpeg);
        let rel = format!("{}/f{i:03}.jpg", cam.id);
        std::fs::write(dir.join(&rel), &jpeg).expect("write frame");
        let dets: Vec<serde_json::Value> = dets
            .iter()
            .map(|d| {
                serde_json::json!({"x_min": d.x_min, "y_min": d.y_min, "x_max": d.x_max, "y_max": d.y_max,
                    "class": d.class, "confidence": d.confidence})
            })
            .collect();
        writeln!(preds, "{}", serde_json::json!({"path": rel, "detections": dets})).expect("fmt");
        if i % 3 != 2 {
            let objects: Vec<serde_json::Value> = cam
                .truth()
                .iter()
                .map(|t| {
                    serde_json::json!({"x_min": t.x_min, "y_min": t.y_min, "x_max": t.x_max, "y_max": t.y_max,
                        "class": t.class})
                })
                .collect();
            writeln!(labels, "{}", serde_json::json!({"path": rel, "objects": objects})).expect("fmt");
            labelled += 1;
        }
    }
    labelled
}

#[test]
fn a_model_failing_on_dark_frames_fails_its_test_case_on_map_and_importance_names_brightness() {
    let dir = scratch("evaluate");
    let (mut preds, mut labels) = (String::new(), String::new());
    let mut clean = Camera::new("cam-clean", 320, 180, 21);
    let mut dark = Camera::new("cam-dark", 320, 180, 22);
    dark.drifts = vec![Drift::Darken(0.3), Drift::MissObjects(0.7)];
    let mut labelled = write_camera(&dir, &mut clean, 60, &mut preds, &mut labels);
    labelled += write_camera(&dir, &mut dark, 60, &mut preds, &mut labels);
    // Bad input is refused by reason and counted, not fatal: a box out of range, and a frame that does not exist.
    labels.push_str(r#"{"path": "cam-clean/missing.jpg", "objects": []}"#);
    labels.push('\n');
    labels.push_str(r#"{"path": "cam-clean/f002.jpg", "objects": [{"x_min": 0.5, "y_min": 0.1, "x_max": 1.5, "y_max": 0.2, "class": "car"}]}"#);
    labels.push('\n');
    std::fs::write(dir.join("predictions.jsonl"), &preds).expect("write");
    std::fs::write(dir.join("labels.jsonl"), &labels).expect("write");

    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let args = |json: bool| {
        let mut a = vec![
            "evaluate".to_string(),
            // The directory: its files are named as the JSON lines name them, relative to it (cam-dark/f000.jpg).
            dir.to_string_lossy().into_owned(),
            "--slice-dimension".into(),
            "camera_id".into(),
            "--predictions".into(),
            d("predictions.jsonl"),
            "--labels".into(),
            d("labels.jsonl"),
            "--predicate".into(),
            "dark=brightness < 0.25".into(),
            "--predicate".into(),
            "dark_and_soft=brightness < 0.25 and sharpness < 1".into(),
            "--test".into(),
            "map50 >= 0.6 in predicate=dark".into(),
            "--test".into(),
            "map50 >= 0.9 in predicate=dark_and_soft".into(),
            "--test".into(),
            "map50 >= 0.9 in camera_id=cam-clean".into(),
            "--test".into(),
            "recall >= 0.9".into(),
            "--test".into(),
            "precision >= 0.9".into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let run = |json: bool| {
        let a = args(json);
        framewatch(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run(true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "a failing test case exits 3: {err}");
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(rep["frames_scored"], 120);
    assert_eq!(rep["frames_labelled"], labelled as u64, "{rep:#}");
    assert_eq!(rep["labels_refused"]["invalid_label_box"], 1);
    assert_eq!(rep["labels_unmatched"], 1);

    let slice = |name: &str| {
        rep["slices"].as_array().expect("slices").iter().find(|s| s["slice"] == name).cloned().expect(name)
    };
    let dark_slice = slice("predicate=dark");
    assert_eq!(dark_slice["frames"], 60, "the dark predicate holds on the dark camera's frames: {dark_slice:#}");
    let dark_map = dark_slice["performance"]["map50"].as_f64().expect("map50");
    let clean = slice("camera_id=cam-clean");
    assert_eq!(clean["frames"], 60);
    assert!(dark_map < 0.5, "most objects missed in the dark: map50 {dark_map}");
    // A missing model keeps its precision: what it reports is right; recall is what falls.
    let dark_perf = &dark_slice["performance"]["counts"];
    assert_eq!(dark_perf["false_positives"], 0, "{dark_perf}");
    assert!(clean["performance"]["map50"].as_f64().expect("map") > 0.9, "{clean:#}");

    let tests = rep["tests"].as_array().expect("tests");
    let outcome = |i: usize| tests[i]["outcome"].as_str().expect("outcome");
    assert_eq!(outcome(0), "fail", "{:#}", tests[0]);
    assert_eq!(tests[0]["value"].as_f64(), Some(dark_map));
    assert_eq!(outcome(1), "fail", "the conjunction slice holds the same frames: {:#}", tests[1]);
    assert_eq!(outcome(2), "pass", "the clean camera passes: {:#}", tests[2]);
    assert_eq!(outcome(3), "fail", "fleet-wide recall suffers too: {:#}", tests[3]);
    assert_eq!(outcome(4), "pass", "fleet-wide precision does not: {:#}", tests[4]);

    // Importance: brightness explains the misses (higher brightness, higher F1); the blank-ish metrics do not.
    let imp = rep["importance"].as_array().expect("importance");
    let top: Vec<&str> = imp.iter().take(5).map(|m| m["metric"].as_str().expect("metric")).collect();
    let b = imp.iter().find(|m| m["metric"] == "brightness").expect("brightness");
    assert!(top.contains(&"brightness"), "brightness among the five most important: {top:?}");
    assert!(b["f1_spearman"].as_f64().expect("rho") > 0.5, "{b:#}");
    let buckets = b["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 5);
    let f1 = |k: &serde_json::Value| {
        let c = &k["counts"];
        let tp = c["true_positives"].as_f64().expect("tp");
        2.0 * tp / (2.0 * tp + c["false_positives"].as_f64().expect("fp") + c["false_negatives"].as_f64().expect("fn"))
    };
    assert!(f1(&buckets[0]) < f1(&buckets[4]), "performance by brightness rises: {buckets:#?}");

    // The table a person reads says the same, and so does the HTML report, as a browser renders it.
    let page = dir.join("evaluation.html");
    let mut a = args(false);
    a.extend(["--html".to_string(), page.to_string_lossy().into_owned()]);
    let o = framewatch(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(3));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("FAIL       map50 >= 0.6 in predicate=dark"), "{text}");
    assert!(text.contains("PASS       precision >= 0.9 in global"), "{text}");
    assert!(text.contains("Metric importance"), "{text}");

    let html = std::fs::read_to_string(&page).expect("report written");
    assert!(!html.contains("<script") && !html.contains("href") && !html.contains("url("), "self-contained");
    let o = chromium(&dir.join("profile"), &page, &["--dump-dom"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8_lossy(&o.stdout);
    let gate = between(&dom, "id=\"gate\"", "</p>").expect("gate banner");
    assert!(gate.contains("3 of 5 model test cases fail (exit code 3)"), "{gate}");
    let row = between(&dom, "data-test=\"map50 &gt;= 0.6\">", "</tr>").expect("test row");
    assert!(row.contains("predicate=dark") && row.contains(">FAIL<"), "{row}");
    assert!(row.contains(&format!("{dark_map:.3}")), "the JSON's value: {row}");
    let slice_row = between(&dom, "data-slice=\"camera_id=cam-clean\">", "</tr>").expect("slice row");
    let page_map = between(slice_row, "<td class=\"map50\">", "</td>").expect("map cell");
    let json_map = clean["performance"]["map50"].as_f64().expect("map");
    assert_eq!(page_map, format!("{json_map:.3}"));
    // One importance bar per metric with a rho, brightness's pointing right; a bucket chart with 5 bars.
    let with_rho = imp.iter().filter(|m| m["f1_spearman"].is_number()).count();
    assert_eq!(dom.matches("<rect class=\"imp ").count(), with_rho);
    assert!(dom.contains("<rect class=\"imp pos\" data-metric=\"brightness\""), "brightness bar");
    let chart = between(&dom, "<figure class=\"chart\" data-metric=\"brightness\">", "</figure>")
        .expect("performance by brightness");
    assert_eq!(chart.matches("<rect class=\"bucket\"").count(), 5);

    // A picture for people: target/e2e/evaluation-report.png.
    let shot = root().join("target/e2e/evaluation-report.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(
        &dir.join("profile"),
        &page,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1800", "--hide-scrollbars"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    let mut img = framewatch_metrics::RgbImage::default();
    framewatch_metrics::decode::decode_into(&png, &Default::default(), &mut img).expect("screenshot is a PNG");
    assert_eq!((img.width, img.height), (1280, 1800));
}

#[test]
fn evaluate_refuses_bad_tests_predicates_and_label_files_with_the_culprit() {
    let dir = scratch("evaluate-bad");
    std::fs::copy(root().join("fixtures/images/building.jpg"), dir.join("a.jpg")).expect("copy");
    std::fs::write(dir.join("labels.jsonl"), "{\"path\": \"a.jpg\", \"objects\": []}\n").expect("write");
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let base = ["evaluate".to_string(), d("a.jpg"), "--labels".into(), d("labels.jsonl")];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.iter().map(String::as_str).collect();
        a.extend_from_slice(extra);
        framewatch(&a)
    };
    let msg = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let o = with(&["--test", "psi > 0.2"]);
    assert!(!o.status.success() && msg(&o).contains("not a performance statistic"), "{}", msg(&o));
    let o = with(&["--test", "map50 >= 0.6 in predicate=night"]);
    assert!(!o.status.success() && msg(&o).contains("no --predicate defines predicate=night"), "{}", msg(&o));
    let o = with(&["--predicate", "night=glow < 3"]);
    assert!(!o.status.success() && msg(&o).contains("unknown metric \"glow\""), "{}", msg(&o));
    std::fs::write(dir.join("broken.jsonl"), "{\"path\": \"a.jpg\"}\n").expect("write");
    let o = framewatch(&["evaluate", &d("a.jpg"), "--labels", &d("broken.jsonl")]);
    assert!(!o.status.success() && msg(&o).contains("broken.jsonl:1: not a labels line"), "{}", msg(&o));
    // One labelled frame is below the default minimum: no verdict, and no failure.
    let o = with(&["--test", "map50 >= 0.6", "--json"]);
    assert!(o.status.success(), "{}", msg(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(rep["tests"][0]["outcome"], "no_verdict", "{rep:#}");
}

/// The `framewatch` fingerprint of `examples/baseline.json` loaded and written again (`Baseline::to_json`), as
/// framewatch wrote it before baselines could hold labels (main at cd43c51). The service's checkpoint
/// compatibility fingerprint hashes this text: a change here would make every checkpoint of an old baseline
/// incompatible.
const EXAMPLE_BASELINE_TO_JSON_FINGERPRINT: u64 = 0x331c_321c_42bb_2bcb;

#[test]
fn an_old_baseline_without_labels_writes_the_same_bytes_as_before() {
    let text = std::fs::read_to_string(root().join("examples/baseline.json")).expect("example baseline");
    let b = framewatch_metrics::Baseline::from_json(&text).expect("an old baseline loads");
    assert!(b.performance.is_none() && b.label_metrics.is_empty());
    let json = b.to_json();
    assert_eq!(framewatch::fingerprint::fingerprint(json.as_bytes()), EXAMPLE_BASELINE_TO_JSON_FINGERPRINT, "{json}");
}

/// `baseline build --labels` on the synthetic fleet records the validation set's performance, fleet-wide and per
/// camera, exactly as `evaluate --json` reports it on the same files, and the label quality distributions; the
/// rest of the baseline is what a build without labels writes.
#[test]
fn baseline_build_with_labels_records_the_performance_evaluate_reports() {
    let dir = scratch("baseline-labels");
    let (mut preds, mut labels) = (String::new(), String::new());
    let mut clean = Camera::new("cam-clean", 160, 90, 31);
    let mut dark = Camera::new("cam-dark", 160, 90, 32);
    dark.drifts = vec![Drift::Darken(0.3), Drift::MissObjects(0.7)];
    // 45 frames a camera: 30 labelled each, enough for a slice's own label reference (MIN_SLICE_FRAMES).
    let mut labelled = write_camera(&dir, &mut clean, 45, &mut preds, &mut labels);
    labelled += write_camera(&dir, &mut dark, 45, &mut preds, &mut labels);
    labels.push_str(r#"{"path": "cam-dark/f002.jpg", "objects": [{"x_min": 0.5, "y_min": 0.1, "x_max": 1.5, "y_max": 0.2, "class": "car"}]}"#);
    labels.push('\n');
    labels.push_str(r#"{"path": "cam-dark/missing.jpg", "objects": []}"#);
    labels.push('\n');
    std::fs::write(dir.join("predictions.jsonl"), &preds).expect("write");
    std::fs::write(dir.join("labels.jsonl"), &labels).expect("write");
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    // The directory: its images are named as the JSON lines name them; the JSON files in it are not walked.
    let frames = dir.to_string_lossy().into_owned();
    let common = ["--slice-dimension", "camera_id", "--predictions", &d("predictions.jsonl"), "--threads", "2"];

    let build = |out: &str, extra: &[&str]| {
        let mut a = vec!["baseline", "build", frames.as_str(), "-o", out];
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        let o = framewatch(&a);
        assert!(o.status.success(), "baseline build: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out).expect("baseline written");
        (String::from_utf8_lossy(&o.stderr).into_owned(), text)
    };
    let (stderr, with_labels) = build(&d("labelled.json"), &["--labels", &d("labels.jsonl")]);
    assert!(stderr.contains("1 refused (invalid_label_box: 1), 1 matched no frame"), "{stderr}");
    let (_, plain) = build(&d("plain.json"), &[]);

    let labels_path = d("labels.jsonl");
    let mut a = vec!["evaluate", frames.as_str(), "--labels", &labels_path, "--json", "--min-labelled", "1"];
    a.extend_from_slice(&common);
    let baseline_arg = d("labelled.json");
    a.extend(["--baseline", baseline_arg.as_str()]);
    let o = framewatch(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let b: serde_json::Value = serde_json::from_str(&with_labels).expect("json baseline");

    assert_eq!(b["provenance"]["frames_labelled"], labelled as u64);
    assert_eq!(rep["frames_labelled"], labelled as u64);
    assert_eq!(b["provenance"]["labels_refused"]["invalid_label_box"], 1);
    let perf = &b["performance"];
    assert_eq!(perf["settings"], rep["settings"]);
    let slice = |name: &str| {
        rep["slices"].as_array().expect("slices").iter().find(|s| s["slice"] == name).cloned().expect(name)
    };
    assert_eq!(perf["global"], slice("global")["performance"], "fleet-wide performance as evaluate reports it");
    for cam in ["camera_id=cam-clean", "camera_id=cam-dark"] {
        let s = slice(cam);
        assert_eq!(perf["slices"][cam], s["performance"], "{cam}");
        assert_eq!(s["baseline_performance"], s["performance"], "evaluate shows the baseline's next to it");
        assert_eq!(s["baseline_reference"], cam);
    }
    assert!(
        perf["slices"]["camera_id=cam-dark"]["map50"].as_f64()
            < perf["slices"]["camera_id=cam-clean"]["map50"].as_f64(),
        "the dark camera's misses are in its baseline performance: {perf:#}"
    );

    // Label quality: four metrics, fleet-wide and per camera; evaluate shows the same numbers next to the baseline's.
    let names = ["label_object_count", "label_duplicates", "label_border_closeness", "label_relative_area"];
    for name in names {
        let m = &b["label_metrics"][name];
        assert!(m["n"].as_u64() > Some(0), "{name}: {m}");
        assert!(b["slices"]["camera_id=cam-dark"]["label_metrics"][name].is_object(), "{name} per camera");
        assert!(b["metrics"].get(name).is_none(), "label metrics stay out of `metrics`");
    }
    let lm = rep["label_metrics"].as_array().expect("label metrics");
    let got: Vec<&str> = lm.iter().map(|m| m["metric"].as_str().expect("name")).collect();
    assert_eq!(got, names);
    for m in lm {
        let name = m["metric"].as_str().expect("name");
        let (mean, base) = (m["mean"].as_f64().expect("mean"), m["baseline_mean"].as_f64().expect("baseline mean"));
        assert!((mean - base).abs() < 1e-12, "{name}: same frames, same mean: {m}");
    }

    // The HTML report shows the same: the baseline's row under each camera, and the label quality table.
    let page = d("with-baseline.html");
    a.extend(["--html", page.as_str()]);
    let o = framewatch(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&page).expect("report written");
    let row = between(&html, "data-baseline-for=\"camera_id=cam-dark\">", "</tr>").expect("baseline row");
    let map = slice("camera_id=cam-dark")["baseline_performance"]["map50"].as_f64().expect("map50");
    assert!(row.contains(&format!("<td class=\"map50\">{map:.3}</td>")), "{row}");
    let count = between(&html, "data-label-metric=\"label_object_count\">", "</tr>").expect("label metric row");
    let mean = lm[0]["mean"].as_f64().expect("mean");
    assert!(count.contains(&format!("<td class=\"mean\">{mean:.3}</td>")), "{count}");

    // Without labels the baseline is as before; with them, only the label fields are added.
    assert!(framewatch_metrics::Baseline::from_json(&plain).is_ok());
    let strip = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).expect("json");
        let o = v.as_object_mut().expect("object");
        o.remove("performance");
        o.remove("label_metrics");
        let p = o["provenance"].as_object_mut().expect("provenance");
        for k in ["created_at", "frames_labelled", "labels_refused"] {
            p.remove(k);
        }
        for s in o["slices"].as_object_mut().expect("slices").values_mut() {
            s.as_object_mut().expect("slice").remove("label_metrics");
        }
        v
    };
    for field in ["performance", "label_metrics", "frames_labelled", "labels_refused"] {
        assert!(!plain.contains(field), "{field} in a baseline built without labels");
    }
    assert_eq!(strip(&with_labels), strip(&plain));
    let reloaded = framewatch_metrics::Baseline::from_json(&plain).expect("loads").to_json() + "\n";
    assert_eq!(reloaded, plain, "a baseline without labels reads back byte for byte");
}

//! The `framewatch` binary driven as a user would: score, baseline build, drift, exit codes and error messages.
//! Uses the committed example frames (examples/train = baseline, examples/night = darker, softer, less sure model).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use framewatch_e2e::{root, scratch};

fn framewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framewatch")).args(args).current_dir(root()).output().expect("run framewatch")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn build_baseline(dir: &Path) -> PathBuf {
    let out = dir.join("baseline.json");
    let o = framewatch(&[
        "baseline",
        "build",
        "examples/train",
        "--predictions",
        "examples/train.jsonl",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "baseline build failed: {}", stderr(&o));
    assert!(stderr(&o).contains("144 scored, 0 rejected"), "{}", stderr(&o));
    out
}

#[test]
fn score_writes_one_json_line_per_frame_and_reports_bad_files() {
    let dir = scratch("cli-score");
    std::fs::copy(root().join("fixtures/images/building.jpg"), dir.join("good.jpg")).expect("copy");
    let bytes = std::fs::read(root().join("fixtures/images/fruits.jpg")).expect("read");
    std::fs::write(dir.join("cut.jpg"), &bytes[..bytes.len() / 3]).expect("write");
    std::fs::write(dir.join("notes.png"), b"this is not a png").expect("write");
    std::fs::write(dir.join("readme.txt"), b"ignored: not an image extension").expect("write");
    let o = framewatch(&["score", dir.to_str().expect("utf8"), "--format", "jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&o));
    let by_name = |n: &str| lines.iter().find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(n))).expect(n);
    let good = by_name("good.jpg");
    assert_eq!(good["width"], 868);
    assert_eq!(good["height"], 600);
    let m = good["metrics"].as_object().expect("metrics");
    assert!(m.len() >= 34 && m.contains_key("redness") && m.contains_key("brightness"));
    assert!(m["brightness"].as_f64().is_some_and(|b| b > 0.3 && b < 0.8));
    assert!(good["perceptual_hash"].as_str().is_some_and(|h| h.len() == 16));
    assert_eq!(by_name("cut.jpg")["error"]["kind"], "truncated_image", "{}", stdout(&o));
    assert_eq!(by_name("notes.png")["error"]["kind"], "unsupported_format");
    assert!(stderr(&o).contains("1 scored, 2 rejected"), "{}", stderr(&o));
}

#[test]
fn score_table_shows_selected_metrics_and_rejects_unknown_ones() {
    let o = framewatch(&["score", "fixtures/images/building.jpg", "--metrics", "brightness,redness"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().next().is_some_and(|h| h.contains("brightness") && h.contains("redness")), "{out}");
    let o = framewatch(&["score", "fixtures/images/building.jpg", "--metrics", "brightnes"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown metric \"brightnes\"") && stderr(&o).contains("brightness"));
}

#[test]
fn baseline_then_drift_finds_the_night_shift_and_gates_ci() {
    let dir = scratch("cli-drift");
    let baseline = build_baseline(&dir);
    let text = std::fs::read_to_string(&baseline).expect("baseline");
    let b: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(b["format"], "framewatch-baseline");
    assert_eq!(b["version"], 1);
    assert_eq!(b["provenance"]["frames_scored"], 144);
    assert_eq!(b["settings"]["analysis"]["max_side"], 1280);
    assert!(b["metrics"]["redness"]["edges"].as_array().is_some_and(|e| e.len() > 50));
    assert!(b["categoricals"]["class"]["car"].as_u64().is_some_and(|c| c > 100));

    let bpath = baseline.to_str().expect("utf8");
    let drift = |set: &str, extra: &[&str]| {
        let mut args = vec!["drift", "--baseline", bpath, set, "--json"];
        let preds = format!("{set}.jsonl");
        args.extend(["--predictions", preds.as_str()]);
        args.extend(extra);
        let o = framewatch(&args);
        (o.status.code(), serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap_or_default(), stderr(&o))
    };
    let (code, night, err) = drift("examples/night", &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(night["verdict"], "drift");
    assert_eq!(night["frames"]["scored"], 120);
    for m in ["brightness", "sharpness", "contrast", "confidence_mean", "redness"] {
        assert_eq!(night["metrics"][m]["drift"], true, "{m}: {}", night["metrics"][m]);
    }
    assert!(night["metrics"]["brightness"]["mean"].as_f64() < night["metrics"]["brightness"]["baseline_mean"].as_f64());
    for m in ["width", "height", "area"] {
        assert_eq!(night["metrics"][m]["drift"], false, "{m}");
    }
    assert_eq!(night["categoricals"]["class"]["drift"], true);
    for key in ["n", "mean", "baseline_mean", "psi", "ks_statistic", "ks_p_value", "js_distance", "wasserstein_norm"] {
        assert!(night["metrics"]["brightness"].get(key).is_some(), "missing {key}");
    }

    // the training frames themselves do not drift from their own baseline
    let (code, same, _) = drift("examples/train", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(same["verdict"], "ok");
    assert_eq!(same["metrics"]["brightness"]["psi"], 0.0);

    // --fail-on: a data gate and a model test case
    let (code, rep, _) = drift("examples/night", &["--fail-on", "brightness.psi>0.25"]);
    assert_eq!(code, Some(3));
    assert_eq!(rep["rule_failures"][0]["metric"], "brightness");
    let (code, _, _) = drift("examples/night", &["--fail-on", "width.psi>0.25,height.ks_statistic>0.1"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = drift("examples/night", &["--fail-on", "confidence_mean.mean<0.7"]);
    assert_eq!(code, Some(3), "model test case: mean confidence at night is below 0.7");
    let (code, _, _) = drift("examples/train", &["--fail-on", "confidence_mean.mean<0.7,drift"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = drift("examples/night", &["--fail-on", "drift"]);
    assert_eq!(code, Some(3));

    // the table form carries the verdict too
    let o = framewatch(&["drift", "--baseline", bpath, "examples/night"]);
    assert!(stdout(&o).contains("verdict: DRIFT"), "{}", stdout(&o));
}

#[test]
fn drift_refuses_other_analysis_settings_bad_rules_and_broken_baselines() {
    let dir = scratch("cli-refuse");
    let baseline = build_baseline(&dir);
    let bpath = baseline.to_str().expect("utf8");
    let o = framewatch(&["drift", "--baseline", bpath, "examples/night", "--max-side", "128"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("analysis settings differ"), "{}", stderr(&o));

    let o = framewatch(&["drift", "--baseline", bpath, "examples/night", "--fail-on", "bogus>1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown statistic \"bogus\"") && stderr(&o).contains("psi"), "{}", stderr(&o));
    let o = framewatch(&["drift", "--baseline", bpath, "examples/night", "--fail-on", "nosuch.psi>1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));

    let mut b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).expect("read")).expect("json");
    b["metrics"]["brightness"]["counts"][3] = serde_json::json!(999_999);
    let broken = dir.join("broken.json");
    std::fs::write(&broken, b.to_string()).expect("write");
    let o = framewatch(&["drift", "--baseline", broken.to_str().expect("utf8"), "examples/night"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("metrics.brightness.counts"), "{}", stderr(&o));

    b["version"] = serde_json::json!(99);
    std::fs::write(&broken, b.to_string()).expect("write");
    let o = framewatch(&["drift", "--baseline", broken.to_str().expect("utf8"), "examples/night"]);
    assert!(stderr(&o).contains("version 99 is not supported"), "{}", stderr(&o));
}

#[test]
fn catalog_and_help_teach() {
    let o = framewatch(&["metrics"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for name in ["brightness", "sharpness", "redness", "duplicate_iou_max", "class_margin_mean"] {
        assert!(out.contains(name), "catalog lacks {name}");
    }
    let o = framewatch(&["--help"]);
    assert!(stdout(&o).contains("baseline build") && stdout(&o).contains("--fail-on"), "{}", stdout(&o));
    let o = framewatch(&["drift", "--help"]);
    assert!(stdout(&o).contains("confidence_mean.mean<0.7"));
}

#[test]
fn demo_runs_for_a_set_duration_and_prints_a_summary() {
    let o = framewatch(&[
        "demo",
        "--duration",
        "50",
        "--drift-after",
        "10",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("framewatch demo"), "{out}");
    assert!(out.contains("== framewatch demo summary"), "{out}");
    // Issue 10's regressions: every fault named by its one correct cause (the frozen, blurred and orange cameras
    // used to fire BrightnessDrift, the darkened one BlurDrift), nothing on the clean cameras, and the summary
    // states only what fired.
    assert!(out.contains("cam-4 frozen: frozen after"), "{out}");
    assert!(out.contains("faults named by their one correct cause: 4 of 4"), "{out}");
    assert!(out.contains("alerts on cameras without a fault: none"), "{out}");
}

#[test]
fn baseline_build_makes_one_reference_per_sub_directory() {
    let dir = scratch("cli-slices");
    for (cam, range) in [("cam-a", 0..40), ("cam-b", 40..80)] {
        std::fs::create_dir_all(dir.join("train").join(cam)).expect("mkdir");
        for i in range {
            let name = format!("frame_{i:03}.jpg");
            std::fs::copy(root().join("examples/train").join(&name), dir.join("train").join(cam).join(&name))
                .expect("copy");
        }
    }
    let out = dir.join("b.json");
    let o = framewatch(&[
        "baseline",
        "build",
        dir.join("train").to_str().expect("utf8"),
        "--slice-dimension",
        "camera_id",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    assert_eq!(b["provenance"]["frames_scored"], 80);
    assert_eq!(b["slices"]["camera_id=cam-a"]["frames"], 40);
    assert!(b["slices"]["camera_id=cam-b"]["metrics"]["brightness"]["edges"].is_array());
}

#[test]
fn baseline_build_keys_references_by_time_of_day_context() {
    let dir = scratch("cli-context");
    let mut preds = String::new();
    for i in 0..80 {
        let name = format!("frame_{i:03}.jpg");
        std::fs::create_dir_all(dir.join("train/cam-a")).expect("mkdir");
        std::fs::copy(root().join("examples/train").join(&name), dir.join("train/cam-a").join(&name)).expect("copy");
        // half captured in the morning (08:xx UTC), half at night (22:xx UTC)
        let hour = if i < 40 { 8 } else { 22 };
        preds.push_str(&format!(
            "{{\"path\": \"{name}\", \"capture_time\": \"2026-11-30T{hour:02}:{:02}:00Z\"}}\n",
            i % 60
        ));
    }
    std::fs::write(dir.join("p.jsonl"), preds).expect("write");
    let out = dir.join("b.json");
    let args = |context: &str| {
        framewatch(&[
            "baseline",
            "build",
            dir.join("train").to_str().expect("utf8"),
            "--predictions",
            dir.join("p.jsonl").to_str().expect("utf8"),
            "--slice-dimension",
            "camera_id",
            "--context",
            context,
            "-o",
            out.to_str().expect("utf8"),
        ])
    };
    let o = args("hour_of_day:4");
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    assert_eq!(b["context"], "hour_of_day:4");
    assert_eq!(b["slices"]["camera_id=cam-a"]["frames"], 80, "the context-free reference keeps every frame");
    assert_eq!(b["slices"]["camera_id=cam-a,context=06-12"]["frames"], 40);
    assert_eq!(b["slices"]["camera_id=cam-a,context=18-24"]["frames"], 40);
    let o = args("hour_of_day:5");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("divides 24"), "{}", stderr(&o));
}

/// A service whose checkpoint cannot be read refuses to start (issue #11), and says so in its log: plain text
/// without colour codes when stderr is not a terminal, or one JSON object per line with `[log] format = "json"`
/// (set here from the environment) or `--log-format json` (issue #14).
#[test]
fn an_unreadable_checkpoint_stops_serve_and_the_log_is_plain_or_json_as_asked() {
    let dir = scratch("cli-log");
    std::fs::create_dir_all(dir.join("checkpoint.bin")).expect("a directory where the checkpoint should be");
    let config = dir.join("fw.toml");
    std::fs::write(
        &config,
        format!(
            "baseline = \"examples/baseline.json\"\n[server]\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n\
             [checkpoint]\npath = \"{}\"\n",
            dir.join("checkpoint.bin").display()
        ),
    )
    .expect("write");
    let serve = |env: &[(&str, &str)], extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_framewatch"));
        c.args(extra).args(["serve", "--config", config.to_str().expect("utf8")]).current_dir(root());
        c.envs(env.iter().copied()).env_remove("RUST_LOG");
        c.output().expect("run framewatch")
    };

    let text = serve(&[], &[]);
    assert_eq!(text.status.code(), Some(1), "{}", stderr(&text));
    let log = stderr(&text);
    assert!(log.contains("checkpoint.path cannot be read") && log.contains("checkpoint.bin"), "{log}");
    assert!(log.contains("ERROR") && !log.contains('\u{1b}'), "plain text without escape codes: {log:?}");

    for (env, extra) in [(&[("FRAMEWATCH_LOG__FORMAT", "json")][..], &[][..]), (&[][..], &["--log-format", "json"][..])]
    {
        let json = serve(env, extra);
        assert_eq!(json.status.code(), Some(1), "{}", stderr(&json));
        let log = stderr(&json);
        let events: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v.is_object())
            .collect();
        let error =
            events.iter().find(|e| e["level"] == "ERROR").unwrap_or_else(|| panic!("no JSON error event in {log}"));
        assert!(error["fields"]["message"].as_str().is_some_and(|m| m.contains("checkpoint")), "{error}");
    }
}

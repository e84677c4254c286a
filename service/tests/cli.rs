//! The `framewatch` binary driven as a user would: score, baseline build, drift, exit codes and error messages.
//! Uses the committed example frames (examples/train = baseline, examples/night = darker, softer, less sure model).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use framewatch_e2e::{between, chromium, root, scratch};

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
    build_baseline_with(&out, &[]);
    out
}

/// `baseline build` of the example training frames into `out`, with `extra` arguments.
fn build_baseline_with(out: &Path, extra: &[&str]) {
    let mut args = vec![
        "baseline",
        "build",
        "examples/train",
        "--predictions",
        "examples/train.jsonl",
        "-o",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let o = framewatch(&args);
    assert!(o.status.success(), "baseline build failed: {}", stderr(&o));
    assert!(stderr(&o).contains("144 scored, 0 rejected"), "{}", stderr(&o));
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

/// The "most drifted metric" cell of `camera`'s row in the last table of the demo's plain output.
fn most_drifted_cell(out: &str, camera: &str) -> String {
    let table = &out[out.rfind("\nslice ").expect("a table")..];
    let header = table.lines().nth(1).expect("header");
    let start = header.find("most drifted metric").expect("column");
    let width = header.find("causes").expect("causes column") - start;
    let row = table.lines().find(|l| l.starts_with(&format!("{camera} "))).expect("the camera's row");
    row.get(start..start + width).unwrap_or("").trim().to_string()
}

#[test]
fn demo_runs_for_a_set_duration_names_the_most_drifted_metric_keeps_logs_in_its_file_and_prints_a_summary() {
    let dir = scratch("cli-demo");
    let log = dir.join("demo.log");
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
        "--log-file",
        log.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("framewatch demo"), "{out}");
    assert!(out.contains("== framewatch demo summary"), "{out}");
    // Issue 10's regressions: every fault named by its one correct cause (the frozen, blurred and orange cameras
    // used to fire BrightnessDrift, the darkened one BlurDrift), nothing on the clean cameras, and the summary
    // states only what fired.
    assert!(out.contains("cam-4 frozen: frozen after"), "{out}");
    assert!(out.contains("faults named by their one correct cause: 5 of 5"), "{out}");
    // Issue 15: the camera whose model misses objects at full confidence fails only its ground-truth test.
    assert!(out.contains("CameraMap50 failed on camera_id=cam-6"), "{out}");
    assert!(!out.contains("CameraMap50 failed on camera_id=cam-1"), "{out}");
    assert!(out.contains("alerts on cameras without a fault: none"), "{out}");
    // Issue 14: the darkened camera's most drifted metric is named (it stayed "-" while PSI read 2.3), with how
    // far it moved, and it is a metric of the catalog.
    let cell = most_drifted_cell(&out, "cam-2");
    let metric = cell.split(' ').next().unwrap_or("");
    let catalog: Vec<String> = framewatch_metrics::MetricRegistry::standard().names().map(String::from).collect();
    assert!(catalog.iter().any(|m| m == metric) && cell.contains(" sd psi "), "cam-2: {cell:?}\n{out}");
    assert!(out.contains("  cam-2              darker           brightness mean "), "the evidence is shown: {out}");
    // The logs went to the file, none to stderr (which had only the start-up line) or stdout.
    let logs = std::fs::read_to_string(&log).expect("the log file");
    assert!(logs.contains("framewatch::server") && logs.contains("alert firing"), "{logs}");
    assert!(!logs.contains('\x1b'), "no colour codes in a log file");
    let err = stderr(&o);
    assert!(!err.contains("framewatch::") && !out.contains("framewatch::"), "log lines outside the file: {err}");
}

/// On a terminal (a pseudo-terminal from util-linux's `script`, 100 x 12) the demo draws on the alternate screen,
/// redraws in place within the terminal's size, names its log file and the HTTP URLs, and no log line reaches the
/// terminal.
#[test]
fn demo_on_a_terminal_redraws_in_place_within_its_size_and_sends_its_logs_to_the_file_it_names() {
    let bin = env!("CARGO_BIN_EXE_framewatch");
    let (columns, rows) = (100, 12);
    let cmd = format!(
        "stty cols {columns} rows {rows}; \
         {bin} demo --duration 12 --drift-after 1000 --cameras 5 --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0"
    );
    let o = Command::new("script")
        .args(["--quiet", "--return", "--flush", "--command", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .current_dir(root())
        .output()
        .expect("run script (util-linux)");
    let out = stdout(&o);
    assert!(o.status.success(), "demo on a terminal failed: {out}");
    let enter = out.find("\x1b[?1049h").expect("enters the alternate screen");
    let leave = out.find("\x1b[?1049l").expect("leaves it");
    let screen = &out[enter..leave];
    assert!(screen.matches("\x1b[H").count() >= 2, "redrawn in place, more than once: {screen:?}");
    assert!(!screen.contains("\x1b[2J"), "never cleared (no flicker)");
    // Each frame: home, then lines each ending by clearing the rest of its row, then clearing below.
    // (The pseudo-terminal turns "\n" into "\r\n".)
    let mut cut = 0;
    for frame in screen.split("\x1b[H").skip(1) {
        let frame = frame.split("\x1b[J").next().unwrap_or("");
        let lines: Vec<&str> = frame.split("\x1b[K").map(|l| l.trim_start_matches(['\r', '\n'])).collect();
        let lines = &lines[..lines.len() - 1];
        assert!(lines.len() <= rows, "a frame taller than the terminal scrolls it: {lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= columns), "a line wider than the terminal: {lines:?}");
        cut += usize::from(lines.last().is_some_and(|l| l.contains("more lines: enlarge the terminal")));
    }
    assert!(cut > 0, "the frames with every slice are cut to the terminal and say so: {screen:?}");
    assert!(screen.contains("web view http://127.0.0.1:") && screen.contains("/metrics"), "{screen:?}");
    assert!(out[leave..].contains("== framewatch demo summary"), "the summary follows on the normal screen");
    let log = screen
        .split("logs in ")
        .nth(1)
        .and_then(|rest| rest.split('\x1b').next())
        .map(PathBuf::from)
        .expect("the screen names the log file");
    let logs = std::fs::read_to_string(&log).expect("the log file it names");
    let _ = std::fs::remove_file(&log);
    assert!(log.starts_with(std::env::temp_dir()), "{}", log.display());
    assert!(logs.contains("framewatch::server") && !logs.contains('\x1b'), "{logs}");
    assert!(!out.contains("framewatch::") && !out.contains(" INFO "), "a log line on the terminal: {out:?}");
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

#[test]
fn drift_html_report_opens_in_a_browser_with_the_json_numbers_charts_and_decodable_thumbnails() {
    let dir = scratch("cli-html");
    let baseline = build_baseline(&dir);
    let report = dir.join("report.html");
    let o = framewatch(&[
        "drift",
        "--baseline",
        baseline.to_str().expect("utf8"),
        "examples/night",
        "--predictions",
        "examples/night.jsonl",
        "--json",
        "--fail-on",
        "brightness.psi>0.25",
        "--html",
        report.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("--json still goes to stdout");
    let metrics = json["metrics"].as_object().expect("metrics");
    let drifting: Vec<&String> = metrics.iter().filter(|(_, m)| m["drift"] == true).map(|(n, _)| n).collect();
    assert!(drifting.len() >= 5, "{drifting:?}");
    let html = std::fs::read_to_string(&report).expect("report written");

    // Self-contained: no script, no external resource; every image is inline JPEG.
    assert!(!html.contains("<script") && !html.contains("url(") && !html.contains("@import") && !html.contains("href"));
    let srcs: Vec<&str> = html.split(" src=\"").skip(1).collect();
    assert!(!srcs.is_empty() && srcs.len() <= 40, "{} images", srcs.len());
    assert!(srcs.iter().all(|s| s.starts_with("data:image/jpeg;base64,")));
    // The thumbnails are real JPEGs at most 160 px long, by the tree's own decoder.
    for s in &srcs {
        let b64 = &s["data:image/jpeg;base64,".len()..s.find('"').expect("closing quote")];
        let bytes = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
        };
        let mut img = framewatch_metrics::RgbImage::default();
        framewatch_metrics::decode::decode_into(&bytes, &Default::default(), &mut img).expect("thumbnail decodes");
        assert!(img.width.max(img.height) <= 160 && img.width.min(img.height) > 0, "{}x{}", img.width, img.height);
    }

    // The same page with a probe appended that counts, once loaded, the images the browser decoded.
    let probed = dir.join("probed.html");
    let probe = "<script>addEventListener('load', () => { const i = [...document.images]; \
                 document.body.dataset.decoded = i.filter(x => x.complete && x.naturalWidth > 0).length + '/' + i.length; \
                 });</script></body>";
    std::fs::write(&probed, html.replace("</body>", probe)).expect("write");
    let o = chromium(
        &dir.join("profile"),
        &probed,
        &["--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000", "--dump-dom"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    let decoded = between(&dom, "data-decoded=\"", "\"").unwrap_or_else(|| panic!("probe did not run: {dom:.2000}"));
    assert_eq!(decoded, format!("{0}/{0}", srcs.len()), "images the browser decoded / images in the page");

    // The verdict and the gate, as rendered.
    let verdict = between(&dom, "id=\"verdict\"", "</p>").expect("verdict");
    assert!(verdict.contains(&format!("Drifting: {} of {} metrics", drifting.len(), metrics.len())), "{verdict}");
    let gate = between(&dom, "id=\"gate\"", "</p>").expect("gate");
    assert!(gate.contains("failed (exit code 3)") && gate.contains("brightness.psi&gt;0.25"), "{gate}");
    assert!(dom.contains("rule <code>brightness.psi&gt;0.25</code> broken: brightness"), "rule failure listed");

    for (name, m) in metrics {
        // A row per metric with the JSON's PSI (the table shows three decimals) and verdict.
        let row = between(&dom, &format!("data-metric=\"{name}\">"), "</tr>").unwrap_or_else(|| panic!("row {name}"));
        let psi: f64 = between(row, "<td class=\"psi\">", "</td>").and_then(|t| t.parse().ok()).expect("psi cell");
        let want = m["psi"].as_f64().expect("json psi");
        assert!((psi - want).abs() <= 0.0005 + 1e-9, "{name}: page {psi}, json {want}");
        let verdict = between(row, "<td class=\"verdict\">", "</td>").expect("verdict cell");
        assert_eq!(verdict == "DRIFT", m["drift"] == true, "{name}: {verdict}");
        // A chart with bars for both series.
        let chart =
            between(&dom, &format!("<figure class=\"chart {}\" data-metric=\"{name}\">", row_class(m)), "</figure>")
                .unwrap_or_else(|| panic!("chart {name}"));
        assert!(chart.contains("<svg"), "{name}");
        assert!(
            chart.contains("<g class=\"base\"><rect") && chart.contains("<g class=\"cur\"><rect"),
            "{name}: {chart}"
        );
    }
    // The most outlying frames of each drifting metric, with their paths.
    for name in &drifting {
        let frames = between(&dom, &format!("<div class=\"frames\" data-metric=\"{name}\">"), "</div>\n")
            .unwrap_or_else(|| panic!("outlying frames of {name}"));
        assert!(frames.matches("examples/night/frame_").count() >= 5, "{name}: {frames}");
    }

    // A picture for people: target/e2e/drift-report.png.
    let shot = root().join("target/e2e/drift-report.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(
        &dir.join("profile"),
        &report,
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,2000", "--hide-scrollbars"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(&shot).expect("screenshot written");
    let mut img = framewatch_metrics::RgbImage::default();
    framewatch_metrics::decode::decode_into(&png, &Default::default(), &mut img).expect("screenshot is a PNG");
    assert_eq!((img.width, img.height), (1280, 2000));
}

fn row_class(m: &serde_json::Value) -> &'static str {
    match m["drift"].as_bool() {
        Some(true) => "drift",
        Some(false) => "ok",
        None => "few",
    }
}

#[test]
fn drift_html_report_escapes_paths_and_rules() {
    let dir = scratch("cli-html-escape");
    let evil = dir.join("<script>alert(1)<b>");
    std::fs::create_dir_all(&evil).expect("mkdir");
    for e in std::fs::read_dir(root().join("examples/night")).expect("night frames") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, evil.join(p.file_name().expect("name"))).expect("copy");
    }
    let report = dir.join("report.html");
    let o = framewatch(&[
        "drift",
        "--baseline",
        "examples/baseline.json",
        evil.to_str().expect("utf8"),
        "--fail-on",
        "brightness.mean<0.5",
        "--html",
        report.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(!html.contains("<script") && !html.contains("<b>"), "raw markup from a path reached the page");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;b&gt;/frame_"), "the path is shown, escaped");
    assert!(html.contains("brightness.mean&lt;0.5"), "the rule is shown, escaped");
    let o = chromium(&dir.join("profile"), &report, &["--dump-dom"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    assert!(!dom.contains("<script") && !dom.contains("<b>"), "the browser made elements of a path");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;b&gt;/frame_"), "the browser shows the path as text");
}

#[test]
fn baseline_build_exemplars_stores_typical_thumbnails_that_load_and_decode() {
    let dir = scratch("cli-baseline-exemplars");
    let out = dir.join("with-exemplars.json");
    build_baseline_with(&out, &["--exemplars", "3"]);
    let text = std::fs::read_to_string(&out).expect("baseline written");
    let b = framewatch_metrics::Baseline::from_json(&text).expect("a baseline with exemplars loads");
    let global = &b.exemplars["global"];
    assert_eq!(global.len(), 3);
    for e in global {
        assert!(e.path.starts_with("frame_") && e.path.ends_with(".jpg"), "{}", e.path);
        use base64::Engine as _;
        let jpeg = base64::engine::general_purpose::STANDARD.decode(&e.jpeg_base64).expect("base64");
        let mut img = framewatch_metrics::RgbImage::default();
        framewatch_metrics::decode::decode_into(&jpeg, &Default::default(), &mut img).expect("a JPEG");
        assert!(img.width.max(img.height) <= 160 && img.width > 0, "{}x{}", img.width, img.height);
    }
    // The statistics are those of a baseline built without exemplars; drift runs against it.
    let plain = framewatch_metrics::Baseline::from_json(
        &std::fs::read_to_string(build_baseline(&dir)).expect("plain baseline"),
    )
    .expect("loads");
    assert_eq!(plain.metrics["brightness"].quartiles, b.metrics["brightness"].quartiles);
    assert!(
        plain.exemplars.is_empty()
            && !std::fs::read_to_string(dir.join("baseline.json")).expect("r").contains("exemplars")
    );
    let o = framewatch(&["drift", "--baseline", out.to_str().expect("utf8"), "examples/night", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = framewatch(&["baseline", "build", "examples/train", "--exemplars", "17", "-o", "x.json"]);
    assert_eq!(o.status.code(), Some(2), "more than 16 is a usage error: {}", stderr(&o));
}

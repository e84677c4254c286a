//! The fault matrix on real footage: one clean camera and one camera per fault kind stream the same held-out part
//! of a clip (frames the baseline never saw), the faults start together, and each camera's alerts from
//! `WatchAlerts` are sorted into: alerts before the fault (false alarms), the first alert after it (its rule,
//! `cause` label and time to detect) and every later one. The verdict is a confusion matrix, fault injected x
//! cause of the first alert, in markdown on stdout; the whole record as JSON in `--output`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::{AlertRecord, ClipArgs, FleetArgs, Report, RunArgs, camera_name, run_load};

/// The faults, in camera order (cam-1 is clean), named as framewatch's `cause` label names them, with the drift
/// that produces each. Strengths are plain-to-see faults, not thresholds hunted for.
pub const DEFAULT_FAULTS: [(&str, Option<&str>); 9] = [
    ("clean", None),
    ("darker", Some("darken:0.5")),
    ("brighter", Some("brighten:60")),
    ("blur", Some("blur:3")),
    ("noise", Some("noise:20")),
    ("colour_cast", Some("colour_cast:1.3,1.0,0.7")),
    ("compression", Some("jpeg_quality:10")),
    ("frozen", Some("freeze")),
    ("moved", Some("moved")),
];

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// framewatch's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// The clip (--clip DIR) and the held-out frames to stream (--start-frame 401: after the baseline's).
    #[command(flatten)]
    pub clip: ClipArgs,
    /// Frames per second per camera (the clip's rate).
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Seconds into the run when every fault starts.
    #[arg(long, default_value_t = 10.0)]
    pub at: f64,
    /// Seconds to run (default: the held-out frames once at --fps; with --loop, set it).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Replace a fault's drift, repeatable: NAME=KIND, e.g. blur=blur:2 or moved=moved (NAME one of darker,
    /// brighter, blur, noise, colour_cast, compression, frozen, moved).
    #[arg(long = "fault")]
    pub faults: Vec<String>,
    /// Write the JSON report here.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// What one camera of the matrix showed.
#[derive(Debug, serde::Serialize)]
pub struct BenchCamera {
    pub camera: String,
    /// The fault injected ("clean" for none) and the drift that produced it.
    pub injected: String,
    pub drift: Option<String>,
    pub injected_at_s: Option<f64>,
    /// The first firing alert after the fault began (on the clean camera: at any time, a false alarm).
    pub first_alert: Option<AlertRecord>,
    pub detected_after_s: Option<f64>,
    /// Firing alerts before the fault began: false alarms on the held-out clean footage.
    pub alerts_before_injection: Vec<AlertRecord>,
    /// Every other alert state change on this camera after the first alert.
    pub other_alerts: Vec<AlertRecord>,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub clip: String,
    pub frames: String,
    pub fps: f64,
    pub fault_at_s: f64,
    pub cameras: Vec<BenchCamera>,
    /// injected -> cause of the first alert ("none" when nothing fired) -> cameras.
    pub confusion: BTreeMap<String, BTreeMap<String, u32>>,
    pub run: Report,
}

/// The (name, drift) of each camera, defaults overridden by `--fault NAME=KIND`.
pub fn fault_plan(overrides: &[String]) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut plan: Vec<(String, Option<String>)> =
        DEFAULT_FAULTS.iter().map(|(n, d)| (n.to_string(), d.map(String::from))).collect();
    for o in overrides {
        let (name, kind) = o.split_once('=').with_context(|| format!("--fault {o:?}: expected NAME=KIND"))?;
        framewatch_synth::Drift::parse(kind).map_err(anyhow::Error::msg)?;
        let slot = plan
            .iter_mut()
            .find(|(n, d)| n == name && d.is_some())
            .with_context(|| format!("--fault {o:?}: no fault named {name:?}"))?;
        slot.1 = Some(kind.to_string());
    }
    Ok(plan)
}

/// Sorts a run's alerts into the matrix (pure: tested without a service).
pub fn tabulate(plan: &[(String, Option<String>)], at_s: f64, alerts: &[AlertRecord]) -> Vec<BenchCamera> {
    plan.iter()
        .enumerate()
        .map(|(i, (name, drift))| {
            let camera = camera_name(i);
            let slice = format!("camera_id={camera}");
            let mine: Vec<&AlertRecord> = alerts.iter().filter(|a| a.slice == slice).collect();
            let since = if drift.is_some() { at_s } else { 0.0 };
            let before: Vec<AlertRecord> =
                mine.iter().filter(|a| a.is_firing() && a.at_s < since).map(|a| (*a).clone()).collect();
            let first = mine.iter().position(|a| a.is_firing() && a.at_s >= since);
            let other = first.map_or(Vec::new(), |f| mine[f + 1..].iter().map(|a| (*a).clone()).collect());
            let first = first.map(|f| mine[f].clone());
            BenchCamera {
                camera,
                injected: name.clone(),
                drift: drift.clone(),
                injected_at_s: drift.as_ref().map(|_| at_s),
                detected_after_s: first.as_ref().filter(|_| drift.is_some()).map(|a| a.at_s - at_s),
                first_alert: first,
                alerts_before_injection: before,
                other_alerts: other,
            }
        })
        .collect()
}

pub fn confusion(cameras: &[BenchCamera]) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut m: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for c in cameras {
        let cause = c.first_alert.as_ref().map_or("none".to_string(), AlertRecord::cause_or_rule);
        *m.entry(c.injected.clone()).or_default().entry(cause).or_default() += 1;
    }
    m
}

/// The confusion matrix in markdown, rows in camera order, then time to detect and what else fired.
pub fn markdown(cameras: &[BenchCamera]) -> String {
    let mut causes: Vec<String> = DEFAULT_FAULTS.iter().skip(1).map(|(n, _)| n.to_string()).collect();
    for c in cameras {
        if let Some(a) = &c.first_alert
            && !causes.contains(&a.cause_or_rule())
        {
            causes.push(a.cause_or_rule());
        }
    }
    causes.push("none".into());
    let mut out = format!(
        "| injected \\ first cause | {} | detected after | false alarms before | also fired |\n",
        causes.join(" | ")
    );
    out += &format!("|---|{}---|---|---|\n", "---|".repeat(causes.len()));
    for c in cameras {
        let first = c.first_alert.as_ref().map_or("none".to_string(), AlertRecord::cause_or_rule);
        let cells: Vec<&str> = causes.iter().map(|k| if *k == first { "**1**" } else { "." }).collect();
        let after = c.detected_after_s.map_or("-".into(), |t| format!("{t:.1} s"));
        let names = |v: &[AlertRecord]| {
            let mut n: Vec<String> = v.iter().filter(|a| a.is_firing()).map(AlertRecord::cause_or_rule).collect();
            n.dedup();
            if n.is_empty() { "-".to_string() } else { n.join(", ") }
        };
        out += &format!(
            "| {} ({}) | {} | {after} | {} | {} |\n",
            c.injected,
            c.camera,
            cells.join(" | "),
            names(&c.alerts_before_injection),
            names(&c.other_alerts)
        );
    }
    out
}

/// Runs the matrix against a running framewatch, prints the markdown and returns (and writes) the JSON report.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let dir = args.clip.range.clip.clone().context("bench needs --clip DIR (scripts/footage/vtest.sh extracts one)")?;
    anyhow::ensure!(args.fps > 0.0, "bench plays the clip at its rate: --fps must be positive");
    let plan = fault_plan(&args.faults)?;
    let held_out = crate::select(crate::clip_files(&dir)?, args.clip.range.start_frame, args.clip.range.end_frame)?;
    let duration = args.duration.unwrap_or((held_out.len() as f64 / args.fps).ceil() as u64);
    anyhow::ensure!(
        (duration as f64) > args.at,
        "the faults start at {} s but the run lasts {duration} s: lower --at, or --loop with a longer --duration",
        args.at
    );
    let drifts = plan
        .iter()
        .enumerate()
        .filter_map(|(i, (_, d))| d.as_ref().map(|d| format!("camera={},at={},kind={d}", camera_name(i), args.at)))
        .collect();
    let run = RunArgs {
        fleet: FleetArgs { cameras: plan.len(), width: 0, height: 0, seed: 1 },
        target: args.target.clone(),
        fps: args.fps,
        duration,
        images: None,
        prescored: false,
        packed: false,
        drifts,
        pool: 1,
        stride: 1,
        hold_out: 0,
        json: false,
        labels_share: 0.0,
        labels_delay_secs: 5.0,
    };
    eprintln!(
        "fault matrix: {} cameras stream {} frames of {} at {} fps for {duration} s; faults at {} s",
        plan.len(),
        held_out.len(),
        dir.display(),
        args.fps,
        args.at
    );
    let report = run_load(run, None, args.clip.clone(), false).await?;
    let cameras = tabulate(&plan, args.at, &report.alerts);
    let start = args.clip.range.start_frame;
    let bench = BenchReport {
        clip: dir.display().to_string(),
        frames: format!("{start}..={}", start + held_out.len() - 1),
        fps: args.fps,
        fault_at_s: args.at,
        confusion: confusion(&cameras),
        cameras,
        run: report,
    };
    println!(
        "framewatch fault matrix: {} frames {} at {} fps, faults from {} s; {} frames sent, {} accepted\n",
        bench.clip, bench.frames, bench.fps, bench.fault_at_s, bench.run.frames_sent, bench.run.frames_accepted
    );
    print!("{}", markdown(&bench.cameras));
    if let Some(out) = &args.output {
        std::fs::write(out, serde_json::to_string_pretty(&bench)? + "\n")
            .with_context(|| format!("write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(at_s: f64, cam: usize, rule: &str, cause: Option<&str>, state: &str) -> AlertRecord {
        AlertRecord {
            at_s,
            slice: format!("camera_id=cam-{cam}"),
            rule: rule.into(),
            state: state.into(),
            cause: cause.map(String::from),
            value: 1.0,
            threshold: 0.5,
        }
    }

    #[test]
    fn faults_can_be_overridden_by_name() {
        let plan = fault_plan(&["blur=blur:2".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.len(), 9);
        assert_eq!(plan[0], ("clean".to_string(), None));
        assert_eq!(plan[3], ("blur".to_string(), Some("blur:2".to_string())));
        assert!(fault_plan(&["clean=darken:0.5".into()]).is_err(), "the control stays clean");
        assert!(fault_plan(&["blur=sepia".into()]).is_err());
        assert!(fault_plan(&["blur".into()]).is_err());
    }

    #[test]
    fn alerts_are_sorted_into_false_alarms_first_cause_and_the_rest() {
        let plan = fault_plan(&[]).unwrap_or_else(|e| panic!("{e}"));
        let alerts = vec![
            alert(3.0, 2, "drift", Some("distribution"), "firing"), // before the fault: a false alarm
            alert(14.5, 2, "brightness_drift", Some("darker"), "firing"),
            alert(16.0, 2, "sharpness_drift", Some("blur"), "firing"),
            alert(12.0, 8, "camera_frozen", None, "firing"),
            alert(25.0, 1, "drift", Some("distribution"), "firing"), // the clean camera: a false alarm
            alert(11.0, 3, "brightness_drift", Some("brighter"), "pending"), // pending is not an alert yet
        ];
        let cams = tabulate(&plan, 10.0, &alerts);
        let darker = &cams[1];
        assert_eq!(darker.alerts_before_injection.len(), 1);
        assert_eq!(darker.first_alert.as_ref().and_then(|a| a.cause.clone()), Some("darker".into()));
        assert_eq!(darker.detected_after_s, Some(4.5));
        assert_eq!(darker.other_alerts.len(), 1);
        assert_eq!(cams[0].first_alert.as_ref().map(AlertRecord::cause_or_rule), Some("distribution".into()));
        assert_eq!(cams[0].detected_after_s, None, "nothing was injected on the clean camera");
        assert_eq!(cams[2].first_alert.as_ref().map(|a| a.at_s), None);
        let m = confusion(&cams);
        assert_eq!(m["darker"]["darker"], 1);
        assert_eq!(m["frozen"]["rule:camera_frozen"], 1, "no cause label: the rule names the column");
        assert_eq!(m["brighter"]["none"], 1);
        let md = markdown(&cams);
        assert!(md.contains("| darker (cam-2) |"), "{md}");
        assert!(md.contains("rule:camera_frozen"), "{md}");
        assert_eq!(md.lines().count(), 2 + 9);
    }
}

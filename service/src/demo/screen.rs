//! The demo's view of the running service: what it shows (pure functions from the latest evaluation and alert
//! state to lines of text, so they are unit-tested) and how it is drawn: redrawn in place on the alternate screen
//! of a terminal, or printed as plain blocks, one after the other, when stdout is a pipe or a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use framewatch_metrics::cause::{Cause, Finding};

use crate::alerts::{AlertEvent, AlertSnapshot, Phase};
use crate::evaluate::{Evaluation, SliceEval};

/// The metric that moved most in a slice's window.
#[derive(Debug, Clone, PartialEq)]
pub struct MostDrifted {
    pub metric: Arc<str>,
    /// How far its window moved, in baseline standard deviations (Wasserstein-1 / baseline std).
    pub distance: f64,
    pub psi: f64,
    /// The default drift verdict holds for it.
    pub drifting: bool,
}

/// An alert pending or firing on a slice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceAlert {
    pub rule: Arc<str>,
    pub cause: Option<Cause>,
    pub firing: bool,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct SliceRow {
    pub slice: String,
    pub frames: u64,
    pub brightness: Option<f64>,
    pub sharpness: Option<f64>,
    pub confidence: Option<f64>,
    pub most_drifted: Option<MostDrifted>,
    pub findings: Vec<Finding>,
    pub alerts: Vec<SliceAlert>,
}

/// Everything one frame of the view shows.
#[derive(Debug)]
pub struct View<'a> {
    pub elapsed: Duration,
    /// "clean traffic, drift in 12 s" or the faults injected.
    pub phase: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Where the logs go; `None`: stderr.
    pub log_file: Option<&'a Path>,
    pub rows: Vec<SliceRow>,
    pub events: &'a [(Duration, AlertEvent)],
}

/// The metric whose window moved furthest from its baseline, in baseline standard deviations (Wasserstein-1 /
/// baseline std), among those with enough values for a verdict (`drift` is `Some`), whatever the verdict.
///
/// Why not the verdict or PSI: the column once showed only metrics whose verdict held, and a static camera's
/// frames are worth few independent samples, so its KS p-value never passes and the column stayed "-" while PSI
/// read 2.3. PSI alone ranks badly: it saturates near 2 once most of a window is out of the baseline's bins, so a
/// darkened camera's brightness ties with near-constant metrics (bright_fraction, a spike at 0) and the winner is
/// noise. The distance keeps growing with the shift: brightness heads a darkened camera, sharpness a blurred one.
/// A metric without baseline spread has no distance and is left out.
pub fn most_drifted(slice: &SliceEval) -> Option<MostDrifted> {
    slice
        .metrics
        .iter()
        .filter(|m| m.drift.is_some())
        .filter_map(|m| Some((m, m.stats.wasserstein_norm.filter(|d| d.is_finite())?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(m, distance)| MostDrifted {
            metric: m.name.clone(),
            distance,
            psi: m.stats.psi,
            drifting: m.drift == Some(true),
        })
}

/// The slices the demo shows (global, cameras, predicates) as rows, with their alerts.
pub fn slice_rows(eval: &Evaluation, alerts: &AlertSnapshot) -> Vec<SliceRow> {
    eval.slices
        .iter()
        .filter(|s| s.key.is_global() || s.key.is_predicate() || s.key.camera_id().is_some())
        .map(|s| {
            let mean = |name: &str| s.metrics.iter().find(|m| &*m.name == name).and_then(|m| m.stats.mean);
            SliceRow {
                slice: s.key.camera_id().unwrap_or_else(|| s.key.to_string()),
                frames: s.frames,
                brightness: mean("brightness"),
                sharpness: mean("sharpness"),
                confidence: mean("confidence_mean"),
                most_drifted: most_drifted(s),
                findings: s.causes.clone(),
                alerts: alerts
                    .active
                    .iter()
                    .filter(|a| a.slice == s.key)
                    .map(|a| SliceAlert {
                        rule: a.rule.clone(),
                        cause: a.labels.get("cause").and_then(|c| c.parse().ok()),
                        firing: a.phase == Phase::Firing,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The causes cell: each diagnosed cause marked by its alert (`!` firing, `?` pending, bare: diagnosed, its rule
/// still waiting for enough values), then alerts the diagnosis no longer (or never: model tests) names, by rule.
pub fn causes_cell(row: &SliceRow) -> String {
    let mark = |a: &SliceAlert| if a.firing { "!" } else { "?" };
    let mut cells: Vec<String> = row
        .findings
        .iter()
        .map(|f| {
            let alert = row.alerts.iter().filter(|a| a.cause == Some(f.cause)).max_by_key(|a| a.firing);
            format!("{}{}", f.cause, alert.map_or("", mark))
        })
        .collect();
    cells.extend(
        row.alerts
            .iter()
            .filter(|a| !a.cause.is_some_and(|c| row.findings.iter().any(|f| f.cause == c)))
            .map(|a| format!("{}{}", a.rule, mark(a))),
    );
    if cells.is_empty() { "-".into() } else { cells.join(" ") }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// Events shown under the table, newest first.
const RECENT_EVENTS: usize = 8;

/// The view as lines (no trailing newlines, no control characters).
pub fn render(view: &View) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!("framewatch demo  {:>4} s  {}", view.elapsed.as_secs(), view.phase));
    lines.push(format!(
        "  web view http://{http}/   metrics http://{http}/metrics   gRPC {} (reflection on)",
        view.grpc,
        http = view.http
    ));
    lines.push(match view.log_file {
        Some(p) => format!("  logs in {}", p.display()),
        None => "  logs on stderr".to_string(),
    });
    lines.push(String::new());
    lines.push(format!(
        "{:<18} {:>6} {:>10} {:>9} {:>10}  {:<34} {}",
        "slice", "frames", "brightness", "sharpness", "confidence", "most drifted metric", "causes"
    ));
    for r in &view.rows {
        let worst = r.most_drifted.as_ref().map_or("-".to_string(), |m| {
            format!("{} {:.1} sd psi {:.2}{}", m.metric, m.distance, m.psi, if m.drifting { " *" } else { "" })
        });
        lines.push(format!(
            "{:<18} {:>6} {:>10} {:>9} {:>10}  {:<34} {}",
            r.slice,
            r.frames,
            fmt_opt(r.brightness, 3),
            fmt_opt(r.sharpness, 4),
            fmt_opt(r.confidence, 3),
            worst,
            causes_cell(r)
        ));
    }
    lines.push(
        "  most drifted: furthest from the baseline in its standard deviations (Wasserstein-1 / sd); * its drift verdict holds"
            .into(),
    );
    lines.push("  causes: cause! alert firing   cause? alert pending   bare: diagnosed, alert not yet pending".into());
    let evidence: Vec<String> = view
        .rows
        .iter()
        .flat_map(|r| {
            r.findings.iter().map(move |f| format!("  {:<18} {:<16} {}", r.slice, f.cause.as_str(), f.summary))
        })
        .collect();
    if !evidence.is_empty() {
        lines.push(String::new());
        lines.push("why (the diagnosis's evidence):".into());
        lines.extend(evidence);
    }
    lines.push(String::new());
    lines.push("recent alert events:".into());
    for (t, e) in view.events.iter().rev().take(RECENT_EVENTS) {
        let mut line = String::new();
        let _ = write!(
            line,
            "  {:>4} s  {:<9} {:<18} {:<16} {:<15} {}",
            t.as_secs(),
            format!("{:?}", e.phase),
            e.rule,
            e.slice,
            e.labels.get("cause").map_or("", String::as_str),
            e.annotations.get("evidence").map_or("", String::as_str),
        );
        lines.push(line.trim_end().to_string());
    }
    // Outside text (rule names, evidence) never moves the cursor: control characters are dropped.
    lines.into_iter().map(|l| l.chars().filter(|c| !c.is_control()).collect()).collect()
}

/// The frame cut to a terminal of `columns` x `rows`: longer lines clipped, and when there are more lines than
/// rows, the last row says how many were left out. A frame taller than the terminal would scroll it, and the next
/// frame would no longer be drawn over this one.
pub fn fit(lines: &[String], columns: usize, rows: usize) -> Vec<String> {
    let clip = |l: &String| l.chars().take(columns).collect::<String>();
    if lines.len() <= rows {
        return lines.iter().map(clip).collect();
    }
    let kept = rows.saturating_sub(1);
    let mut out: Vec<String> = lines[..kept].iter().map(clip).collect();
    out.push(clip(&format!("... {} more lines: enlarge the terminal to see them", lines.len() - kept)));
    out
}

/// How frames reach stdout.
#[derive(Debug)]
pub enum Screen {
    /// A terminal: the alternate screen, redrawn in place, lines clipped rather than wrapped; the normal screen
    /// comes back on drop (also on an early return or a panic).
    Terminal,
    /// A pipe or a file: each frame printed after the previous one.
    Plain,
}

const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[?7l";
const LEAVE: &str = "\x1b[?7h\x1b[?25h\x1b[?1049l";

impl Screen {
    pub fn open(terminal: bool) -> Screen {
        if terminal {
            write_out(ENTER);
            Screen::Terminal
        } else {
            Screen::Plain
        }
    }

    pub fn draw(&self, lines: &[String]) {
        let mut out = String::new();
        match self {
            Screen::Terminal => {
                // Read each time: the user may resize the window while the demo runs.
                let size = terminal_size::terminal_size_of(std::io::stdout())
                    .map(|(w, h)| (usize::from(w.0), usize::from(h.0)));
                let lines = match size {
                    Some((columns, rows)) => fit(lines, columns, rows),
                    None => lines.to_vec(),
                };
                // Home, each line over the previous frame's with the rest of it cleared, then everything below.
                out.push_str("\x1b[H");
                for l in &lines {
                    out.push_str(l);
                    out.push_str("\x1b[K\r\n");
                }
                out.push_str("\x1b[J");
            }
            Screen::Plain => {
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
                out.push('\n');
            }
        }
        write_out(&out);
    }

    /// Back to the normal screen, leaving the last frame there in plain text (the alternate screen's content
    /// goes with it).
    pub fn close(self, last: &[String]) {
        if let Screen::Terminal = self {
            drop(self);
            let mut out = last.join("\n");
            out.push('\n');
            write_out(&out);
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if let Screen::Terminal = self {
            write_out(LEAVE);
        }
    }
}

fn write_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (the reader went away) is no reason to stop the service the demo runs.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use framewatch_metrics::stats::MetricDrift;

    use super::*;
    use crate::evaluate::MetricEval;
    use crate::slice::SliceKey;

    fn metric(name: &str, distance: f64, psi: f64, drift: Option<bool>) -> MetricEval {
        MetricEval {
            name: name.into(),
            stats: MetricDrift {
                n: 300,
                n_effective: 40.0,
                mean: Some(0.2),
                baseline_mean: 0.4,
                psi,
                ks_statistic: 0.5,
                ks_p_value: 0.0,
                js_distance: 0.3,
                wasserstein_norm: Some(distance).filter(|d| !d.is_nan()),
                outliers_moderate: 0.0,
                outliers_severe: 0.0,
                out_of_range: 0.0,
                mean_p_value: 0.0,
            },
            missing: 0,
            baseline_std: 0.1,
            drift,
        }
    }

    fn slice(key: SliceKey, metrics: Vec<MetricEval>, causes: Vec<Finding>) -> SliceEval {
        SliceEval {
            key,
            frames: 300,
            last_seen_secs: 0,
            window_start_secs: 0,
            window_end_secs: 60,
            metrics,
            classes: None,
            own_baseline: true,
            causes,
            performance: None,
        }
    }

    fn alert(rule: &str, slice: SliceKey, cause: Cause, phase: Phase) -> AlertEvent {
        AlertEvent {
            rule: rule.into(),
            slice,
            phase,
            value: 1.0,
            threshold: 1.0,
            severity: "warning".into(),
            labels: [("cause".to_string(), cause.to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at_secs: 0,
            ends_at_secs: None,
            at_secs: 0,
            model_test: false,
        }
    }

    #[test]
    fn a_frame_fits_the_terminal_clipped_and_saying_what_it_left_out() {
        let lines: Vec<String> = (0..10).map(|i| format!("line {i} {}", "x".repeat(i))).collect();
        assert_eq!(fit(&lines, 200, 10), lines);
        let small = fit(&lines, 8, 4);
        assert_eq!(small, ["line 0 ", "line 1 x", "line 2 x", "... 7 mo"]);
        assert_eq!(fit(&lines, 80, 4)[3], "... 7 more lines: enlarge the terminal to see them");
    }

    #[test]
    fn the_most_drifted_metric_moved_furthest_in_baseline_deviations_whatever_its_verdict() {
        // Issue 14: PSI read 2.3 on a static camera whose verdict never held, and the column said "-".
        let s = slice(
            SliceKey::camera("cam-2"),
            vec![
                // a near-constant metric: PSI at its ceiling, but it hardly moved
                metric("bright_fraction", 1.1, 2.4, Some(false)),
                metric("brightness", 299.0, 2.3, Some(false)),
                // too few values for a verdict: never the answer, however far
                metric("confidence_mean", 900.0, 2.0, None),
                // no baseline spread: no distance
                metric("aspect_ratio", f64::NAN, 9.0, Some(false)),
            ],
            vec![],
        );
        assert_eq!(
            most_drifted(&s),
            Some(MostDrifted { metric: "brightness".into(), distance: 299.0, psi: 2.3, drifting: false })
        );
        let calm = slice(SliceKey::camera("cam-1"), vec![metric("sharpness", 0.2, 0.01, Some(false))], vec![]);
        assert_eq!(most_drifted(&calm).map(|m| m.metric), Some("sharpness".into()));
        let young = slice(SliceKey::camera("cam-9"), vec![metric("brightness", 3.0, 3.0, None)], vec![]);
        assert_eq!(most_drifted(&young), None);
    }

    #[test]
    fn the_screen_names_the_drifted_metric_its_cause_with_alert_state_and_the_urls() {
        let cam = SliceKey::camera("cam-2");
        let eval = Evaluation {
            evaluated_at_secs: 0,
            slices: vec![
                slice(
                    cam.clone(),
                    vec![metric("brightness", 299.04, 2.31, Some(true)), metric("sharpness", 12.0, 0.2, Some(false))],
                    vec![Finding { cause: Cause::Darker, summary: "brightness mean 0.43 -> 0.21 (-51 %)".into() }],
                ),
                slice(SliceKey::camera("cam-1"), vec![metric("brightness", 0.13, 0.02, Some(false))], vec![]),
            ],
            evicted: vec![],
        };
        let alerts = AlertSnapshot {
            active: vec![
                alert("CameraDarker", cam.clone(), Cause::Darker, Phase::Firing),
                alert("ModelUnsure", cam.clone(), Cause::ConfidenceDrop, Phase::Pending),
            ],
            tests: vec![],
        };
        let events = [(Duration::from_secs(41), alert("CameraDarker", cam, Cause::Darker, Phase::Firing))];
        let log = Path::new("/tmp/framewatch-demo-1.log");
        let view = View {
            elapsed: Duration::from_secs(42),
            phase: "faults injected".into(),
            grpc: "127.0.0.1:50051".parse().expect("addr"),
            http: "127.0.0.1:9464".parse().expect("addr"),
            log_file: Some(log),
            rows: slice_rows(&eval, &alerts),
            events: &events,
        };
        let lines = render(&view);
        let text = lines.join("\n");
        assert!(text.contains("http://127.0.0.1:9464/ ") && text.contains("http://127.0.0.1:9464/metrics"), "{text}");
        assert!(text.contains("logs in /tmp/framewatch-demo-1.log"), "{text}");
        let row = lines.iter().find(|l| l.starts_with("cam-2 ")).expect("cam-2 row");
        assert!(row.contains("brightness 299.0 sd psi 2.31 *"), "{row}");
        assert!(row.ends_with("darker! ModelUnsure?"), "{row}");
        let calm = lines.iter().find(|l| l.starts_with("cam-1 ")).expect("cam-1 row");
        assert!(calm.contains("brightness 0.1 sd psi 0.02 ") && calm.ends_with(" -"), "{calm}");
        assert!(
            lines.iter().any(|l| l.starts_with("  cam-2              darker           brightness mean 0.43")),
            "{text}"
        );
        assert!(lines.iter().any(|l| l.contains("41 s  Firing") && l.contains("CameraDarker")), "{text}");
        assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));
    }
}

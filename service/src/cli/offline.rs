//! Offline scoring: walks files and directories, attaches predictions (and ground truth), scores every frame on all
//! cores and hands results back in input order. Used by `framewatch score`, `baseline build`, `drift` and
//! `evaluate`. A file that cannot be read or scored becomes an error result with a reason; it never aborts the run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use framewatch_metrics::performance::{TruthBox, validate_truth};
use framewatch_metrics::{Detection, FramePixels, MetricRegistry, ScoreSettings, Scorer};

/// Extensions picked up when walking a directory (case-insensitive). Files named explicitly are always tried.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// One input frame: where it is, and how it is named in output and prediction lookups.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// Path relative to the directory argument it was found under (or as given, for file arguments).
    pub relative: String,
}

/// Expands file and directory arguments into image files, sorted within each directory.
pub fn collect_inputs(args: &[PathBuf]) -> anyhow::Result<Vec<InputFile>> {
    let mut out = Vec::new();
    for arg in args {
        let meta = std::fs::metadata(arg).with_context(|| format!("cannot read {}", arg.display()))?;
        if meta.is_dir() {
            let before = out.len();
            walk(arg, arg, &mut out)?;
            out[before..].sort_by(|a: &InputFile, b| a.path.cmp(&b.path));
        } else {
            out.push(InputFile { path: arg.clone(), relative: arg.to_string_lossy().into_owned() });
        }
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<InputFile>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let ft = entry.file_type().with_context(|| format!("cannot stat {}", path.display()))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push(InputFile { path, relative });
        }
    }
    Ok(())
}

/// Detections per frame, from a JSON-lines file: `{"path": "...", "detections": [...]}` per line, optionally with
/// the frame's `capture_time` (RFC 3339 text or Unix seconds) and `labels` (for context baselines).
#[derive(Debug, Default)]
pub struct Predictions {
    by_key: HashMap<String, Arc<[Detection]>>,
    frames: HashMap<String, FrameInfo>,
}

/// What a predictions line says about its frame besides detections.
#[derive(Debug, Default, Clone)]
pub struct FrameInfo {
    /// Capture time, Unix seconds.
    pub capture_secs: Option<i64>,
    pub labels: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CaptureTime {
    Unix(f64),
    Text(String),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictionLine {
    path: String,
    #[serde(default)]
    detections: Vec<Detection>,
    #[serde(default)]
    capture_time: Option<CaptureTime>,
    #[serde(default)]
    labels: HashMap<String, String>,
}

impl Predictions {
    pub fn load(path: &Path) -> anyhow::Result<Predictions> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut by_key = HashMap::new();
        let mut frames = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: PredictionLine = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a prediction line", path.display(), i + 1))?;
            let capture_secs = match rec.capture_time {
                None => None,
                Some(CaptureTime::Unix(s)) if s.is_finite() && (0.0..253_402_300_800.0).contains(&s) => {
                    Some(s.floor() as i64)
                }
                Some(CaptureTime::Unix(s)) => {
                    bail!("{}:{}: capture_time {s} is not a Unix time", path.display(), i + 1)
                }
                Some(CaptureTime::Text(t)) => Some(
                    crate::time::parse_rfc3339(&t)
                        .map(|(s, _)| s)
                        .with_context(|| format!("{}:{}: capture_time {t:?} is not RFC 3339", path.display(), i + 1))?,
                ),
            };
            if capture_secs.is_some() || !rec.labels.is_empty() {
                frames.insert(rec.path.clone(), FrameInfo { capture_secs, labels: rec.labels });
            }
            if by_key.insert(rec.path.clone(), Arc::from(rec.detections)).is_some() {
                bail!("{}:{}: path {:?} appears twice", path.display(), i + 1, rec.path);
            }
        }
        Ok(Predictions { by_key, frames })
    }

    /// The capture time and labels a predictions line gave for this frame (looked up like `lookup`).
    pub fn frame_info(&self, input: &InputFile) -> Option<&FrameInfo> {
        by_path(&self.frames, input)
    }

    /// Looks a frame up by its path as given, its path relative to the directory argument, then its file name.
    pub fn lookup(&self, input: &InputFile) -> Option<Arc<[Detection]>> {
        by_path(&self.by_key, input).cloned()
    }
}

/// A file's entry in a map keyed by the paths a JSON-lines file gives: its path as given, relative to the directory
/// argument, then its file name.
fn by_path<'m, V>(map: &'m HashMap<String, V>, input: &InputFile) -> Option<&'m V> {
    let full = input.path.to_string_lossy();
    let name = input.path.file_name().map(|n| n.to_string_lossy());
    [Some(full.as_ref()), Some(input.relative.as_str()), name.as_deref()].into_iter().flatten().find_map(|k| map.get(k))
}

/// Ground truth per frame, from a JSON-lines file: `{"path": "...", "objects": [{"x_min", "y_min", "x_max",
/// "y_max", "class"}]}` per line; `"objects": []` says the frame holds nothing to find. A line that is not valid JSON
/// of this shape stops the run with its line number; a line whose objects are out of range (or too many) refuses
/// only that frame's labels, counted by reason.
#[derive(Debug, Default)]
pub struct GroundTruth {
    by_key: HashMap<String, Arc<[TruthBox]>>,
    /// Frames whose labels were refused, by reason.
    pub refused: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelLine {
    path: String,
    objects: Vec<TruthBox>,
}

impl GroundTruth {
    pub fn load(path: &Path, max_objects: usize) -> anyhow::Result<GroundTruth> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut out = GroundTruth::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: LabelLine = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a labels line", path.display(), i + 1))?;
            if out.by_key.contains_key(&rec.path) {
                bail!("{}:{}: path {:?} appears twice", path.display(), i + 1, rec.path);
            }
            match validate_truth(&rec.objects, max_objects) {
                Ok(()) => {
                    out.by_key.insert(rec.path, Arc::from(rec.objects));
                }
                Err(e) => {
                    eprintln!("{}:{}: labels of {:?} refused: {e}", path.display(), i + 1, rec.path);
                    *out.refused.entry(e.reason()).or_default() += 1;
                }
            }
        }
        Ok(out)
    }

    /// Looked up like `Predictions::lookup`.
    pub fn lookup(&self, input: &InputFile) -> Option<Arc<[TruthBox]>> {
        by_path(&self.by_key, input).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// The outcome of scoring one file.
#[derive(Debug)]
pub enum FrameResult {
    Scored {
        values: Vec<Option<f64>>,
        width: Option<usize>,
        height: Option<usize>,
        perceptual_hash: Option<u64>,
        detections: Arc<[Detection]>,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// Files are scored in chunks so results can be emitted in input order with bounded memory.
const CHUNK: usize = 512;

/// Scores `inputs` on `threads` workers (each with its own reusable `Scorer`) and calls `emit` in input order.
pub fn score_files(
    inputs: &[InputFile],
    predictions: &Predictions,
    registry: &Arc<MetricRegistry>,
    settings: ScoreSettings,
    threads: usize,
    mut emit: impl FnMut(&InputFile, FrameResult),
) {
    let threads = threads.max(1);
    let mut scorers: Vec<Scorer> = (0..threads).map(|_| Scorer::new(registry.clone(), settings)).collect();
    let no_detections: Arc<[Detection]> = Arc::from(Vec::new());
    for chunk in inputs.chunks(CHUNK) {
        let slots: Vec<Mutex<Option<FrameResult>>> = chunk.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for scorer in scorers.iter_mut() {
                let (slots, next, no_det) = (&slots, &next, &no_detections);
                scope.spawn(move || {
                    let mut bytes = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(input) = chunk.get(i) else { break };
                        let dets = predictions.lookup(input).unwrap_or_else(|| no_det.clone());
                        let result = score_one(scorer, input, dets, &mut bytes);
                        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    }
                });
            }
        });
        for (input, slot) in chunk.iter().zip(slots) {
            let result = slot.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or(FrameResult::Failed {
                reason: "internal",
                message: "worker did not produce a result".into(),
            });
            emit(input, result);
        }
    }
}

fn score_one(scorer: &mut Scorer, input: &InputFile, dets: Arc<[Detection]>, bytes: &mut Vec<u8>) -> FrameResult {
    use std::io::Read;
    bytes.clear();
    let limit = scorer.settings().limits.max_encoded_bytes;
    let read = std::fs::File::open(&input.path).and_then(|f| f.take(limit as u64 + 1).read_to_end(bytes));
    if let Err(e) = read {
        return FrameResult::Failed { reason: "unreadable_file", message: e.to_string() };
    }
    match scorer.score(FramePixels::Encoded(bytes), &dets) {
        Ok(s) => FrameResult::Scored {
            values: s.values.to_vec(),
            width: s.width,
            height: s.height,
            perceptual_hash: s.perceptual_hash,
            detections: dets,
        },
        Err(e) => FrameResult::Failed { reason: e.reason(), message: e.to_string() },
    }
}

//! Checkpoints: the window store and camera state, together with the Kafka offsets they contain, in one file on
//! local disk, so a restart resumes exactly where the windows left off.
//!
//! File layout: an 8-byte magic, the body length (u64 LE), a 64-bit FNV-1a checksum of the body (u64 LE), and the
//! body in postcard (serde, varint integers). It is written to `<path>.tmp`, fsynced and renamed over `<path>`, so
//! a crash leaves either the previous checkpoint or the new one. A checkpoint is only restored when it was written
//! for the same baseline, window and slice settings and consumer group (`compat`); a corrupt or incompatible one
//! is reported, renamed to `<path>.rejected-<unix time>` and never used. A file that cannot be read (permissions,
//! I/O error, a directory, a symbolic link: links are never followed) is not corruption: start-up stops with the
//! error rather than starting empty and overwriting it later. A `<path>.tmp` left by an interrupted write is
//! removed at start-up; before every write it is removed and created afresh with O_EXCL (never through a link).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use framewatch_metrics::Baseline;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::cameras::{CameraTracker, SavedCamera};
use crate::fingerprint::fingerprint;
use crate::store::{SavedStore, StoreSettings, WindowStore};
use crate::truth::{JoinStore, SavedJoin};

const MAGIC: &[u8; 8] = b"FWCKPT\0\x01";
const HEADER: usize = 24;
/// 2: the body is followed by the ground-truth join (`SavedJoin`). Version 1 files (no join) still restore.
pub const FORMAT_VERSION: u32 = 2;
/// Slices copied per hold of the store lock while a checkpoint is taken.
const EXPORT_CHUNK: usize = 64;
/// Frames of the ground-truth join copied per hold of its lock (~2 ms each, see BENCHMARKS.md).
const EXPORT_JOIN_CHUNK: usize = 1024;

/// The next offset to read in one partition (everything before it is in the checkpoint's windows).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SavedOffset {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format_version: u32,
    pub written_unix_ms: i64,
    /// Fingerprint of what makes windows comparable: baseline, window steps, slice dimensions and predicates.
    pub compat: u64,
    /// Consumer group whose offsets these are ("" without Kafka).
    pub group_id: String,
    pub offsets: Vec<SavedOffset>,
    pub store: SavedStore,
    pub cameras: Vec<SavedCamera>,
    /// Encoded after the rest (so a version 1 body, which ends before it, still decodes).
    #[serde(skip)]
    pub join: SavedJoin,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {path} does not fit this configuration: {reason}")]
    Incompatible { path: PathBuf, reason: String },
    #[error("cannot encode checkpoint: {0}")]
    Encode(#[from] postcard::Error),
}

impl CheckpointError {
    /// The `result` label of `framewatch_checkpoint_restores_total` for this error.
    pub fn result_label(&self) -> &'static str {
        match self {
            CheckpointError::Io { .. } => "io_error",
            CheckpointError::Corrupt { .. } => "corrupt",
            CheckpointError::Incompatible { .. } => "incompatible",
            CheckpointError::Encode(_) => "encode_error",
        }
    }
}

/// What windows depend on: a checkpoint written under different settings would mix incomparable counts.
pub fn compat_fingerprint(baseline: &Baseline, settings: &StoreSettings) -> u64 {
    let predicates: Vec<String> = settings
        .predicates
        .iter()
        .map(|(p, indices)| {
            // One condition reads "name:metric:op:threshold:index", as before conjunctions existed, so old
            // checkpoints of single-comparison predicates still restore.
            let conditions: Vec<String> = (p.predicate.conditions.iter().zip(indices))
                .map(|(c, i)| format!("{}:{:?}:{}:{i}", c.metric, c.op, c.threshold))
                .collect();
            format!("{}:{}", p.name, conditions.join("&"))
        })
        .collect();
    let text = format!(
        "{}\n{}\n{}\n{:?}\n{:?}",
        baseline.to_json(),
        settings.step_secs,
        settings.steps,
        settings.dimensions,
        predicates
    );
    fingerprint(text.as_bytes())
}

pub fn encode(c: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let mut body = postcard::to_allocvec(c)?;
    if c.format_version >= 2 {
        body.extend_from_slice(&postcard::to_allocvec(&c.join)?);
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&fingerprint(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes and checks a checkpoint file's bytes (structure and checksum, not compatibility).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupt("not a framewatch checkpoint (bad magic or too short)".into()));
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let (len, sum) = (word(8), word(16));
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(corrupt(format!("body is {} bytes, the header says {len} (truncated?)", body.len())));
    }
    if fingerprint(body) != sum {
        return Err(corrupt("checksum mismatch".into()));
    }
    let (mut c, rest): (Checkpoint, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| corrupt(format!("cannot decode: {e}")))?;
    match c.format_version {
        1 if rest.is_empty() => {}
        1 => return Err(corrupt(format!("{} bytes after a version 1 body", rest.len()))),
        FORMAT_VERSION => {
            c.join = postcard::from_bytes(rest).map_err(|e| corrupt(format!("cannot decode the label join: {e}")))?;
        }
        v => {
            return Err(CheckpointError::Incompatible {
                path: path.to_path_buf(),
                reason: format!("format version {v} (this build reads 1 and {FORMAT_VERSION})"),
            });
        }
    }
    Ok(c)
}

/// Checkpoint metrics.
#[derive(Debug, Clone, Default)]
pub struct CheckpointTelemetry {
    pub writes: Family<[(&'static str, &'static str); 1], Counter>,
    pub restores: Family<[(&'static str, &'static str); 1], Counter>,
    pub bytes: Gauge,
    pub last_success_unix: Gauge,
    pub write_seconds: Option<Histogram>,
}

impl CheckpointTelemetry {
    pub fn register(registry: &mut Registry) -> CheckpointTelemetry {
        let t = CheckpointTelemetry {
            write_seconds: Some(Histogram::new(exponential_buckets(0.001, 2.0, 14))),
            ..CheckpointTelemetry::default()
        };
        registry.register(
            "framewatch_checkpoint_writes",
            "Checkpoint writes, by result (ok, io_error, encode_error)",
            t.writes.clone(),
        );
        registry.register(
            "framewatch_checkpoint_restores",
            "Checkpoint restores at start-up, by result (restored, none, corrupt, incompatible, io_error)",
            t.restores.clone(),
        );
        registry.register("framewatch_checkpoint_size_bytes", "Size of the last checkpoint written", t.bytes.clone());
        registry.register(
            "framewatch_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written",
            t.last_success_unix.clone(),
        );
        for result in ["ok", "io_error", "encode_error"] {
            let _ = t.writes.get_or_create(&[("result", result)]);
        }
        if let Some(h) = &t.write_seconds {
            registry.register(
                "framewatch_checkpoint_write_duration_seconds",
                "Time to copy, encode and durably write a checkpoint",
                h.clone(),
            );
        }
        t
    }
}

/// Writes and restores checkpoints of one service's store and cameras.
#[derive(Debug)]
pub struct Checkpointer {
    path: PathBuf,
    compat: u64,
    group_id: String,
    store: Arc<Mutex<WindowStore>>,
    cameras: Arc<Mutex<CameraTracker>>,
    telemetry: CheckpointTelemetry,
    /// The ground-truth join, checkpointed with the windows it feeds (None: not saved).
    join: Option<Arc<Mutex<JoinStore>>>,
    /// One writer at a time (the Kafka source and the shutdown path may both write).
    writing: Mutex<()>,
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Checkpointer {
    pub fn new(
        path: PathBuf,
        compat: u64,
        group_id: String,
        store: Arc<Mutex<WindowStore>>,
        cameras: Arc<Mutex<CameraTracker>>,
        telemetry: CheckpointTelemetry,
    ) -> Checkpointer {
        Checkpointer { path, compat, group_id, store, cameras, telemetry, join: None, writing: Mutex::new(()) }
    }

    /// Also checkpoints (and restores) the ground-truth join.
    pub fn with_join(mut self, join: Arc<Mutex<JoinStore>>) -> Checkpointer {
        self.join = Some(join);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Snapshots the store and cameras (the locks are held only while copying) and durably writes them with
    /// `offsets`. The caller guarantees the store holds exactly the messages before those offsets.
    pub fn write(&self, offsets: &[SavedOffset]) -> Result<usize, CheckpointError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let result = self.write_inner(offsets);
        if let Some(h) = &self.telemetry.write_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        match &result {
            Ok(n) => {
                self.telemetry.writes.get_or_create(&[("result", "ok")]).inc();
                self.telemetry.bytes.set(*n as i64);
                self.telemetry.last_success_unix.set(unix_ms() / 1000);
            }
            Err(e) => {
                self.telemetry.writes.get_or_create(&[("result", e.result_label())]).inc();
                tracing::error!(error = %e, "checkpoint not written");
            }
        }
        result
    }

    fn write_inner(&self, offsets: &[SavedOffset]) -> Result<usize, CheckpointError> {
        let store = export_store(&self.store, EXPORT_CHUNK, || {});
        let cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner()).export_state();
        let join = self.join.as_ref().map(|j| export_join(j, EXPORT_JOIN_CHUNK));
        let mut offsets = offsets.to_vec();
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let c = Checkpoint {
            format_version: FORMAT_VERSION,
            written_unix_ms: unix_ms(),
            compat: self.compat,
            group_id: self.group_id.clone(),
            offsets,
            store,
            cameras,
            join: join.unwrap_or_default(),
        };
        let bytes = encode(&c)?;
        let io = |source| CheckpointError::Io { path: self.path.clone(), source };
        let tmp = tmp_path(&self.path);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        remove_if_present(&tmp).map_err(io)?;
        let written =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(bytes.len())
    }

    /// Reads the checkpoint at start-up and loads it into the store and cameras. Returns the offsets to resume
    /// from (empty when there is no usable checkpoint). A corrupt or incompatible file is set aside, reported and
    /// counted; the service then starts with empty windows. A file that cannot be read is an error (counted as
    /// `io_error`): the caller must not start, since a later write would replace a checkpoint nobody looked at.
    pub fn restore(&self) -> Result<Vec<SavedOffset>, CheckpointError> {
        let tmp = tmp_path(&self.path);
        match remove_if_present(&tmp) {
            Ok(true) => {
                tracing::warn!(path = %tmp.display(), "removed a partial checkpoint left by an interrupted write")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a partial checkpoint"),
        }
        let (result, label) = match self.try_restore() {
            Ok(None) => (Ok(Vec::new()), "none"),
            Ok(Some(offsets)) => (Ok(offsets), "restored"),
            Err(e @ CheckpointError::Io { .. }) => {
                tracing::error!(error = %e, "checkpoint cannot be read: not starting (fix it, or move it away)");
                (Err(e), "io_error")
            }
            Err(e) => {
                let label = e.result_label();
                let mut aside = self.path.clone().into_os_string();
                aside.push(format!(".rejected-{}", unix_ms() / 1000));
                let moved = std::fs::rename(&self.path, &aside);
                tracing::error!(
                    error = %e,
                    set_aside_as = %PathBuf::from(&aside).display(),
                    rename_ok = moved.is_ok(),
                    "checkpoint NOT restored: starting with empty windows"
                );
                (Ok(Vec::new()), label)
            }
        };
        self.telemetry.restores.get_or_create(&[("result", label)]).inc();
        result
    }

    fn try_restore(&self) -> Result<Option<Vec<SavedOffset>>, CheckpointError> {
        let refuse = |what: &str| {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}, not a regular file"));
            Err(CheckpointError::Io { path: self.path.clone(), source })
        };
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path: self.path.clone(), source }),
            Ok(m) if m.file_type().is_symlink() => return refuse("a symbolic link (not followed)"),
            Ok(m) if !m.is_file() => return refuse("a directory or special file"),
            Ok(_) => {}
        }
        let bytes =
            std::fs::read(&self.path).map_err(|source| CheckpointError::Io { path: self.path.clone(), source })?;
        let c = decode(&self.path, &bytes)?;
        let incompatible = |reason: String| CheckpointError::Incompatible { path: self.path.clone(), reason };
        if c.compat != self.compat {
            return Err(incompatible("written for a different baseline or different window/slice settings".into()));
        }
        if c.group_id != self.group_id {
            return Err(incompatible(format!(
                "written for consumer group {:?}, this instance is in {:?}",
                c.group_id, self.group_id
            )));
        }
        let frames = c.store.counters.recorded;
        let mut cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        cameras
            .restore_state(c.cameras)
            .map_err(|e| CheckpointError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        if let Err(e) = self.store.lock().unwrap_or_else(|p| p.into_inner()).restore_state(c.store) {
            let _ = cameras.restore_state(Vec::new());
            return Err(incompatible(e.to_string()));
        }
        let labelled = c.join.entries.iter().filter(|e| e.truth.is_some()).count();
        if let Some(j) = &self.join {
            j.lock().unwrap_or_else(|p| p.into_inner()).restore(c.join);
        }
        tracing::info!(
            path = %self.path.display(),
            frames,
            partitions = c.offsets.len(),
            labelled,
            age_secs = (unix_ms() - c.written_unix_ms) / 1000,
            "checkpoint restored"
        );
        Ok(Some(c.offsets))
    }
}

/// `<path>.tmp`, where a checkpoint is written before it is renamed over `<path>`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Removes a file or link (never what a link points to); whether there was one.
fn remove_if_present(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Copies the join out in parts of `chunk` frames, taking its lock once per part (frames and labels arriving
/// meanwhile wait for one part, not for the whole copy). A frame dropped between parts is left out; one added is
/// in the next checkpoint. The Kafka source writes checkpoints from its poll thread, which is also where Kafka
/// labels are joined, so no label message of the offsets written is in flight.
fn export_join(join: &Mutex<JoinStore>, chunk: usize) -> SavedJoin {
    let lock = || join.lock().unwrap_or_else(|p| p.into_inner());
    let ids = lock().ids();
    let mut entries = Vec::with_capacity(ids.len());
    for part in ids.chunks(chunk.max(1)) {
        entries.extend(lock().export_entries(part));
    }
    let mut saved = lock().export_rest();
    saved.entries = entries;
    saved
}

/// Copies the store out in parts of `chunk` slices, taking the lock once per part, so frames are not held up for
/// the whole copy of a large store. Slices evicted between parts are left out; the Kafka source writes
/// checkpoints with no frame in flight, so its parts add up to one consistent state. `between` runs while the
/// lock is released (a test hook).
fn export_store(store: &Mutex<WindowStore>, chunk: usize, mut between: impl FnMut()) -> SavedStore {
    let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
    let mut keys = lock().slice_keys();
    keys.sort_by_cached_key(|k| k.to_string());
    let mut slices = Vec::with_capacity(keys.len());
    for part in keys.chunks(chunk.max(1)) {
        between();
        slices.extend(lock().export_slices(part));
    }
    SavedStore { slices, counters: lock().counters() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use framewatch_metrics::{BaselineBuilder, ComparableSettings};
    use std::collections::HashMap;

    fn baseline(shift: f64) -> Baseline {
        let mut b = BaselineBuilder::new(vec!["brightness".into()], ComparableSettings::default(), 50);
        for i in 0..500 {
            b.add(&[Some(shift + (i % 100) as f64 / 200.0)], ["car"]);
        }
        b.finish("t".into(), "v".into(), "s".into()).expect("baseline")
    }

    fn parts(b: &Baseline, dir: &Path) -> Checkpointer {
        let index = |n: &str| (n == "brightness").then_some(0);
        let settings = StoreSettings::from_config(&Config::default(), index).expect("settings");
        let compat = compat_fingerprint(b, &settings);
        let store = Arc::new(Mutex::new(WindowStore::new(settings, b, index)));
        let cameras = Arc::new(Mutex::new(CameraTracker::new(10)));
        Checkpointer::new(dir.join("ckpt.bin"), compat, "g".into(), store, cameras, CheckpointTelemetry::default())
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fw-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn fill(c: &Checkpointer) {
        let labels = HashMap::new();
        let mut store = c.store.lock().expect("store");
        for i in 0..50 {
            let rec = crate::store::FrameRecord {
                camera_id: "cam-1",
                model_version: "",
                labels: &labels,
                capture_secs: 1_000_000 - i,
                values: &[Some(i as f64 / 50.0)],
                classes: &["car"],
            };
            store.record(&rec, 1_000_000);
        }
        c.cameras.lock().expect("cameras").observe("cam-1", 42, Some(1), 1_000_000);
    }

    fn restored(c: &Checkpointer) -> u64 {
        c.telemetry.restores.get_or_create(&[("result", "restored")]).get()
    }

    fn join() -> Arc<Mutex<JoinStore>> {
        Arc::new(Mutex::new(JoinStore::new(Default::default(), vec![(0, Arc::from("brightness"))])))
    }

    /// Issue 15: the join (frames waiting for labels, labelled frames, labels waiting for frames) survives a
    /// restart with the windows it feeds; a version 1 checkpoint (written before the join existed) still restores.
    #[test]
    fn the_label_join_survives_a_restart_and_version_1_checkpoints_still_restore() {
        use crate::truth::{JoinFrame, LabelResult, Labels};
        use framewatch_metrics::performance::TruthBox;
        let d = dir("join");
        let b = baseline(0.0);
        let a = parts(&b, &d).with_join(join());
        fill(&a);
        let slices = ["global".to_string()];
        let car = TruthBox { x_min: 0.1, y_min: 0.1, x_max: 0.3, y_max: 0.3, class_label: "car".into() };
        let detections = [car.detected(0.9)];
        {
            let mut j = a.join.as_ref().expect("join").lock().expect("join");
            for id in ["a", "b"] {
                let f = JoinFrame {
                    frame_id: id,
                    capture_secs: 1_000_000,
                    detections: &detections,
                    slices: &slices,
                    values: &[Some(0.5)],
                };
                j.offer_frame(&f, 1_000_000);
            }
            let labels = Labels { frame_id: "a".into(), truth: vec![car], no_objects: false };
            assert_eq!(j.offer_labels(&labels, 1_000_001), LabelResult::Joined);
        }
        a.write(&[]).expect("write");
        let c = parts(&b, &d).with_join(join());
        c.restore().expect("restore");
        let (ja, jc) = (a.join.as_ref().expect("a"), c.join.as_ref().expect("c"));
        let saved = ja.lock().expect("a").export_state();
        assert_eq!(jc.lock().expect("c").export_state(), saved);
        assert_eq!(jc.lock().expect("c").window(1_000_002), ja.lock().expect("a").window(1_000_002));
        assert_eq!(saved.entries.len(), 2);

        // The same checkpoint as version 1 wrote it: no join after the body.
        let bytes = std::fs::read(a.path()).expect("read");
        let mut old = decode(a.path(), &bytes).expect("decode");
        old.format_version = 1;
        std::fs::write(a.path(), encode(&old).expect("encode")).expect("write v1");
        let v1 = parts(&b, &d).with_join(join());
        v1.restore().expect("restore v1");
        assert_eq!(restored(&v1), 1, "restored, not set aside");
        assert_eq!(v1.store.lock().expect("v1").export_state(), a.store.lock().expect("a").export_state());
        assert_eq!(v1.join.as_ref().expect("v1").lock().expect("v1").size().waiting, 0, "nothing to restore");
    }

    #[test]
    fn a_written_checkpoint_restores_windows_cameras_and_offsets() {
        let d = dir("ok");
        let b = baseline(0.0);
        let a = parts(&b, &d);
        fill(&a);
        let offsets = vec![SavedOffset { topic: "t".into(), partition: 3, next: 17 }];
        a.write(&offsets).expect("write");
        let c = parts(&b, &d);
        assert_eq!(c.restore().expect("restore"), offsets);
        assert_eq!(restored(&c), 1);
        let (sa, sc) = (a.store.lock().expect("a").export_state(), c.store.lock().expect("c").export_state());
        assert_eq!(sa, sc);
        assert_eq!(c.cameras.lock().expect("c").export_state(), a.cameras.lock().expect("a").export_state());
    }

    #[test]
    fn corrupt_and_incompatible_checkpoints_are_set_aside_not_used() {
        let d = dir("bad");
        let b = baseline(0.0);
        let a = parts(&b, &d);
        fill(&a);
        a.write(&[]).expect("write");
        let good = std::fs::read(a.path()).expect("read");

        // one flipped bit in the body
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(a.path(), &flipped).expect("write");
        let c = parts(&b, &d);
        assert!(c.restore().expect("restore").is_empty());
        assert_eq!(c.telemetry.restores.get_or_create(&[("result", "corrupt")]).get(), 1);
        assert_eq!(c.store.lock().expect("c").slice_count(), 0, "nothing restored");
        assert!(!a.path().exists(), "set aside");
        let aside = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt.bin.rejected-"));
        assert_eq!(aside.count(), 1);

        // truncated
        std::fs::write(a.path(), &good[..good.len() / 2]).expect("write");
        let c = parts(&b, &d);
        assert!(c.restore().expect("restore").is_empty());
        assert_eq!(c.telemetry.restores.get_or_create(&[("result", "corrupt")]).get(), 1);

        // written against another baseline
        std::fs::write(a.path(), &good).expect("write");
        let other = parts(&baseline(0.1), &d);
        assert!(other.restore().expect("restore").is_empty());
        assert_eq!(other.telemetry.restores.get_or_create(&[("result", "incompatible")]).get(), 1);
        assert_eq!(other.store.lock().expect("o").slice_count(), 0);

        // no file at all: a first start
        let c = parts(&b, &d);
        assert!(c.restore().expect("restore").is_empty());
        assert_eq!(c.telemetry.restores.get_or_create(&[("result", "none")]).get(), 1);
    }

    #[test]
    fn an_unreadable_checkpoint_stops_start_up_and_is_left_alone() {
        let d = dir("unreadable");
        let b = baseline(0.0);
        // A directory where the file should be: reading fails (as EACCES or EIO would; tests run as root, where
        // permissions do not stop a read).
        std::fs::create_dir_all(d.join("ckpt.bin")).expect("mkdir");
        let c = parts(&b, &d);
        let e = c.restore().expect_err("a read error is not an empty start");
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
        assert_eq!(c.telemetry.restores.get_or_create(&[("result", "io_error")]).get(), 1);
        assert!(d.join("ckpt.bin").is_dir(), "left where it was, not set aside");
    }

    #[test]
    fn links_are_not_followed_and_partial_writes_are_cleaned_up() {
        let d = dir("links");
        let b = baseline(0.0);
        let a = parts(&b, &d);
        fill(&a);
        a.write(&[]).expect("write");
        // The checkpoint path is a link to a valid checkpoint elsewhere: refused, nothing restored.
        std::fs::rename(a.path(), d.join("elsewhere.bin")).expect("move");
        std::os::unix::fs::symlink(d.join("elsewhere.bin"), a.path()).expect("link");
        let c = parts(&b, &d);
        let e = c.restore().expect_err("a link is not followed");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(c.store.lock().expect("c").slice_count(), 0);
        std::fs::remove_file(a.path()).expect("unlink");

        // A partial write left by a crash is removed at start-up.
        std::fs::write(d.join("ckpt.bin.tmp"), b"half a checkpoint").expect("write");
        let c = parts(&b, &d);
        assert!(c.restore().expect("nothing to restore").is_empty());
        assert!(!d.join("ckpt.bin.tmp").exists(), "the partial write is removed");

        // A link planted at the temporary path does not redirect the write.
        std::fs::write(d.join("victim"), b"keep me").expect("write");
        std::os::unix::fs::symlink(d.join("victim"), d.join("ckpt.bin.tmp")).expect("link");
        fill(&c);
        c.write(&[]).expect("write");
        assert_eq!(std::fs::read(d.join("victim")).expect("read"), b"keep me");
        assert!(!d.join("ckpt.bin").is_symlink() && !d.join("ckpt.bin.tmp").exists());
        assert_eq!(parts(&b, &d).restore().expect("restore"), Vec::new());
    }

    #[test]
    fn the_store_lock_is_released_between_parts_of_an_export() {
        let b = baseline(0.0);
        let c = parts(&b, &dir("parts"));
        let labels = HashMap::new();
        {
            let mut store = c.store.lock().expect("store");
            for cam in 0..200 {
                let camera = format!("cam-{cam}");
                let rec = crate::store::FrameRecord {
                    camera_id: &camera,
                    model_version: "",
                    labels: &labels,
                    capture_secs: 1_000_000,
                    values: &[Some(0.5)],
                    classes: &["car"],
                };
                store.record(&rec, 1_000_000);
            }
        }
        let whole = c.store.lock().expect("store").export_state();
        assert_eq!(whole.slices.len(), 201, "200 cameras and global");
        let mut released = 0;
        let parted = export_store(&c.store, 16, || {
            assert!(c.store.try_lock().is_ok(), "the lock is free between parts");
            released += 1;
        });
        assert_eq!(released, 201usize.div_ceil(16));
        assert_eq!(parted, whole);
    }
}

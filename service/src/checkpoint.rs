//! Checkpoints: the window store and camera state, together with the Kafka offsets they contain, in one file on
//! local disk, so a restart resumes exactly where the windows left off.
//!
//! File layout: an 8-byte magic, the body length (u64 LE), a 64-bit FNV-1a checksum of the body (u64 LE), and the
//! body in postcard (serde, varint integers). It is written to `<path>.tmp`, fsynced and renamed over `<path>`, so
//! a crash leaves either the previous checkpoint or the new one. A checkpoint is only restored when it was written
//! for the same baseline, window and slice settings and consumer group (`compat`); a corrupt or incompatible one
//! is reported, renamed to `<path>.rejected-<unix time>` and never used.

use std::io::Write;
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

const MAGIC: &[u8; 8] = b"FWCKPT\0\x01";
const HEADER: usize = 24;
const FORMAT_VERSION: u32 = 1;

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
    fn result_label(&self) -> &'static str {
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
        .map(|(p, i)| format!("{}:{}:{:?}:{}:{i}", p.name, p.metric, p.op, p.threshold))
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
    let body = postcard::to_allocvec(c)?;
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
    let c: Checkpoint = postcard::from_bytes(body).map_err(|e| corrupt(format!("cannot decode: {e}")))?;
    if c.format_version != FORMAT_VERSION {
        return Err(CheckpointError::Incompatible {
            path: path.to_path_buf(),
            reason: format!("format version {} (this build reads {FORMAT_VERSION})", c.format_version),
        });
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
        Checkpointer { path, compat, group_id, store, cameras, telemetry, writing: Mutex::new(()) }
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
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner()).export_state();
        let cameras = self.cameras.lock().unwrap_or_else(|p| p.into_inner()).export_state();
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
        };
        let bytes = encode(&c)?;
        let io = |source| CheckpointError::Io { path: self.path.clone(), source };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(bytes.len())
    }

    /// Reads the checkpoint at start-up and loads it into the store and cameras. Returns the offsets to resume
    /// from (empty when there is no usable checkpoint). A corrupt or incompatible file is set aside, reported and
    /// counted; the service then starts with empty windows.
    pub fn restore(&self) -> Vec<SavedOffset> {
        let (result, label) = match self.try_restore() {
            Ok(None) => (Vec::new(), "none"),
            Ok(Some(offsets)) => (offsets, "restored"),
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
                (Vec::new(), label)
            }
        };
        self.telemetry.restores.get_or_create(&[("result", label)]).inc();
        result
    }

    fn try_restore(&self) -> Result<Option<Vec<SavedOffset>>, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path: self.path.clone(), source }),
        };
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
        tracing::info!(
            path = %self.path.display(),
            frames,
            partitions = c.offsets.len(),
            age_secs = (unix_ms() - c.written_unix_ms) / 1000,
            "checkpoint restored"
        );
        Ok(Some(c.offsets))
    }
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

    #[test]
    fn a_written_checkpoint_restores_windows_cameras_and_offsets() {
        let d = dir("ok");
        let b = baseline(0.0);
        let a = parts(&b, &d);
        fill(&a);
        let offsets = vec![SavedOffset { topic: "t".into(), partition: 3, next: 17 }];
        a.write(&offsets).expect("write");
        let c = parts(&b, &d);
        assert_eq!(c.restore(), offsets);
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
        assert!(c.restore().is_empty());
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
        assert!(c.restore().is_empty());
        assert_eq!(c.telemetry.restores.get_or_create(&[("result", "corrupt")]).get(), 1);

        // written against another baseline
        std::fs::write(a.path(), &good).expect("write");
        let other = parts(&baseline(0.1), &d);
        assert!(other.restore().is_empty());
        assert_eq!(other.telemetry.restores.get_or_create(&[("result", "incompatible")]).get(), 1);
        assert_eq!(other.store.lock().expect("o").slice_count(), 0);

        // no file at all: a first start
        let c = parts(&b, &d);
        assert!(c.restore().is_empty());
        assert_eq!(c.telemetry.restores.get_or_create(&[("result", "none")]).get(), 1);
    }
}

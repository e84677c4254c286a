//! Files that are re-read when they change: TLS certificates (cert-manager rotates them) and the tokens file. A
//! poll of each file's modification time, size and inode every few seconds: it sees Kubernetes' atomic
//! symlink swaps of mounted Secrets as well as in-place writes, and needs no inotify. A file that fails to load
//! keeps the previous version in service (logged and counted), and is tried again on its next change.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `framewatch_reloads_total{file, result}`.
#[derive(Debug, Clone, Default)]
pub struct ReloadTelemetry {
    reloads: Family<[(&'static str, &'static str); 2], Counter>,
}

impl ReloadTelemetry {
    pub fn register(registry: &mut Registry) -> ReloadTelemetry {
        let t = ReloadTelemetry::default();
        registry.register(
            "framewatch_reloads",
            "Files re-read after they changed (file: tls_grpc, tls_http, tokens), by result (ok, error: the previous \
             version stays in service)",
            t.reloads.clone(),
        );
        t
    }
}

/// What a poll compares: modification time, length and inode of each file (None: missing).
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    paths.iter().map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))).collect()
}

/// A value loaded from files, swapped whole when they change. Readers clone the `Arc` (cheap, no lock held).
#[derive(Debug)]
pub struct Reloading<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloading<T> {
    pub fn new(value: T) -> Reloading<T> {
        Reloading { current: RwLock::new(Arc::new(value)) }
    }

    pub fn get(&self) -> Arc<T> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, value: T) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

/// Polls `paths` every `every` until `stop`; on a change, `load`s and swaps the value in `target`.
pub fn watch<T: Send + Sync + 'static>(
    file: &'static str,
    paths: Vec<PathBuf>,
    every: Duration,
    target: Arc<Reloading<T>>,
    load: impl Fn() -> anyhow::Result<T> + Send + 'static,
    telemetry: ReloadTelemetry,
    stop: CancellationToken,
) -> JoinHandle<()> {
    for result in ["ok", "error"] {
        // At 0 from the start for a watched file, so a rate() over reloads has a zero to start from.
        let _ = telemetry.reloads.get_or_create(&[("file", file), ("result", result)]);
    }
    tokio::spawn(async move {
        let mut last = stamp(&paths);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&paths);
            if now == last {
                continue;
            }
            last = now;
            let result = match load() {
                Ok(v) => {
                    target.set(v);
                    tracing::info!(file, "reloaded after a change");
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(
                        file,
                        error = format!("{e:#}"),
                        "changed but cannot be loaded; the previous version stays in service"
                    );
                    "error"
                }
            };
            telemetry.reloads.get_or_create(&[("file", file), ("result", result)]).inc();
        }
    })
}

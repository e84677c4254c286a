//! The scoring stage: a bounded queue in front of a pool of worker threads (CPU work stays off the async
//! runtime). Full-queue policy: block. `submit` waits for room, so a gRPC stream stops reading and HTTP/2 flow
//! control slows the client; memory stays bounded by `queue_capacity` frames. Each worker owns a `Scorer` (reused
//! buffers), records into the window store, and answers the frame's submitter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use framewatch_metrics::{FramePixels, MetricRegistry, ScoreSettings, Scorer};
use tokio::sync::{mpsc, oneshot};

use crate::cameras::CameraTracker;
use crate::export::Telemetry;
use crate::frame::{Clock, Content, IncomingFrame, Rejection, now_secs};
use crate::store::{FrameRecord, Recorded, WindowStore};

/// The answer for one frame.
pub type Outcome = Result<(), Rejection>;

#[derive(Debug)]
pub struct Job {
    pub frame: IncomingFrame,
    /// `None` when nobody waits for the answer (fire and forget sources).
    pub reply: Option<oneshot::Sender<Outcome>>,
}

/// Handle for submitting frames; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    telemetry: Telemetry,
    /// Frames queued or being scored (submitted and not yet answered).
    in_flight: Arc<AtomicUsize>,
}

/// The running pool.
#[derive(Debug)]
pub struct Pipeline {
    handle: PipelineHandle,
    workers: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("framewatch is shutting down")]
pub struct ShuttingDown;

/// `try_submit` could not queue the job; it comes back.
#[derive(Debug)]
pub enum TrySubmitError {
    Full(Box<Job>),
    ShuttingDown(Box<Job>),
}

impl PipelineHandle {
    /// Queues a frame, waiting while the queue is full.
    pub async fn submit(&self, job: Job) -> Result<(), ShuttingDown> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let r = self.tx.send(job).await.map_err(|_| {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            ShuttingDown
        });
        self.telemetry.queue_depth.set(self.depth() as i64);
        r
    }

    /// Queues a frame if there is room now.
    pub fn try_submit(&self, job: Job) -> Result<(), TrySubmitError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let r = self.tx.try_send(job).map_err(|e| {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match e {
                mpsc::error::TrySendError::Full(j) => TrySubmitError::Full(Box::new(j)),
                mpsc::error::TrySendError::Closed(j) => TrySubmitError::ShuttingDown(Box::new(j)),
            }
        });
        self.telemetry.queue_depth.set(self.depth() as i64);
        r
    }

    /// Waits until the queue has room (does not queue anything).
    pub async fn room(&self) -> Result<(), ShuttingDown> {
        self.tx.reserve().await.map(drop).map_err(|_| ShuttingDown)
    }

    /// Frames submitted and not yet answered (queued or being scored).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Blocks (not for async callers) until no frame is queued or being scored, or `limit` passes.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.in_flight() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames waiting for a worker.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// Shared things every worker needs.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub registry: Arc<MetricRegistry>,
    pub settings: ScoreSettings,
    pub store: Arc<Mutex<WindowStore>>,
    pub clock: Arc<dyn Clock>,
    pub telemetry: Telemetry,
    pub cameras: Arc<Mutex<CameraTracker>>,
}

impl Pipeline {
    pub fn start(workers: usize, capacity: usize, ctx: WorkerContext) -> Pipeline {
        let (tx, rx) = mpsc::channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let handle = PipelineHandle { tx, capacity, telemetry: ctx.telemetry.clone(), in_flight: in_flight.clone() };
        let workers = (0..workers.max(1))
            .map(|i| {
                let (rx, ctx, in_flight) = (rx.clone(), ctx.clone(), in_flight.clone());
                std::thread::Builder::new()
                    .name(format!("framewatch-score-{i}"))
                    .spawn(move || worker(rx, ctx, &in_flight))
                    .unwrap_or_else(|e| panic!("cannot start scoring thread: {e}"))
            })
            .collect();
        Pipeline { handle, workers }
    }

    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Stops taking frames, lets the workers finish every queued frame, and waits for them.
    pub fn drain(self) {
        let Pipeline { handle, workers } = self;
        drop(handle);
        for w in workers {
            let _ = w.join();
        }
    }
}

fn worker(rx: Arc<Mutex<mpsc::Receiver<Job>>>, ctx: WorkerContext, in_flight: &AtomicUsize) {
    let mut scorer = Scorer::new(ctx.registry.clone(), ctx.settings);
    let mut values: Vec<Option<f64>> = Vec::new();
    loop {
        // Holding the lock while waiting is fine: idle workers have nothing else to do.
        let job = match rx.lock() {
            Ok(mut r) => r.blocking_recv(),
            Err(_) => return,
        };
        let Some(job) = job else { return };
        let started = Instant::now();
        let source = job.frame.source.as_str();
        let outcome = process(&mut scorer, &ctx, &job.frame, &mut values);
        ctx.telemetry.scoring_seconds.observe(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(()) => {
                ctx.telemetry.accepted.get_or_create(&[("source", source)]).inc();
            }
            Err(r) => ctx.telemetry.reject(source, r.reason),
        }
        // Recorded (or refused) before anyone hears of it: in-flight reaches zero only when the store has it.
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(reply) = job.reply {
            let _ = reply.send(outcome);
        }
    }
}

fn process(scorer: &mut Scorer, ctx: &WorkerContext, f: &IncomingFrame, values: &mut Vec<Option<f64>>) -> Outcome {
    let pixels = match &f.content {
        Content::Encoded(b) => FramePixels::Encoded(b),
        Content::Raw { pixels, width, height, format } => {
            FramePixels::Raw { pixels, width: *width, height: *height, format: *format }
        }
        Content::Values { .. } | Content::None => FramePixels::None,
    };
    let scored = scorer.score(pixels, &f.detections).map_err(|e| Rejection::new(e.reason(), e.to_string()))?;
    values.clear();
    values.extend_from_slice(scored.values);
    let hash = match &f.content {
        Content::Values { perceptual_hash, .. } => *perceptual_hash,
        _ => scored.perceptual_hash,
    };
    let content = match &f.content {
        Content::Encoded(b) => Some(fingerprint(b)),
        Content::Raw { pixels, .. } => Some(fingerprint(pixels)),
        _ => None,
    };
    if let Content::Values { values: given, .. } = &f.content {
        for (name, v) in given {
            let Some(i) = ctx.registry.index_of(name) else {
                return Err(Rejection::new("unknown_metric", format!("metric {name:?} is not in the catalog")));
            };
            values[i] = Some(*v);
        }
    }
    let classes: Vec<&str> = f.detections.iter().map(|d| d.class_label.as_str()).collect();
    let record = FrameRecord {
        camera_id: &f.camera_id,
        model_version: &f.model_version,
        labels: &f.labels,
        capture_secs: f.capture_secs,
        values,
        classes: &classes,
    };
    let now = now_secs(ctx.clock.as_ref());
    let recorded = ctx.store.lock().unwrap_or_else(|p| p.into_inner()).record(&record, now);
    if let (Some(h), Recorded::Yes { .. }) = (hash, recorded) {
        // Workers run in parallel, so two frames of one camera may be observed out of order; streaks are
        // counted in frames and tolerate that.
        ctx.cameras.lock().unwrap_or_else(|p| p.into_inner()).observe(&f.camera_id, h, content, now);
    }
    match recorded {
        Recorded::Yes { .. } => Ok(()),
        Recorded::TooLate => Err(Rejection::new(
            "too_late",
            "captured before the window's allowed lateness: counted as late, not mixed into windows",
        )),
    }
}

/// 64-bit FNV-1a over 8-byte words: fast enough next to decoding, and equal only for identical content.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in chunks.by_ref() {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01B3);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^ bytes.len() as u64
}

//! The scoring stage: a bounded queue in front of a pool of worker threads (CPU work stays off the async
//! runtime). The bound is in frames (queued or being scored), whether they come one by one (gRPC) or in batches
//! (Kafka). Full-queue policy: block. `submit` waits for room, so a gRPC stream stops reading and HTTP/2 flow
//! control slows the client; `try_submit` tells the Kafka source to wait and then pause its partitions; memory
//! stays bounded by `queue_capacity` frames. Each worker owns a `Scorer` (reused buffers), records into the window
//! store (a batch under one lock), and answers the submitter.
//!
//! A panic (a bug in a metric or a decoder) costs one frame, not the pool: it is refused as `internal_error`,
//! counted and logged; a worker that dies anyway gives its queue permits back and is started again. A worker
//! that hangs instead (a metric stuck in a loop) shows as a stall: frames queued and none finished for a while
//! (`PipelineHandle::stalled`), which fails liveness so the orchestrator restarts the process.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use framewatch_metrics::decode::probe;
use framewatch_metrics::{FramePixels, MetricRegistry, ScoreSettings, Scorer};
use tokio::sync::{mpsc, oneshot};

use crate::cameras::CameraTracker;
use crate::charts::{ThumbnailScratch, thumbnail_jpeg};
use crate::exemplars::{ExemplarStore, FrameLabels};
use crate::fingerprint::fingerprint;
use crate::frame::{Content, IncomingFrame, Source};
use crate::reject::{RejectReason, Rejection};
use crate::store::{FrameRecord, Recorded, WindowStore};
use crate::telemetry::Telemetry;
use crate::time::{Clock, now_secs};
use crate::truth::{JoinFrame, Truth};

/// The answer for one frame.
pub type Outcome = Result<(), Rejection>;

/// Turns a source's raw message into a frame, on a worker thread (so a single-threaded source such as the Kafka
/// poll loop does not decode).
pub type Decode = Box<dyn FnOnce() -> Result<IncomingFrame, Rejection> + Send>;

/// What a worker is handed: a validated frame (answered with one `Outcome`), a batch of validated frames, or a
/// batch of messages still to decode (both batches answered with one `Outcome` per frame, in order). Batches cost
/// one queue slot, one wake-up, one store lock and one answer for many small messages.
pub enum Work {
    Frame(IncomingFrame, Option<oneshot::Sender<Outcome>>),
    /// Frames already validated, answered with one `Outcome` each, in order (a gRPC stream's buffered frames).
    Frames(Source, Vec<IncomingFrame>, oneshot::Sender<Vec<Outcome>>),
    Batch(Source, Vec<Decode>, oneshot::Sender<Vec<Outcome>>),
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Frame(frame, _) => f.debug_tuple("Frame").field(frame).finish(),
            Work::Frames(source, frames, _) => f.debug_tuple("Frames").field(source).field(&frames.len()).finish(),
            Work::Batch(source, b, _) => f.debug_tuple("Batch").field(source).field(&b.len()).finish(),
        }
    }
}

/// One queue slot's worth of work.
#[derive(Debug)]
pub struct Job {
    pub work: Work,
}

/// Handle for submitting frames; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    telemetry: Telemetry,
    /// One permit per frame of capacity: taken at submit, given back once the frame is recorded (or refused), so
    /// the bound is in frames whether they come one by one (gRPC) or in batches (Kafka).
    frames: Arc<tokio::sync::Semaphore>,
    progress: Arc<Progress>,
}

/// The queue's depth and progress, for liveness; see `PipelineHandle::watch`.
#[derive(Debug, Clone)]
pub struct QueueWatch {
    frames: Arc<tokio::sync::Semaphore>,
    progress: Arc<Progress>,
    capacity: usize,
}

impl QueueWatch {
    /// See `PipelineHandle::stalled`.
    pub fn stalled(&self, limit: Duration) -> Option<(usize, Duration)> {
        let depth = self.capacity.saturating_sub(self.frames.available_permits());
        let since = self.progress.since();
        (depth > 0 && since > limit).then_some((depth, since))
    }
}

/// When the queue last moved: a job finished, or work arrived at an empty queue.
#[derive(Debug)]
struct Progress {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress { epoch: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn mark(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
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

impl Job {
    /// Frames this job carries (what it takes of the queue's capacity).
    pub fn frames(&self) -> usize {
        match &self.work {
            Work::Frame(..) => 1,
            Work::Frames(_, f, _) => f.len().max(1),
            Work::Batch(_, b, _) => b.len().max(1),
        }
    }
}

impl PipelineHandle {
    /// Queues a job, waiting while the queue has no room for its frames.
    pub async fn submit(&self, job: Job) -> Result<(), ShuttingDown> {
        let n = self.permits_for(&job);
        self.frames.acquire_many(n).await.map_err(|_| ShuttingDown)?.forget();
        self.mark_if_first(n);
        let r = self.tx.send(job).await.map_err(|_| {
            self.frames.add_permits(n as usize);
            ShuttingDown
        });
        if r.is_ok() {
            self.telemetry.queue_jobs.inc();
        }
        self.telemetry.queue_depth.set(self.depth() as i64);
        r
    }

    /// Queues a job if there is room for its frames now.
    pub fn try_submit(&self, job: Job) -> Result<(), TrySubmitError> {
        let n = self.permits_for(&job);
        match self.frames.try_acquire_many(n) {
            Ok(p) => {
                p.forget();
                self.mark_if_first(n);
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TrySubmitError::Full(Box::new(job))),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(TrySubmitError::ShuttingDown(Box::new(job))),
        }
        let r = self.tx.try_send(job).map_err(|e| {
            self.frames.add_permits(n as usize);
            match e {
                mpsc::error::TrySendError::Full(j) => TrySubmitError::Full(Box::new(j)),
                mpsc::error::TrySendError::Closed(j) => TrySubmitError::ShuttingDown(Box::new(j)),
            }
        });
        if r.is_ok() {
            self.telemetry.queue_jobs.inc();
        }
        self.telemetry.queue_depth.set(self.depth() as i64);
        r
    }

    /// Work that just arrived at an empty queue starts the stall clock afresh.
    fn mark_if_first(&self, n: u32) {
        if self.depth() <= n as usize {
            self.progress.mark();
        }
    }

    /// `Some((frames queued or being scored, time since the queue last moved))` when frames wait and no job has
    /// finished for longer than `limit`: a stuck worker. Liveness fails on it.
    pub fn stalled(&self, limit: Duration) -> Option<(usize, Duration)> {
        self.watch().stalled(limit)
    }

    /// A view of the queue's depth and progress that does not keep the queue open (the HTTP server holds one
    /// past the pipeline's drain).
    pub fn watch(&self) -> QueueWatch {
        QueueWatch { frames: self.frames.clone(), progress: self.progress.clone(), capacity: self.capacity }
    }

    /// A job never asks for more than the whole capacity (sources keep batches within it).
    fn permits_for(&self, job: &Job) -> u32 {
        job.frames().min(self.capacity) as u32
    }

    /// Waits until the queue has room for `frames` frames (does not queue anything).
    pub async fn room(&self, frames: usize) -> Result<(), ShuttingDown> {
        let n = frames.clamp(1, self.capacity) as u32;
        self.frames.acquire_many(n).await.map(drop).map_err(|_| ShuttingDown)
    }

    /// Blocks (not for async callers) until no frame is queued or being scored, or `limit` passes.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.depth() > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Frames the queue holds at most (queued or being scored).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames queued or being scored.
    pub fn depth(&self) -> usize {
        self.capacity.saturating_sub(self.frames.available_permits())
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
    /// Decode memory shared by the workers (`pipeline.decode_memory_mib`).
    pub decode_budget: Arc<DecodeBudget>,
    /// Exemplar thumbnails of drifting pairs (None: off).
    pub exemplars: Option<Arc<ExemplarStore>>,
    /// Where frames with a `frame_id` wait for their ground truth (None: not kept).
    pub truth: Option<Truth>,
}

/// Memory the workers may hold for decoding at once: a worker reserves an image's decode bytes before decoding
/// and gives them back when the frame is scored. Full policy: wait (the frame fits once others finish; the queue
/// in front keeps the waiting bounded); an image that alone exceeds the budget is refused.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: std::sync::Condvar,
}

/// A reservation, given back when dropped (also when scoring panics).
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl DecodeBudget {
    pub fn new(limit_bytes: u64) -> DecodeBudget {
        DecodeBudget { limit: limit_bytes, used: Mutex::new(0), freed: std::sync::Condvar::new() }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `bytes`, waiting while other reservations leave too little room; `None` when `bytes` alone
    /// exceeds the budget.
    pub fn reserve(&self, bytes: u64) -> Option<Reservation<'_>> {
        if bytes > self.limit {
            return None;
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Some(Reservation { budget: self, bytes })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.budget.freed.notify_all();
    }
}

impl Pipeline {
    pub fn start(workers: usize, capacity: usize, ctx: WorkerContext) -> Pipeline {
        let (tx, rx) = mpsc::channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let frames = Arc::new(tokio::sync::Semaphore::new(capacity));
        let progress = Arc::new(Progress::new());
        let handle = PipelineHandle {
            tx,
            capacity,
            telemetry: ctx.telemetry.clone(),
            frames: frames.clone(),
            progress: progress.clone(),
        };
        let workers = (0..workers.max(1))
            .map(|i| {
                let (rx, ctx, queue) = (rx.clone(), ctx.clone(), (frames.clone(), progress.clone()));
                std::thread::Builder::new()
                    .name(format!("framewatch-score-{i}"))
                    .spawn(move || supervise(i, &rx, &ctx, (&queue.0, &queue.1), capacity))
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

/// Runs a worker until the queue is closed and drained. A worker that dies (a panic outside a frame's own guard)
/// has already given its permits back (`Permits`) and answered nobody (its reply senders are dropped, which the
/// sources read as `internal_error`); it is logged and started again with a fresh scorer, so the pool never
/// shrinks.
fn supervise(
    id: usize,
    rx: &Mutex<mpsc::Receiver<Job>>,
    ctx: &WorkerContext,
    queue: (&tokio::sync::Semaphore, &Progress),
    capacity: usize,
) {
    loop {
        match catch_unwind(AssertUnwindSafe(|| worker(rx, ctx, queue, capacity))) {
            Ok(()) => return,
            Err(panic) => {
                tracing::error!(
                    worker = id,
                    panic = panic_message(panic.as_ref()),
                    "scoring worker died; restarting it"
                )
            }
        }
    }
}

/// A job's queue permits, given back when dropped: after the job is recorded (before anyone hears of it), and
/// also when a panic unwinds through the worker, so a dying worker never shrinks the queue.
struct Permits<'a> {
    semaphore: &'a tokio::sync::Semaphore,
    progress: &'a Progress,
    n: usize,
    capacity: usize,
    telemetry: &'a Telemetry,
}

impl Drop for Permits<'_> {
    fn drop(&mut self) {
        self.progress.mark();
        self.semaphore.add_permits(self.n);
        self.telemetry.queue_depth.set(self.capacity.saturating_sub(self.semaphore.available_permits()) as i64);
    }
}

fn worker(
    rx: &Mutex<mpsc::Receiver<Job>>,
    ctx: &WorkerContext,
    (permits, progress): (&tokio::sync::Semaphore, &Progress),
    capacity: usize,
) {
    let mut scorer = Scorer::new(ctx.registry.clone(), ctx.settings);
    // Reused across jobs: one scored slot per frame of the largest batch seen, and a single frame's outcome.
    let mut scored: Vec<Scored> = Vec::new();
    let mut outcome: Vec<Outcome> = Vec::with_capacity(1);
    loop {
        // Holding the lock while waiting is fine: idle workers have nothing else to do.
        let Some(job) = rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv() else { return };
        // Recorded (or refused) before its permits come back and before anyone hears of it: the depth reaches
        // zero only when the store has every frame.
        let n = job.frames().min(capacity);
        let held = Permits { semaphore: permits, progress, n, capacity, telemetry: &ctx.telemetry };
        let (source, frames, reply): (_, Vec<Result<IncomingFrame, Rejection>>, _) = match job.work {
            Work::Frame(frame, reply) => {
                let source = frame.source;
                process(&mut scorer, ctx, source, &[Ok(frame)], &mut scored, &mut outcome);
                drop(held);
                if let (Some(reply), Some(o)) = (reply, outcome.pop()) {
                    let _ = reply.send(o);
                }
                continue;
            }
            Work::Frames(source, frames, reply) => (source, frames.into_iter().map(Ok).collect(), reply),
            Work::Batch(source, batch, reply) => (source, batch.into_iter().map(decode_guarded).collect(), reply),
        };
        let mut outcomes = Vec::with_capacity(frames.len());
        process(&mut scorer, ctx, source, &frames, &mut scored, &mut outcomes);
        drop(held);
        let _ = reply.send(outcomes);
    }
}

/// The refusal of a frame whose decoding or scoring panicked.
fn internal_error() -> Rejection {
    Rejection::new(RejectReason::InternalError, "framewatch failed on this frame (a bug, logged); it was not recorded")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
}

/// Runs a source's decode, a panic in it refusing only that message.
fn decode_guarded(decode: Decode) -> Result<IncomingFrame, Rejection> {
    catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        tracing::error!(
            panic = panic_message(panic.as_ref()),
            "decoding a message panicked; refused as internal_error"
        );
        Err(internal_error())
    })
}

/// A frame's scores, ready to record (a reusable slot).
#[derive(Debug, Default)]
struct Scored {
    values: Vec<Option<f64>>,
    hash: Option<u64>,
    /// Fingerprint of the pixels or encoded bytes (frozen-camera detection).
    content: Option<u64>,
    /// A JPEG thumbnail, made only when the frame is an exemplar candidate of a drifting (slice, metric).
    thumbnail: Option<Arc<[u8]>>,
}

/// Scores each frame, then records all of them under one store lock and one camera lock (a batch of small
/// pre-scored events would otherwise hand the locks back and forth per event). `outcomes` gets one outcome per
/// frame, in order; an outcome still `Ok` after the store is a recorded frame.
fn process(
    scorer: &mut Scorer,
    ctx: &WorkerContext,
    source: Source,
    frames: &[Result<IncomingFrame, Rejection>],
    scored: &mut Vec<Scored>,
    outcomes: &mut Vec<Outcome>,
) {
    if scored.len() < frames.len() {
        scored.resize_with(frames.len(), Scored::default);
    }
    outcomes.clear();
    for (f, slot) in frames.iter().zip(scored.iter_mut()) {
        let started = Instant::now();
        outcomes.push(match f {
            Ok(f) => score_guarded(scorer, ctx, f, slot),
            Err(r) => Err(r.clone()),
        });
        ctx.telemetry.scoring_seconds.observe(started.elapsed().as_secs_f64());
    }
    let now = now_secs(ctx.clock.as_ref());
    let mut joins: Vec<(usize, Vec<String>)> = Vec::new();
    // One buffer of class names for the batch, not one per frame.
    let mut classes: Vec<&str> = Vec::new();
    {
        let mut store = ctx.store.lock().unwrap_or_else(|p| p.into_inner());
        for (i, (f, slot)) in frames.iter().zip(scored.iter()).enumerate() {
            let (Ok(f), Ok(())) = (f, &outcomes[i]) else { continue };
            classes.clear();
            classes.extend(f.detections.iter().map(|d| d.class_label.as_str()));
            let record = FrameRecord {
                camera_id: &f.camera_id,
                model_version: &f.model_version,
                labels: &f.labels,
                capture_secs: f.capture_secs,
                values: &slot.values,
                classes: &classes,
            };
            match store.record(&record, now) {
                Recorded::Yes { slices } => {
                    if let (Some(x), Some(jpeg)) = (&ctx.exemplars, &slot.thumbnail) {
                        x.offer(store.last_keys(slices), &f.camera_id, f.capture_secs, &slot.values, jpeg);
                    }
                    // The slices just recorded, copied for the join once the store's lock is released (only
                    // frames with a frame_id pay for it): the two locks are never held together.
                    if ctx.truth.is_some() && f.frame_id.is_some() {
                        joins.push((i, store.last_keys(slices).to_vec()));
                    }
                }
                Recorded::TooLate => {
                    outcomes[i] = Err(Rejection::new(
                        RejectReason::TooLate,
                        "captured before the window's allowed lateness: counted as late, not mixed into windows",
                    ))
                }
            }
        }
    }
    if let (Some(t), false) = (&ctx.truth, joins.is_empty()) {
        let mut join = t.lock();
        for (i, slices) in &joins {
            let (Ok(f), slot) = (&frames[*i], &scored[*i]) else { continue };
            let Some(id) = &f.frame_id else { continue };
            let frame = JoinFrame {
                frame_id: id,
                capture_secs: f.capture_secs,
                detections: &f.detections,
                slices,
                values: &slot.values,
            };
            join.offer_frame(&frame, now);
        }
    }
    let recorded = |i: usize| outcomes[i].is_ok();
    if (0..frames.len()).any(|i| recorded(i) && scored[i].hash.is_some()) {
        // Workers run in parallel, so two frames of one camera may be observed out of order; streaks are
        // counted in frames and tolerate that.
        let mut cameras = ctx.cameras.lock().unwrap_or_else(|p| p.into_inner());
        for (_, (f, slot)) in frames.iter().zip(scored.iter()).enumerate().filter(|(i, _)| recorded(*i)) {
            if let (Ok(f), Some(h)) = (f, slot.hash) {
                cameras.observe(&f.camera_id, h, slot.content, now);
            }
        }
    }
    let label = source.as_str();
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
    if accepted > 0 {
        ctx.telemetry.accepted.get_or_create(&[("source", label)]).inc_by(accepted);
    }
    for r in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        ctx.telemetry.reject(label, r.reason);
    }
}

/// `score`, with a panic confined to its frame: refused as `internal_error` and logged, and the scorer replaced
/// (its reused buffers may be half-written). The slot is not recorded, since the outcome is an error.
fn score_guarded(scorer: &mut Scorer, ctx: &WorkerContext, f: &IncomingFrame, out: &mut Scored) -> Outcome {
    catch_unwind(AssertUnwindSafe(|| score(scorer, ctx, f, out))).unwrap_or_else(|panic| {
        tracing::error!(
            camera_id = %f.camera_id,
            panic = panic_message(panic.as_ref()),
            "scoring a frame panicked; refused as internal_error"
        );
        *scorer = Scorer::new(ctx.registry.clone(), ctx.settings);
        Err(internal_error())
    })
}

/// Decodes and scores one frame into `out`, with edge-computed values in place of computed ones.
fn score(scorer: &mut Scorer, ctx: &WorkerContext, f: &IncomingFrame, out: &mut Scored) -> Outcome {
    let pixels = match &f.content {
        Content::Encoded(b) => FramePixels::Encoded(b),
        Content::Raw { pixels, width, height, format } => {
            FramePixels::Raw { pixels, width: *width, height: *height, format: *format }
        }
        Content::Values { .. } | Content::Packed { .. } | Content::None => FramePixels::None,
    };
    // The header says what decoding will cost (and an oversize image is refused here, before any pixel).
    let decode_bytes = match pixels {
        FramePixels::Encoded(b) => probe(b, &ctx.settings.limits).map_err(Rejection::from_decode)?.decode_bytes(),
        // A raw frame is already in memory; copying it to RGB costs 3 bytes per pixel.
        FramePixels::Raw { width, height, .. } => (width as u64).saturating_mul(height as u64).saturating_mul(3),
        FramePixels::None => 0,
    };
    let _reserved = ctx.decode_budget.reserve(decode_bytes).ok_or_else(|| {
        Rejection::new(
            RejectReason::DecodeBudgetExceeded,
            format!(
                "decoding this image needs {} MiB, more than pipeline.decode_memory_mib ({} MiB)",
                decode_bytes.div_ceil(1 << 20),
                ctx.decode_budget.limit() >> 20
            ),
        )
    })?;
    out.thumbnail = None;
    let scored = scorer.score(pixels, &f.detections).map_err(Rejection::from)?;
    out.values.clear();
    out.values.extend_from_slice(scored.values);
    out.hash = match &f.content {
        Content::Values { perceptual_hash, .. } | Content::Packed { perceptual_hash, .. } => *perceptual_hash,
        _ => scored.perceptual_hash,
    };
    out.content = match &f.content {
        Content::Encoded(b) => Some(fingerprint(b)),
        Content::Raw { pixels, .. } => Some(fingerprint(pixels)),
        _ => None,
    };
    if let Content::Values { values: given, .. } = &f.content {
        for (name, v) in given {
            let Some(i) = ctx.registry.index_of(name) else {
                return Err(Rejection::new(
                    RejectReason::UnknownMetric,
                    format!("metric {name:?} is not in the catalog"),
                ));
            };
            if ctx.registry.accepted(i).is_some_and(|(lo, hi)| !(lo..=hi).contains(v)) {
                let range = ctx.registry.infos().nth(i).map_or("?", |m| m.range);
                return Err(Rejection::new(
                    RejectReason::InvalidMetricValue,
                    format!("metric {name:?} = {v} is outside its range {range} (see `framewatch metrics`)"),
                ));
            }
            out.values[i] = Some(*v);
        }
    }
    if let Content::Packed { values, catalog_fingerprint, .. } = &f.content {
        packed_values(&ctx.registry, values, *catalog_fingerprint, &mut out.values)?;
    }
    out.thumbnail = exemplar_thumbnail(scorer, ctx, f, &out.values);
    Ok(())
}

/// Edge values in catalog order over the scored ones: no name to look up or allocate per value, only the catalog's
/// fingerprint and length to check. NaN leaves framewatch's own value (from the detections) in place.
fn packed_values(
    registry: &MetricRegistry,
    values: &[f64],
    catalog_fingerprint: u64,
    out: &mut [Option<f64>],
) -> Outcome {
    if catalog_fingerprint != registry.fingerprint() || values.len() != registry.len() {
        return Err(Rejection::new(
            RejectReason::CatalogMismatch,
            format!(
                "packed values: {} values for catalog {catalog_fingerprint:#018x}; this framewatch has {} metrics, \
                 catalog {:#018x} (ListMetrics)",
                values.len(),
                registry.len(),
                registry.fingerprint()
            ),
        ));
    }
    for (i, (&v, slot)) in values.iter().zip(out.iter_mut()).enumerate() {
        if v.is_nan() {
            continue;
        }
        if registry.accepted(i).is_some_and(|(lo, hi)| !(lo..=hi).contains(&v)) {
            let info = registry.infos().nth(i);
            return Err(Rejection::new(
                RejectReason::InvalidMetricValue,
                format!(
                    "metric {:?} = {v} is outside its range {} (see `framewatch metrics`)",
                    info.as_ref().map_or("?", |m| m.name),
                    info.as_ref().map_or("?", |m| m.range)
                ),
            ));
        }
        *slot = Some(v);
    }
    Ok(())
}

/// A thumbnail of the frame as analysed, when it is an exemplar candidate (nothing is made, or allocated, for
/// other frames, nor for frames without pixels).
fn exemplar_thumbnail(
    scorer: &Scorer,
    ctx: &WorkerContext,
    f: &IncomingFrame,
    values: &[Option<f64>],
) -> Option<Arc<[u8]>> {
    let x = ctx.exemplars.as_ref()?;
    let image = scorer.analysed_image()?;
    let labels = FrameLabels { camera_id: &f.camera_id, model_version: &f.model_version, labels: &f.labels };
    if !x.wants(&labels, values) {
        return None;
    }
    match thumbnail_jpeg(image, &mut ThumbnailScratch::default()) {
        Ok(jpeg) => {
            x.thumbnail_made();
            Some(Arc::from(jpeg))
        }
        Err(e) => {
            tracing::debug!(camera_id = %f.camera_id, error = %e, "no exemplar thumbnail");
            x.thumbnail_failed();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framewatch_metrics::catalog::{FrameContext, FrameMetric, MetricInfo, MetricKind};
    use framewatch_metrics::{BaselineBuilder, ComparableSettings, RawFormat};
    use prometheus_client::registry::Registry;

    use crate::config::Config;
    use crate::store::StoreSettings;
    use crate::time::ManualClock;

    const NOW: i64 = 1_764_151_200;
    /// Frames this wide trip the bug in `Buggy`.
    const POISON_WIDTH: usize = 13;

    /// A user's custom metric with a bug: it panics on frames 13 pixels wide.
    #[derive(Debug)]
    struct Buggy;

    impl FrameMetric for Buggy {
        fn info(&self) -> MetricInfo {
            MetricInfo {
                name: "buggy",
                kind: MetricKind::Data,
                unit: "ratio",
                range: "[0, 1]",
                description: "panics on frames 13 pixels wide",
                encord: None,
            }
        }
        fn compute(&self, f: &FrameContext<'_>) -> Option<f64> {
            match f.source_size {
                Some((POISON_WIDTH, _)) => panic!("bug in a custom metric"),
                _ => Some(1.0),
            }
        }
    }

    /// Frames this wide make `Stuck` wait until `STUCK_GATE` opens.
    const STUCK_WIDTH: usize = 11;
    static STUCK_GATE: (Mutex<bool>, std::sync::Condvar) = (Mutex::new(false), std::sync::Condvar::new());

    /// A user's custom metric that hangs (a loop that never ends, a lock never released) on frames 11 pixels wide.
    #[derive(Debug)]
    struct Stuck;

    impl FrameMetric for Stuck {
        fn info(&self) -> MetricInfo {
            MetricInfo {
                name: "stuck",
                kind: MetricKind::Data,
                unit: "ratio",
                range: "[0, 1]",
                description: "hangs on frames 11 pixels wide until the test lets it go",
                encord: None,
            }
        }
        fn compute(&self, f: &FrameContext<'_>) -> Option<f64> {
            if f.source_size.is_some_and(|(w, _)| w == STUCK_WIDTH) {
                let (open, wake) = &STUCK_GATE;
                let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
                while !*open {
                    open = wake.wait(open).unwrap_or_else(|p| p.into_inner());
                }
            }
            Some(1.0)
        }
    }

    fn context() -> WorkerContext {
        let mut registry = MetricRegistry::standard();
        registry.register(Buggy).expect("register the custom metric");
        registry.register(Stuck).expect("register the custom metric");
        let registry = Arc::new(registry);
        let mut baseline = BaselineBuilder::new(vec!["brightness".into()], ComparableSettings::default(), 10);
        for i in 0..100 {
            baseline.add(&[Some(0.3 + f64::from(i % 10) / 50.0)], ["car"]);
        }
        let baseline = baseline.finish("t".into(), "v".into(), "s".into()).expect("baseline");
        let index_of = |n: &str| registry.index_of(n);
        let settings = StoreSettings::from_config(&Config::default(), index_of).expect("store settings");
        WorkerContext {
            store: Arc::new(Mutex::new(WindowStore::new(settings, &baseline, index_of))),
            registry: registry.clone(),
            settings: ScoreSettings::default(),
            clock: Arc::new(ManualClock::at(NOW)),
            telemetry: Telemetry::register(&mut Registry::default(), 4),
            cameras: Arc::new(Mutex::new(CameraTracker::new(100))),
            decode_budget: Arc::new(DecodeBudget::new(512 << 20)),
            exemplars: None,
            truth: None,
        }
    }

    fn frame(source: Source, width: usize) -> IncomingFrame {
        IncomingFrame {
            source,
            camera_id: "cam-1".into(),
            model_version: "v1".into(),
            labels: Default::default(),
            capture_secs: NOW,
            content: Content::Raw { pixels: vec![128; width * 8], width, height: 8, format: RawFormat::Gray8 },
            detections: Vec::new(),
            frame_id: None,
        }
    }

    fn reason(o: &Outcome) -> &'static str {
        o.as_ref().err().map_or("ok", |r| r.reason.as_str())
    }

    fn count(
        family: &prometheus_client::metrics::family::Family<
            [(&'static str, &'static str); 2],
            prometheus_client::metrics::counter::Counter,
        >,
        labels: [(&'static str, &'static str); 2],
    ) -> u64 {
        family.get(&labels).map_or(0, |c| c.get())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panicking_metric_refuses_its_frame_as_internal_error_and_later_frames_are_scored() {
        let ctx = context();
        // One worker: the frames after the panic are scored by the same (recovered) worker.
        let pipeline = Pipeline::start(1, 4, ctx.clone());
        let handle = pipeline.handle();
        let mut answers = Vec::new();
        for width in [16, POISON_WIDTH, 16, 16] {
            let (tx, rx) = oneshot::channel();
            handle.submit(Job { work: Work::Frame(frame(Source::Grpc, width), Some(tx)) }).await.expect("queued");
            answers.push(rx.await.expect("every frame is answered"));
        }
        assert_eq!(answers.iter().map(reason).collect::<Vec<_>>(), ["ok", "internal_error", "ok", "ok"]);

        // A batch: a panicking decode and a panicking metric each cost their own message only.
        let (tx, rx) = oneshot::channel();
        let decodes: Vec<Decode> = vec![
            Box::new(|| Ok(frame(Source::Kafka, 16))),
            Box::new(|| panic!("bug in a decoder")),
            Box::new(|| Ok(frame(Source::Kafka, POISON_WIDTH))),
            Box::new(|| Ok(frame(Source::Kafka, 16))),
        ];
        handle.submit(Job { work: Work::Batch(Source::Kafka, decodes, tx) }).await.expect("queued");
        let batch = rx.await.expect("the batch is answered");
        assert_eq!(batch.iter().map(reason).collect::<Vec<_>>(), ["ok", "internal_error", "internal_error", "ok"]);

        let t = &ctx.telemetry;
        assert_eq!(count(&t.rejected, [("source", "grpc"), ("reason", "internal_error")]), 1);
        assert_eq!(count(&t.rejected, [("source", "kafka"), ("reason", "internal_error")]), 2);
        assert_eq!(t.accepted.get(&[("source", "grpc")]).map_or(0, |c| c.get()), 3);
        assert_eq!(t.accepted.get(&[("source", "kafka")]).map_or(0, |c| c.get()), 2);
        assert_eq!(handle.depth(), 0, "every permit came back");
        drop(handle);
        pipeline.drain();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn only_candidates_of_a_drifting_pair_get_a_thumbnail_filed_under_their_slices() {
        use crate::exemplars::{ExemplarStore, Watch};
        use crate::slice::SliceKey;
        let mut ctx = context();
        let store = Arc::new(ExemplarStore::new(1 << 20, &mut Registry::default()));
        ctx.exemplars = Some(store.clone());
        let brightness = ctx.registry.index_of("brightness").expect("brightness");
        let pipeline = Pipeline::start(1, 4, ctx.clone());
        let handle = pipeline.handle();
        let send = |f: IncomingFrame| {
            let handle = handle.clone();
            async move {
                let (tx, rx) = oneshot::channel();
                handle.submit(Job { work: Work::Frame(f, Some(tx)) }).await.expect("queued");
                assert_eq!(reason(&rx.await.expect("answered")), "ok");
            }
        };
        // Nothing drifts: no thumbnail is made.
        send(frame(Source::Grpc, 16)).await;
        assert_eq!(store.exemplars("global", "brightness").len(), 0);
        let watch = |slice: &str| Watch {
            slice: SliceKey::from_canonical(slice),
            metric: Arc::from("brightness"),
            registry_index: brightness,
            median: 0.4,
            scale: 0.1,
            current_mean: 0.5,
            window_start_secs: 0,
        };
        store.watch(vec![watch("global"), watch("camera_id=cam-9")]);
        send(frame(Source::Grpc, 16)).await;
        // Filed under global (where the store counted it), not under another camera's slice.
        let kept = store.exemplars("global", "brightness");
        assert_eq!(kept.len(), 2, "one extreme and one typical entry: {kept:?}");
        assert!(store.exemplars("camera_id=cam-9", "brightness").is_empty());
        let mut img = framewatch_metrics::RgbImage::default();
        framewatch_metrics::decode::decode_into(&kept[0].jpeg, &Default::default(), &mut img).expect("a JPEG");
        assert_eq!((img.width, img.height, kept[0].camera_id.as_ref()), (16, 8, "cam-1"));
        // A pre-scored frame has no pixels: nothing more is kept.
        let mut prescored = frame(Source::Grpc, 16);
        prescored.content = Content::Values { values: vec![("brightness".to_string(), 0.9)], perceptual_hash: None };
        send(prescored).await;
        assert_eq!(store.exemplars("global", "brightness").len(), 2);
        drop(handle);
        pipeline.drain();
    }

    /// Issue 12: packed edge values (catalog order, fingerprint) score exactly as the same values sent by name,
    /// NaN leaves framewatch's own value, and values for another catalog are refused.
    #[test]
    fn packed_edge_values_score_as_named_ones_and_another_catalog_is_refused() {
        let ctx = context();
        let registry = ctx.registry.clone();
        let mut scorer = Scorer::new(registry.clone(), ctx.settings);
        let n = registry.len();
        let brightness = registry.index_of("brightness").expect("brightness");
        let sharpness = registry.index_of("sharpness").expect("sharpness");
        let mut packed = vec![f64::NAN; n];
        packed[brightness] = 0.42;
        packed[sharpness] = 0.013;
        let with = |content: Content| IncomingFrame { content, ..frame(Source::Grpc, 16) };
        let named = with(Content::Values {
            values: vec![("brightness".into(), 0.42), ("sharpness".into(), 0.013)],
            perceptual_hash: Some(7),
        });
        let fp = registry.fingerprint();
        let packed_frame = |values: Vec<f64>, fp: u64| {
            with(Content::Packed { values, catalog_fingerprint: fp, perceptual_hash: Some(7) })
        };
        let (mut a, mut b) = (Scored::default(), Scored::default());
        score(&mut scorer, &ctx, &named, &mut a).expect("named");
        score(&mut scorer, &ctx, &packed_frame(packed.clone(), fp), &mut b).expect("packed");
        assert_eq!(a.values, b.values);
        assert_eq!((a.values[brightness], b.hash), (Some(0.42), Some(7)));
        let mut refused =
            |f: IncomingFrame| score(&mut scorer, &ctx, &f, &mut Scored::default()).expect_err("refused").reason;
        assert_eq!(refused(packed_frame(packed.clone(), fp ^ 1)), RejectReason::CatalogMismatch);
        assert_eq!(refused(packed_frame(packed[..n - 1].to_vec(), fp)), RejectReason::CatalogMismatch);
        let mut out_of_range = packed.clone();
        out_of_range[brightness] = 1.5;
        assert_eq!(refused(packed_frame(out_of_range, fp)), RejectReason::InvalidMetricValue);
    }

    /// Polls `f` every 10 ms for at most 10 s.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hung_worker_shows_as_a_stall_which_clears_when_it_moves_and_idleness_is_no_stall() {
        let limit = Duration::from_millis(100);
        let pipeline = Pipeline::start(1, 4, context());
        let handle = pipeline.handle();
        // Idle for longer than the limit: nothing waits, so nothing is stalled.
        eventually("the idle queue to age past the limit", || handle.progress.since() > limit).await;
        assert_eq!(handle.stalled(limit), None);

        // A frame hangs in a metric; one more waits behind it.
        let (tx, rx) = oneshot::channel();
        handle.submit(Job { work: Work::Frame(frame(Source::Grpc, STUCK_WIDTH), Some(tx)) }).await.expect("queued");
        let (tx2, rx2) = oneshot::channel();
        handle.submit(Job { work: Work::Frame(frame(Source::Grpc, 16), Some(tx2)) }).await.expect("queued");
        eventually("the stall to show", || handle.stalled(limit).is_some()).await;
        assert_eq!(handle.stalled(limit).map(|(depth, _)| depth), Some(2));

        // Let it go: both frames are answered and the stall clears.
        *STUCK_GATE.0.lock().expect("gate") = true;
        STUCK_GATE.1.notify_all();
        assert_eq!(reason(&rx.await.expect("answered")), "ok");
        assert_eq!(reason(&rx2.await.expect("answered")), "ok");
        assert_eq!(handle.stalled(limit), None);
        drop(handle);
        pipeline.drain();
    }

    #[test]
    fn a_worker_unwinding_gives_its_permits_back() {
        let semaphore = tokio::sync::Semaphore::new(8);
        let telemetry = Telemetry::register(&mut Registry::default(), 8);
        semaphore.try_acquire_many(5).expect("room").forget();
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            let progress = Progress::new();
            let _held =
                Permits { semaphore: &semaphore, progress: &progress, n: 5, capacity: 8, telemetry: &telemetry };
            panic!("a worker dies holding a job");
        }));
        assert!(unwound.is_err());
        assert_eq!(semaphore.available_permits(), 8);
        assert_eq!(telemetry.queue_depth.get(), 0);
    }

    #[test]
    fn the_decode_budget_waits_for_room_and_refuses_what_never_fits() {
        let budget = Arc::new(DecodeBudget::new(100));
        assert!(budget.reserve(101).is_none(), "alone over the budget");
        let first = budget.reserve(60).expect("fits");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let r = budget.reserve(60).expect("fits once the first is back");
                tx.send(budget.used()).expect("send");
                drop(r);
            })
        };
        // The second reservation cannot have been granted while the first is held: 120 > 100.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "granted past the budget");
        assert_eq!(budget.used(), 60);
        drop(first);
        assert_eq!(rx.recv().expect("granted after release"), 60);
        waiter.join().expect("waiter");
        assert_eq!(budget.used(), 0, "every reservation came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_image_over_the_decode_budget_is_refused_by_reason() {
        let mut ctx = context();
        // 64 x 64 raw: 12 KiB to copy to RGB; the budget is 4 KiB.
        ctx.decode_budget = Arc::new(DecodeBudget::new(4096));
        let pipeline = Pipeline::start(1, 4, ctx.clone());
        let handle = pipeline.handle();
        let mut big = frame(Source::Grpc, 64);
        big.content = Content::Raw { pixels: vec![1; 64 * 64], width: 64, height: 64, format: RawFormat::Gray8 };
        let (tx, rx) = oneshot::channel();
        handle.submit(Job { work: Work::Frame(big, Some(tx)) }).await.expect("queued");
        let o = rx.await.expect("answered");
        assert_eq!(reason(&o), "decode_budget_exceeded");
        assert!(o.expect_err("refused").message.contains("pipeline.decode_memory_mib"));
        let (tx, rx) = oneshot::channel();
        handle.submit(Job { work: Work::Frame(frame(Source::Grpc, 16), Some(tx)) }).await.expect("queued");
        assert_eq!(reason(&rx.await.expect("answered")), "ok", "16 x 8 fits");
        assert_eq!(count(&ctx.telemetry.rejected, [("source", "grpc"), ("reason", "decode_budget_exceeded")]), 1);
        assert_eq!(ctx.decode_budget.used(), 0);
        drop(handle);
        pipeline.drain();
    }
}

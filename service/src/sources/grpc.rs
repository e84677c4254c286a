//! gRPC ingest: a client-streaming fleet RPC with one ordered acknowledgement per frame, and a unary RPC.
//! Validation happens here (cheap, before queueing); scoring outcomes come back from the workers.

use std::pin::Pin;
use std::sync::Arc;

use framewatch_proto::v1::ingest_service_server::IngestService;
use framewatch_proto::v1::{Ack, Frame, FrameLabels};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::IngestConfig;
use crate::frame::{IncomingFrame, Source, from_proto};
use crate::pipeline::{Job, Outcome, PipelineHandle, Work};
use crate::reject::{RejectReason, Rejection};
use crate::telemetry::Telemetry;
use crate::time::Clock;
use crate::truth::{LabelResult, Truth, labels_from_proto};

#[derive(Debug, Clone)]
pub struct GrpcIngest {
    pub pipeline: PipelineHandle,
    pub telemetry: Telemetry,
    pub clock: Arc<dyn Clock>,
    pub config: IngestConfig,
    /// See `max_message_bytes`.
    pub max_message_bytes: usize,
    /// Where `SendLabels` delivers ground truth.
    pub truth: Truth,
}

/// An acknowledgement not yet known: either decided at validation, or waiting for a worker.
enum Pending {
    Ready(Outcome),
    Waiting(oneshot::Receiver<Outcome>),
}

/// Frames of one stream queued as one job: the frames already buffered when the first of them is read, up to
/// `BATCH_FRAMES`, holding at most `BATCH_BYTES` between them (images, values, detections: a larger frame goes
/// alone, so images still spread over the workers one by one), and no more than the queue had room for when each
/// was read (at least one). One stream thus reads no further ahead of a full queue than one frame, as without
/// batches; streams that read at the same moment can each gather what they saw room for, so the frames read and
/// waiting for room are at most one batch per stream (64 frames, 64 KiB, or one larger frame). Small pre-scored
/// events then cost one queue slot, one worker wake-up, one store lock and one answer per batch, not per event.
const BATCH_FRAMES: usize = 64;
const BATCH_BYTES: usize = 64 << 10;

impl GrpcIngest {
    /// Checks one frame (counted as received, and as refused when it is); `Err` is its acknowledgement.
    fn validate(&self, frame: Frame) -> Result<IncomingFrame, Rejection> {
        self.telemetry.received.get_or_create(&[("source", Source::Grpc.as_str())]).inc();
        from_proto(frame, Source::Grpc, self.clock.now(), &self.config).inspect_err(|r| {
            self.telemetry.reject(Source::Grpc.as_str(), r.reason);
        })
    }

    /// Validates and queues one frame; returns what the acknowledgement will be based on.
    async fn accept(&self, frame: Frame) -> Pending {
        match self.validate(frame) {
            Err(r) => Pending::Ready(Err(r)),
            Ok(f) => {
                let (tx, rx) = oneshot::channel();
                match self.pipeline.submit(Job { work: Work::Frame(f, Some(tx)) }).await {
                    Ok(()) => Pending::Waiting(rx),
                    Err(_) => Pending::Ready(Err(self.shutting_down())),
                }
            }
        }
    }

    fn shutting_down(&self) -> Rejection {
        self.telemetry.reject(Source::Grpc.as_str(), RejectReason::ShuttingDown);
        Rejection::new(RejectReason::ShuttingDown, "framewatch is shutting down")
    }
}

async fn resolve(p: Pending, telemetry: &Telemetry) -> Outcome {
    match p {
        Pending::Ready(o) => o,
        Pending::Waiting(rx) => rx.await.unwrap_or_else(|_| Err(worker_stopped(telemetry))),
    }
}

/// The answer for a frame whose worker died before answering (counted as refused, as the ack says).
fn worker_stopped(telemetry: &Telemetry) -> Rejection {
    telemetry.reject(Source::Grpc.as_str(), RejectReason::InternalError);
    Rejection::new(RejectReason::InternalError, "the scoring worker stopped")
}

fn ack(sequence: u64, outcome: &Outcome, accepted_total: u64, rejected_total: u64) -> Ack {
    let (accepted, reason, message) = match outcome {
        Ok(()) => (true, String::new(), String::new()),
        Err(r) => (false, r.reason.as_str().to_string(), r.message.clone()),
    };
    Ack { sequence, accepted, reason, message, accepted_total, rejected_total }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

/// What the acknowledging task hears from the reading task, in order.
enum Next {
    /// One frame's acknowledgement.
    Ack(Pending),
    /// A batch of `n` frames queued as one job: their acknowledgements, in order.
    Batch(oneshot::Receiver<Vec<Outcome>>, usize),
    /// The stream cannot go on (a message over the size limit): end it with this status.
    End(Status),
}

/// Room for predictions and labels beside the image in one gRPC message.
pub const MESSAGE_OVERHEAD: usize = 1 << 20;

/// The largest gRPC ingest message: `pipeline.max_image_bytes` plus room for predictions and labels. tonic checks
/// the length prefix before it buffers a body, so a larger message costs no memory.
pub fn max_message_bytes(max_image_bytes: usize) -> usize {
    max_image_bytes.saturating_add(MESSAGE_OVERHEAD)
}

/// tonic's answer to a message over `max_decoding_message_size`.
fn is_oversize(status: &Status) -> bool {
    status.code() == tonic::Code::OutOfRange && status.message().contains("message length too large")
}

impl GrpcIngest {
    /// RESOURCE_EXHAUSTED naming the limit, counted as `message_too_large`, for tonic's oversize error.
    fn refuse_oversize(&self, status: &Status) -> Option<Status> {
        is_oversize(status).then(|| {
            self.telemetry.received.get_or_create(&[("source", Source::Grpc.as_str())]).inc();
            self.telemetry.reject(Source::Grpc.as_str(), RejectReason::MessageTooLarge);
            Status::resource_exhausted(format!(
                "{}; a frame message may have at most {} bytes (pipeline.max_image_bytes = {} plus {} for \
                 predictions and labels)",
                status.message(),
                self.max_message_bytes,
                self.max_message_bytes.saturating_sub(MESSAGE_OVERHEAD),
                MESSAGE_OVERHEAD
            ))
        })
    }
}

/// Acknowledgements in flight per stream (a batch counts once, so at most 128 x 64 small outcomes are held for a
/// client that stops reading them); past this the stream stops reading frames until acks are consumed.
const PENDING_ACKS: usize = 128;

/// The reading half of one `StreamFrames` call: validates frames and queues them in batches, in order.
struct Reader {
    ingest: GrpcIngest,
    pending: mpsc::Sender<Next>,
    batch: Vec<IncomingFrame>,
    /// What the batch holds (`IncomingFrame::held_bytes`).
    held_bytes: usize,
}

/// The client stopped reading acknowledgements: reading stops too.
struct Gone;

impl Reader {
    async fn run(mut self, mut inbound: Streaming<Frame>) {
        if self.read(&mut inbound).await.is_err() {
            // The client stopped reading acknowledgements: the frames already read are still queued and recorded
            // (or counted as refused), as they would have been one by one; nobody hears of them.
            let _ = self.flush().await;
        }
    }

    async fn read(&mut self, inbound: &mut Streaming<Frame>) -> Result<(), Gone> {
        let pipeline = self.ingest.pipeline.clone();
        let limit = || BATCH_FRAMES.min(pipeline.capacity().saturating_sub(pipeline.depth())).max(1);
        loop {
            // Wait for one message, then take every message already buffered without waiting for more.
            let mut message = inbound.message().await;
            loop {
                match message {
                    Ok(Some(frame)) => match self.ingest.validate(frame) {
                        Ok(f) => {
                            let bytes = f.held_bytes();
                            let flushed =
                                if self.held_bytes + bytes > BATCH_BYTES { self.flush().await } else { Ok(()) };
                            // Kept even when the client is gone (`run` queues it).
                            self.held_bytes += bytes;
                            self.batch.push(f);
                            flushed?;
                            if self.batch.len() >= limit() {
                                self.flush().await?;
                            }
                        }
                        Err(r) => {
                            self.flush().await?;
                            self.send(Next::Ack(Pending::Ready(Err(r)))).await?;
                        }
                    },
                    Ok(None) => return self.flush().await,
                    Err(status) => {
                        self.flush().await?;
                        // After the acks of the frames before it, the stream ends with this status. The stream is
                        // not polled again after an error (tonic does not remember every error it returned).
                        if let Some(status) = self.ingest.refuse_oversize(&status) {
                            self.send(Next::End(status)).await?;
                        } else {
                            tracing::debug!(%status, "ingest stream ended with an error");
                        }
                        return Ok(());
                    }
                }
                match now_or_never(inbound.message()) {
                    Some(m) => message = m,
                    None => break,
                }
            }
            self.flush().await?;
        }
    }

    /// Queues the frames gathered so far as one job (waiting for room in the queue).
    async fn flush(&mut self) -> Result<(), Gone> {
        self.held_bytes = 0;
        let frames = std::mem::take(&mut self.batch);
        let n = frames.len();
        if n == 0 {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        match self.ingest.pipeline.submit(Job { work: Work::Frames(Source::Grpc, frames, tx) }).await {
            Ok(()) => self.send(Next::Batch(rx, n)).await,
            Err(_) => {
                // Counted first, all of them, whether or not the client still reads its acknowledgements.
                let refused: Vec<Rejection> = (0..n).map(|_| self.ingest.shutting_down()).collect();
                for r in refused {
                    self.send(Next::Ack(Pending::Ready(Err(r)))).await?;
                }
                Ok(())
            }
        }
    }

    async fn send(&self, next: Next) -> Result<(), Gone> {
        self.pending.send(next).await.map_err(|_| Gone)
    }
}

/// Polls `future` once: its output if it is ready now, without waiting. Used on a stream whose `poll_next` keeps
/// its state in the stream, so dropping the pending future loses nothing.
fn now_or_never<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[tonic::async_trait]
impl IngestService for GrpcIngest {
    type StreamFramesStream = AckStream;

    async fn stream_frames(&self, request: Request<Streaming<Frame>>) -> Result<Response<AckStream>, Status> {
        let inbound = request.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel::<Next>(PENDING_ACKS);
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(PENDING_ACKS);
        let reader = Reader { ingest: self.clone(), pending: pending_tx, batch: Vec::new(), held_bytes: 0 };
        tokio::spawn(reader.run(inbound));
        let telemetry = self.telemetry.clone();
        tokio::spawn(async move {
            let (mut seq, mut ok, mut bad) = (0u64, 0u64, 0u64);
            let mut outcomes: Vec<Outcome> = Vec::with_capacity(1);
            while let Some(next) = pending_rx.recv().await {
                outcomes.clear();
                match next {
                    Next::Ack(p) => outcomes.push(resolve(p, &telemetry).await),
                    Next::Batch(rx, n) => {
                        outcomes = rx.await.unwrap_or_default();
                        // A worker that died answered nobody: its frames are refused, never left without an ack.
                        outcomes.resize_with(n, || Err(worker_stopped(&telemetry)));
                    }
                    Next::End(status) => {
                        let _ = out_tx.send(Err(status)).await;
                        break;
                    }
                }
                for outcome in &outcomes {
                    if outcome.is_ok() {
                        ok += 1
                    } else {
                        bad += 1
                    }
                    if out_tx.send(Ok(ack(seq, outcome, ok, bad))).await.is_err() {
                        return;
                    }
                    seq += 1;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    type SendLabelsStream = AckStream;

    /// Labels are checked and joined on the reading task (a lock and a match per message, no queue): one Ack per
    /// message, in order; when the client stops reading acknowledgements, reading stops too.
    async fn send_labels(&self, request: Request<Streaming<FrameLabels>>) -> Result<Response<AckStream>, Status> {
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(PENDING_ACKS);
        let (truth, max_bytes) = (self.truth.clone(), self.max_message_bytes);
        tokio::spawn(async move {
            let (mut seq, mut ok, mut bad) = (0u64, 0u64, 0u64);
            loop {
                let ack = match inbound.message().await {
                    Ok(Some(labels)) => {
                        let labels = labels_from_proto(labels);
                        let (result, message) = truth.offer(Source::Grpc.as_str(), &labels);
                        if result.accepted() {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                        let reason = if result.accepted() { String::new() } else { result.as_str().to_string() };
                        Ok(Ack {
                            sequence: seq,
                            accepted: result.accepted(),
                            reason,
                            message,
                            accepted_total: ok,
                            rejected_total: bad,
                        })
                    }
                    Ok(None) => break,
                    Err(status) if is_oversize(&status) => {
                        // Counted like any refused label message; the stream ends, as for frames.
                        truth.telemetry().count(Source::Grpc.as_str(), LabelResult::InvalidMessage);
                        Err(Status::resource_exhausted(format!(
                            "{}; a labels message may have at most {max_bytes} bytes (labels.max_objects boxes fit \
                             well within it)",
                            status.message()
                        )))
                    }
                    Err(status) => {
                        tracing::debug!(%status, "labels stream ended with an error");
                        Err(status)
                    }
                };
                let end = ack.is_err();
                if out_tx.send(ack).await.is_err() || end {
                    break;
                }
                seq += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn send_frame(&self, request: Request<Frame>) -> Result<Response<Ack>, Status> {
        let outcome = resolve(self.accept(request.into_inner()).await, &self.telemetry).await;
        let (ok, bad) = if outcome.is_ok() { (1, 0) } else { (0, 1) };
        Ok(Response::new(ack(0, &outcome, ok, bad)))
    }
}

/// Wraps the ingest service so that the unary `SendFrame`'s oversize message, which tonic refuses before the
/// handler runs (OUT_OF_RANGE), is answered like the streaming one: RESOURCE_EXHAUSTED naming the limit, counted.
#[derive(Debug, Clone)]
pub struct OversizeStatus<S> {
    pub inner: S,
    pub ingest: GrpcIngest,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for OversizeStatus<S> {
    const NAME: &'static str = S::NAME;
}

type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for OversizeStatus<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let response = response.await?;
            // A status in the headers is a trailers-only answer: the call failed before any message was sent.
            match Status::from_header_map(response.headers()).and_then(|s| ingest.refuse_oversize(&s)) {
                Some(status) => Ok(status.into_http()),
                None => Ok(response),
            }
        })
    }
}

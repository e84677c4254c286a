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
use crate::frame::{Source, from_proto};
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

impl GrpcIngest {
    /// Validates and queues one frame; returns what the acknowledgement will be based on.
    async fn accept(&self, frame: Frame) -> Pending {
        self.telemetry.received.get_or_create(&[("source", Source::Grpc.as_str())]).inc();
        match from_proto(frame, Source::Grpc, self.clock.now(), &self.config) {
            Err(r) => {
                self.telemetry.reject(Source::Grpc.as_str(), r.reason);
                Pending::Ready(Err(r))
            }
            Ok(f) => {
                let (tx, rx) = oneshot::channel();
                match self.pipeline.submit(Job { work: Work::Frame(f, Some(tx)) }).await {
                    Ok(()) => Pending::Waiting(rx),
                    Err(_) => {
                        self.telemetry.reject(Source::Grpc.as_str(), RejectReason::ShuttingDown);
                        Pending::Ready(Err(Rejection::new(RejectReason::ShuttingDown, "framewatch is shutting down")))
                    }
                }
            }
        }
    }
}

async fn resolve(p: Pending) -> Outcome {
    match p {
        Pending::Ready(o) => o,
        Pending::Waiting(rx) => {
            rx.await.unwrap_or_else(|_| Err(Rejection::new(RejectReason::InternalError, "the scoring worker stopped")))
        }
    }
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
    Ack(u64, Pending),
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

/// Acknowledgements in flight per stream; past this the stream stops reading frames until acks are consumed.
const PENDING_ACKS: usize = 128;

#[tonic::async_trait]
impl IngestService for GrpcIngest {
    type StreamFramesStream = AckStream;

    async fn stream_frames(&self, request: Request<Streaming<Frame>>) -> Result<Response<AckStream>, Status> {
        let mut inbound = request.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel::<Next>(PENDING_ACKS);
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(PENDING_ACKS);
        let this = self.clone();
        tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                match inbound.message().await {
                    Ok(Some(frame)) => {
                        let p = this.accept(frame).await;
                        if pending_tx.send(Next::Ack(seq, p)).await.is_err() {
                            break; // the client stopped reading acknowledgements
                        }
                        seq += 1;
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // After the acks of the frames before it, the stream ends with this status.
                        if let Some(status) = this.refuse_oversize(&status) {
                            let _ = pending_tx.send(Next::End(status)).await;
                        } else {
                            tracing::debug!(%status, "ingest stream ended with an error");
                        }
                        break;
                    }
                }
            }
        });
        tokio::spawn(async move {
            let (mut ok, mut bad) = (0u64, 0u64);
            while let Some(next) = pending_rx.recv().await {
                let (seq, p) = match next {
                    Next::Ack(seq, p) => (seq, p),
                    Next::End(status) => {
                        let _ = out_tx.send(Err(status)).await;
                        break;
                    }
                };
                let outcome = resolve(p).await;
                if outcome.is_ok() {
                    ok += 1
                } else {
                    bad += 1
                }
                if out_tx.send(Ok(ack(seq, &outcome, ok, bad))).await.is_err() {
                    break;
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
        let outcome = resolve(self.accept(request.into_inner()).await).await;
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

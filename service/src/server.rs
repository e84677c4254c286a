//! Assembles and runs the service: baseline, store, scoring pool, evaluator, alerting, gRPC (ingest, queries,
//! health, reflection) and HTTP (/metrics, /healthz, /readyz), under one shutdown tree. `main` and the tests
//! both come through `Service::start`.
//!
//! Shutdown order (`drain`): readiness and gRPC health go NOT_SERVING; gRPC stops accepting and open streams
//! finish; the Kafka source drains, checkpoints and commits; the scoring queue drains; the final checkpoint;
//! the evaluator stops after one last evaluation (so resolved alerts are flushed to the webhook); then HTTP. The
//! grace period bounds the whole sequence once; the webhook's final flush adds at most `alerts.request_timeout_secs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use framewatch_metrics::drift::DriftThresholds;
use framewatch_metrics::{Baseline, DecodeLimits, MetricRegistry, ScoreSettings};
use framewatch_proto::v1::ingest_service_server::IngestServiceServer;
use framewatch_proto::v1::query_service_server::QueryServiceServer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::alerts::webhook::Webhook;
use crate::alerts::{AlertEngine, AlertEvent, AlertSnapshot, Alerting, Dispatcher, build_rules};
use crate::api::QueryApi;
use crate::auth::{Auth, GrpcAuth, Role, Tokens};
use crate::cameras::CameraTracker;
use crate::checkpoint::{CheckpointTelemetry, Checkpointer, SavedOffset, compat_fingerprint};
use crate::config::Config;
use crate::evaluate::{Evaluation, EvaluationSettings, MetricEval, evaluate, judge_performance};
use crate::exemplars::{ExemplarStore, Watch, outlier_scale};
use crate::export::DriftCollector;
use crate::http::{HttpState, KafkaHealth, Stuck};
use crate::listen::{self, Incoming, ListenSettings, ListenTelemetry, ServerTls};
use crate::pipeline::{DecodeBudget, Pipeline, PipelineHandle, QueueWatch, WorkerContext};
use crate::reload::{self, ReloadTelemetry, Reloading};
use crate::sources::grpc::{GrpcIngest, OversizeStatus};
use crate::sources::kafka::{KafkaDeps, KafkaSource, KafkaTelemetry};
use crate::store::{StoreSettings, WindowStore};
use crate::telemetry::Telemetry;
use crate::time::{Clock, SystemClock, now_secs};
use crate::truth::{JoinSettings, JoinStore, LabelTelemetry, Truth};
use crate::web::{EvaluationHistory, WebView};

/// A running service.
pub struct Service {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub pipeline: PipelineHandle,
    pub evaluation: Arc<RwLock<Arc<Evaluation>>>,
    pub alerts: tokio::sync::broadcast::Sender<AlertEvent>,
    pub alert_state: Arc<RwLock<AlertSnapshot>>,
    /// Runs one evaluation now (tests; the evaluator also runs on its interval).
    evaluate_now: Arc<dyn Fn() + Send + Sync>,
    /// The root of the shutdown tree: cancelled, the service drains and stops.
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("grpc_addr", &self.grpc_addr).field("http_addr", &self.http_addr).finish()
    }
}

/// The shutdown tree. `requested` is the root: a signal or `Service::stop` cancels it. Each part runs under its
/// own child token, which `drain` cancels in order (a child is also cancelled if the root's owner drops it all).
#[derive(Debug, Clone)]
struct ShutdownTree {
    requested: CancellationToken,
    grpc: CancellationToken,
    kafka: CancellationToken,
    evaluator: CancellationToken,
    webhook: CancellationToken,
    http: CancellationToken,
}

impl ShutdownTree {
    fn new() -> ShutdownTree {
        // The parts' tokens hang off a branch that `drain` cancels last, not off `requested` itself: cancelling
        // `requested` must not stop HTTP (readiness must be seen turning 503) or the evaluator before draining.
        let requested = CancellationToken::new();
        let parts = CancellationToken::new();
        ShutdownTree {
            requested,
            grpc: parts.child_token(),
            kafka: parts.child_token(),
            evaluator: parts.child_token(),
            webhook: parts.child_token(),
            http: parts.child_token(),
        }
    }
}

/// Everything `start` builds before the listeners run.
struct Parts {
    baseline: Arc<Baseline>,
    store: Arc<Mutex<WindowStore>>,
    cameras: Arc<Mutex<CameraTracker>>,
    evaluation: Arc<RwLock<Arc<Evaluation>>>,
    alert_tx: tokio::sync::broadcast::Sender<AlertEvent>,
    alert_state: Arc<RwLock<AlertSnapshot>>,
    telemetry: Telemetry,
    registry: Arc<MetricRegistry>,
    clock: Arc<dyn Clock>,
    /// Recent evaluations per (slice, metric), for the web view's sparklines.
    history: Arc<Mutex<EvaluationHistory>>,
    /// Thumbnails of drifting pairs' frames (None: `exemplars.memory_mib = 0`).
    exemplars: Option<Arc<ExemplarStore>>,
    /// Frames with a `frame_id` and the ground truth joined to them.
    truth: Truth,
}

impl Service {
    /// Loads the baseline named in the config and starts everything; returns once both listeners are bound.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
        let path = config.baseline.clone().context("no baseline: set `baseline = \"path\"` or FRAMEWATCH_BASELINE")?;
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read baseline {}", path.display()))?;
        let baseline = Baseline::from_json(&text).with_context(|| format!("invalid baseline {}", path.display()))?;
        Service::start_with_baseline(config, baseline, clock).await
    }

    pub async fn start_with_baseline(
        config: Config,
        baseline: Baseline,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Service> {
        config.validate()?;
        check_settings(&config, &baseline)?;
        let tree = ShutdownTree::new();
        let registry = Arc::new(MetricRegistry::standard());
        let index_of = |n: &str| registry.index_of(n);
        let store_settings = StoreSettings::from_config(&config, index_of)?;
        let compat = compat_fingerprint(&baseline, &store_settings);
        let mut prom = Registry::default();
        let store = WindowStore::new(store_settings, &baseline, index_of);
        let kept: Vec<(usize, Arc<str>)> = store.tracked().iter().map(|t| (t.registry_index, t.name.clone())).collect();
        let label_telemetry = LabelTelemetry::register(&mut prom);
        label_telemetry.start_at_zero(crate::frame::Source::Grpc.as_str());
        if config.kafka.enabled() && !config.kafka.labels_topic.is_empty() {
            label_telemetry.start_at_zero(crate::frame::Source::Kafka.as_str());
        }
        let truth =
            Truth::new(JoinStore::new(JoinSettings::from(&config.labels), kept), label_telemetry, clock.clone());
        let p = Parts {
            store: Arc::new(Mutex::new(store)),
            baseline: Arc::new(baseline),
            cameras: Arc::new(Mutex::new(CameraTracker::new(config.slices.max_slices))),
            evaluation: Arc::default(),
            alert_tx: tokio::sync::broadcast::channel::<AlertEvent>(1024).0,
            alert_state: Arc::default(),
            telemetry: Telemetry::register(&mut prom, config.pipeline.queue_capacity),
            registry: registry.clone(),
            clock,
            history: Arc::default(),
            exemplars: (config.exemplars.memory_mib > 0)
                .then(|| Arc::new(ExemplarStore::new((config.exemplars.memory_mib as usize) << 20, &mut prom))),
            truth,
        };
        let guard = Guard::start(&config, &mut prom, &tree)?;
        let grpc_listener = bind(config.server.grpc_addr, "server.grpc_addr").await?;
        let http_listener = bind(config.server.http_addr, "server.http_addr").await?;
        let grpc_incoming = guard.accept(grpc_listener, "grpc", &config, tree.grpc.clone())?;
        let http_incoming = guard.accept(http_listener, "http", &config, tree.http.clone())?;
        let (grpc_addr, http_addr) = (grpc_incoming.local_addr(), http_incoming.local_addr());

        prom.register_collector(Box::new(DriftCollector {
            evaluation: p.evaluation.clone(),
            store: p.store.clone(),
            export_dimensions: config.prometheus.export_dimensions.clone(),
            series_budget: config.prometheus.series_budget,
            alerts: p.alert_state.clone(),
            cameras: p.cameras.clone(),
            truth: p.truth.clone(),
        }));
        let (evaluate_now, webhook_task) = evaluator(&config, &p, http_addr, &tree, &mut prom)?;
        let checkpointer = config.checkpoint.path.clone().filter(|p| !p.as_os_str().is_empty()).map(|path| {
            let group = if config.kafka.enabled() { config.kafka.group_id.clone() } else { String::new() };
            let telemetry = CheckpointTelemetry::register(&mut prom);
            let c = Checkpointer::new(path, compat, group, p.store.clone(), p.cameras.clone(), telemetry);
            Arc::new(c.with_join(p.truth.store().clone()))
        });
        // Windows and camera state come back before any frame is scored; the offsets go to the Kafka source.
        // A checkpoint that cannot be read stops start-up: starting empty would overwrite it at the next write.
        let resume_from = checkpointer
            .as_ref()
            .map(|c| c.restore())
            .transpose()
            .context("checkpoint.path cannot be read; fix it or move it away (framewatch never starts over it)")?
            .unwrap_or_default();
        let kafka_telemetry = config.kafka.enabled().then(|| {
            p.telemetry.start_at_zero(crate::frame::Source::Kafka.as_str());
            KafkaTelemetry::register(&mut prom)
        });
        let (pipeline, workers) = start_pipeline(&config, &p);
        let kafka = match kafka_telemetry {
            Some(kt) => Some(start_kafka(&config, &p, &pipeline, kt, (checkpointer.clone(), resume_from), &tree)?),
            None => None,
        };
        let (health, grpc_task) = start_grpc(grpc_incoming, &config, &p, &pipeline, guard.auth.as_ref(), &tree).await?;
        let ready = Arc::new(AtomicBool::new(false));
        let http_state = HttpState {
            registry: Arc::new(prom),
            ready: ready.clone(),
            kafka: kafka.as_ref().map(|k| KafkaHealth {
                connected: k.ready(),
                alive: k.alive(),
                reason: k.not_ready_reason(),
                group: k.group(),
            }),
            auth: guard.auth.clone(),
            stuck: stuck_pipeline(pipeline.handle().watch(), Duration::from_secs(config.pipeline.stall_secs)),
            web: Some(WebView {
                evaluation: p.evaluation.clone(),
                alerts: p.alert_state.clone(),
                store: p.store.clone(),
                baseline: p.baseline.clone(),
                history: p.history.clone(),
                thresholds: config.evaluation.thresholds,
                clock: p.clock.clone(),
                exemplars: p.exemplars.clone(),
            }),
        };
        let http_task = tokio::spawn(crate::http::serve(
            http_incoming,
            crate::http::router(http_state),
            Duration::from_secs(config.server.header_timeout_secs),
            tree.http.clone(),
        ));
        let eval_task = spawn_interval(
            Duration::from_secs_f64(config.evaluation.interval_secs),
            tree.evaluator.clone(),
            evaluate_now.clone(),
        );
        // Without Kafka, checkpoints run on their own timer (with Kafka, the source writes them with its offsets).
        let timed_checkpoint = if kafka.is_none() { checkpointer } else { None };
        if let Some(c) = timed_checkpoint.clone() {
            let write: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                // Failures are logged and counted by the checkpointer.
                let _ = c.write(&[]);
            });
            spawn_interval(Duration::from_secs_f64(config.checkpoint.interval_secs), tree.evaluator.clone(), write);
        }

        ready.store(true, Ordering::SeqCst);
        tracing::info!(%grpc_addr, %http_addr, workers, "framewatch serving");
        let handle = pipeline.handle();
        let drain = Drain {
            tree: tree.clone(),
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
            ready,
            health,
            grpc_task,
            kafka,
            pipeline,
            checkpoint: timed_checkpoint,
            eval_task,
            final_eval: evaluate_now.clone(),
            webhook_task,
            http_task,
        };
        let task = tokio::spawn(drain.run());
        Ok(Service {
            grpc_addr,
            http_addr,
            pipeline: handle,
            evaluation: p.evaluation,
            alerts: p.alert_tx,
            alert_state: p.alert_state,
            evaluate_now,
            shutdown: tree.requested,
            task,
        })
    }

    /// Evaluates drift now (the interval timer keeps running too).
    pub async fn evaluate_now(&self) {
        let f = self.evaluate_now.clone();
        let _ = tokio::task::spawn_blocking(move || f()).await;
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Triggers shutdown and waits for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until something else cancels the shutdown token.
    pub async fn wait(self) -> anyhow::Result<()> {
        // Our pipeline handle must go, or the scoring workers would wait for it while draining.
        let Service { task, pipeline, .. } = self;
        drop(pipeline);
        task.await.context("service task")?
    }
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {key} {addr}"))
}

/// Liveness: a scoring queue with frames waiting and none finished for `limit` (a hung worker).
fn stuck_pipeline(queue: QueueWatch, limit: Duration) -> Stuck {
    Stuck(Arc::new(move || {
        queue.stalled(limit).map(|(depth, since)| {
            format!(
                "pipeline: {depth} frames queued and none finished scoring for {} s (pipeline.stall_secs = {}): a \
                 hung worker",
                since.as_secs(),
                limit.as_secs()
            )
        })
    }))
}

/// What stands at the door of both listeners: TLS (reloaded when its files change), the connection bound and
/// bearer tokens. Files are read now, so a bad certificate or tokens file stops start-up with an error naming it.
struct Guard {
    auth: Option<Auth>,
    grpc_tls: Option<ServerTls>,
    http_tls: Option<ServerTls>,
    telemetry: ListenTelemetry,
}

impl Guard {
    fn start(config: &Config, prom: &mut Registry, tree: &ShutdownTree) -> anyhow::Result<Guard> {
        let reloads = ReloadTelemetry::register(prom);
        let tls = &config.server.tls;
        // Watchers run until the last part (HTTP) stops.
        let stop = tree.http.clone();
        let (grpc_tls, http_tls) = if tls.enabled() {
            (
                Some(ServerTls::start("tls_grpc", tls, b"h2", reloads.clone(), stop.clone())?),
                Some(ServerTls::start("tls_http", tls, b"http/1.1", reloads.clone(), stop.clone())?),
            )
        } else {
            (None, None)
        };
        let a = &config.server.auth;
        let auth = if a.enabled() {
            let path = a.tokens_file.clone();
            let tokens = Arc::new(Reloading::new(Tokens::load(&path)?));
            let every = Duration::from_secs_f64(a.reload_secs);
            reload::watch(
                "tokens",
                vec![path.clone()],
                every,
                tokens.clone(),
                move || Tokens::load(&path),
                reloads,
                stop,
            );
            Some(Auth::new(tokens, prom))
        } else {
            None
        };
        Ok(Guard { auth, grpc_tls, http_tls, telemetry: ListenTelemetry::register(prom) })
    }

    fn accept(
        &self,
        listener: TcpListener,
        name: &'static str,
        config: &Config,
        stop: CancellationToken,
    ) -> anyhow::Result<Incoming> {
        let s = &config.server;
        let settings = ListenSettings {
            name,
            max_connections: s.max_connections,
            keepalive: (s.keepalive_secs > 0).then(|| Duration::from_secs(s.keepalive_secs)),
            handshake_timeout: Duration::from_secs(s.header_timeout_secs),
        };
        let tls = if name == "grpc" { self.grpc_tls.clone() } else { self.http_tls.clone() };
        Ok(listen::accept(listener, settings, tls, self.telemetry.clone(), stop)?)
    }
}

/// The scoring pool: one worker per core unless `pipeline.workers` says otherwise.
fn start_pipeline(config: &Config, p: &Parts) -> (Pipeline, usize) {
    let workers = match config.pipeline.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let settings = ScoreSettings {
        analysis: p.baseline.settings.analysis,
        prediction: p.baseline.settings.prediction,
        limits: DecodeLimits {
            max_encoded_bytes: config.pipeline.max_image_bytes,
            max_pixels: config.pipeline.max_image_pixels,
        },
    };
    let context = WorkerContext {
        registry: p.registry.clone(),
        settings,
        store: p.store.clone(),
        clock: p.clock.clone(),
        telemetry: p.telemetry.clone(),
        cameras: p.cameras.clone(),
        decode_budget: Arc::new(DecodeBudget::new(config.pipeline.decode_memory_mib.saturating_mul(1 << 20))),
        exemplars: p.exemplars.clone(),
        truth: Some(p.truth.clone()),
    };
    (Pipeline::start(workers, config.pipeline.queue_capacity, context), workers)
}

/// The Kafka source, writing checkpoints with its offsets and resuming from the restored checkpoint's offsets.
fn start_kafka(
    config: &Config,
    p: &Parts,
    pipeline: &Pipeline,
    telemetry: KafkaTelemetry,
    (checkpointer, resume_from): (Option<Arc<Checkpointer>>, Vec<SavedOffset>),
    tree: &ShutdownTree,
) -> anyhow::Result<KafkaSource> {
    KafkaSource::start(
        config.kafka.clone(),
        KafkaDeps {
            pipeline: pipeline.handle(),
            frames: p.telemetry.clone(),
            telemetry,
            clock: p.clock.clone(),
            ingest: config.ingest.clone(),
            checkpointer,
            resume_from,
            runtime: tokio::runtime::Handle::current(),
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
            max_message_bytes: crate::sources::grpc::max_message_bytes(config.pipeline.max_image_bytes),
            truth: p.truth.clone(),
            stop: tree.kafka.clone(),
        },
    )
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// gRPC: health, reflection, ingest and queries, until the tree's gRPC branch is cancelled.
async fn start_grpc(
    incoming: Incoming,
    config: &Config,
    p: &Parts,
    pipeline: &Pipeline,
    auth: Option<&Auth>,
    tree: &ShutdownTree,
) -> anyhow::Result<(tonic_health::server::HealthReporter, GrpcTask)> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<IngestServiceServer<GrpcIngest>>().await;
    health_reporter.set_serving::<QueryServiceServer<QueryApi>>().await;
    // Reflection v1 and v1alpha: grpcurl 1.8 and Python's grpcio-reflection client speak only v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(framewatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("gRPC reflection")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(framewatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("gRPC reflection (v1alpha)")?;
    let max_message_bytes = crate::sources::grpc::max_message_bytes(config.pipeline.max_image_bytes);
    let ingest = GrpcIngest {
        pipeline: pipeline.handle(),
        telemetry: p.telemetry.clone(),
        clock: p.clock.clone(),
        config: config.ingest.clone(),
        max_message_bytes,
        truth: p.truth.clone(),
    };
    let query = QueryApi {
        evaluation: p.evaluation.clone(),
        registry: p.registry.clone(),
        alerts: p.alert_tx.clone(),
        alert_state: p.alert_state.clone(),
        watchers: Arc::new(tokio::sync::Semaphore::new(config.server.max_alert_watchers)),
        exemplars: p.exemplars.clone(),
        truth: p.truth.clone(),
    };
    let s = &config.server;
    let keepalive = (s.keepalive_secs > 0).then(|| Duration::from_secs(s.keepalive_secs));
    let ingest_service = OversizeStatus {
        inner: IngestServiceServer::new(ingest.clone()).max_decoding_message_size(max_message_bytes),
        ingest,
    };
    // Health stays open (load balancers and kubelets probe it without a token); the rest needs its role.
    let grpc = tonic::transport::Server::builder()
        .max_concurrent_streams(s.max_streams_per_connection)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(keepalive.map(|k| k.min(Duration::from_secs(20))))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, GrpcAuth::new(auth, Role::Query)))
        .add_service(InterceptedService::new(reflection_v1alpha, GrpcAuth::new(auth, Role::Query)))
        .add_service(InterceptedService::new(ingest_service, GrpcAuth::new(auth, Role::Ingest)))
        .add_service(InterceptedService::new(QueryServiceServer::new(query), GrpcAuth::new(auth, Role::Query)))
        .serve_with_incoming_shutdown(incoming.into_stream(), tree.grpc.clone().cancelled_owned());
    Ok((health_reporter, tokio::spawn(grpc)))
}

fn check_settings(config: &Config, baseline: &Baseline) -> anyhow::Result<()> {
    if let Some(m) = config.pipeline.max_side
        && m != baseline.settings.analysis.max_side
    {
        bail!(
            "pipeline.max_side = {m} differs from the baseline's analysis max_side {}: scores would not be comparable",
            baseline.settings.analysis.max_side
        );
    }
    Ok(())
}

/// One evaluation, run by the interval timer, by tests and once more at shutdown.
type Evaluate = Arc<dyn Fn() + Send + Sync>;

/// The evaluation step: evaluate every slice, publish the result, step the alerts (which notify); and the
/// webhook's delivery task, when there is one.
fn evaluator(
    config: &Config,
    p: &Parts,
    http_addr: SocketAddr,
    tree: &ShutdownTree,
    prom: &mut Registry,
) -> anyhow::Result<(Evaluate, Option<JoinHandle<()>>)> {
    let metric_exists = |m: &str| p.baseline.metrics.contains_key(m) || p.baseline.label_metrics.contains_key(m);
    let rules = build_rules(&config.alerts, config.evaluation.thresholds.min_frames, &metric_exists)?;
    let (webhook, webhook_task) = if config.alerts.alertmanager_url.is_empty() {
        (None, None)
    } else {
        let metrics_url =
            format!("{}://{http_addr}/metrics", if config.server.tls.enabled() { "https" } else { "http" });
        let (w, task) = Webhook::start(&config.alerts, metrics_url, tree.webhook.clone(), prom)?;
        (Some(w), Some(task))
    };
    let alerting = Mutex::new(Alerting {
        engine: AlertEngine::new(rules).with_external_url(&config.server.external_url),
        dispatcher: Dispatcher::new(p.alert_tx.clone(), webhook, config.alerts.resend_secs),
        snapshot: p.alert_state.clone(),
    });
    let settings = EvaluationSettings::from(&config.evaluation);
    let (store, baseline, evaluation, cameras, clock) =
        (p.store.clone(), p.baseline.clone(), p.evaluation.clone(), p.cameras.clone(), p.clock.clone());
    let (history, exemplars, registry) = (p.history.clone(), p.exemplars.clone(), p.registry.clone());
    let idle = config.slices.idle_evict_secs as i64;
    let (truth, min_labelled) = (p.truth.clone(), config.labels.min_frames);
    let evaluate: Evaluate = Arc::new(move || {
        let now = now_secs(clock.as_ref());
        let cams = {
            let mut c = cameras.lock().unwrap_or_else(|p| p.into_inner());
            c.forget_idle(now - idle);
            c.snapshot()
        };
        let mut e = evaluate(&store, &baseline, &settings, &cams, now);
        judge_performance(&mut e, truth.store(), &baseline, &settings.thresholds, min_labelled, now);
        let e = Arc::new(e);
        *evaluation.write().unwrap_or_else(|p| p.into_inner()) = e.clone();
        history.lock().unwrap_or_else(|p| p.into_inner()).push(&e);
        if let Some(x) = &exemplars {
            x.watch(exemplar_watches(&e, &baseline, &registry, &settings.thresholds));
        }
        alerting.lock().unwrap_or_else(|p| p.into_inner()).step(&e, &cams, now);
    });
    Ok((evaluate, webhook_task))
}

/// The (slice, metric) pairs that drift (latest verdict) or back a diagnosed cause (what alerts fire on: a
/// metric whose shift is significant on a slice with causes, e.g. brightness on a darkened camera whose KS verdict
/// is held back by autocorrelated frames), each ranked against the reference that judges it.
fn exemplar_watches(
    eval: &Evaluation,
    baseline: &Baseline,
    registry: &MetricRegistry,
    thresholds: &DriftThresholds,
) -> Vec<Watch> {
    let mut out = Vec::new();
    for s in &eval.slices {
        let alerting = !s.causes.is_empty();
        let watched = |m: &&MetricEval| m.drift == Some(true) || (alerting && thresholds.significant_shift(&m.stats));
        for m in s.metrics.iter().filter(watched) {
            let (Some((b, _)), Some(registry_index)) =
                (baseline.metric_for(s.key.as_str(), &m.name), registry.index_of(&m.name))
            else {
                continue;
            };
            out.push(Watch {
                slice: s.key.clone(),
                metric: m.name.clone(),
                registry_index,
                median: b.quartiles[1],
                scale: outlier_scale(b.quartiles, b.std),
                current_mean: m.stats.mean.unwrap_or(b.quartiles[1]),
                window_start_secs: s.window_start_secs,
            });
        }
    }
    out
}

/// Runs blocking `work` every `every` (first run after one period for checkpoints, at once for evaluations is
/// equally fine: `interval` ticks immediately) until `stop`.
fn spawn_interval(every: Duration, stop: CancellationToken, work: Arc<dyn Fn() + Send + Sync>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let f = work.clone();
                    // CPU or disk work: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || f()).await;
                }
            }
        }
    })
}

/// The shutdown sequence and what it needs.
struct Drain {
    tree: ShutdownTree,
    grace: Duration,
    ready: Arc<AtomicBool>,
    health: tonic_health::server::HealthReporter,
    grpc_task: GrpcTask,
    kafka: Option<KafkaSource>,
    pipeline: Pipeline,
    checkpoint: Option<Arc<Checkpointer>>,
    eval_task: JoinHandle<()>,
    final_eval: Arc<dyn Fn() + Send + Sync>,
    webhook_task: Option<JoinHandle<()>>,
    http_task: JoinHandle<()>,
}

impl Drain {
    async fn run(self) -> anyhow::Result<()> {
        let Drain {
            tree,
            grace,
            ready,
            health,
            grpc_task,
            kafka,
            pipeline,
            checkpoint,
            eval_task,
            final_eval,
            webhook_task,
            http_task,
        } = self;
        tree.requested.cancelled().await;
        let deadline = Instant::now() + grace;
        tracing::info!(?grace, "shutting down: readiness and health NOT_SERVING, draining in-flight frames");
        ready.store(false, Ordering::SeqCst);
        health.set_not_serving::<IngestServiceServer<GrpcIngest>>().await;
        health.set_not_serving::<QueryServiceServer<QueryApi>>().await;
        tree.grpc.cancel();
        if tokio::time::timeout_at(deadline, grpc_task).await.is_err() {
            tracing::warn!(?grace, "gRPC streams still open at the end of the grace period; closing them");
        }
        // The Kafka source waits for its in-flight frames (within its own grace), checkpoints and commits.
        tree.kafka.cancel();
        if let Some(k) = kafka {
            // Its own grace for in-flight frames, then the final commit and close: 10 s more than a reachable
            // broker ever needs; an unreachable one could hold them for good.
            k.stopped_within(grace + KAFKA_CLOSE_MARGIN).await;
        }
        let drained = tokio::task::spawn_blocking(move || pipeline.drain());
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(?grace, "scoring queue not drained within the grace period");
        }
        if let Some(c) = checkpoint {
            let _ = tokio::task::spawn_blocking(move || c.write(&[])).await;
        }
        tree.evaluator.cancel();
        let _ = eval_task.await;
        let _ = tokio::task::spawn_blocking(move || final_eval()).await;
        // The webhook flushes what the last evaluation resolved (one attempt per batch, bounded by
        // alerts.request_timeout_secs by the task itself), then its task ends; a stalled Alertmanager cannot hold
        // shutdown longer than that.
        tree.webhook.cancel();
        if let Some(task) = webhook_task {
            let _ = task.await;
        }
        tree.http.cancel();
        let _ = tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_secs(1)), http_task).await;
        tracing::info!("framewatch stopped");
        Ok(())
    }
}

/// How long past its grace period the Kafka source may take to commit and close at shutdown.
const KAFKA_CLOSE_MARGIN: Duration = Duration::from_secs(10);

/// `framewatch serve`: runs until SIGTERM or SIGINT.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        let service = Service::start(config, Arc::new(SystemClock)).await?;
        let token = service.shutdown_token();
        tokio::spawn(async move {
            shutdown_signal().await;
            token.cancel();
        });
        service.wait().await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

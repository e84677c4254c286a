//! Assembles and runs the service: baseline, store, scoring pool, evaluator, gRPC (ingest, queries, health,
//! reflection) and HTTP (/metrics, /healthz, /readyz), under one shutdown token. `main` and the tests both come
//! through `Service::start`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use framewatch_metrics::drift::DriftThresholds;
use framewatch_metrics::{Baseline, ComparableSettings, DecodeLimits, MetricRegistry, ScoreSettings};
use framewatch_proto::v1::ingest_service_server::IngestServiceServer;
use framewatch_proto::v1::query_service_server::QueryServiceServer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertEngine, AlertEvent, AlertSnapshot, Phase, build_rules};
use crate::api::QueryApi;
use crate::cameras::CameraTracker;
use crate::checkpoint::{CheckpointTelemetry, Checkpointer, compat_fingerprint};
use crate::config::Config;
use crate::evaluate::{Evaluation, evaluate};
use crate::export::{DriftCollector, Telemetry};
use crate::frame::{Clock, SystemClock, now_secs};
use crate::pipeline::{Pipeline, PipelineHandle, WorkerContext};
use crate::sources::grpc::GrpcIngest;
use crate::sources::kafka::{KafkaDeps, KafkaSource, KafkaTelemetry};
use crate::store::{StoreSettings, WindowStore};
use crate::webhook::Webhook;

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
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("grpc_addr", &self.grpc_addr).field("http_addr", &self.http_addr).finish()
    }
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
        if let Some(m) = config.pipeline.max_side
            && m != baseline.settings.analysis.max_side
        {
            bail!(
                "pipeline.max_side = {m} differs from the baseline's analysis max_side {}: scores would not be comparable",
                baseline.settings.analysis.max_side
            );
        }
        let baseline = Arc::new(baseline);
        let registry = Arc::new(MetricRegistry::standard());
        let settings = ScoreSettings {
            analysis: baseline.settings.analysis,
            prediction: baseline.settings.prediction,
            limits: DecodeLimits {
                max_encoded_bytes: config.pipeline.max_image_bytes,
                max_pixels: config.pipeline.max_image_pixels,
            },
        };
        debug_assert_eq!(
            ComparableSettings { analysis: settings.analysis, prediction: settings.prediction },
            baseline.settings
        );
        let index_of = |n: &str| registry.index_of(n);
        let store_settings = StoreSettings::from_config(&config, index_of)?;
        let compat = compat_fingerprint(&baseline, &store_settings);
        let store = Arc::new(Mutex::new(WindowStore::new(store_settings, &baseline, index_of)));

        let grpc_listener = TcpListener::bind(config.server.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on server.grpc_addr {}", config.server.grpc_addr))?;
        let http_listener = TcpListener::bind(config.server.http_addr)
            .await
            .with_context(|| format!("cannot listen on server.http_addr {}", config.server.http_addr))?;
        let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);

        let cameras = Arc::new(Mutex::new(CameraTracker::new(config.slices.max_slices)));
        let rules = build_rules(&config.alerts, config.evaluation.min_frames, &|m| baseline.metrics.contains_key(m))?;
        let engine = Arc::new(Mutex::new(AlertEngine::new(rules)));
        let (alert_tx, _) = tokio::sync::broadcast::channel::<AlertEvent>(1024);
        let alert_state: Arc<RwLock<AlertSnapshot>> = Arc::default();

        let mut prom = Registry::default();
        let telemetry = Telemetry::register(&mut prom, config.pipeline.queue_capacity);
        let evaluation: Arc<RwLock<Arc<Evaluation>>> = Arc::default();
        prom.register_collector(Box::new(DriftCollector {
            evaluation: evaluation.clone(),
            store: store.clone(),
            export_dimensions: config.prometheus.export_dimensions.clone(),
            series_budget: config.prometheus.series_budget,
            alerts: alert_state.clone(),
            cameras: cameras.clone(),
        }));
        let webhook = if config.alerts.alertmanager_url.is_empty() {
            None
        } else {
            Some(Webhook::start(
                &config.alerts.alertmanager_url,
                config.alerts.webhook_queue,
                format!("http://{http_addr}/metrics"),
                &mut prom,
            )?)
        };
        let checkpointer = config.checkpoint.path.clone().filter(|p| !p.as_os_str().is_empty()).map(|path| {
            let group = if config.kafka.enabled() { config.kafka.group_id.clone() } else { String::new() };
            let telemetry = CheckpointTelemetry::register(&mut prom);
            Arc::new(Checkpointer::new(path, compat, group, store.clone(), cameras.clone(), telemetry))
        });
        let resume_from = checkpointer.as_ref().map(|c| c.restore()).unwrap_or_default();
        let kafka_telemetry = config.kafka.enabled().then(|| KafkaTelemetry::register(&mut prom));
        let prom = Arc::new(prom);

        let workers = match config.pipeline.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pipeline = Pipeline::start(
            workers,
            config.pipeline.queue_capacity,
            WorkerContext {
                registry: registry.clone(),
                settings,
                store: store.clone(),
                clock: clock.clone(),
                telemetry: telemetry.clone(),
                cameras: cameras.clone(),
            },
        );

        let ev = &config.evaluation;
        let thresholds = DriftThresholds {
            min_frames: ev.min_frames,
            psi: ev.psi_threshold,
            ks_statistic: ev.ks_threshold,
            p_value: ev.p_value,
            ..DriftThresholds::default()
        };
        let evaluate_now: Arc<dyn Fn() + Send + Sync> = {
            let (store, baseline, evaluation, clock) =
                (store.clone(), baseline.clone(), evaluation.clone(), clock.clone());
            let (cameras, engine, alert_tx, alert_state) =
                (cameras.clone(), engine.clone(), alert_tx.clone(), alert_state.clone());
            let idle = config.slices.idle_evict_secs as i64;
            let resend = config.alerts.resend_secs as i64;
            let last_resend = Mutex::new(i64::MIN);
            Arc::new(move || {
                let now = now_secs(clock.as_ref());
                let e = Arc::new(evaluate(&store, &baseline, &thresholds, now));
                *evaluation.write().unwrap_or_else(|p| p.into_inner()) = e.clone();
                let cams = {
                    let mut c = cameras.lock().unwrap_or_else(|p| p.into_inner());
                    c.forget_idle(now - idle);
                    c.snapshot()
                };
                let mut engine = engine.lock().unwrap_or_else(|p| p.into_inner());
                let events = engine.step(&e, &cams, now);
                for ev in &events {
                    match ev.phase {
                        Phase::Pending => {
                            tracing::info!(rule = %ev.rule, slice = %ev.slice, value = ev.value, "alert pending")
                        }
                        Phase::Firing => {
                            tracing::warn!(rule = %ev.rule, slice = %ev.slice, value = ev.value, severity = %ev.severity, "alert firing")
                        }
                        Phase::Resolved => {
                            tracing::info!(rule = %ev.rule, slice = %ev.slice, value = ev.value, "alert resolved")
                        }
                    }
                    let _ = alert_tx.send(ev.clone());
                }
                let snapshot = engine.snapshot(now);
                if let Some(w) = &webhook {
                    let mut batch: Vec<AlertEvent> = events.into_iter().filter(|e| e.phase != Phase::Pending).collect();
                    let mut last = last_resend.lock().unwrap_or_else(|p| p.into_inner());
                    if now.saturating_sub(*last) >= resend {
                        *last = now;
                        for a in snapshot.active.iter().filter(|a| a.phase == Phase::Firing) {
                            if !batch.iter().any(|b| b.rule == a.rule && b.slice == a.slice) {
                                batch.push(a.clone());
                            }
                        }
                    }
                    w.send(batch);
                }
                *alert_state.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
            })
        };

        let kafka = match kafka_telemetry {
            Some(kt) => Some(KafkaSource::start(
                config.kafka.clone(),
                KafkaDeps {
                    pipeline: pipeline.handle(),
                    frames: telemetry.clone(),
                    telemetry: kt,
                    clock: clock.clone(),
                    ingest: config.ingest.clone(),
                    checkpointer: checkpointer.clone(),
                    resume_from,
                    runtime: tokio::runtime::Handle::current(),
                    grace: Duration::from_secs(config.server.shutdown_grace_secs),
                },
            )?),
            None => None,
        };
        let kafka_ready = kafka.as_ref().map(KafkaSource::ready);

        let shutdown = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<IngestServiceServer<GrpcIngest>>().await;
        health_reporter.set_serving::<QueryServiceServer<QueryApi>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(framewatch_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("gRPC reflection")?;

        let ingest = GrpcIngest {
            pipeline: pipeline.handle(),
            telemetry: telemetry.clone(),
            clock: clock.clone(),
            config: config.ingest.clone(),
        };
        let query = QueryApi {
            evaluation: evaluation.clone(),
            registry: registry.clone(),
            alerts: alert_tx.clone(),
            alert_state: alert_state.clone(),
        };
        let grpc_stop = CancellationToken::new();
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(IngestServiceServer::new(ingest))
            .add_service(QueryServiceServer::new(query))
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), grpc_stop.clone().cancelled_owned());
        let grpc_task = tokio::spawn(grpc);

        let http_state = HttpState { registry: prom, ready: ready.clone(), kafka_ready };
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(http_state);
        let http_stop = shutdown.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(http_listener, app).with_graceful_shutdown(http_stop.cancelled_owned()).await
        });

        let interval = Duration::from_secs_f64(config.evaluation.interval_secs);
        let eval_stop = shutdown.clone();
        let eval_fn = evaluate_now.clone();
        let eval_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = eval_stop.cancelled() => break,
                    _ = tick.tick() => {
                        let f = eval_fn.clone();
                        // CPU work: off the async workers.
                        let _ = tokio::task::spawn_blocking(move || f()).await;
                    }
                }
            }
        });

        // Without Kafka, checkpoints run on their own timer (with Kafka, the source writes them with its offsets).
        let final_checkpoint = if kafka.is_none() { checkpointer.clone() } else { None };
        if let Some(c) = final_checkpoint.clone() {
            let every = Duration::from_secs_f64(config.checkpoint.interval_secs);
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {
                            let c = c.clone();
                            let _ = tokio::task::spawn_blocking(move || c.write(&[])).await;
                        }
                    }
                }
            });
        }

        ready.store(true, Ordering::SeqCst);
        tracing::info!(%grpc_addr, %http_addr, workers, "framewatch serving");
        let handle = pipeline.handle();
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let stop = shutdown.clone();
        let final_eval = evaluate_now.clone();
        let task = tokio::spawn(async move {
            stop.cancelled().await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight frames");
            ready.store(false, Ordering::SeqCst);
            health_reporter.set_not_serving::<IngestServiceServer<GrpcIngest>>().await;
            health_reporter.set_not_serving::<QueryServiceServer<QueryApi>>().await;
            grpc_stop.cancel();
            if tokio::time::timeout(grace, grpc_task).await.is_err() {
                tracing::warn!(?grace, "gRPC streams still open after the grace period; closing them");
            }
            // The Kafka source waits for in-flight frames, writes the final checkpoint and commits.
            if let Some(k) = kafka {
                let _ = tokio::task::spawn_blocking(move || k.stop()).await;
            }
            let drained = tokio::task::spawn_blocking(move || pipeline.drain());
            if tokio::time::timeout(grace, drained).await.is_err() {
                tracing::warn!(?grace, "scoring queue not drained within the grace period");
            }
            if let Some(c) = final_checkpoint {
                let _ = tokio::task::spawn_blocking(move || c.write(&[])).await;
            }
            let _ = eval_task.await;
            let _ = tokio::task::spawn_blocking(move || final_eval()).await;
            let _ = http_task.await;
            tracing::info!("framewatch stopped");
            Ok(())
        });
        Ok(Service {
            grpc_addr,
            http_addr,
            pipeline: handle,
            evaluation,
            alerts: alert_tx,
            alert_state,
            evaluate_now,
            shutdown,
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

#[derive(Clone)]
struct HttpState {
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    /// The Kafka source's broker connection, when there is one.
    kafka_ready: Option<Arc<AtomicBool>>,
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic text format (0.0.4) otherwise (curl,
/// promtool, older scrapers).
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, &s.registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &s.registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding failed: {e}\n"),
        ),
    }
}

/// 200 when every source is ready; the body has one line per source either way.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let grpc = s.ready.load(Ordering::SeqCst);
    let mut body = format!("grpc: {}\n", if grpc { "ready" } else { "not ready (starting or shutting down)" });
    let mut all = grpc;
    if let Some(k) = &s.kafka_ready {
        let up = k.load(Ordering::SeqCst);
        all &= up;
        body.push_str(if up { "kafka: ready\n" } else { "kafka: not ready (no broker connection; retrying)\n" });
    }
    let status = if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, body)
}

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

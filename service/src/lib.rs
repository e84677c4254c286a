//! framewatch: streaming data-drift monitor for computer-vision camera fleets. Modules top-down, in the order a
//! frame meets them; a module imports only modules listed below it (`tests/architecture.rs` checks this):
//!
//! ```text
//! cli (offline commands), fuzzing (decoder entry points for fuzz/) -> server (assembly) -> [demo]
//!   -> sources::grpc | sources::kafka -> pipeline (bounded queue, scoring pool) -> frame (validation)
//!   -> checkpoint (store + cameras + Kafka offsets)
//!   -> http (/metrics, /healthz, /readyz, web view) -> export (/metrics) + api (queries) + web (HTML pages)
//!   -> alerts (rules -> log, watch, webhook) -> evaluate (drift vs baseline) -> store (slice windows)
//!      + cameras (frozen / moved) + exemplars (thumbnails of drifting slices' frames)
//!      + truth (ground truth joined late with the frames it labels, for model performance)
//!   auth (bearer tokens with roles), listen (connection bound, keepalive, TLS) -> reload (files re-read on change)
//!   leaves: config, telemetry, reject, slice, time, fingerprint, charts (HTML/SVG/JPEG rendering)
//! ```

pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fuzzing;
pub mod server;

pub mod sources;

pub mod pipeline;

pub mod frame;

pub mod checkpoint;

pub mod http;

pub mod api;
pub mod export;
pub mod web;

pub mod alerts;

pub mod evaluate;

pub mod cameras;
pub mod exemplars;
pub mod store;
pub mod truth;

pub mod auth;
pub mod listen;
pub mod reload;

pub mod charts;
pub mod config;
pub mod fingerprint;
pub mod reject;
pub mod slice;
pub mod telemetry;
pub mod time;

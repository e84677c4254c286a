//! framewatch: streaming data-drift monitor for computer-vision camera fleets. The offline command line and the
//! service stages, in the order a frame meets them:
//!
//! ```text
//! sources::grpc | sources::kafka -> frame (validation) -> pipeline (bounded queue, scoring pool)
//!   -> store (slice windows) + cameras (frozen / moved)
//!   -> evaluate (drift vs baseline) -> export (/metrics) + alerts (rules -> log, gRPC watch, webhook)
//! api (queries) reads the latest evaluation; checkpoint saves store + cameras + Kafka offsets together
//! ```

pub mod alerts;
pub mod api;
pub mod cameras;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod demo;
pub mod evaluate;
pub mod export;
pub mod frame;
pub mod offline;
pub mod pipeline;
pub mod report;
pub mod server;
pub mod sources;
pub mod store;
pub mod webhook;

//! Frame sources. Each turns its wire format into `IncomingFrame`s and submits them to the pipeline; none of
//! them knows about windows or statistics.

pub mod grpc;
pub mod kafka;

//! framewatch: streaming data-drift monitor for computer-vision camera fleets. This crate holds the command line
//! and (soon) the service stages; the math lives in `framewatch-metrics`.

pub mod cli;
pub mod offline;
pub mod report;

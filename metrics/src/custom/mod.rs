//! Custom metrics. Adding one: write a file here implementing `FrameMetric`, then add one line below.

mod redness;

pub use redness::{ObjectRedness, Redness};

use crate::catalog::{MetricRegistry, RegistryError};

/// Registers every custom metric shipped with framewatch.
pub fn register_all(reg: &mut MetricRegistry) -> Result<(), RegistryError> {
    reg.register(Redness)?;
    reg.register(ObjectRedness)?;
    Ok(())
}

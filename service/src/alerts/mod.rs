//! Alerts: rules over the latest evaluation (`rules`), the per-(rule, slice) state machine (`engine`), and
//! notification (`dispatch`: the log, the gRPC watch stream, and the Alertmanager webhook with re-sends).

mod dispatch;
mod engine;
mod rules;
pub mod webhook;

pub use dispatch::{Alerting, Dispatcher};
pub use engine::{AlertEngine, AlertEvent, AlertSnapshot, Phase};
pub use rules::{Rule, build_rules, default_rules};

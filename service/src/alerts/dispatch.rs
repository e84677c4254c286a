//! Where alert changes go, and when: every change is logged and broadcast to gRPC watchers; firing and resolved
//! changes go to the Alertmanager webhook, and alerts still firing are re-sent every `alerts.resend_secs` so
//! Alertmanager keeps them active (each alert once per batch).

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::engine::{AlertEngine, AlertEvent, AlertSnapshot, Phase};
use super::webhook::Webhook;
use crate::cameras::CameraState;
use crate::evaluate::Evaluation;

/// The notification policy.
#[derive(Debug)]
pub struct Dispatcher {
    watchers: broadcast::Sender<AlertEvent>,
    webhook: Option<Webhook>,
    resend_secs: i64,
    last_resend: i64,
}

impl Dispatcher {
    pub fn new(watchers: broadcast::Sender<AlertEvent>, webhook: Option<Webhook>, resend_secs: u64) -> Dispatcher {
        Dispatcher { watchers, webhook, resend_secs: resend_secs as i64, last_resend: i64::MIN }
    }

    /// Sends `changes` (this step's state changes) on; `active` are the alerts pending or firing now.
    pub fn dispatch(&mut self, changes: Vec<AlertEvent>, active: &[AlertEvent], now: i64) {
        let mut notify = Vec::with_capacity(changes.len());
        for ev in changes {
            log(&ev);
            // No receiver (nobody watching) is not an error.
            let _ = self.watchers.send(ev.clone());
            if ev.phase != Phase::Pending {
                notify.push(ev);
            }
        }
        let Some(webhook) = &self.webhook else { return };
        if now.saturating_sub(self.last_resend) >= self.resend_secs {
            self.last_resend = now;
            for a in active.iter().filter(|a| a.phase == Phase::Firing) {
                if !notify.iter().any(|b| b.rule == a.rule && b.slice == a.slice) {
                    notify.push(a.clone());
                }
            }
        }
        webhook.send(notify);
    }
}

fn log(ev: &AlertEvent) {
    let cause = ev.labels.get("cause").map_or("", String::as_str);
    match ev.phase {
        Phase::Pending => {
            tracing::info!(rule = %ev.rule, slice = %ev.slice, cause, value = ev.value, "alert pending")
        }
        Phase::Firing => tracing::warn!(
            rule = %ev.rule, slice = %ev.slice, cause, value = ev.value, severity = %ev.severity,
            evidence = ev.annotations.get("evidence").map_or("", String::as_str), "alert firing"
        ),
        Phase::Resolved => {
            tracing::info!(rule = %ev.rule, slice = %ev.slice, cause, value = ev.value, "alert resolved")
        }
    }
}

/// The engine, its notification policy and the snapshot readers see, stepped together once per evaluation.
#[derive(Debug)]
pub struct Alerting {
    pub engine: AlertEngine,
    pub dispatcher: Dispatcher,
    pub snapshot: Arc<RwLock<AlertSnapshot>>,
}

impl Alerting {
    pub fn step(&mut self, eval: &Evaluation, cameras: &[(String, CameraState)], now: i64) {
        let changes = self.engine.step(eval, cameras, now);
        let snapshot = self.engine.snapshot(now);
        self.dispatcher.dispatch(changes, &snapshot.active, now);
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}

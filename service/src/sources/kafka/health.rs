//! Why the Kafka source is not ready: the client error that /readyz gives as the reason, chosen among the errors
//! librdkafka reports (its callbacks run on the poll thread) and read by the HTTP listener; and, while the member
//! has no partitions, when the log says so and why.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::{GroupStatus, NotReadyReason};

/// When the log says that the member still has no partitions: `FIRST` after a wait starts (at start, or when a
/// rebalance took every partition) or its reason changes (joining, then standing by), then every `EVERY` while it
/// lasts. A group join takes a few seconds, so a quick one is not logged; a wait for a dead member's session to
/// time out is, with its reason.
#[derive(Debug)]
pub(super) struct WaitLog {
    /// When the member last had partitions (or started), while it has none.
    since: Option<Instant>,
    /// The status the cadence runs for.
    status: Option<GroupStatus>,
    next: Instant,
}

impl WaitLog {
    pub(super) const FIRST: Duration = Duration::from_secs(5);
    pub(super) const EVERY: Duration = Duration::from_secs(30);

    pub(super) fn new(now: Instant) -> WaitLog {
        WaitLog { since: Some(now), status: Some(GroupStatus::Joining), next: now + Self::FIRST }
    }

    /// How long the member has been without partitions, when a line is due now. `status`: where it stands.
    pub(super) fn due(&mut self, now: Instant, status: GroupStatus) -> Option<Duration> {
        if matches!(status, GroupStatus::Assigned(_)) {
            (self.since, self.status) = (None, None);
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if self.status != Some(status) {
            self.status = Some(status);
            self.next = now + Self::FIRST;
        }
        if now < self.next {
            return None;
        }
        self.next = now + Self::EVERY;
        Some(now - since)
    }
}

/// Why the member has no partitions, for the log: the broker connection first (nothing else can progress
/// without it), then where the group stands.
pub(super) fn waiting_reason(connected: bool, last_error: Option<String>, status: GroupStatus) -> String {
    if !connected {
        return match last_error {
            Some(e) => format!("broker unreachable: {e}"),
            None => "no broker connection yet (connecting)".into(),
        };
    }
    match status {
        GroupStatus::Joining => "joining the group (no rebalance has completed yet)".into(),
        GroupStatus::Rebalancing => "rebalancing (the last rebalance revoked every partition)".into(),
        GroupStatus::Standby => "no partitions assigned: the group has more members than partitions".into(),
        GroupStatus::TopicUnavailable => {
            "a subscribed topic is not available: it does not exist, or may not be read (see the client error)".into()
        }
        GroupStatus::Assigned(n) => format!("{n} partitions assigned"),
    }
}

/// Why no broker is reachable: librdkafka's words for the most telling client error since the last connection (a
/// refused connection, a failed TLS handshake, a failed SASL authentication), published as the Kafka line's reason
/// on /readyz, so that it says why it is 503 instead of only that it is. Cleared when a broker connection comes up.
#[derive(Debug)]
pub(super) struct LastError {
    /// The kind of what `reason` holds; the lock also orders updates of `reason`.
    kind: Mutex<Option<ErrorKind>>,
    reason: NotReadyReason,
}

/// How much a client error says about why no broker is reachable, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ErrorKind {
    /// "1/1 brokers are down": follows the error that took the last broker down, and says less than it.
    Summary,
    /// A refused, reset or timed-out connection: the network or the broker, which may come back by itself.
    Transport,
    /// A TLS handshake or SASL authentication refused: the configuration (CA, certificate, credentials) must
    /// change. Stays until a connection succeeds, so a reset that follows it does not hide it.
    Security,
}

impl ErrorKind {
    pub(super) fn of(error: &rdkafka::error::KafkaError) -> ErrorKind {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match error.rdkafka_error_code() {
            Some(Code::AllBrokersDown) => ErrorKind::Summary,
            Some(Code::SSL | Code::Authentication | Code::SaslAuthenticationFailed) => ErrorKind::Security,
            _ => ErrorKind::Transport,
        }
    }
}

impl LastError {
    /// Longest reason kept: librdkafka's are one sentence naming the broker, well under this.
    const MAX_CHARS: usize = 400;

    pub(super) fn new(reason: NotReadyReason) -> LastError {
        reason.set(None);
        LastError { kind: Mutex::new(None), reason }
    }

    /// Records `reason` unless what is recorded says more (a higher `ErrorKind`); the same kind replaces it.
    pub(super) fn record(&self, kind: ErrorKind, reason: &str) {
        let mut last = self.kind.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|k| k > kind) {
            return;
        }
        // One line on /readyz, whatever the library wrote.
        let line: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(Self::MAX_CHARS).collect();
        *last = Some(kind);
        self.reason.set(Some(line));
    }

    /// The reason recorded, if any.
    pub(super) fn get(&self) -> Option<String> {
        self.reason.get()
    }

    pub(super) fn clear(&self) {
        let mut last = self.kind.lock().unwrap_or_else(|p| p.into_inner());
        *last = None;
        self.reason.set(None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{ErrorKind, LastError, WaitLog, waiting_reason};
    use crate::http::{GroupStatus, NotReadyReason};

    /// Issue #14: a wait for partitions is logged 5 s in, then every 30 s; 5 s after its reason changes; and
    /// starts over after an assignment.
    #[test]
    fn the_wait_for_partitions_is_logged_at_5_s_then_every_30_s() {
        let (joining, standby) = (GroupStatus::Joining, GroupStatus::Standby);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = WaitLog::new(t0);
        let due: Vec<Option<u64>> =
            [0, 4, 5, 6, 34, 35, 64, 65].iter().map(|&s| log.due(at(s), joining).map(|d| d.as_secs())).collect();
        assert_eq!(due, [None, None, Some(5), None, None, Some(35), None, Some(65)]);
        assert_eq!(log.due(at(70), standby), None, "a new reason");
        assert_eq!(log.due(at(75), standby), Some(Duration::from_secs(75)), "5 s later; the wait counts from t0");
        assert_eq!(log.due(at(76), GroupStatus::Assigned(2)), None, "assigned: no line");
        assert_eq!(log.due(at(100), GroupStatus::Rebalancing), None, "a new wait starts");
        assert_eq!(log.due(at(104), GroupStatus::Rebalancing), None);
        assert_eq!(log.due(at(105), GroupStatus::Rebalancing), Some(Duration::from_secs(5)), "from its start");
    }

    #[test]
    fn the_waiting_reason_puts_the_broker_first() {
        let joining = GroupStatus::Joining;
        let refused = Some("b:9092/bootstrap: Connection refused".to_string());
        assert_eq!(waiting_reason(false, refused, joining), "broker unreachable: b:9092/bootstrap: Connection refused");
        assert_eq!(waiting_reason(false, None, GroupStatus::Standby), "no broker connection yet (connecting)");
        assert!(waiting_reason(true, None, joining).starts_with("joining the group"));
        assert!(waiting_reason(true, None, GroupStatus::Standby).contains("more members than partitions"));
        assert!(waiting_reason(true, None, GroupStatus::Rebalancing).starts_with("rebalancing"));
    }

    #[test]
    fn last_error_keeps_the_most_telling_reason_until_cleared() {
        let shown = NotReadyReason::default();
        let e = LastError::new(shown.clone());
        assert_eq!(shown.get(), None);
        e.record(ErrorKind::Summary, "1/1 brokers are down");
        assert_eq!(shown.get().as_deref(), Some("1/1 brokers are down"), "better than nothing");
        e.record(ErrorKind::Security, "ssl://b:9093/bootstrap: SSL handshake failed:\ncertificate verify failed");
        e.record(ErrorKind::Transport, "ssl://b:9093/bootstrap: Connection reset by peer");
        e.record(ErrorKind::Summary, "1/1 brokers are down");
        assert_eq!(
            shown.get().as_deref(),
            Some("ssl://b:9093/bootstrap: SSL handshake failed: certificate verify failed"),
            "the certificate failure stays, on one line"
        );
        e.record(ErrorKind::Security, "sasl_ssl://b:9093/bootstrap: SASL authentication error");
        assert_eq!(
            shown.get().as_deref(),
            Some("sasl_ssl://b:9093/bootstrap: SASL authentication error"),
            "newest of a kind"
        );
        e.clear();
        e.record(ErrorKind::Transport, "b:9092/bootstrap: Connection refused");
        assert_eq!(shown.get().as_deref(), Some("b:9092/bootstrap: Connection refused"), "a connection started afresh");
        e.record(ErrorKind::Security, &"x".repeat(1000));
        assert_eq!(shown.get().map(|r| r.len()), Some(LastError::MAX_CHARS), "bounded");
    }
}

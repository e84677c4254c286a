//! Why the Kafka source is not ready: the client error that /readyz gives as the reason, chosen among the errors
//! librdkafka reports (its callbacks run on the poll thread) and read by the HTTP listener.

use std::sync::Mutex;

use crate::http::NotReadyReason;

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

    pub(super) fn clear(&self) {
        let mut last = self.kind.lock().unwrap_or_else(|p| p.into_inner());
        *last = None;
        self.reason.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorKind, LastError};
    use crate::http::NotReadyReason;

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

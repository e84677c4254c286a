//! Time, shared by every stage: the clock abstraction (tests and replays drive their own) and RFC 3339 text,
//! through the `time` crate rather than hand-written calendar arithmetic.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A source of wall-clock time; tests drive their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to (tests, replays).
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn at(unix_secs: i64) -> ManualClock {
        ManualClock { millis: AtomicI64::new(unix_secs * 1000) }
    }
    pub fn advance(&self, d: Duration) {
        self.millis.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
    pub fn unix_secs(&self) -> i64 {
        self.millis.load(Ordering::SeqCst).div_euclid(1000)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.millis.load(Ordering::SeqCst).max(0) as u64)
    }
}

/// Whole Unix seconds of `t` (negative before 1970).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn now_secs(clock: &dyn Clock) -> i64 {
    unix_secs(clock.now())
}

/// `secs` as RFC 3339 UTC, to the second (`2026-11-26T02:30:45Z`); out-of-range instants are clamped to the
/// representable years 0000..9999.
pub fn rfc3339(secs: i64) -> String {
    let secs = secs.clamp(-62_167_219_200, 253_402_300_799);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    rfc3339(unix_secs(SystemTime::now()))
}

/// Parses RFC 3339 (`2025-11-26T09:59:00.5+01:00`, `...Z`) into Unix seconds and nanoseconds. A leap second
/// (`:60`) folds into the next second.
pub fn parse_rfc3339(text: &str) -> Option<(i64, i32)> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some((t.unix_timestamp(), t.nanosecond() as i32))
}

/// Hour of the day (0-23, UTC) of a Unix time: the key of time-of-day baseline contexts.
pub fn hour_of_day(secs: i64) -> u8 {
    (secs.rem_euclid(86_400) / 3600) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_660_245), "2026-11-26T02:30:45Z");
    }

    #[test]
    fn rfc3339_parses_offsets_fractions_and_refuses_nonsense() {
        assert_eq!(parse_rfc3339("2025-11-26T10:00:00Z"), Some((1_764_151_200, 0)));
        assert_eq!(parse_rfc3339("2025-11-26T11:00:00.25+01:00"), Some((1_764_151_200, 250_000_000)));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00z"), Some((951_782_400, 0)));
        for bad in
            ["2025-02-29T00:00:00Z", "2025-11-26T10:00:00", "2025-11-26T24:00:00Z", "2025-11-26T10:00:00.Z", "x", ""]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for secs in [0, 951_782_400, 1_795_660_245] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some((secs, 0)));
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(100);
        assert_eq!(now_secs(&c), 100);
        c.advance(Duration::from_millis(2500));
        assert_eq!((c.unix_secs(), now_secs(&c)), (102, 102));
        assert_eq!(hour_of_day(86_400 + 3 * 3600 + 5), 3);
    }
}

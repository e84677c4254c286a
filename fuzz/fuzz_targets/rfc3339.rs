//! RFC 3339 capture times (the Kafka JSON form's text timestamps): parsed without a panic, and an accepted instant
//! in the years `time::rfc3339` writes (0000-9999 UTC) reads back as the same second.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((secs, nanos)) = framewatch::fuzzing::rfc3339(data) else { return };
    assert!((0..1_000_000_000).contains(&nanos), "{nanos} ns");
    if (-62_167_219_200..=253_402_300_799).contains(&secs) {
        let written = framewatch::time::rfc3339(secs);
        assert_eq!(framewatch::fuzzing::rfc3339(written.as_bytes()), Ok((secs, 0)), "{written}");
    }
});

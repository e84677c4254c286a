//! RFC 3339 capture times (the Kafka JSON form's text timestamps).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = framewatch::fuzzing::rfc3339(data);
});

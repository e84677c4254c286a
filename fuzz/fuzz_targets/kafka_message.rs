//! A Kafka message value: the JSON form (first byte even) or auto-detected JSON/protobuf (odd), decoded,
//! validated and scored. The rest of the first byte's bits pick a key: none, or a camera id.
#![no_main]
use std::cell::RefCell;

use framewatch::fuzzing::FrameScorer;
use libfuzzer_sys::fuzz_target;

thread_local!(static SCORER: RefCell<FrameScorer> = RefCell::new(FrameScorer::default()));

fuzz_target!(|data: &[u8]| {
    let Some((&mode, value)) = data.split_first() else { return };
    let key: Option<&[u8]> = if mode & 2 == 0 { None } else { Some(b"cam-key") };
    SCORER.with(|s| {
        let _ = s.borrow_mut().kafka_message(value, key, mode & 1 == 1);
    });
});

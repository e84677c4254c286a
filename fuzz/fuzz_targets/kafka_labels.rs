//! A labels-topic message: the JSON form (first byte even) or auto-detected JSON/protobuf `FrameLabels` (odd),
//! decoded, checked and joined against a join holding a few frames (`fuzzing::LabelJoiner`).
#![no_main]
use std::cell::RefCell;

use framewatch::fuzzing::LabelJoiner;
use libfuzzer_sys::fuzz_target;

thread_local!(static JOINER: RefCell<LabelJoiner> = RefCell::new(LabelJoiner::default()));

fuzz_target!(|data: &[u8]| {
    let Some((&mode, value)) = data.split_first() else { return };
    JOINER.with(|j| {
        let _ = j.borrow_mut().kafka_labels(value, mode & 1 == 1);
    });
});

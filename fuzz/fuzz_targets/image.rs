//! Encoded images (JPEG, PNG): quality estimate, decode within limits, every pixel metric.
#![no_main]
use std::cell::RefCell;

use framewatch::fuzzing::FrameScorer;
use libfuzzer_sys::fuzz_target;

thread_local!(static SCORER: RefCell<FrameScorer> = RefCell::new(FrameScorer::default()));

fuzz_target!(|data: &[u8]| {
    SCORER.with(|s| {
        let _ = s.borrow_mut().image(data);
    });
});

//! The TOML configuration: parse, validate, derive the store's settings.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = framewatch::fuzzing::config(data);
});

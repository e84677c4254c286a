//! The checkpoint read path. First byte even: the bytes are the whole file (header checks); odd: the rest is a
//! body given a valid header, so mutations reach the decoder and the restore into a store.
#![no_main]
use std::sync::LazyLock;

use framewatch::fuzzing::CheckpointReader;
use libfuzzer_sys::fuzz_target;

static READER: LazyLock<CheckpointReader> = LazyLock::new(|| {
    CheckpointReader::new(include_str!("../../examples/baseline.json")).expect("the shipped baseline")
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let _ = READER.read(rest);
    } else {
        let _ = READER.read(&CheckpointReader::wrap(rest));
    }
});

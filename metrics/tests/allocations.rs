//! Scoring reuses its buffers: after warm-up, memory held by a `Scorer` does not grow frame after frame, and
//! framewatch's own code allocates nothing per JPEG frame (the decoder's internal tables are its own business,
//! and are freed before `score` returns).

#![allow(unsafe_code)] // a counting global allocator is the only way to observe allocations

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use framewatch_metrics::{FramePixels, MetricRegistry, RawFormat, ScoreSettings, Scorer};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn scoring_does_not_grow_memory_and_raw_frames_allocate_nothing() {
    let photos: Vec<Vec<u8>> = common::photos().iter().map(|p| std::fs::read(p).expect("read")).collect();
    let mut scorer = Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings::default());
    // warm-up: every buffer reaches the size of the largest frame
    for p in &photos {
        scorer.score(FramePixels::Encoded(p), &[]).expect("score");
    }
    let live_after_warmup = LIVE.load(Ordering::Relaxed);
    for _ in 0..10 {
        for p in &photos {
            scorer.score(FramePixels::Encoded(p), &[]).expect("score");
        }
    }
    let growth = LIVE.load(Ordering::Relaxed) - live_after_warmup;
    assert!(growth <= 0, "memory held grew by {growth} bytes over {} frames", 10 * photos.len());

    // Raw frames skip the decoder, so this counts framewatch's own allocations: none per frame.
    let raw = vec![77u8; 640 * 480 * 3];
    let frame = FramePixels::Raw { pixels: &raw, width: 640, height: 480, format: RawFormat::Rgb8 };
    scorer.score(frame, &[]).expect("warm");
    let before = COUNT.load(Ordering::Relaxed);
    for _ in 0..50 {
        scorer.score(frame, &[]).expect("score");
    }
    let per_frame = (COUNT.load(Ordering::Relaxed) - before) as f64 / 50.0;
    assert_eq!(per_frame, 0.0, "allocations per raw frame");
}

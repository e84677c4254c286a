//! Per-camera temporal state: how much each frame differs from the camera's previous one (pHash Hamming
//! distance), how long a camera has sent the very same picture (frozen: identical content, which a live sensor
//! never produces, unlike a merely static scene), and how long it has shown a scene far from the one it settled
//! on (moved). "The scene" is a bitwise vote over many frames, not one frame, so people and cars passing through
//! do not look like a moved camera: a slow vote (background, ~3000 frames) and a fast one (recent, ~16 frames);
//! the camera has moved while the two disagree on 20+ of the 64 bits. Bounded: at most `max_cameras`, the
//! longest-silent is forgotten first.

use std::collections::HashMap;

use framewatch_metrics::phash::hamming;

/// Recent and background scene hashes this many bits apart mean the camera looks elsewhere.
pub const MOVED_BITS: u32 = 20;
/// Weight of a new frame in the slow (background) vote: a new view becomes the settled one after ~0.7/this frames.
const BACKGROUND_RATE: f32 = 1.0 / 4096.0;
/// Weight of a new frame in the fast (recent) vote.
const RECENT_RATE: f32 = 1.0 / 16.0;

fn vote_hash(v: &[f32; 64]) -> u64 {
    v.iter().enumerate().fold(0u64, |h, (i, &p)| if p > 0.5 { h | (1u64 << i) } else { h })
}

fn bits(hash: u64) -> [f32; 64] {
    std::array::from_fn(|i| ((hash >> i) & 1) as f32)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraState {
    pub last_hash: u64,
    /// Fingerprint of the frame's content (encoded bytes or pixels); equal fingerprints = the same picture.
    pub last_content: Option<u64>,
    /// Share of recent / long-run frames with each pHash bit set.
    background: [f32; 64],
    recent: [f32; 64],
    /// Last frame-to-frame change, 0..1 (Hamming distance / 64).
    pub frame_change: f64,
    pub frozen_frames: u64,
    pub moved_frames: u64,
    pub last_seen_secs: i64,
}

#[derive(Debug, Default)]
pub struct CameraTracker {
    cameras: HashMap<String, CameraState>,
    max_cameras: usize,
}

impl CameraTracker {
    pub fn new(max_cameras: usize) -> CameraTracker {
        CameraTracker { cameras: HashMap::new(), max_cameras: max_cameras.max(1) }
    }

    /// `content` fingerprints the frame exactly (None for pre-scored frames, where an identical pHash stands in).
    pub fn observe(&mut self, camera: &str, hash: u64, content: Option<u64>, now_secs: i64) -> CameraState {
        if let Some(s) = self.cameras.get_mut(camera) {
            let d = hamming(s.last_hash, hash);
            s.frame_change = f64::from(d) / 64.0;
            let same = match (content, s.last_content) {
                (Some(a), Some(b)) => a == b,
                (None, None) => d == 0,
                _ => false,
            };
            s.frozen_frames = if same { s.frozen_frames + 1 } else { 0 };
            s.last_content = content;
            if !same {
                // A frozen feed says nothing about where the camera points, so only live frames vote.
                for (i, (b, r)) in s.background.iter_mut().zip(s.recent.iter_mut()).enumerate() {
                    let bit = ((hash >> i) & 1) as f32;
                    *b += BACKGROUND_RATE * (bit - *b);
                    *r += RECENT_RATE * (bit - *r);
                }
                if hamming(vote_hash(&s.background), vote_hash(&s.recent)) >= MOVED_BITS {
                    s.moved_frames += 1;
                } else {
                    s.moved_frames = 0;
                }
            }
            s.last_hash = hash;
            s.last_seen_secs = now_secs;
            return *s;
        }
        if self.cameras.len() >= self.max_cameras
            && let Some(oldest) = self.cameras.iter().min_by_key(|(_, s)| s.last_seen_secs).map(|(k, _)| k.clone())
        {
            self.cameras.remove(&oldest);
        }
        let s = CameraState {
            last_hash: hash,
            last_content: content,
            background: bits(hash),
            recent: bits(hash),
            frame_change: 0.0,
            frozen_frames: 0,
            moved_frames: 0,
            last_seen_secs: now_secs,
        };
        self.cameras.insert(camera.to_string(), s);
        s
    }

    pub fn get(&self, camera: &str) -> Option<CameraState> {
        self.cameras.get(camera).copied()
    }

    pub fn snapshot(&self) -> Vec<(String, CameraState)> {
        let mut v: Vec<_> = self.cameras.iter().map(|(k, s)| (k.clone(), *s)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn forget_idle(&mut self, older_than_secs: i64) {
        self.cameras.retain(|_, s| s.last_seen_secs >= older_than_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_and_moved_streaks() {
        let mut t = CameraTracker::new(10);
        let scene = 0x0F0F_0F0F_0F0F_0F0Fu64;
        t.observe("c", scene, Some(1), 0);
        for i in 1..=5 {
            assert_eq!(t.observe("c", scene, Some(1), i).frozen_frames, i as u64, "identical content");
        }
        // a static scene with sensor noise: same pHash, different content: not frozen
        assert_eq!(t.observe("c", scene, Some(2), 6).frozen_frames, 0);
        // a live scene: frames differ, not frozen, not moved
        let s = t.observe("c", scene ^ 0xFF, Some(3), 7);
        assert_eq!((s.frozen_frames, s.moved_frames), (0, 0));
        assert!((s.frame_change - 8.0 / 64.0).abs() < 1e-12);
        // people passing: every fourth frame far from the scene does not move the camera
        for i in 0..40u64 {
            let h = if i % 4 == 0 { !scene } else { scene ^ (i & 3) };
            assert_eq!(t.observe("c", h, Some(200 + i), 8 + i as i64).moved_frames, 0, "transient foreground");
        }
        // the camera turns to another scene and stays there
        let other = !scene;
        let mut moved = 0;
        for i in 1..=40u64 {
            moved = t.observe("c", other ^ (i << 40), Some(300 + i), 50 + i as i64).moved_frames;
        }
        assert!(moved >= 25, "moved for most of the 40 frames: {moved}");
        for i in 0..30u64 {
            t.observe("c", scene ^ (i & 1), Some(400 + i), 100 + i as i64);
        }
        assert_eq!(t.get("c").map(|s| s.moved_frames), Some(0), "back home");
        // pre-scored frames: an identical pHash counts as the same picture
        t.observe("p", scene, None, 0);
        assert_eq!(t.observe("p", scene, None, 1).frozen_frames, 1);
    }

    #[test]
    fn bounded_number_of_cameras() {
        let mut t = CameraTracker::new(2);
        t.observe("a", 1, None, 1);
        t.observe("b", 1, None, 2);
        t.observe("c", 1, None, 3);
        assert!(t.get("a").is_none());
        assert_eq!(t.snapshot().len(), 2);
    }
}

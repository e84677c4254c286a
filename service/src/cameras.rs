//! Per-camera temporal state: how much each frame differs from the camera's previous one (pHash Hamming
//! distance), how long a camera has sent the very same picture (frozen: identical content, which a live sensor
//! never produces, unlike a merely static scene), and how long it has shown a scene far from the one it settled
//! on (moved). Bounded: at most `max_cameras`, the longest-silent is forgotten first.

use std::collections::HashMap;

use framewatch_metrics::phash::hamming;

/// A frame this many bits or more from the camera's settled scene counts as "elsewhere".
pub const MOVED_BITS: u32 = 20;
/// After this many consecutive "elsewhere" frames the new scene becomes the settled one (re-learn).
pub const RELEARN_FRAMES: u64 = 3000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraState {
    pub last_hash: u64,
    /// Fingerprint of the frame's content (encoded bytes or pixels); equal fingerprints = the same picture.
    pub last_content: Option<u64>,
    /// The scene the camera settled on.
    pub anchor: u64,
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
            if same {
                // A frozen feed says nothing about where the camera points.
            } else if hamming(s.anchor, hash) >= MOVED_BITS {
                s.moved_frames += 1;
                if s.moved_frames >= RELEARN_FRAMES {
                    s.anchor = hash;
                    s.moved_frames = 0;
                }
            } else {
                s.moved_frames = 0;
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
            anchor: hash,
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
        // the camera turns to another scene and stays there
        let other = !scene;
        for i in 1..=10 {
            assert_eq!(t.observe("c", other ^ (i as u64) << 40, Some(100 + i as u64), 7 + i).moved_frames, i as u64);
        }
        assert_eq!(t.observe("c", scene, Some(999), 20).moved_frames, 0, "back home");
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

//! Per-camera temporal state: how much each frame differs from the camera's previous one (pHash Hamming
//! distance), how long a camera has shown the very same picture (frozen), and how long it has shown a scene far
//! from the one it settled on (moved). Bounded: at most `max_cameras`, the longest-silent is forgotten first.

use std::collections::HashMap;

use framewatch_metrics::phash::hamming;

/// Consecutive frames at most this many bits apart count as "the same picture".
pub const FROZEN_BITS: u32 = 2;
/// A frame this many bits or more from the camera's settled scene counts as "elsewhere".
pub const MOVED_BITS: u32 = 20;
/// After this many consecutive "elsewhere" frames the new scene becomes the settled one (re-learn).
pub const RELEARN_FRAMES: u64 = 3000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraState {
    pub last_hash: u64,
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

    pub fn observe(&mut self, camera: &str, hash: u64, now_secs: i64) -> CameraState {
        if let Some(s) = self.cameras.get_mut(camera) {
            let d = hamming(s.last_hash, hash);
            s.frame_change = f64::from(d) / 64.0;
            s.frozen_frames = if d <= FROZEN_BITS { s.frozen_frames + 1 } else { 0 };
            if hamming(s.anchor, hash) >= MOVED_BITS {
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
        t.observe("c", scene, 0);
        for i in 1..=5 {
            assert_eq!(t.observe("c", scene, i).frozen_frames, i as u64);
        }
        // one bit of sensor noise still counts as frozen
        assert_eq!(t.observe("c", scene ^ 1, 6).frozen_frames, 6);
        // a live scene: frames differ, not frozen, not moved
        let s = t.observe("c", scene ^ 0xFF, 7);
        assert_eq!((s.frozen_frames, s.moved_frames), (0, 0));
        assert!((s.frame_change - 7.0 / 64.0).abs() < 1e-12, "0xFF vs the previous 0x01: 7 bits");
        // the camera turns to another scene and stays there
        let other = !scene;
        for i in 1..=10 {
            assert_eq!(t.observe("c", other ^ (i as u64) << 40, 7 + i).moved_frames, i as u64);
        }
        assert_eq!(t.observe("c", scene, 20).moved_frames, 0, "back home");
    }

    #[test]
    fn bounded_number_of_cameras() {
        let mut t = CameraTracker::new(2);
        t.observe("a", 1, 1);
        t.observe("b", 1, 2);
        t.observe("c", 1, 3);
        assert!(t.get("a").is_none());
        assert_eq!(t.snapshot().len(), 2);
    }
}

//! Real footage for the load tester: a folder holding one clip's frames (`scripts/footage/extract.sh` writes
//! frame_00001.jpg ...), played IN ORDER (sorted by file name) at the clip's rate, every camera the same clip. A
//! frame range holds part of the clip out (the baseline sees frames 1-400, the run streams 401-795). The clip is
//! kept encoded in memory (a 795-frame 768x576 clip is ~90 MB as JPEG, ~1 GB decoded); only cameras under a pixel
//! drift decode, transform and re-encode their frames, clean cameras send the recorded bytes unmodified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use framewatch_synth::Drift;
use framewatch_synth::footage::FootageDrifter;

/// Which frames of which clip.
#[derive(Debug, Clone, Default, Args)]
pub struct ClipRange {
    /// Stream the frames of this folder in file-name order (frame_00001.jpg ...) instead of synthetic frames, the
    /// same clip on every camera (`scripts/footage/vtest.sh` extracts one).
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// First frame of the clip to use, 1-based: hold out what the baseline saw (baseline --end-frame 400, run
    /// --start-frame 401).
    #[arg(long, default_value_t = 1, requires = "clip")]
    pub start_frame: usize,
    /// Last frame to use, 1-based and inclusive (default: the clip's last).
    #[arg(long, requires = "clip")]
    pub end_frame: Option<usize>,
}

/// How cameras play a clip.
#[derive(Debug, Clone, Args)]
pub struct ClipArgs {
    #[command(flatten)]
    pub range: ClipRange,
    /// Start the clip again when it ends (default: a camera stops sending at the clip's end).
    #[arg(long = "loop", requires = "clip")]
    pub looping: bool,
    /// A `moved` camera streams this folder's frames (a wholly different scene, in order, looping) instead of a
    /// re-aimed view of its own clip.
    #[arg(long, requires = "clip")]
    pub moved_clip: Option<PathBuf>,
    /// JPEG quality of re-encoded (drifted) frames: the recording's (extract.sh writes 90), so re-encoding alone
    /// does not look like a compression change.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub reencode_quality: u8,
}

impl Default for ClipArgs {
    fn default() -> Self {
        ClipArgs { range: ClipRange::default(), looping: false, moved_clip: None, reencode_quality: 90 }
    }
}

/// The image files of a clip folder, sorted by file name (time order for zero-padded names).
pub fn clip_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read clip folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_string_lossy().to_lowercase().as_str()))
        })
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        bail!("no .jpg/.jpeg/.png frames in {}", dir.display());
    }
    Ok(files)
}

/// Frames `start..=end` (1-based) of `frames`, checked against the clip's length.
pub fn select<T>(mut frames: Vec<T>, start: usize, end: Option<usize>) -> anyhow::Result<Vec<T>> {
    let n = frames.len();
    let end = end.unwrap_or(n);
    if start == 0 || start > end || end > n {
        bail!("frame range {start}..={end} is not within the clip's frames 1..={n}");
    }
    frames.truncate(end);
    Ok(frames.split_off(start - 1))
}

/// Which recorded frame (0-based within the range) a camera sends as its k-th frame; None once a clip that does
/// not loop has ended.
pub fn frame_at(k: usize, len: usize, looping: bool) -> Option<usize> {
    match len {
        0 => None,
        _ if looping => Some(k % len),
        _ => (k < len).then_some(k),
    }
}

/// A clip's selected frames, encoded, in order.
#[derive(Debug)]
pub struct Clip {
    pub frames: Vec<Vec<u8>>,
    /// 1-based number of the first selected frame in the whole clip (for reports).
    pub first_frame: usize,
}

impl Clip {
    pub fn load(dir: &Path, start: usize, end: Option<usize>) -> anyhow::Result<Clip> {
        let files = select(clip_files(dir)?, start, end)?;
        let frames = files.iter().map(|f| std::fs::read(f).with_context(|| format!("read {}", f.display())));
        Ok(Clip { frames: frames.collect::<anyhow::Result<_>>()?, first_frame: start })
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Does this drift change a recorded frame's pixels (so the frame must be decoded and re-encoded)?
fn touches_pixels(d: &Drift, moved_clip: bool) -> bool {
    match d {
        Drift::Freeze | Drift::ConfidenceDrop(_) | Drift::ClassShift(_) => false,
        Drift::Moved => !moved_clip,
        _ => true,
    }
}

/// One camera playing a clip: the k-th frame's bytes under the drifts in force.
#[derive(Debug)]
pub struct Playback {
    clip: Arc<Clip>,
    moved_clip: Option<Arc<Clip>>,
    looping: bool,
    drifter: FootageDrifter,
    frozen: Option<Vec<u8>>,
    /// Drifted frames already rendered, by clip frame, for the pixel drifts in `cached_for` (a loop replays them
    /// instead of paying the decode, transform and encode again; daylight depends on time and is never cached).
    cache: std::collections::HashMap<usize, Vec<u8>>,
    cached_for: Vec<Drift>,
}

impl Playback {
    pub fn new(clip: Arc<Clip>, moved_clip: Option<Arc<Clip>>, looping: bool, seed: u64, quality: u8) -> Playback {
        Playback {
            clip,
            moved_clip,
            looping,
            drifter: FootageDrifter::new(seed, quality),
            frozen: None,
            cache: std::collections::HashMap::new(),
            cached_for: Vec::new(),
        }
    }

    /// Renders every clip frame under `drifts` ahead of the run, so a client on a busy machine does not fall
    /// behind the clip's rate while transforming (a lagging client sends frames whose capture times are late).
    pub fn prerender(&mut self, drifts: &[Drift]) -> anyhow::Result<()> {
        let pixel: Vec<Drift> =
            drifts.iter().copied().filter(|d| touches_pixels(d, self.moved_clip.is_some())).collect();
        if pixel.is_empty() || pixel.iter().any(|d| matches!(d, Drift::Daylight(_))) {
            return Ok(());
        }
        for i in 0..self.clip.len() {
            let mut out = Vec::new();
            self.drifter.apply(&self.clip.frames[i], &pixel, 0.0, &mut out)?;
            self.cache.insert(i, out);
        }
        self.cached_for = pixel;
        Ok(())
    }

    /// True when the k-th frame under `drifts` costs a decode and an encode (run it off the async threads).
    pub fn is_heavy(&self, drifts: &[Drift]) -> bool {
        !(drifts.contains(&Drift::Freeze) && self.frozen.is_some())
            && drifts.iter().any(|d| touches_pixels(d, self.moved_clip.is_some()))
    }

    /// The k-th frame a camera sends under `drifts` (`elapsed_s` since they began), or None once the clip ended.
    /// Frozen: the first frame sent frozen, byte for byte, again and again (the clip's end does not stop a
    /// frozen camera: it is stuck). Moved: a re-aimed view of the clip (`framewatch_synth::footage::re_aim`) or,
    /// with a moved clip, that clip's frames.
    pub fn frame(&mut self, k: usize, drifts: &[Drift], elapsed_s: f64) -> Option<anyhow::Result<Vec<u8>>> {
        let freeze = drifts.contains(&Drift::Freeze);
        if !freeze {
            self.frozen = None;
        } else if let Some(f) = &self.frozen {
            return Some(Ok(f.clone()));
        }
        let moved_elsewhere = drifts.contains(&Drift::Moved) && self.moved_clip.is_some();
        let (source, index) = match (&self.moved_clip, moved_elsewhere) {
            (Some(m), true) => (&m.frames[frame_at(k, m.len(), true)?], None),
            _ => {
                let i = frame_at(k, self.clip.len(), self.looping)?;
                (&self.clip.frames[i], Some(i))
            }
        };
        let pixel_drifts: Vec<Drift> =
            drifts.iter().copied().filter(|d| touches_pixels(d, self.moved_clip.is_some())).collect();
        let cached = index.filter(|_| !pixel_drifts.is_empty() && pixel_drifts == self.cached_for);
        let bytes = if let Some(b) = cached.and_then(|i| self.cache.get(&i)) {
            Ok(b.clone())
        } else if pixel_drifts.is_empty() {
            Ok(source.clone())
        } else {
            let mut out = Vec::new();
            self.drifter.apply(source, &pixel_drifts, elapsed_s, &mut out).map(|()| out).map_err(anyhow::Error::from)
        };
        if freeze && let Ok(b) = &bytes {
            self.frozen = Some(b.clone());
        }
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use framewatch_metrics::decode::{DecodeLimits, RgbImage, decode_into};
    use framewatch_metrics::phash::{hamming, perceptual_hash};

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/images"))
    }

    /// Three real photos as a tiny "clip" (frame_00001.jpg ...), written in reverse to prove name order wins.
    fn tiny_clip(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("framewatch-loadtest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        for (i, photo) in ["building.jpg", "home.jpg", "fruits.jpg"].iter().enumerate().rev() {
            std::fs::copy(fixtures().join(photo), dir.join(format!("frame_{:05}.jpg", i + 1)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(dir.join("notes.txt"), "not a frame").unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    fn photo(name: &str) -> Vec<u8> {
        std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn grey_hash(jpeg: &[u8]) -> (u64, f64) {
        let mut img = RgbImage::default();
        decode_into(jpeg, &DecodeLimits::default(), &mut img).unwrap_or_else(|e| panic!("{e}"));
        let grey: Vec<u8> = img
            .data
            .chunks_exact(3)
            .map(|p| ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3) as u8)
            .collect();
        let mean = grey.iter().map(|&v| f64::from(v)).sum::<f64>() / grey.len() as f64;
        (perceptual_hash(&grey, img.width, img.height), mean)
    }

    #[test]
    fn a_clip_is_its_image_files_in_name_order() {
        let dir = tiny_clip("order");
        let files = clip_files(&dir).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> = files.iter().filter_map(|f| f.file_name()?.to_str()).collect();
        assert_eq!(names, ["frame_00001.jpg", "frame_00002.jpg", "frame_00003.jpg"]);
        let clip = Clip::load(&dir, 2, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(clip.frames, vec![photo("home.jpg"), photo("fruits.jpg")]);
        assert!(clip_files(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn frame_ranges_hold_part_of_the_clip_out() {
        let frames: Vec<usize> = (1..=795).collect();
        assert_eq!(
            select(frames.clone(), 1, Some(400)).map(|v| (v[0], v[v.len() - 1], v.len())).ok(),
            Some((1, 400, 400))
        );
        assert_eq!(
            select(frames.clone(), 401, None).map(|v| (v[0], v[v.len() - 1], v.len())).ok(),
            Some((401, 795, 395))
        );
        assert!(select(frames.clone(), 0, None).is_err());
        assert!(select(frames.clone(), 500, Some(400)).is_err());
        assert!(select(frames, 1, Some(796)).is_err());
    }

    #[test]
    fn a_clip_plays_once_unless_it_loops() {
        let once: Vec<_> = (0..5).map(|k| frame_at(k, 3, false)).collect();
        assert_eq!(once, [Some(0), Some(1), Some(2), None, None]);
        let looped: Vec<_> = (0..5).map(|k| frame_at(k, 3, true)).collect();
        assert_eq!(looped, [Some(0), Some(1), Some(2), Some(0), Some(1)]);
        assert_eq!(frame_at(0, 0, true), None);
    }

    fn playback(looping: bool, moved: Option<Arc<Clip>>) -> Playback {
        let frames = vec![photo("building.jpg"), photo("home.jpg"), photo("fruits.jpg")];
        Playback::new(Arc::new(Clip { frames, first_frame: 1 }), moved, looping, 1, 90)
    }

    fn ok(f: Option<anyhow::Result<Vec<u8>>>) -> Vec<u8> {
        f.unwrap_or_else(|| panic!("clip ended")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn clean_cameras_send_the_recorded_bytes_and_stop_at_the_end() {
        let mut p = playback(false, None);
        assert!(!p.is_heavy(&[]));
        assert_eq!(ok(p.frame(1, &[], 0.0)), photo("home.jpg"));
        assert!(p.frame(3, &[], 0.0).is_none());
        assert_eq!(ok(playback(true, None).frame(3, &[], 0.0)), photo("building.jpg"));
    }

    #[test]
    fn a_frozen_camera_repeats_identical_bytes_even_past_the_end() {
        let mut p = playback(false, None);
        let first = ok(p.frame(1, &[Drift::Freeze], 0.0));
        assert_eq!(first, photo("home.jpg"));
        assert!(!p.is_heavy(&[Drift::Freeze]));
        for k in 2..6 {
            assert_eq!(ok(p.frame(k, &[Drift::Freeze], 0.0)), first);
        }
        // thawed: live frames again
        assert_eq!(ok(p.frame(2, &[], 0.0)), photo("fruits.jpg"));
    }

    #[test]
    fn darken_halves_the_brightness_of_a_real_frame() {
        let mut p = playback(false, None);
        assert!(p.is_heavy(&[Drift::Darken(0.5)]));
        let (_, before) = grey_hash(&photo("building.jpg"));
        let (_, after) = grey_hash(&ok(p.frame(0, &[Drift::Darken(0.5)], 0.0)));
        assert!((after / before - 0.5).abs() < 0.02, "{after} vs {before}");
    }

    #[test]
    fn a_moved_camera_changes_the_perceptual_hash() {
        let (orig, _) = grey_hash(&photo("building.jpg"));
        let (re_aimed, _) = grey_hash(&ok(playback(false, None).frame(0, &[Drift::Moved], 0.0)));
        assert!(hamming(orig, re_aimed) >= 16, "{} bits", hamming(orig, re_aimed));
        // with a moved clip: that clip's recorded bytes, untouched
        let elsewhere = Arc::new(Clip { frames: vec![photo("messi5.jpg")], first_frame: 1 });
        let mut p = playback(false, Some(elsewhere));
        assert!(!p.is_heavy(&[Drift::Moved]));
        assert_eq!(ok(p.frame(0, &[Drift::Moved], 0.0)), photo("messi5.jpg"));
    }
}

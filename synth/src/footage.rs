//! Drift on real camera footage: a recorded JPEG frame is decoded (the metrics crate's decoder, zune-jpeg), given
//! the same pixel drifts as a synthetic frame (`apply_pixel_drifts`), and re-encoded. Only drifted cameras pay for
//! this; clean cameras send the recorded bytes untouched. Freeze is the frame source's business (it repeats bytes).

use framewatch_metrics::decode::{DecodeError, DecodeLimits, RgbImage, decode_into};

use crate::{Drift, Rng, apply_pixel_drifts};

/// Where a moved camera now looks: its old view shifted by `MOVED_PAN` of the width (to the right) and
/// `MOVED_TILT` of the height (downwards), both rounded down to whole 16-pixel JPEG blocks; the strip that comes
/// into view beyond the old frame's edge is the old frame mirrored at that edge.
///
/// Why this and not a different clip or a zoom: a fixed camera that is knocked or re-aimed keeps its sensor, lens,
/// exposure and compression, and usually still sees part of its old scene, now off to one side. A pan and a tilt
/// reproduce that from the recorded frames alone: no pixel is resampled (a zoom's interpolation would smooth the
/// frame and look like blur: on vtest.avi a 1.33x zoom cut the Laplacian variance six-fold), the mirrored strip
/// continues the image without a hard seam, and block-aligned shifts keep the JPEG block grid where it was, so
/// light, colour, noise, sharpness and compression statistics stay those of real footage while the layout the
/// perceptual hash remembers moves (on vtest.avi 28-32 of 64 bits change; framewatch calls a camera moved at about
/// a fifth). What does change is real: the new view holds more street and less facade. A camera that now points at
/// a wholly different scene is the load tester's `--moved-clip`.
pub const MOVED_PAN: f32 = 0.375;
pub const MOVED_TILT: f32 = 0.25;

/// Failure to drift a recorded frame: the recording itself is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum FootageError {
    #[error("recorded frame cannot be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error("frame of {0}x{1} is too large for JPEG (65535 px a side)")]
    TooLarge(usize, usize),
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// Decodes, drifts and re-encodes recorded frames; buffers are reused across frames.
#[derive(Debug)]
pub struct FootageDrifter {
    image: RgbImage,
    view: Vec<u8>,
    tmp: Vec<u8>,
    rng: Rng,
    limits: DecodeLimits,
    /// JPEG quality of re-encoded frames without a `jpeg_quality` drift: match the recording's (the extraction
    /// scripts write 90), so re-encoding alone does not look like a compression change.
    pub quality: u8,
}

impl FootageDrifter {
    pub fn new(seed: u64, quality: u8) -> FootageDrifter {
        FootageDrifter {
            image: RgbImage::default(),
            view: Vec::new(),
            tmp: Vec::new(),
            rng: Rng::new(seed),
            limits: DecodeLimits::default(),
            quality,
        }
    }

    /// Writes `jpeg` with `drifts` applied into `out` (a JPEG). `elapsed_s` is the time since the drift began.
    pub fn apply(
        &mut self,
        jpeg: &[u8],
        drifts: &[Drift],
        elapsed_s: f64,
        out: &mut Vec<u8>,
    ) -> Result<(), FootageError> {
        decode_into(jpeg, &self.limits, &mut self.image)?;
        let (w, h) = (self.image.width, self.image.height);
        if drifts.contains(&Drift::Moved) {
            re_aim(&self.image.data, w, h, &mut self.view);
            std::mem::swap(&mut self.image.data, &mut self.view);
        }
        let quality = apply_pixel_drifts(
            &mut self.image.data,
            &mut self.tmp,
            w,
            h,
            drifts,
            &mut self.rng,
            elapsed_s,
            self.quality,
        );
        encode(&self.image.data, w, h, quality, out)
    }
}

/// JPEG-encodes an RGB image with 4:2:0 chroma at every quality (jpeg-encoder keeps full chroma from quality 90
/// up; cameras and OpenCV subsample, so a re-encoded frame keeps the recording's colour resolution).
pub fn encode(rgb: &[u8], w: usize, h: usize, quality: u8, out: &mut Vec<u8>) -> Result<(), FootageError> {
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(FootageError::TooLarge(w, h));
    };
    out.clear();
    let mut enc = jpeg_encoder::Encoder::new(&mut *out, quality.clamp(1, 100));
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    enc.encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb).map_err(|e| FootageError::Encode(e.to_string()))
}

/// The view of a re-aimed camera (see `MOVED_PAN`), w x h RGB into `out`.
pub fn re_aim(rgb: &[u8], w: usize, h: usize, out: &mut Vec<u8>) {
    out.clear();
    out.resize(w * h * 3, 0);
    if w == 0 || h == 0 || rgb.len() < w * h * 3 {
        return;
    }
    let block = |n: usize, f: f32| ((n as f32 * f) as usize / 16 * 16).min(n);
    let (dx, dy) = (block(w, MOVED_PAN), block(h, MOVED_TILT));
    // index i of the shifted view, mirrored back into 0..n past the old frame's edge
    let reflect = |i: usize, n: usize| if i < n { i } else { (2 * n - 1).saturating_sub(i) };
    for y in 0..h {
        let sy = reflect(y + dy, h);
        for x in 0..w {
            let sx = reflect(x + dx, w);
            let (to, from) = ((y * w + x) * 3, (sy * w + sx) * 3);
            out[to..to + 3].copy_from_slice(&rgb[from..from + 3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use framewatch_metrics::phash::{hamming, perceptual_hash};

    use super::*;

    /// A real photo from the repository (OpenCV's sample, see fixtures/images/SOURCES.md).
    fn photo() -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/images/building.jpg");
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn decode(jpeg: &[u8]) -> RgbImage {
        let mut img = RgbImage::default();
        decode_into(jpeg, &DecodeLimits::default(), &mut img).unwrap_or_else(|e| panic!("decode: {e}"));
        img
    }

    fn mean(img: &RgbImage) -> f64 {
        img.data.iter().map(|&v| f64::from(v)).sum::<f64>() / img.data.len() as f64
    }

    fn channel_mean(img: &RgbImage, c: usize) -> f64 {
        img.data.chunks_exact(3).map(|p| f64::from(p[c])).sum::<f64>() / img.pixels() as f64
    }

    /// Mean absolute difference between horizontal neighbours: falls when a picture is blurred.
    fn edge_energy(img: &RgbImage) -> f64 {
        let (w, d) = (img.width * 3, &img.data);
        let n = d.len() - 3;
        (0..n).filter(|i| i % w < w - 3).map(|i| (f64::from(d[i]) - f64::from(d[i + 3])).abs()).sum::<f64>() / n as f64
    }

    fn phash(img: &RgbImage) -> u64 {
        let grey: Vec<u8> = img
            .data
            .chunks_exact(3)
            .map(|p| ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3) as u8)
            .collect();
        perceptual_hash(&grey, img.width, img.height)
    }

    fn drifted(drifts: &[Drift]) -> (RgbImage, Vec<u8>) {
        let mut out = Vec::new();
        FootageDrifter::new(1, 90).apply(&photo(), drifts, 0.0, &mut out).unwrap_or_else(|e| panic!("{drifts:?}: {e}"));
        (decode(&out), out)
    }

    #[test]
    fn without_drift_a_re_encoded_frame_keeps_its_look() {
        let (orig, (same, bytes)) = (decode(&photo()), drifted(&[]));
        assert!(bytes.starts_with(&[0xFF, 0xD8]));
        assert_eq!((same.width, same.height), (orig.width, orig.height));
        assert!((mean(&same) - mean(&orig)).abs() < 1.0);
        assert!(hamming(phash(&same), phash(&orig)) <= 2);
        assert!((edge_energy(&same) / edge_energy(&orig) - 1.0).abs() < 0.1);
    }

    #[test]
    fn darken_halves_and_brighten_raises_mean_brightness() {
        let orig = mean(&decode(&photo()));
        let dark = mean(&drifted(&[Drift::Darken(0.5)]).0);
        assert!((dark / orig - 0.5).abs() < 0.02, "{dark} vs {orig}");
        let bright = mean(&drifted(&[Drift::Brighten(40.0)]).0);
        assert!(bright > orig + 25.0, "{bright} vs {orig} (clipping at 255 eats some)");
    }

    #[test]
    fn blur_removes_edges_and_noise_adds_them() {
        let orig = edge_energy(&decode(&photo()));
        assert!(edge_energy(&drifted(&[Drift::Blur(3)]).0) < 0.5 * orig);
        assert!(edge_energy(&drifted(&[Drift::Noise(20.0)]).0) > 1.5 * orig);
    }

    #[test]
    fn colour_cast_shifts_the_channels() {
        let orig = decode(&photo());
        let (cast, _) = drifted(&[Drift::ColourCast(1.3, 1.0, 0.7)]);
        let ratio = |img: &RgbImage| channel_mean(img, 0) / channel_mean(img, 2);
        assert!(ratio(&cast) > 1.5 * ratio(&orig), "red/blue {} vs {}", ratio(&cast), ratio(&orig));
    }

    #[test]
    fn jpeg_quality_shrinks_the_frame() {
        let (_, clean) = drifted(&[]);
        let (_, coarse) = drifted(&[Drift::JpegQuality(15)]);
        assert!(coarse.len() * 3 < clean.len(), "{} vs {} bytes", coarse.len(), clean.len());
    }

    #[test]
    fn a_moved_camera_changes_the_perceptual_hash() {
        let orig = decode(&photo());
        let (moved, _) = drifted(&[Drift::Moved]);
        assert_eq!((moved.width, moved.height), (orig.width, orig.height));
        let bits = hamming(phash(&moved), phash(&orig));
        assert!(bits >= 16, "only {bits} of 64 bits differ");
    }

    #[test]
    fn re_aiming_shifts_by_whole_blocks_and_mirrors_at_the_edge() {
        // a 64 x 32 ramp: the value of a pixel is its column
        let (w, h) = (64, 32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w) as u8; 3]).collect();
        let mut out = Vec::new();
        re_aim(&rgb, w, h, &mut out);
        let col = |x: usize| out[x * 3];
        // pan 0.375 * 64 = 24 -> 16 (whole blocks): column 0 shows old column 16 ...
        assert_eq!((col(0), col(47)), (16, 63));
        // ... and past the old edge the old frame is mirrored: 63, 62, ...
        assert_eq!((col(48), col(49), col(63)), (63, 62, 48));
    }

    #[test]
    fn daylight_follows_the_day() {
        let orig = mean(&decode(&photo()));
        let mut out = Vec::new();
        let mut d = FootageDrifter::new(1, 90);
        d.apply(&photo(), &[Drift::Daylight(600.0)], 450.0, &mut out).unwrap_or_else(|e| panic!("{e}"));
        let night = mean(&decode(&out));
        assert!((night / orig - 0.3).abs() < 0.03, "{night} vs {orig}");
    }

    #[test]
    fn an_unreadable_recording_is_an_error() {
        let mut out = Vec::new();
        assert!(FootageDrifter::new(1, 90).apply(b"not a jpeg", &[Drift::Darken(0.5)], 0.0, &mut out).is_err());
    }
}

//! framewatch-synth: a procedural camera fleet. Each camera has a fixed scene (sky, ground, buildings) with
//! objects moving through it and sensor noise, encoded as JPEG, plus the detections a model would report. Drift
//! can be injected per camera: darker or brighter, blurred, noisy, colour cast, harder JPEG compression, frozen,
//! moved, less confident model, different class mix. Deterministic for a seed. Used by `framewatch demo` and the
//! load tester; pure computation, no I/O (it knows the wire and metric detection types to convert into).
//! The pixel drifts are shared with real footage: `footage::FootageDrifter` applies the same transforms to decoded
//! camera JPEGs, so a drift means the same thing on a synthetic frame and on a real one.

pub mod footage;

/// One detection: normalised box, class, confidence, class probabilities (car, person, bicycle).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthDetection {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
    pub class: &'static str,
    pub confidence: f32,
    pub probabilities: Vec<f32>,
}

impl SynthDetection {
    /// As the metrics crate's detection (for scoring locally).
    pub fn to_detection(&self) -> framewatch_metrics::Detection {
        framewatch_metrics::Detection {
            x_min: self.x_min,
            y_min: self.y_min,
            x_max: self.x_max,
            y_max: self.y_max,
            class_label: self.class.to_string(),
            confidence: self.confidence,
            class_probabilities: self.probabilities.clone(),
        }
    }

    /// As the wire detection (for sending to framewatch).
    pub fn to_proto(&self) -> framewatch_proto::v1::Detection {
        framewatch_proto::v1::Detection {
            x_min: self.x_min,
            y_min: self.y_min,
            x_max: self.x_max,
            y_max: self.y_max,
            class_label: self.class.to_string(),
            confidence: self.confidence,
            class_probabilities: self.probabilities.clone(),
        }
    }
}

/// A drift to inject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Drift {
    /// Multiply every pixel by this (0.5 = half as bright).
    Darken(f32),
    /// Add this (0..255) to every pixel.
    Brighten(f32),
    /// Box blur of this radius in pixels (applied twice: close to a Gaussian).
    Blur(u32),
    /// Gaussian-ish sensor noise of this standard deviation (grey levels).
    Noise(f32),
    /// Multiply R, G, B by these (white-balance change).
    ColourCast(f32, f32, f32),
    /// Encode at this JPEG quality instead of the default.
    JpegQuality(u8),
    /// Send the same picture again and again.
    Freeze,
    /// The camera points elsewhere: a different scene.
    Moved,
    /// The model's confidences are multiplied by this.
    ConfidenceDrop(f32),
    /// The model sees mostly this class.
    ClassShift(&'static str),
    /// The model misses this share of the objects and stays as confident as in daylight on the ones it reports: a
    /// failure that confidence does not show, only ground truth (`Camera::truth`).
    MissObjects(f32),
    /// A simulated day of this many seconds: brightness follows the sun (`daylight_gain`), starting from the
    /// baseline's light, brighter at noon, darker at night. Time-varying: a frame's elapsed time picks the gain.
    Daylight(f32),
}

/// Brightness gain of a simulated day `t_s` seconds into a day of `period_s` seconds. It starts at 1 (the light
/// the baseline saw, mid-morning), rises to 1.5 at noon (a quarter day), is back to 1 in the evening (half a day)
/// and falls to 0.3 at midnight (three quarters): a smooth curve, as a fixed camera's exposure sees a real day.
pub fn daylight_gain(period_s: f32, t_s: f64) -> f32 {
    if period_s <= 0.0 {
        return 1.0;
    }
    let s = (std::f64::consts::TAU * t_s / f64::from(period_s)).sin() as f32;
    if s >= 0.0 { 1.0 + 0.5 * s } else { 1.0 + 0.7 * s }
}

/// The illumination a camera sees at a daylight `gain` (`daylight_gain`), as a frame label a site would set
/// (`illumination=...`, e.g. from a light sensor or the camera's IR-cut switch). Five bands of gain, narrow enough
/// that within one the picture (and the synthetic model's confidence, which falls in the dark) changes by less
/// than the cause tolerances: `noon` from 1.25, `day` from 0.9 (the baseline's light), `dusk` from 0.72, `night`
/// from 0.5, `midnight` below. The dusk/night edge sits where the synthetic model starts to lose confidence in
/// the dark, so a band does not straddle that change. A context baseline keyed by this label compares each frame with frames of the
/// same light.
pub fn illumination(gain: f32) -> &'static str {
    ILLUMINATION.iter().find(|(lowest, _)| gain >= *lowest).map_or("midnight", |(_, name)| *name)
}

/// The bands of `illumination`: (lowest gain, label), brightest first; below the last is `midnight`.
pub const ILLUMINATION: [(f32, &str); 4] = [(1.25, "noon"), (0.9, "day"), (0.72, "dusk"), (0.5, "night")];

/// Applies the pixel drifts of `drifts` (darken, brighten, blur, noise, colour cast, daylight) to a w x h RGB image
/// in place, in the order given, and returns the JPEG quality to encode it at: `quality`, unless a `JpegQuality`
/// drift says otherwise. `elapsed_s` is the time since the drifts began (for the time-varying ones). The other
/// drifts (freeze, moved, model drifts) are not pixel operations; their owners handle them.
#[allow(clippy::too_many_arguments)]
pub fn apply_pixel_drifts(
    rgb: &mut [u8],
    tmp: &mut Vec<u8>,
    w: usize,
    h: usize,
    drifts: &[Drift],
    rng: &mut Rng,
    elapsed_s: f64,
    quality: u8,
) -> u8 {
    let mut quality = quality;
    let scale = |rgb: &mut [u8], f: f32| rgb.iter_mut().for_each(|v| *v = (f32::from(*v) * f).clamp(0.0, 255.0) as u8);
    for d in drifts {
        match *d {
            Drift::Darken(f) => scale(rgb, f),
            Drift::Daylight(period) => scale(rgb, daylight_gain(period, elapsed_s)),
            Drift::Brighten(a) => rgb.iter_mut().for_each(|v| *v = (f32::from(*v) + a).clamp(0.0, 255.0) as u8),
            Drift::Blur(r) => {
                box_blur(rgb, tmp, w, h, r as usize);
                box_blur(rgb, tmp, w, h, r as usize);
            }
            Drift::Noise(s) => {
                for v in rgb.iter_mut() {
                    *v = (f32::from(*v) + rng.normal() * s).clamp(0.0, 255.0) as u8;
                }
            }
            Drift::ColourCast(r, g, b) => {
                for px in rgb.chunks_exact_mut(3) {
                    px[0] = (f32::from(px[0]) * r).clamp(0.0, 255.0) as u8;
                    px[1] = (f32::from(px[1]) * g).clamp(0.0, 255.0) as u8;
                    px[2] = (f32::from(px[2]) * b).clamp(0.0, 255.0) as u8;
                }
            }
            Drift::JpegQuality(q) => quality = q,
            Drift::Freeze | Drift::Moved | Drift::ConfidenceDrop(_) | Drift::ClassShift(_) | Drift::MissObjects(_) => {}
        }
    }
    quality
}

/// Frame rate of a synthetic camera's own clock (used only by time-varying drifts such as daylight).
pub const SYNTH_FPS: f64 = 10.0;

impl Drift {
    /// Parses `darken:0.5`, `brighten:60`, `blur:3`, `noise:20`, `colour_cast:1.3,1.0,0.7`, `jpeg_quality:20`,
    /// `freeze`, `moved`, `confidence_drop:0.6`, `class_shift:person`, `miss_objects:0.7`, `daylight:600` (a 600 s
    /// day).
    pub fn parse(s: &str) -> Result<Drift, String> {
        let (kind, arg) = s.split_once(':').map_or((s, ""), |(k, a)| (k, a));
        let num = |a: &str| a.trim().parse::<f32>().map_err(|_| format!("drift {s:?}: {a:?} is not a number"));
        Ok(match kind.trim() {
            "darken" => Drift::Darken(num(arg)?),
            "brighten" => Drift::Brighten(num(arg)?),
            "blur" => Drift::Blur(num(arg)? as u32),
            "noise" => Drift::Noise(num(arg)?),
            "colour_cast" | "color_cast" => {
                let v: Vec<f32> = arg.split(',').map(num).collect::<Result<_, _>>()?;
                match v[..] {
                    [r, g, b] => Drift::ColourCast(r, g, b),
                    _ => return Err(format!("drift {s:?}: colour_cast takes r,g,b")),
                }
            }
            "jpeg_quality" => Drift::JpegQuality(num(arg)?.clamp(1.0, 100.0) as u8),
            "freeze" => Drift::Freeze,
            "moved" => Drift::Moved,
            "confidence_drop" => Drift::ConfidenceDrop(num(arg)?),
            "miss_objects" => match num(arg)? {
                p if (0.0..=1.0).contains(&p) => Drift::MissObjects(p),
                _ => return Err(format!("drift {s:?}: miss_objects takes a share in [0, 1]")),
            },
            "class_shift" => Drift::ClassShift(match arg.trim() {
                "car" => "car",
                "person" => "person",
                "bicycle" => "bicycle",
                other => return Err(format!("drift {s:?}: class {other:?} is not car, person or bicycle")),
            }),
            "daylight" => match num(arg)? {
                p if p > 0.0 => Drift::Daylight(p),
                _ => return Err(format!("drift {s:?}: daylight takes a positive day length in seconds")),
            },
            other => return Err(format!("unknown drift kind {other:?}")),
        })
    }
}

/// xorshift64*: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
    /// Approximately normal (sum of four uniforms), mean 0, std 1.
    pub fn normal(&mut self) -> f32 {
        (self.f32() + self.f32() + self.f32() + self.f32() - 2.0) * 1.732
    }
}

const CLASSES: [&str; 3] = ["car", "person", "bicycle"];

#[derive(Debug, Clone)]
struct Mover {
    class: usize,
    y: f32,
    w: f32,
    h: f32,
    speed: f32,
    phase: f32,
    colour: [u8; 3],
}

/// One object really in a frame: the ground truth a reviewer would label (normalised box, class).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthObject {
    pub x_min: f32,
    pub y_min: f32,
    pub x_max: f32,
    pub y_max: f32,
    pub class: &'static str,
}

impl SynthObject {
    /// As the wire ground truth (for `SendLabels`).
    pub fn to_label_proto(&self) -> framewatch_proto::v1::LabelBox {
        framewatch_proto::v1::LabelBox {
            x_min: self.x_min,
            y_min: self.y_min,
            x_max: self.x_max,
            y_max: self.y_max,
            class_label: self.class.to_string(),
        }
    }
}

/// One simulated camera.
#[derive(Debug, Clone)]
pub struct Camera {
    pub id: String,
    pub width: usize,
    pub height: usize,
    scene: Vec<u8>,
    moved_scene: Vec<u8>,
    movers: Vec<Mover>,
    rng: Rng,
    frame_index: u64,
    frozen: Option<(Vec<u8>, Vec<SynthDetection>, Vec<SynthObject>)>,
    truth: Vec<SynthObject>,
    pub drifts: Vec<Drift>,
    rgb: Vec<u8>,
    tmp: Vec<u8>,
}

fn paint_scene(w: usize, h: usize, rng: &mut Rng, horizon_range: (f32, f32)) -> Vec<u8> {
    let mut px = vec![0u8; w * h * 3];
    let horizon = (h as f32 * rng.range(horizon_range.0, horizon_range.1)) as usize;
    let sky = [rng.range(90.0, 140.0), rng.range(140.0, 180.0), rng.range(190.0, 235.0)];
    let ground = [rng.range(70.0, 110.0), rng.range(70.0, 100.0), rng.range(60.0, 90.0)];
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) * 3;
            let c = if y < horizon {
                let t = y as f32 / horizon as f32;
                [sky[0] * (0.8 + 0.2 * t), sky[1] * (0.85 + 0.15 * t), sky[2]]
            } else {
                let t = (y - horizon) as f32 / (h - horizon).max(1) as f32;
                [ground[0] * (0.8 + 0.4 * t), ground[1] * (0.8 + 0.4 * t), ground[2] * (0.8 + 0.4 * t)]
            };
            px[i..i + 3].copy_from_slice(&[c[0] as u8, c[1] as u8, c[2] as u8]);
        }
    }
    // buildings and lane markings: hard edges give the frame real sharpness
    for _ in 0..6 {
        let bw = rng.range(0.06, 0.18) * w as f32;
        let bh = rng.range(0.15, 0.4) * h as f32;
        let x0 = rng.range(0.0, w as f32 - bw) as usize;
        let y1 = horizon;
        let y0 = horizon.saturating_sub(bh as usize);
        let col = [rng.range(60.0, 200.0) as u8, rng.range(60.0, 200.0) as u8, rng.range(60.0, 200.0) as u8];
        for y in y0..y1 {
            for x in x0..(x0 + bw as usize).min(w) {
                let i = (y * w + x) * 3;
                // windows
                let win = (x / 6 + y / 8) % 3 == 0;
                let c = if win { [230, 220, 150] } else { col };
                px[i..i + 3].copy_from_slice(&c);
            }
        }
    }
    for k in 0..12 {
        let y = horizon + (h - horizon) * (k + 1) / 14;
        for x in (0..w).step_by(24) {
            for dx in 0..10.min(w - x) {
                let i = (y * w + x + dx) * 3;
                px[i..i + 3].copy_from_slice(&[235, 235, 235]);
            }
        }
    }
    // texture
    for v in px.iter_mut() {
        *v = (f32::from(*v) + rng.normal() * 4.0).clamp(0.0, 255.0) as u8;
    }
    px
}

impl Camera {
    pub fn new(id: &str, width: usize, height: usize, seed: u64) -> Camera {
        let mut rng = Rng::new(seed);
        let scene = paint_scene(width, height, &mut rng, (0.35, 0.5));
        // Knocked down and sideways: the horizon sits much lower and the buildings are elsewhere.
        let moved_scene = paint_scene(width, height, &mut Rng::new(seed ^ 0xDEAD_BEEF), (0.72, 0.8));
        let movers = (0..rng.range(2.0, 6.0) as usize)
            .map(|_| Mover {
                class: (rng.f32() * 1.6) as usize % 3,
                y: rng.range(0.5, 0.85),
                w: rng.range(0.06, 0.16),
                h: rng.range(0.06, 0.15),
                speed: rng.range(0.01, 0.04),
                phase: rng.f32(),
                colour: [rng.range(20.0, 240.0) as u8, rng.range(20.0, 240.0) as u8, rng.range(20.0, 240.0) as u8],
            })
            .collect();
        Camera {
            id: id.to_string(),
            width,
            height,
            scene,
            moved_scene,
            movers,
            rng,
            frame_index: 0,
            frozen: None,
            truth: Vec::new(),
            drifts: Vec::new(),
            rgb: Vec::new(),
            tmp: Vec::new(),
        }
    }

    fn has(&self, f: impl Fn(&Drift) -> bool) -> bool {
        self.drifts.iter().any(f)
    }

    /// The objects really in the last frame `next_frame` made: its ground truth, whatever the model said.
    pub fn truth(&self) -> &[SynthObject] {
        &self.truth
    }

    /// The next frame: JPEG bytes (into `out`) and the model's detections.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> Vec<SynthDetection> {
        if self.has(|d| matches!(d, Drift::Freeze)) {
            if let Some((bytes, dets, truth)) = &self.frozen {
                out.clear();
                out.extend_from_slice(bytes);
                self.truth.clone_from(truth);
                return dets.clone();
            }
        } else {
            self.frozen = None;
        }
        let (w, h) = (self.width, self.height);
        let t = self.frame_index as f32;
        self.frame_index += 1;
        let base = if self.has(|d| matches!(d, Drift::Moved)) { &self.moved_scene } else { &self.scene };
        self.rgb.clear();
        self.rgb.extend_from_slice(base);
        let mut dets = Vec::new();
        self.truth.clear();
        for m in &self.movers {
            let x = ((m.phase + t * m.speed) % (1.0 + m.w)) - m.w;
            let (x0, x1) = (x.max(0.0), (x + m.w).min(1.0));
            if x1 - x0 < 0.01 {
                continue;
            }
            let (y0, y1) = (m.y - m.h, m.y);
            for py in (y0 * h as f32) as usize..((y1 * h as f32) as usize).min(h) {
                for px in (x0 * w as f32) as usize..((x1 * w as f32) as usize).min(w) {
                    let i = (py * w + px) * 3;
                    self.rgb[i..i + 3].copy_from_slice(&m.colour);
                }
            }
            dets.push((m.class, x0, y0, x1, y1));
            self.truth.push(SynthObject {
                x_min: x0,
                y_min: y0.max(0.0),
                x_max: x1,
                y_max: y1.min(1.0),
                class: CLASSES[m.class],
            });
        }
        for v in self.rgb.iter_mut() {
            *v = (f32::from(*v) + self.rng.normal() * 2.0).clamp(0.0, 255.0) as u8;
        }
        let elapsed_s = (self.frame_index - 1) as f64 / SYNTH_FPS;
        let quality =
            apply_pixel_drifts(&mut self.rgb, &mut self.tmp, w, h, &self.drifts, &mut self.rng, elapsed_s, 85);
        // The model: confident in daylight, less so in the dark or on blurred frames.
        let mean_level = self.rgb.iter().step_by(97).map(|&v| u32::from(v)).sum::<u32>() as f32
            / (self.rgb.len() / 97).max(1) as f32;
        let miss = self.drifts.iter().find_map(|d| if let Drift::MissObjects(p) = d { Some(*p) } else { None });
        // A model that misses objects without knowing it keeps its daylight confidence.
        let light = if miss.is_some() { 1.0 } else { (mean_level / 110.0).clamp(0.3, 1.0) };
        let factor = self
            .drifts
            .iter()
            .map(|d| match d {
                Drift::ConfidenceDrop(f) => *f,
                Drift::Blur(r) => 1.0 - (*r as f32 * 0.05).min(0.4),
                _ => 1.0,
            })
            .product::<f32>();
        let shift = self.drifts.iter().find_map(|d| if let Drift::ClassShift(c) = d { Some(*c) } else { None });
        if let Some(p) = miss {
            let rng = &mut self.rng;
            dets.retain(|_| rng.f32() >= p);
        }
        let detections = dets
            .into_iter()
            .map(|(class, x0, y0, x1, y1)| {
                let class = match shift {
                    Some(c) if self.rng.f32() < 0.8 => CLASSES.iter().position(|k| *k == c).unwrap_or(class),
                    _ => class,
                };
                let conf = ((0.93 - self.rng.f32() * 0.12) * light * factor).clamp(0.05, 0.99);
                let rest = (1.0 - conf) / 2.0;
                let mut probabilities = vec![rest; 3];
                probabilities[class] = conf;
                SynthDetection {
                    x_min: x0,
                    y_min: y0.max(0.0),
                    x_max: x1,
                    y_max: y1.min(1.0),
                    class: CLASSES[class],
                    confidence: conf,
                    probabilities,
                }
            })
            .collect::<Vec<_>>();
        out.clear();
        let enc = jpeg_encoder::Encoder::new(&mut *out, quality);
        // The frame size fits u16 (the constructor's callers use camera resolutions); an encoder error leaves `out`
        // empty, which framewatch rejects as an empty image: visible, not silent.
        if enc.encode(&self.rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).is_err() {
            out.clear();
        }
        if self.has(|d| matches!(d, Drift::Freeze)) {
            self.frozen = Some((out.clone(), detections.clone(), self.truth.clone()));
        }
        detections
    }
}

/// Separable box blur of radius r (window 2r+1), edges clamped.
pub(crate) fn box_blur(px: &mut [u8], tmp: &mut Vec<u8>, w: usize, h: usize, r: usize) {
    if r == 0 || w == 0 || h == 0 {
        return;
    }
    tmp.clear();
    tmp.resize(px.len(), 0);
    let n = (2 * r + 1) as u32;
    for y in 0..h {
        for c in 0..3 {
            let at = |x: isize| u32::from(px[(y * w + x.clamp(0, w as isize - 1) as usize) * 3 + c]);
            let mut sum: u32 = (-(r as isize)..=r as isize).map(at).sum();
            for x in 0..w {
                tmp[(y * w + x) * 3 + c] = (sum / n) as u8;
                sum = sum + at(x as isize + r as isize + 1) - at(x as isize - r as isize);
            }
        }
    }
    for x in 0..w {
        for c in 0..3 {
            let at = |y: isize| u32::from(tmp[(y.clamp(0, h as isize - 1) as usize * w + x) * 3 + c]);
            let mut sum: u32 = (-(r as isize)..=r as isize).map(at).sum();
            for y in 0..h {
                px[(y * w + x) * 3 + c] = (sum / n) as u8;
                sum = sum + at(y as isize + r as isize + 1) - at(y as isize - r as isize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_jpeg_deterministic_and_drift_changes_them() {
        let mut a = Camera::new("c", 320, 180, 7);
        let mut b = Camera::new("c", 320, 180, 7);
        let (mut fa, mut fb) = (Vec::new(), Vec::new());
        let da = a.next_frame(&mut fa);
        let db = b.next_frame(&mut fb);
        assert!(fa.starts_with(&[0xFF, 0xD8]));
        assert_eq!(fa, fb);
        assert_eq!(da, db);
        let plain = fa.clone();
        a.drifts.push(Drift::Darken(0.4));
        a.next_frame(&mut fa);
        assert_ne!(fa, plain);
        a.drifts = vec![Drift::Freeze];
        a.next_frame(&mut fa);
        let frozen = fa.clone();
        a.next_frame(&mut fa);
        assert_eq!(fa, frozen, "a frozen camera repeats its picture");
    }

    #[test]
    fn ground_truth_is_every_object_and_a_missing_model_keeps_its_confidence() {
        let mut clean = Camera::new("c", 320, 180, 11);
        let mut failing = Camera::new("c", 320, 180, 11);
        failing.drifts = vec![Drift::Darken(0.3), Drift::MissObjects(0.7)];
        let (mut buf, mut found, mut truth, mut conf) = (Vec::new(), 0usize, 0usize, Vec::new());
        for _ in 0..50 {
            let d = clean.next_frame(&mut buf);
            assert_eq!(d.len(), clean.truth().len(), "the clean model finds every object");
            let f = failing.next_frame(&mut buf);
            found += f.len();
            truth += failing.truth().len();
            conf.extend(f.iter().map(|d| d.confidence));
        }
        assert!(truth > 50, "objects in the frames: {truth}");
        let share = found as f64 / truth as f64;
        assert!((0.15..0.45).contains(&share), "about 30 % found: {share}");
        assert!(conf.iter().all(|&c| c > 0.75), "confident although dark: {conf:?}");
        assert_eq!(Drift::parse("miss_objects:0.7"), Ok(Drift::MissObjects(0.7)));
        assert!(Drift::parse("miss_objects:2").is_err());
    }

    #[test]
    fn drift_specs_parse() {
        assert_eq!(Drift::parse("darken:0.5"), Ok(Drift::Darken(0.5)));
        assert_eq!(Drift::parse("colour_cast:1.2,1,0.8"), Ok(Drift::ColourCast(1.2, 1.0, 0.8)));
        assert_eq!(Drift::parse("freeze"), Ok(Drift::Freeze));
        assert!(Drift::parse("class_shift:dog").is_err());
        assert!(Drift::parse("sepia").is_err());
        assert_eq!(Drift::parse("daylight:600"), Ok(Drift::Daylight(600.0)));
        assert!(Drift::parse("daylight:0").is_err());
    }

    #[test]
    fn a_simulated_day_is_brighter_at_noon_and_darker_at_night() {
        let day = 600.0;
        assert!((daylight_gain(day, 0.0) - 1.0).abs() < 1e-6, "starts at the baseline's light");
        assert!((daylight_gain(day, 150.0) - 1.5).abs() < 1e-4, "noon");
        assert!((daylight_gain(day, 450.0) - 0.3).abs() < 1e-4, "midnight");
        assert!((daylight_gain(day, 600.0) - 1.0).abs() < 1e-4, "a day later");
        // smooth: no jump between consecutive frames at 10 fps
        let steps: Vec<f32> = (0..6000).map(|i| daylight_gain(day, f64::from(i) / 10.0)).collect();
        assert!(steps.windows(2).all(|p| (p[0] - p[1]).abs() < 0.01));
        let labels: Vec<&str> =
            [0.0, 75.0, 150.0, 300.0, 330.0, 360.0, 450.0].map(|t| illumination(daylight_gain(day, t))).into();
        assert_eq!(labels, ["day", "noon", "noon", "day", "dusk", "night", "midnight"]);
    }
}

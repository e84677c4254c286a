//! From "the distribution changed" to "why": the evaluator hands over, per slice, how each metric moved against its
//! baseline (in the metric's own units) plus the camera's temporal signals, and `diagnose` names the causes, one
//! finding per real fault. Signatures, tolerances and the inhibition table are documented in METRICS.md ("Causes").
//!
//! A statistical verdict alone cannot decide: one fixed camera's reference is so narrow (brightness sd 0.006) that a
//! harmless 0.003 shift is "significant". Every cause therefore needs its defining metric to move beyond a practical
//! tolerance in its own units, in the direction the fault implies, and to be statistically significant too.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::stats::MetricDrift;

/// Why a slice alerts. The labels (`as_str`) are part of framewatch's contract: they are the `cause` label of alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Darker,
    Brighter,
    Blur,
    Noise,
    ColourCast,
    Compression,
    Frozen,
    Moved,
    ConfidenceDrop,
    ClassShift,
    Distribution,
    /// Frames rejected at ingest; raised by the service from its reject counters, never by `diagnose`.
    Ingest,
    /// A user `--fail-on` model test failed; raised by the service's rule evaluation, never by `diagnose`.
    ModelTest,
}

impl Cause {
    pub const ALL: [Cause; 13] = [
        Cause::Darker,
        Cause::Brighter,
        Cause::Blur,
        Cause::Noise,
        Cause::ColourCast,
        Cause::Compression,
        Cause::Frozen,
        Cause::Moved,
        Cause::ConfidenceDrop,
        Cause::ClassShift,
        Cause::Distribution,
        Cause::Ingest,
        Cause::ModelTest,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Darker => "darker",
            Cause::Brighter => "brighter",
            Cause::Blur => "blur",
            Cause::Noise => "noise",
            Cause::ColourCast => "colour_cast",
            Cause::Compression => "compression",
            Cause::Frozen => "frozen",
            Cause::Moved => "moved",
            Cause::ConfidenceDrop => "confidence_drop",
            Cause::ClassShift => "class_shift",
            Cause::Distribution => "distribution",
            Cause::Ingest => "ingest",
            Cause::ModelTest => "model_test",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "unknown cause {0:?} (known: darker, brighter, blur, noise, colour_cast, compression, frozen, moved, \
         confidence_drop, class_shift, distribution, ingest, model_test)"
)]
pub struct UnknownCause(pub String);

impl FromStr for Cause {
    type Err = UnknownCause;
    fn from_str(s: &str) -> Result<Cause, UnknownCause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownCause(s.to_string()))
    }
}

/// How far a metric may move before the move matters, in the metric's own units.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    /// |current - baseline| up to this is no change (same unit as the metric).
    Absolute(f64),
    /// In (0, 1): current between this times the baseline and the baseline divided by it is no change.
    Ratio(f64),
}

impl Tolerance {
    fn value(self) -> f64 {
        match self {
            Tolerance::Absolute(v) | Tolerance::Ratio(v) => v,
        }
    }

    fn with_value(self, v: f64) -> Tolerance {
        match self {
            Tolerance::Absolute(_) => Tolerance::Absolute(v),
            Tolerance::Ratio(_) => Tolerance::Ratio(v),
        }
    }

    /// Whether `current` lies below the tolerated band around `baseline`.
    pub fn fell(self, baseline: f64, current: f64) -> bool {
        match self {
            Tolerance::Absolute(t) => current < baseline - t,
            Tolerance::Ratio(t) => baseline > 0.0 && current < baseline * t,
        }
    }

    /// Whether `current` lies above the tolerated band around `baseline`.
    pub fn rose(self, baseline: f64, current: f64) -> bool {
        match self {
            Tolerance::Absolute(t) => current > baseline + t,
            // From a baseline of 0 any rise is beyond a ratio.
            Tolerance::Ratio(t) => current * t > baseline && current > 0.0,
        }
    }

    /// Whether a shift is beyond the band in either direction, by its means or (absolute tolerances) by its
    /// Wasserstein-1 distance, which also sees a spread change that keeps the mean.
    fn exceeded(self, s: &Shift) -> bool {
        let by_w1 = match (self, s.wasserstein) {
            (Tolerance::Absolute(t), Some(w)) => w > t,
            _ => false,
        };
        self.fell(s.baseline_mean, s.current_mean) || self.rose(s.baseline_mean, s.current_mean) || by_w1
    }
}

/// The metrics `diagnose` reads, with their default tolerances and the reason for each (METRICS.md repeats them).
/// Order fixes the slot of each metric in `Evidence` and `Tolerances`.
const DIAGNOSED: [(&str, Tolerance, &str); 21] = [
    ("brightness", Tolerance::Absolute(0.04), "10 grey levels of mean; a fixed camera's day-to-day sd is ~0.006"),
    ("contrast", Tolerance::Ratio(0.7), "a 30 % loss of spread is visible (haze, a dirty window)"),
    ("sharpness", Tolerance::Ratio(0.6), "blur: sharpness/contrast below 0.6x baseline; focus breathing stays within"),
    ("saturation", Tolerance::Absolute(0.08), "20 levels of mean HSV saturation"),
    ("colorfulness", Tolerance::Absolute(15.0), "about one step of Hasler-Suesstrunk's 7-step scale"),
    ("entropy", Tolerance::Absolute(0.5), "half a bit of grey-level entropy"),
    ("red_mean", Tolerance::Absolute(0.03), "a white-balance shift of 3 points of channel share is visible"),
    ("green_mean", Tolerance::Absolute(0.03), "as red_mean"),
    ("blue_mean", Tolerance::Absolute(0.03), "as red_mean"),
    ("dark_fraction", Tolerance::Absolute(0.05), "5 % more or fewer clipped-shadow pixels"),
    ("bright_fraction", Tolerance::Absolute(0.05), "5 % more or fewer clipped-highlight pixels"),
    (
        "noise",
        Tolerance::Absolute(0.006),
        "1.5 grey levels of noise sigma; texture masks added noise (sd 12 adds 0.008)",
    ),
    ("bytes_per_pixel", Tolerance::Ratio(0.6), "encoded size per pixel below 0.6x: a harder encoder setting"),
    ("jpeg_quality", Tolerance::Absolute(10.0), "10 IJG quality points"),
    ("width", Tolerance::Ratio(0.95), "any resolution change beyond rounding"),
    ("height", Tolerance::Ratio(0.95), "as width"),
    ("object_count", Tolerance::Ratio(0.5), "half or twice as many detections per frame"),
    ("confidence_mean", Tolerance::Absolute(0.1), "the issue's bar for a confidence drop"),
    ("low_confidence_fraction", Tolerance::Absolute(0.15), "15 % more or fewer detections in the grey zone"),
    ("box_area_mean", Tolerance::Ratio(0.5), "objects half or twice as large: the camera zoomed or moved"),
    ("class_margin_mean", Tolerance::Absolute(0.1), "as confidence_mean"),
];
const N: usize = DIAGNOSED.len();

// Slots of the metrics the signatures name.
const BRIGHTNESS: usize = 0;
const CONTRAST: usize = 1;
const SHARPNESS: usize = 2;
const RED_MEAN: usize = 6;
const BLUE_MEAN: usize = 8;
const DARK_FRACTION: usize = 9;
const BRIGHT_FRACTION: usize = 10;
const NOISE: usize = 11;
const BYTES_PER_PIXEL: usize = 12;
const JPEG_QUALITY: usize = 13;
const CONFIDENCE_MEAN: usize = 17;

fn slot(name: &str) -> Option<usize> {
    DIAGNOSED.iter().position(|(n, _, _)| *n == name)
}

/// Practical tolerances per metric in its own units, plus Cramer's V for the class distribution. Configured as a
/// TOML table of values (`{ brightness = 0.04, sharpness = 0.6, class = 0.1 }`); each metric keeps its kind
/// (absolute or ratio), unnamed metrics keep their defaults, unknown names are refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    metrics: [Tolerance; N],
    /// Cramer's V of the class distribution at or above which `class_shift` may fire.
    pub class: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances { metrics: DIAGNOSED.map(|(_, t, _)| t), class: 0.1 }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ToleranceError {
    #[error("unknown metric(s) in tolerances: {0} (known: {known}, class)", known = known_names())]
    Unknown(String),
    #[error("tolerance {metric} = {value}: {why}")]
    Invalid { metric: String, value: f64, why: &'static str },
}

fn known_names() -> String {
    DIAGNOSED.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(", ")
}

impl Tolerances {
    /// The tolerance of a diagnosed metric; `None` for a metric `diagnose` does not read.
    pub fn get(&self, metric: &str) -> Option<Tolerance> {
        slot(metric).map(|i| self.metrics[i])
    }

    /// Every diagnosed metric with its tolerance and the reason for its default, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Tolerance)> + '_ {
        DIAGNOSED.iter().zip(&self.metrics).map(|((n, _, _), t)| (*n, *t))
    }

    /// The documented reason for a metric's default tolerance.
    pub fn default_reason(metric: &str) -> Option<&'static str> {
        DIAGNOSED.iter().find(|(n, _, _)| *n == metric).map(|(_, _, why)| *why)
    }

    /// Overrides named values; every unknown name is reported at once.
    pub fn from_values<'a>(values: impl IntoIterator<Item = (&'a str, f64)>) -> Result<Tolerances, ToleranceError> {
        let mut t = Tolerances::default();
        let mut unknown = Vec::new();
        for (name, v) in values {
            if name == "class" {
                if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                    return Err(ToleranceError::Invalid { metric: name.into(), value: v, why: "must be in (0, 1]" });
                }
                t.class = v;
                continue;
            }
            let Some(i) = slot(name) else {
                unknown.push(name.to_string());
                continue;
            };
            let valid = match t.metrics[i] {
                Tolerance::Absolute(_) => v.is_finite() && v > 0.0,
                Tolerance::Ratio(_) => v.is_finite() && v > 0.0 && v < 1.0,
            };
            if !valid {
                let why = match t.metrics[i] {
                    Tolerance::Absolute(_) => "an absolute tolerance must be finite and > 0",
                    Tolerance::Ratio(_) => "a ratio tolerance must be in (0, 1), e.g. 0.6 = below 0.6x or above 1/0.6x",
                };
                return Err(ToleranceError::Invalid { metric: name.into(), value: v, why });
            }
            t.metrics[i] = t.metrics[i].with_value(v);
        }
        if unknown.is_empty() { Ok(t) } else { Err(ToleranceError::Unknown(unknown.join(", "))) }
    }
}

impl<'de> serde::Deserialize<'de> for Tolerances {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tolerances, D::Error> {
        let values = BTreeMap::<String, f64>::deserialize(d)?;
        Tolerances::from_values(values.iter().map(|(k, v)| (k.as_str(), *v))).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Tolerances {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(N + 1))?;
        for (name, t) in self.iter() {
            map.serialize_entry(name, &t.value())?;
        }
        map.serialize_entry("class", &self.class)?;
        map.end()
    }
}

/// How one metric moved between the baseline and the current window, in the metric's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub baseline_mean: f64,
    pub current_mean: f64,
    /// Values in the current window.
    pub n: u64,
    pub ks_statistic: f64,
    /// The statistical verdict (effect size plus the p-value guard): the distribution did change.
    pub significant: bool,
    /// Wasserstein-1 distance in the metric's units, when known.
    pub wasserstein: Option<f64>,
}

impl Shift {
    /// From the drift statistics of one metric: `baseline_std` turns the normalised Wasserstein distance back into
    /// units; `significant` is the service's verdict. `None` when the window has no value of the metric.
    pub fn from_drift(d: &MetricDrift, baseline_std: f64, significant: bool) -> Option<Shift> {
        Some(Shift {
            baseline_mean: d.baseline_mean,
            current_mean: d.mean?,
            n: d.n,
            ks_statistic: d.ks_statistic,
            significant,
            wasserstein: d.wasserstein_norm.map(|w| w * baseline_std),
        })
    }

    fn delta(&self) -> f64 {
        self.current_mean - self.baseline_mean
    }
}

/// The class distribution's change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassShift {
    pub cramers_v: f64,
    pub significant: bool,
}

/// Everything `diagnose` looks at for one slice. Fixed-size and `Copy`: reuse one, `clear` it per slice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evidence {
    metrics: [Option<Shift>; N],
    /// The camera's picture stopped changing (the service's pHash detector).
    pub frozen: bool,
    /// The camera's view changed (the service's pHash detector).
    pub moved: bool,
    pub classes: Option<ClassShift>,
}

impl Evidence {
    pub fn clear(&mut self) {
        *self = Evidence::default();
    }

    /// Records a metric's shift. Returns false (and ignores it) for a metric `diagnose` does not read.
    pub fn set_metric(&mut self, name: &str, shift: Shift) -> bool {
        slot(name).map(|i| self.metrics[i] = Some(shift)).is_some()
    }

    pub fn metric(&self, name: &str) -> Option<&Shift> {
        self.metrics[slot(name)?].as_ref()
    }
}

/// One cause found on a slice, with the numbers that support it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub cause: Cause,
    /// e.g. `brightness mean 0.43 -> 0.21 (-51 %), KS 0.94; dark_fraction 0.01 -> 0.38`.
    pub summary: String,
}

/// Which findings a finding suppresses: one fault, one alert. Causes are considered in `PRECEDENCE` order and a
/// cause is dropped when an already kept cause lists it. METRICS.md ("Causes") carries the same table.
fn suppresses(kept: Cause, candidate: Cause) -> bool {
    use Cause::*;
    match kept {
        // A frozen or moved camera makes every image and model metric meaningless until it recovers.
        Frozen | Moved => true,
        // Scaling the pixels scales sharpness, contrast and noise, re-balances channels near clipping and
        // changes the encoded size: consequences, not faults. The model may or may not suffer: that is its own.
        Darker | Brighter => matches!(candidate, Blur | Noise | ColourCast | Compression | Distribution),
        // A lower encoder quality removes the high frequencies sharpness measures.
        Compression => matches!(candidate, Blur | Distribution),
        // Blur also lowers the encoded size, but compression is decided first and its bytes-only signature already
        // refuses a drop in bytes that detail outpaces, so blur need only silence the fallback.
        Blur | Noise | ColourCast => candidate == Distribution,
        // "distribution" is the fallback when nothing specific explains a change.
        ConfidenceDrop | ClassShift => candidate == Distribution,
        Distribution | Ingest | ModelTest => false,
    }
}

/// Order in which findings are kept (root causes before their consequences).
const PRECEDENCE: [Cause; 11] = [
    Cause::Frozen,
    Cause::Moved,
    Cause::Darker,
    Cause::Brighter,
    Cause::Compression,
    Cause::Blur,
    Cause::Noise,
    Cause::ColourCast,
    Cause::ConfidenceDrop,
    Cause::ClassShift,
    Cause::Distribution,
];

/// Names the causes of one slice's shift, each with its supporting numbers; empty when nothing matters.
/// Allocates only for findings (an empty result allocates nothing).
pub fn diagnose(evidence: &Evidence, tolerances: &Tolerances) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for cause in PRECEDENCE {
        if out.iter().any(|f| suppresses(f.cause, cause)) {
            continue;
        }
        if let Some(summary) = signature(cause, evidence, tolerances) {
            out.push(Finding { cause, summary });
        }
    }
    out
}

/// A metric's shift when it is statistically significant and beyond its tolerance in the given direction.
fn moved(e: &Evidence, t: &Tolerances, i: usize, dir: Direction) -> Option<Shift> {
    let s = e.metrics[i]?;
    let tol = t.metrics[i];
    let beyond = match dir {
        Direction::Down => tol.fell(s.baseline_mean, s.current_mean),
        Direction::Up => tol.rose(s.baseline_mean, s.current_mean),
    };
    (s.significant && beyond).then_some(s)
}

#[derive(Clone, Copy)]
enum Direction {
    Down,
    Up,
}

/// Sharpness per unit of contrast, baseline and current: the Laplacian's spread scales with the pixel values just
/// as their standard deviation does, so this ratio stays put when a camera darkens and falls when it blurs.
fn sharpness_per_contrast(e: &Evidence) -> Option<(f64, f64)> {
    let (s, c) = (e.metrics[SHARPNESS]?, e.metrics[CONTRAST]?);
    (c.baseline_mean > 0.0 && c.current_mean > 0.0)
        .then(|| (s.baseline_mean / c.baseline_mean, s.current_mean / c.current_mean))
}

fn signature(cause: Cause, e: &Evidence, t: &Tolerances) -> Option<String> {
    match cause {
        Cause::Frozen => e.frozen.then(|| "the camera's picture stopped changing (perceptual hash)".to_string()),
        Cause::Moved => e.moved.then(|| "the camera's view changed (perceptual hash)".to_string()),
        Cause::Darker => {
            let b = moved(e, t, BRIGHTNESS, Direction::Down)?;
            // Shadows must not clear up: a darker scene clips more, never fewer, pixels to black.
            let d = e.metrics[DARK_FRACTION].filter(|d| d.delta() >= 0.0);
            (e.metrics[DARK_FRACTION].is_none() || d.is_some())
                .then(|| join(&[Some(mean_ks("brightness", &b)), d.map(|d| means("dark_fraction", &d))]))
        }
        Cause::Brighter => {
            let b = moved(e, t, BRIGHTNESS, Direction::Up)?;
            let d = e.metrics[BRIGHT_FRACTION].filter(|d| d.delta() >= 0.0);
            (e.metrics[BRIGHT_FRACTION].is_none() || d.is_some())
                .then(|| join(&[Some(mean_ks("brightness", &b)), d.map(|d| means("bright_fraction", &d))]))
        }
        Cause::Blur => {
            let s = e.metrics[SHARPNESS].filter(|s| s.significant)?;
            let (base, cur) = sharpness_per_contrast(e)?;
            t.metrics[SHARPNESS].fell(base, cur).then(|| {
                join(&[
                    Some(mean_ks("sharpness", &s)),
                    Some(format!("sharpness/contrast {} -> {} ({})", num(base), num(cur), pct(base, cur))),
                ])
            })
        }
        Cause::Noise => {
            let n = moved(e, t, NOISE, Direction::Up)?;
            Some(mean_ks("noise", &n))
        }
        Cause::ColourCast => {
            // The channel whose share moved most; shares sum to 1, so one moving means another moves back.
            let (i, s) = (RED_MEAN..=BLUE_MEAN)
                .filter_map(|i| {
                    moved(e, t, i, Direction::Up).or_else(|| moved(e, t, i, Direction::Down)).map(|s| (i, s))
                })
                .max_by(|a, b| a.1.delta().abs().total_cmp(&b.1.delta().abs()))?;
            let others = (RED_MEAN..=BLUE_MEAN)
                .filter(|&j| j != i)
                .filter_map(|j| Some(means(DIAGNOSED[j].0, &e.metrics[j]?)))
                .collect::<Vec<_>>()
                .join("; ");
            Some(join(&[Some(mean_ks(DIAGNOSED[i].0, &s)), (!others.is_empty()).then_some(others)]))
        }
        Cause::Compression => {
            if e.metrics[JPEG_QUALITY].is_some() {
                // The encoder's setting is known: only it decides; fewer bytes at the same quality is content.
                let q = moved(e, t, JPEG_QUALITY, Direction::Down)?;
                let bpp = e.metrics[BYTES_PER_PIXEL].map(|b| means("bytes_per_pixel", &b));
                return Some(join(&[Some(mean_ks("jpeg_quality", &q)), bpp]));
            }
            let b = moved(e, t, BYTES_PER_PIXEL, Direction::Down)?;
            // Without the quality, fewer bytes could be blur. A harder encoder sheds bytes faster than detail (quality
            // 15 on the sample photos: bytes 0.17x, sharpness/contrast 0.57-0.9x); a blurred lens sheds detail faster
            // than bytes (bytes 0.61x, sharpness/contrast 0.11x).
            let bytes_ratio = b.current_mean / b.baseline_mean;
            let detail_ratio = sharpness_per_contrast(e).map(|(base, cur)| cur / base);
            detail_ratio.is_none_or(|d| bytes_ratio < d).then(|| match detail_ratio {
                Some(d) => format!("{}; sharpness/contrast {d:.2}x", mean_ks("bytes_per_pixel", &b)),
                None => mean_ks("bytes_per_pixel", &b),
            })
        }
        Cause::ConfidenceDrop => {
            let c = moved(e, t, CONFIDENCE_MEAN, Direction::Down)?;
            Some(mean_ks("confidence_mean", &c))
        }
        Cause::ClassShift => {
            let c = e.classes.filter(|c| c.significant && c.cramers_v >= t.class)?;
            Some(format!("class distribution Cramer's V {:.2} (>= {})", c.cramers_v, t.class))
        }
        Cause::Distribution => {
            let parts: Vec<String> = (0..N)
                .filter_map(|i| {
                    let s = e.metrics[i]?;
                    (s.significant && t.metrics[i].exceeded(&s)).then(|| distribution_part(DIAGNOSED[i].0, &s))
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Cause::Ingest | Cause::ModelTest => None,
    }
}

fn num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(0.01..1000.0).contains(&a) { format!("{v:.3e}") } else { format!("{v:.3}") }
}

fn pct(base: f64, cur: f64) -> String {
    if base == 0.0 { "new".to_string() } else { format!("{:+.0} %", 100.0 * (cur - base) / base.abs()) }
}

fn means(name: &str, s: &Shift) -> String {
    format!("{name} {} -> {}", num(s.baseline_mean), num(s.current_mean))
}

fn mean_ks(name: &str, s: &Shift) -> String {
    format!(
        "{name} mean {} -> {} ({}), KS {:.2}",
        num(s.baseline_mean),
        num(s.current_mean),
        pct(s.baseline_mean, s.current_mean),
        s.ks_statistic
    )
}

fn distribution_part(name: &str, s: &Shift) -> String {
    match s.wasserstein {
        Some(w) => format!("{}, W1 {}", mean_ks(name, s), num(w)),
        None => mean_ks(name, s),
    }
}

fn join(parts: &[Option<String>]) -> String {
    parts.iter().flatten().map(String::as_str).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_name_catalog_metrics() {
        let named = [
            (BRIGHTNESS, "brightness"),
            (CONTRAST, "contrast"),
            (SHARPNESS, "sharpness"),
            (RED_MEAN, "red_mean"),
            (BLUE_MEAN, "blue_mean"),
            (DARK_FRACTION, "dark_fraction"),
            (BRIGHT_FRACTION, "bright_fraction"),
            (NOISE, "noise"),
            (BYTES_PER_PIXEL, "bytes_per_pixel"),
            (JPEG_QUALITY, "jpeg_quality"),
            (CONFIDENCE_MEAN, "confidence_mean"),
        ];
        for (i, name) in named {
            assert_eq!(DIAGNOSED[i].0, name);
        }
        assert_eq!(DIAGNOSED[RED_MEAN + 1].0, "green_mean");
        let registry = crate::MetricRegistry::standard();
        let doc = include_str!("../METRICS.md");
        for (name, _, _) in DIAGNOSED {
            assert!(registry.index_of(name).is_some(), "{name} is not a catalog metric");
            assert!(doc.contains(&format!("`{name}`")), "METRICS.md lacks the tolerance of {name}");
        }
    }

    #[test]
    fn every_diagnosable_cause_has_a_place_in_the_order() {
        for c in Cause::ALL {
            assert_eq!(PRECEDENCE.contains(&c), !matches!(c, Cause::Ingest | Cause::ModelTest), "{c}");
            assert!(!suppresses(c, c) || matches!(c, Cause::Frozen | Cause::Moved));
        }
    }
}

//! Issue 10 §2: consecutive frames of a camera are nearly copies, so a KS p-value that counts them as independent
//! claims certainty it does not have. These tests hold the lag-1 moments to their algebra and show, on a
//! stationary AR(1) stream, that the p-value over effective sample sizes keeps its nominal false-alarm rate while
//! the raw-count p-value does not.

use framewatch_metrics::baseline::Baseline;
use framewatch_metrics::stats::{LagMoments, LagSeries, effective_sample_size, ks_p_value};
use framewatch_metrics::{BaselineBuilder, ComparableSettings, DriftAccumulator, DriftThresholds};

/// SplitMix64 with Box-Muller normals: seeded, dependency-free, good enough for sampling tests.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0 (Box-Muller takes its log).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `len` values of the stationary AR(1) process x[t] = phi x[t-1] + e[t], e ~ N(0, 1), started from its
/// stationary distribution N(0, 1 / (1 - phi^2)) so that every segment is a fair, independent draw.
fn ar1(rng: &mut Rng, phi: f64, len: usize) -> Vec<f64> {
    let mut x = rng.normal() / (1.0 - phi * phi).sqrt();
    (0..len)
        .map(|_| {
            let v = x;
            x = phi * x + rng.normal();
            v
        })
        .collect()
}

fn series(values: &[f64]) -> LagSeries {
    let mut s = LagSeries::default();
    values.iter().for_each(|&v| s.push(v));
    s
}

#[test]
fn lag_moments_merged_from_sub_windows_equal_the_sequential_ones() {
    let mut rng = Rng(1);
    let values = ar1(&mut rng, 0.7, 5000);
    let whole = series(&values).moments;
    // Sub-windows as the service keeps them: a pair belongs to the sub-window of its later value.
    let mut merged = LagMoments::default();
    for (lo, hi) in [(0, 1), (1, 1200), (1200, 1201), (1201, 4000), (4000, 5000)] {
        let mut piece = LagMoments::default();
        for t in usize::max(lo, 1)..hi {
            piece.push_pair(values[t - 1], values[t]);
        }
        merged.merge(&piece);
    }
    assert_eq!(merged.pairs, whole.pairs);
    assert_eq!(whole.pairs, 4999);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * (1.0 + a.abs());
    assert!(close(merged.sum_x, whole.sum_x) && close(merged.sum_y, whole.sum_y));
    assert!(close(merged.sum_xx, whole.sum_xx) && close(merged.sum_yy, whole.sum_yy));
    assert!(close(merged.sum_xy, whole.sum_xy));
    let (r, s) = (whole.lag1_autocorrelation().expect("r"), merged.lag1_autocorrelation().expect("r"));
    assert!((r - s).abs() < 1e-12, "{r} vs {s}");
    assert!((r - 0.7).abs() < 0.03, "AR(1) phi = 0.7 estimated as {r}");
}

#[test]
fn independent_noise_has_no_autocorrelation_and_keeps_its_sample_size() {
    let mut rng = Rng(2);
    let noise: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
    let s = series(&noise);
    let r = s.moments.lag1_autocorrelation().expect("r");
    // The standard error of r is 1 / sqrt(n) ~ 0.007.
    assert!(r.abs() < 0.03, "r = {r}");
    assert!(s.effective_n(20_000) > 18_000.0, "n_eff = {}", s.effective_n(20_000));
}

#[test]
fn nearly_perfectly_correlated_series_are_worth_a_handful_of_values() {
    let mut rng = Rng(3);
    let slow = ar1(&mut rng, 0.999, 20_000);
    let r = series(&slow).moments.lag1_autocorrelation().expect("r");
    assert!(r > 0.99, "r = {r}");
    // A ramp (a camera's exposure creeping up) has r ~ 1: it is worth one value, not 1000.
    let ramp: Vec<f64> = (0..1000).map(f64::from).collect();
    let s = series(&ramp);
    assert!(s.moments.lag1_autocorrelation().expect("r") > 0.999_999);
    assert!(s.effective_n(1000) < 1.01);
    assert!(s.effective_n(1000) >= 1.0);
}

#[test]
fn constant_short_and_far_from_zero_series() {
    // Constant: no correlation to estimate, the count stands.
    let s = series(&[5.0; 100]);
    assert_eq!(s.moments.lag1_autocorrelation(), None);
    assert_eq!(s.effective_n(100), 100.0);
    // Too few pairs.
    assert_eq!(series(&[1.0, 2.0, 3.0]).moments.lag1_autocorrelation(), None);
    // Missing values are skipped: the next value pairs with the last one seen.
    let s = series(&[1.0, f64::NAN, 2.0, f64::INFINITY, 3.0]);
    assert_eq!(s.moments.pairs, 2);
    // A metric far from zero (a width in pixels with unit jitter), shifted by a fixed reference, gives the same r
    // as the jitter itself: the shift is what keeps the sums' cancellation harmless.
    let mut rng = Rng(4);
    let jitter = ar1(&mut rng, 0.5, 10_000);
    let r0 = series(&jitter).moments.lag1_autocorrelation().expect("r");
    let shifted: Vec<f64> = jitter.iter().map(|v| (1e6 + v) - 1e6).collect();
    let r1 = series(&shifted).moments.lag1_autocorrelation().expect("r");
    assert!((r0 - r1).abs() < 1e-6, "{r0} vs {r1}");
    // Unshifted, the sums cannot see unit jitter on 1e6: the estimate declines rather than guesses.
    let raw: Vec<f64> = jitter.iter().map(|v| 1e6 + v).collect();
    let r2 = series(&raw).moments.lag1_autocorrelation();
    assert!(r2.is_none_or(|r| (r - r0).abs() < 0.05), "{r2:?} vs {r0}");
}

#[test]
fn effective_sample_size_formula() {
    assert_eq!(effective_sample_size(1000, 0.0), 1000.0);
    assert_eq!(effective_sample_size(1000, -0.5), 1000.0);
    assert_eq!(effective_sample_size(1000, f64::NAN), 1000.0);
    assert!((effective_sample_size(1000, 0.9) - 1000.0 * 0.1 / 1.9).abs() < 1e-9);
    // 400 frames at lag-1 autocorrelation 0.998 (10 fps from one camera) are worth 0.4 values: clamped to one.
    assert_eq!(effective_sample_size(400, 0.998), 1.0);
    assert_eq!(effective_sample_size(1000, 1.0), 1.0);
    assert_eq!(effective_sample_size(0, 0.5), 0.0);
}

struct FalseAlarms {
    with_n_eff: usize,
    with_raw_n: usize,
    trials: usize,
    mean_n_eff: f64,
}

/// Baseline from one segment of an AR(1) stream, current window from another, independent one: no drift at all.
/// Counts the trials whose KS p-value falls below `alpha`, with effective sizes (as reports give it) and with raw
/// counts (as if frames were independent).
fn false_alarms(phi: f64, reference_len: usize, current_len: usize, trials: usize, alpha: f64) -> FalseAlarms {
    let mut rng = Rng(0x5eed ^ phi.to_bits());
    let names = vec!["x".to_string()];
    let settings = ComparableSettings::default();
    let mut out = FalseAlarms { with_n_eff: 0, with_raw_n: 0, trials, mean_n_eff: 0.0 };
    for _ in 0..trials {
        let mut builder = BaselineBuilder::new(names.clone(), settings, 100);
        for v in ar1(&mut rng, phi, reference_len) {
            builder.add(&[Some(v)], []);
        }
        let baseline: Baseline =
            builder.finish("2026-01-01T00:00:00Z".into(), "test".into(), "ar1".into()).expect("baseline");
        let reference = &baseline.metrics["x"];
        assert!(reference.effective_n < reference_len as f64 / 2.0);
        let mut acc = DriftAccumulator::new(&baseline, ["x"], &settings).expect("accumulator");
        for v in ar1(&mut rng, phi, current_len) {
            acc.add(&[Some(v)], []);
        }
        let report = acc.report(&DriftThresholds::default());
        let s = report.metrics["x"].stats;
        out.mean_n_eff += s.n_effective / trials as f64;
        out.with_n_eff += usize::from(s.ks_p_value < alpha);
        let raw = ks_p_value(s.ks_statistic, reference.histogram.n as f64, s.n as f64);
        out.with_raw_n += usize::from(raw < alpha);
    }
    out
}

#[test]
fn effective_sizes_keep_the_false_significance_rate_of_ks_on_autocorrelated_frames() {
    const TRIALS: usize = 200;
    const ALPHA: f64 = 0.01;
    // At most 3 % of trials below alpha = 1 %: the nominal 2 of 200 plus about three binomial standard deviations.
    let allowed = TRIALS * 3 / 100;
    for (phi, reference_len, current_len) in [(0.9, 4000, 1000), (0.99, 20_000, 4000)] {
        let f = false_alarms(phi, reference_len, current_len, TRIALS, ALPHA);
        eprintln!(
            "AR(1) phi {phi}: reference {reference_len}, current {current_len} values (mean n_eff {:.1}); \
             p < {ALPHA} in {}/{} trials with n_eff, {}/{} with raw n",
            f.mean_n_eff, f.with_n_eff, f.trials, f.with_raw_n, f.trials
        );
        assert!(f.with_n_eff <= allowed, "phi {phi}: {} of {TRIALS} false alarms with n_eff", f.with_n_eff);
        // Without the correction most identical-process windows look "significant": the guard would be useless.
        assert!(f.with_raw_n >= TRIALS / 3, "phi {phi}: only {} of {TRIALS} false alarms with raw n", f.with_raw_n);
    }
}

/// A small baseline of one AR(1) metric, as JSON.
fn baseline_json() -> (Baseline, serde_json::Value) {
    let mut rng = Rng(5);
    let mut builder = BaselineBuilder::new(vec!["x".to_string()], ComparableSettings::default(), 100);
    for (i, v) in ar1(&mut rng, 0.9, 600).into_iter().enumerate() {
        // Half the frames also belong to one camera's slice, which gets its own effective size.
        let slices: &[&str] = if i % 2 == 0 { &["camera_id=cam-1"] } else { &[] };
        builder.add_to_slices(slices, &[Some(v)], []);
    }
    let baseline = builder.finish("2026-01-01T00:00:00Z".into(), "test".into(), "ar1".into()).expect("baseline");
    let json = serde_json::from_str(&baseline.to_json()).expect("json");
    (baseline, json)
}

#[test]
fn baselines_store_effective_n_and_older_files_without_it_still_load() {
    let (baseline, json) = baseline_json();
    let global = &baseline.metrics["x"];
    let slice = &baseline.slices["camera_id=cam-1"].metrics["x"];
    // 600 values at r ~ 0.9: about 600 * 0.1 / 1.9 ~ 32 independent ones.
    assert!((15.0..60.0).contains(&global.effective_n), "{}", global.effective_n);
    assert!(slice.effective_n >= 1.0 && slice.effective_n <= slice.histogram.n as f64);
    let stored = json["metrics"]["x"]["effective_n"].as_f64().expect("effective_n written");
    assert_eq!(stored, global.effective_n);
    let again = Baseline::from_json(&json.to_string()).expect("round trip");
    assert_eq!(again.metrics["x"].effective_n, global.effective_n);
    assert_eq!(again.slices["camera_id=cam-1"].metrics["x"].effective_n, slice.effective_n);

    // A file written before effective_n existed: every value counts as independent.
    let mut old = json.clone();
    old["metrics"]["x"].as_object_mut().expect("object").remove("effective_n");
    old["slices"]["camera_id=cam-1"]["metrics"]["x"].as_object_mut().expect("object").remove("effective_n");
    let loaded = Baseline::from_json(&old.to_string()).expect("older file loads");
    assert_eq!(loaded.metrics["x"].effective_n, 600.0);
}

#[test]
fn an_impossible_effective_n_is_refused_by_name() {
    let (_, json) = baseline_json();
    for bad in [serde_json::json!(0.5), serde_json::json!(601.0), serde_json::json!(-3.0), serde_json::json!(1e300)] {
        let mut file = json.clone();
        file["metrics"]["x"]["effective_n"] = bad.clone();
        let err = Baseline::from_json(&file.to_string()).expect_err("refused").to_string();
        assert!(err.contains("metrics.x.effective_n"), "{bad}: {err}");
    }
    let mut file = json;
    file["slices"]["camera_id=cam-1"]["metrics"]["x"]["effective_n"] = serde_json::json!(1e9);
    let err = Baseline::from_json(&file.to_string()).expect_err("refused").to_string();
    assert!(err.contains("slices.camera_id=cam-1.metrics.x.effective_n"), "{err}");
}

//! Drift statistics between a baseline histogram and a current one: PSI, two-sample KS with its asymptotic
//! p-value, Jensen-Shannon distance, normalised Wasserstein-1, IQR outlier and out-of-range shares, and chi-square
//! homogeneity for categoricals; plus the lag-1 moments that turn autocorrelated frames into an effective sample
//! size for the p-value. Pure functions; definitions and choices are documented in METRICS.md.

use crate::histogram::{BinLayout, Histogram, coarse_count};

/// Proportion that replaces an empty bin in PSI (Evidently's choice), so ln(0) never appears. Not renormalised:
/// an empty bin contributes (c - 1e-4) ln(c / 1e-4), finite and large when the current window fills it.
pub const PSI_EPSILON: f64 = 1e-4;

/// Population stability index over the PSI bins (the baseline's deciles, first and last open-ended):
/// sum (c - r) * ln(c / r).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (r, c) = (if r > 0.0 { r } else { PSI_EPSILON }, if c > 0.0 { c } else { PSI_EPSILON });
            (c - r) * (c / r).ln()
        })
        .sum::<f64>()
        .max(0.0)
}

/// ln of each PSI proportion (`PSI_EPSILON` for an empty bin): what `psi_js` reads of a reference, computed once
/// per reference.
pub fn psi_logs(p: &[f64], out: &mut Vec<f64>) {
    out.clear();
    out.extend(p.iter().map(|&r| if r > 0.0 { r } else { PSI_EPSILON }.ln()));
}

/// How many small counts `psi_js` takes the logarithm of from a table.
const LN_TABLE_LEN: usize = 1024;

/// ln k for k < `LN_TABLE_LEN` (ln 0 is never read), filled on first use.
fn ln_table() -> &'static [f64; LN_TABLE_LEN] {
    static TABLE: std::sync::LazyLock<Box<[f64; LN_TABLE_LEN]>> = std::sync::LazyLock::new(|| {
        let mut t = Box::new([f64::NEG_INFINITY; LN_TABLE_LEN]);
        for (k, ln) in t.iter_mut().enumerate().skip(1) {
            *ln = (k as f64).ln();
        }
        t
    });
    &TABLE
}

/// `psi(p, q)` and `js_distance(p, q)` in one pass, where the window's proportions q are `counts` (each PSI/JS bin's
/// count of values, integers) over `n`, given `ln_p` from `psi_logs(p)`. Two logarithms a bin at most instead of
/// three: ln(c / r) = ln c - ln r and log2(a / m) = (ln a - ln m) / ln 2, and ln c of a count below 1024 is
/// ln count - ln n, from a table, which leaves one logarithm a bin (the mixture's). The logarithms were a fifth of
/// an evaluation's time. Equal to the two definitions up to rounding, and exactly 0 for equal proportions (property
/// test `fused_psi_js_match_the_definitions`). No values (`n` 0): every proportion 0.
pub fn psi_js(p: &[f64], ln_p: &[f64], counts: &[f64], n: u64) -> (f64, f64) {
    let (mut psi, mut js) = (0.0, 0.0);
    let table = ln_table();
    let total = n as f64;
    let (ln_total, ln_epsilon) = (total.ln(), PSI_EPSILON.ln());
    for ((&r, &lr), &count) in p.iter().zip(ln_p).zip(counts) {
        let c = if n > 0 { count / total } else { 0.0 };
        let (c_psi, lc) = if c > 0.0 {
            // In range, so the cast is exact: a count is a whole number.
            let ln = if count < LN_TABLE_LEN as f64 { table[count as usize] - ln_total } else { c.ln() };
            (c, ln)
        } else {
            (PSI_EPSILON, ln_epsilon)
        };
        let r_psi = if r > 0.0 { r } else { PSI_EPSILON };
        psi += (c_psi - r_psi) * (lc - lr);
        // An equal pair adds nothing to the divergence (and the table's ln c may differ from ln r by rounding).
        if c != r {
            let m = 0.5 * (r + c);
            let lm = m.ln();
            if r > 0.0 {
                js += r * (lr - lm);
            }
            if c > 0.0 {
                js += c * (lc - lm);
            }
        }
    }
    (psi.max(0.0), (0.5 * js / std::f64::consts::LN_2).clamp(0.0, 1.0).sqrt())
}

/// Jensen-Shannon distance, base 2 (so it lies in [0, 1]): sqrt of the JS divergence. `compare` uses the PSI bins.
pub fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let mut div = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let m = 0.5 * (a + b);
        if a > 0.0 {
            div += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            div += 0.5 * b * (b / m).log2();
        }
    }
    div.clamp(0.0, 1.0).sqrt()
}

/// Kolmogorov's limiting survival function Q_KS(lambda) = 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 lambda^2).
/// For small lambda the alternating series converges slowly, so the Jacobi theta form is used there
/// (as scipy's cephes `kolmogorov` does). Always returns in [0, 1]; lambda <= 0 gives 1.
pub fn kolmogorov_sf(lambda: f64) -> f64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 1.0;
    }
    if lambda < 1.0 {
        // 1 - CDF, CDF = sqrt(2 pi)/lambda * sum_k exp(-(2k-1)^2 pi^2 / (8 lambda^2)).
        let w = std::f64::consts::PI * std::f64::consts::PI / (8.0 * lambda * lambda);
        let mut cdf = 0.0;
        for k in 1..=20u32 {
            let j = f64::from(2 * k - 1);
            let term = (-j * j * w).exp();
            cdf += term;
            if term < 1e-18 * cdf {
                break;
            }
        }
        let cdf = (2.0 * std::f64::consts::PI).sqrt() / lambda * cdf;
        (1.0 - cdf).clamp(0.0, 1.0)
    } else {
        let mut sum = 0.0;
        let mut sign = 1.0;
        for j in 1..=100u32 {
            let j = f64::from(j);
            let term = (-2.0 * j * j * lambda * lambda).exp();
            sum += sign * term;
            if term < 1e-18 {
                break;
            }
            sign = -sign;
        }
        (2.0 * sum).clamp(0.0, 1.0)
    }
}

/// Asymptotic two-sample KS p-value with Stephens' small-sample correction (Numerical Recipes 14.3):
/// Ne = n m / (n + m), lambda = (sqrt(Ne) + 0.12 + 0.11 / sqrt(Ne)) * D. Constant time for any n; D = 0 gives 1.
/// `n` and `m` are sample sizes as reals so that effective sizes (`effective_sample_size`) can be passed; a size
/// that is not positive (or NaN) gives 1.
pub fn ks_p_value(d: f64, n: f64, m: f64) -> f64 {
    if !(n > 0.0 && m > 0.0) || d.is_nan() {
        return 1.0;
    }
    let ne = n * m / (n + m);
    let s = ne.sqrt();
    kolmogorov_sf((s + 0.12 + 0.11 / s) * d)
}

/// KS statistic from two histograms on the same layout: max |F_ref - F_cur| over bin boundaries. This is a lower
/// bound of the statistic on the raw values, low by at most the largest baseline bin mass (1 % with 100 bins).
pub fn ks_statistic(reference: &Histogram, current: &Histogram) -> f64 {
    if reference.n == 0 || current.n == 0 {
        return 0.0;
    }
    let (n, m) = (reference.n as f64, current.n as f64);
    let (mut fr, mut fc, mut d) = (0u64, 0u64, 0.0f64);
    for (&r, &c) in reference.counts.iter().zip(&current.counts) {
        fr += u64::from(r);
        fc += u64::from(c);
        d = d.max((fr as f64 / n - fc as f64 / m).abs());
    }
    d.min(1.0)
}

/// Wasserstein-1 distance between the two histograms, treating values as uniform inside each fine bin and using
/// the summed tail distances beyond the baseline range (exact there when only one side has tail values).
pub fn wasserstein(layout: &BinLayout, reference: &Histogram, current: &Histogram) -> f64 {
    if reference.n == 0 || current.n == 0 {
        return 0.0;
    }
    let (n, m) = (reference.n as f64, current.n as f64);
    let edges = layout.edges();
    let k = edges.len() - 1;
    let mut w = (current.tail_lo_dist / m - reference.tail_lo_dist / n).abs()
        + (current.tail_hi_dist / m - reference.tail_hi_dist / n).abs();
    // Per-bin proportions as products with the reciprocals (one division per histogram, not per bin; the result
    // moves by a few ulps at most), and the integral of |CDF difference| over a bin chosen without a branch: the
    // sign of a * b is data-dependent, so a branch on it mispredicts about as often as the CDFs cross.
    let (inv_n, inv_m) = (1.0 / n, 1.0 / m);
    let (cur, refc) = (&current.counts[..=k], &reference.counts[..=k]);
    // CDF difference at the left edge of fine bin 1 (after the lower tail).
    let mut a = f64::from(cur[0]) * inv_m - f64::from(refc[0]) * inv_n;
    for ((&c, &r), edge) in cur[1..].iter().zip(&refc[1..]).zip(edges.windows(2)) {
        let b = a + (f64::from(c) * inv_m - f64::from(r) * inv_n);
        let (abs_sum, sq_sum) = (a.abs() + b.abs(), a * a + b * b);
        // Where the CDFs cross inside the bin, the area is that of two triangles; abs_sum > 0 there.
        let crossing = 0.5 * sq_sum / abs_sum;
        let area = if a * b >= 0.0 { 0.5 * abs_sum } else { crossing };
        w += (edge[1] - edge[0]) * area;
        a = b;
    }
    w
}

/// Chi-square test of homogeneity on a 2 x K table (baseline counts vs current counts per category).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub dof: u64,
    pub p_value: f64,
    /// Cramer's V = sqrt(chi2 / N): an effect size in [0, 1] that does not grow with the sample size.
    pub cramers_v: f64,
}

/// `pairs` are (baseline count, current count) per category; categories with both counts zero are ignored.
pub fn chi_square_homogeneity(pairs: impl IntoIterator<Item = (u64, u64)>) -> Option<ChiSquare> {
    let pairs: Vec<(f64, f64)> =
        pairs.into_iter().filter(|&(a, b)| a + b > 0).map(|(a, b)| (a as f64, b as f64)).collect();
    let (ra, rb): (f64, f64) = pairs.iter().fold((0.0, 0.0), |(x, y), &(a, b)| (x + a, y + b));
    if ra == 0.0 || rb == 0.0 {
        return None;
    }
    let total = ra + rb;
    let mut stat = 0.0;
    for &(a, b) in &pairs {
        let col = a + b;
        let (ea, eb) = (ra * col / total, rb * col / total);
        stat += (a - ea).powi(2) / ea + (b - eb).powi(2) / eb;
    }
    let dof = pairs.len().saturating_sub(1) as u64;
    let p_value = if dof == 0 {
        1.0
    } else {
        use statrs::distribution::{ChiSquared, ContinuousCDF};
        ChiSquared::new(dof as f64).map_or(f64::NAN, |d| d.sf(stat))
    };
    Some(ChiSquare { statistic: stat, dof, p_value, cramers_v: (stat / total).sqrt().min(1.0) })
}

/// Lag-1 moments of a series in arrival order: sums over consecutive pairs (x, y) = (v[t-1], v[t]). Every field
/// is a plain sum, so two accumulators over disjoint sets of pairs (e.g. two sub-windows) merge by addition,
/// exactly as far as float addition is; nothing is allocated.
///
/// Precision: the autocorrelation is a difference of sums (S_xy - S_x S_y / p), which cancels badly when values
/// sit far from zero relative to their spread (a width of 1920 that moves by 1). Push values shifted by one
/// fixed reference (the baseline mean, say): correlation is unchanged by a shift, and the same shift in every
/// sub-window keeps the merge exact.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LagMoments {
    pub pairs: u64,
    pub sum_x: f64,
    pub sum_y: f64,
    pub sum_xx: f64,
    pub sum_yy: f64,
    pub sum_xy: f64,
}

/// Relative variance below which a side of the pairs counts as constant (its correlation is undefined): far
/// above the rounding error of the sums, far below any real spread.
const LAG_CONSTANT_RELATIVE: f64 = 1e-9;

impl LagMoments {
    /// Adds the pair (previous value, this value).
    #[inline]
    pub fn push_pair(&mut self, previous: f64, value: f64) {
        self.pairs += 1;
        self.sum_x += previous;
        self.sum_y += value;
        self.sum_xx += previous * previous;
        self.sum_yy += value * value;
        self.sum_xy += previous * value;
    }

    /// Adds the pairs of `other` (taken with the same shift).
    pub fn merge(&mut self, other: &LagMoments) {
        self.pairs += other.pairs;
        self.sum_x += other.sum_x;
        self.sum_y += other.sum_y;
        self.sum_xx += other.sum_xx;
        self.sum_yy += other.sum_yy;
        self.sum_xy += other.sum_xy;
    }

    /// Pearson correlation of (v[t-1], v[t]) over the pairs, in [-1, 1]. `None` with fewer than 3 pairs or when
    /// either side is constant (up to rounding): a constant series has no autocorrelation to speak of.
    pub fn lag1_autocorrelation(&self) -> Option<f64> {
        if self.pairs < 3 {
            return None;
        }
        let p = self.pairs as f64;
        let var_x = self.sum_xx - self.sum_x * self.sum_x / p;
        let var_y = self.sum_yy - self.sum_y * self.sum_y / p;
        if !(var_x > LAG_CONSTANT_RELATIVE * self.sum_xx && var_y > LAG_CONSTANT_RELATIVE * self.sum_yy) {
            return None;
        }
        let cov = self.sum_xy - self.sum_x * self.sum_y / p;
        let r = cov / (var_x * var_y).sqrt();
        r.is_finite().then(|| r.clamp(-1.0, 1.0))
    }
}

/// Lag-1 moments of one series fed value by value: remembers the last value so that each new one makes a pair.
/// Missing values are skipped (the next value pairs with the last one seen).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LagSeries {
    last: Option<f64>,
    pub moments: LagMoments,
}

impl LagSeries {
    /// Adds the next value (already shifted, see `LagMoments`); non-finite values are skipped like missing ones.
    #[inline]
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if let Some(previous) = self.last {
            self.moments.push_pair(previous, value);
        }
        self.last = Some(value);
    }

    /// The effective sample size of `n` values of this series (`effective_sample_size`; `n` if `r` is undefined).
    pub fn effective_n(&self, n: u64) -> f64 {
        effective_sample_size(n, self.moments.lag1_autocorrelation().unwrap_or(0.0))
    }
}

/// Effective number of independent values among `n` values of a series with lag-1 autocorrelation `r1`, by the
/// AR(1) variance inflation: n (1 - r) / (1 + r). A non-positive (or NaN) `r1` gives `n` (negative correlation is
/// not credited); the result is clamped to [1, n] (0 for n = 0).
pub fn effective_sample_size(n: u64, r1: f64) -> f64 {
    let n = n as f64;
    if n == 0.0 {
        return 0.0;
    }
    if r1.is_nan() || r1 <= 0.0 {
        return n;
    }
    let r = r1.min(1.0);
    (n * (1.0 - r) / (1.0 + r)).clamp(1.0, n)
}

/// Effective sample sizes for the KS p-value: how many independent values the reference and the current window
/// are worth. Values outside [1, n] (or non-finite) are replaced by the raw count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveN {
    pub reference: f64,
    pub current: f64,
}

impl EffectiveN {
    /// Every value independent: the raw counts.
    pub fn raw(reference: &Histogram, current: &Histogram) -> EffectiveN {
        EffectiveN { reference: reference.n as f64, current: current.n as f64 }
    }
}

/// `effective` if it is a usable size for `n` values, else `n`.
fn sane_effective(effective: f64, n: u64) -> f64 {
    let n = n as f64;
    if effective.is_finite() && effective >= n.min(1.0) && effective <= n { effective } else { n }
}

/// Every statistic of one metric's current window against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MetricDrift {
    pub n: u64,
    /// Effective sample size of the current window (`effective_sample_size`): what its KS p-value counts.
    pub n_effective: f64,
    pub mean: Option<f64>,
    pub baseline_mean: f64,
    pub psi: f64,
    pub ks_statistic: f64,
    pub ks_p_value: f64,
    pub js_distance: f64,
    /// Wasserstein-1 / baseline standard deviation; `None` when the baseline has zero spread.
    pub wasserstein_norm: Option<f64>,
    pub outliers_moderate: f64,
    pub outliers_severe: f64,
    /// Share of current values outside the baseline's [min, max].
    pub out_of_range: f64,
    /// Two-sided p-value of the difference of means (a z test on effective sample sizes, with the baseline's
    /// spread on both sides): the significance the cause diagnosis uses. Unlike KS it keeps power when a static
    /// camera's window is worth one sample, because it weighs the shift against the camera's own spread.
    pub mean_p_value: f64,
}

/// Two-sided p-value of `mean_b - mean_c` with standard deviations `sd_*` over `n_*` effective samples (Welch's
/// z, normal approximation). 1 when either side is empty or nothing can be judged; 0 when both sides have no
/// spread and the means differ.
pub fn mean_shift_p_value(mean_b: f64, sd_b: f64, n_b: f64, mean_c: f64, sd_c: f64, n_c: f64) -> f64 {
    if !(n_b >= 1.0 && n_c >= 1.0 && (mean_b - mean_c).is_finite()) {
        return 1.0;
    }
    let diff = (mean_b - mean_c).abs();
    let se = (sd_b * sd_b / n_b + sd_c * sd_c / n_c).sqrt();
    if !se.is_finite() {
        return 1.0;
    }
    if se == 0.0 {
        return if diff > 0.0 { 0.0 } else { 1.0 };
    }
    use statrs::distribution::{ContinuousCDF, Normal};
    (2.0 * Normal::standard().sf(diff / se)).clamp(0.0, 1.0)
}

/// A baseline reference as `compare_to` reads it: its layout and histogram, its PSI/JS proportions (computed once
/// per reference, not once per comparison), mean and spread.
#[derive(Debug, Clone, Copy)]
pub struct Reference<'a> {
    pub layout: &'a BinLayout,
    pub histogram: &'a Histogram,
    /// `histogram.coarse_proportions(layout)`.
    pub proportions: &'a [f64],
    /// `psi_logs(proportions)`.
    pub ln_proportions: &'a [f64],
    pub mean: f64,
    pub std: f64,
}

/// Compares `current` with `reference` (both on `layout`). The KS p-value counts `effective` sizes instead of the
/// raw ones (consecutive frames of a camera are far from independent). `scratch` holds the PSI bins between calls.
pub fn compare(
    layout: &BinLayout,
    reference: &Histogram,
    baseline_mean: f64,
    baseline_std: f64,
    current: &Histogram,
    effective: EffectiveN,
    scratch: &mut [Vec<f64>; 3],
) -> MetricDrift {
    let [p, ln_p, q] = scratch;
    reference.coarse_proportions(layout, p);
    psi_logs(p, ln_p);
    let reference = Reference {
        layout,
        histogram: reference,
        proportions: p,
        ln_proportions: ln_p,
        mean: baseline_mean,
        std: baseline_std,
    };
    compare_to(&reference, current, effective, q)
}

/// `compare` against a reference whose proportions are already known; `q` holds the window's PSI/JS counts between
/// calls.
pub fn compare_to(
    reference: &Reference<'_>,
    current: &Histogram,
    effective: EffectiveN,
    q: &mut Vec<f64>,
) -> MetricDrift {
    let (layout, p, ln_p) = (reference.layout, reference.proportions, reference.ln_proportions);
    let (baseline_mean, baseline_std) = (reference.mean, reference.std);
    let reference = reference.histogram;
    let Distances { ks: d, wasserstein: w } = distances(layout, reference, current, q);
    let has = current.n > 0 && reference.n > 0;
    let share = |x: u64| {
        if current.n > 0 { x as f64 / current.n as f64 } else { 0.0 }
    };
    let n_ref = sane_effective(effective.reference, reference.n);
    let n_cur = sane_effective(effective.current, current.n);
    let (psi, js_distance) = if has { psi_js(p, ln_p, q, current.n) } else { (0.0, 0.0) };
    MetricDrift {
        n: current.n,
        n_effective: n_cur,
        mean: current.mean(layout),
        baseline_mean,
        psi,
        ks_statistic: d,
        ks_p_value: ks_p_value(d, n_ref, n_cur),
        js_distance,
        wasserstein_norm: if baseline_std > 0.0 {
            Some(w / baseline_std)
        } else if w == 0.0 {
            Some(0.0)
        } else {
            None
        },
        outliers_moderate: share(current.outliers_moderate),
        outliers_severe: share(current.outliers_severe),
        out_of_range: current.out_of_range(),
        // Under "no change" the window varies as the baseline does: the baseline's spread on both sides (the
        // window's own spread would include the very shift under test when a fault starts mid-window).
        mean_p_value: current
            .mean(layout)
            .map_or(1.0, |m| mean_shift_p_value(baseline_mean, baseline_std, n_ref, m, baseline_std, n_cur)),
    }
}

/// `a.max(b)` for values that are never NaN: one `maxsd`, where `f64::max`'s NaN handling adds a compare and a
/// blend to the loop-carried chain of a running maximum.
#[inline(always)]
fn larger(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

/// The two distances `distances` returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distances {
    pub ks: f64,
    pub wasserstein: f64,
}

/// `ks_statistic` and `wasserstein` in one pass over the fine bins, and the window's count of values in each PSI/JS
/// bin (into `counts`: `coarse_proportions` times `current.n`, exact): an evaluation runs this for every metric of
/// every slice. KS and Wasserstein equal the definitions up to rounding (the integral is summed in another order;
/// property test `one_pass_distances_match_the_three_definitions`).
pub fn distances(layout: &BinLayout, reference: &Histogram, current: &Histogram, counts: &mut Vec<f64>) -> Distances {
    let none = Distances { ks: 0.0, wasserstein: 0.0 };
    counts.clear();
    counts.resize(layout.coarse_bins(), 0.0);
    let bins = layout.bins();
    let cur = &current.counts[..bins];
    if current.n == 0 {
        return none;
    }
    for (count, bins) in counts.iter_mut().zip(layout.coarse_ranges()) {
        *count = coarse_count(&cur[bins]);
    }
    if reference.n == 0 {
        return none;
    }
    let refc = &reference.counts[..bins];
    let (n, m) = (reference.n as f64, current.n as f64);
    let (inv_n, inv_m) = (1.0 / n, 1.0 / m);
    let edges = layout.edges();
    let mut w = (current.tail_lo_dist / m - reference.tail_lo_dist / n).abs()
        + (current.tail_hi_dist / m - reference.tail_hi_dist / n).abs();
    // `a` is the CDF difference at the right edge of the bin so far, from the cumulative counts of both sides:
    // Wasserstein integrates |a| over the bins, and KS is its largest |a|. The integral over a bin is a trapezoid,
    // w (|a| + |b|) / 2, except where the CDFs cross inside it: two triangles, w (a^2 + b^2) / (2 (|a| + |b|)),
    // which is the trapezoid less w |a| |b| / (|a| + |b|). So the loop sums w (|a| + |b|) and, on the few crossing
    // bins only, that correction. The PSI/JS proportions are sums of runs of the window's counts, taken above.
    let fine = Bins { cur, refc, edges };
    let (ks, twice_trapezoids, crossings) = match (i64::try_from(reference.n), i64::try_from(current.n)) {
        (Ok(ni), Ok(mi)) if ni.checked_mul(mi).is_some_and(|nm| nm <= 1 << 62) => {
            // In integers, scaled by n m: (F_cur - F_ref) n m = fc n - fr m, exact, and at most n m. Most of the
            // work moves to the integer units, leaving ~5 floating-point operations a bin (in floating point the
            // loop takes ~13, and is bound by them).
            let inv_nm = inv_n * inv_m;
            // Wrapping: only a histogram whose counts add up to more than its `n` (a crafted checkpoint) could
            // overflow, and it gets meaningless distances rather than a panic.
            let (ks, twice, crossings) = fine.walk(|fc, fr| fc.wrapping_mul(ni).wrapping_sub(fr.wrapping_mul(mi)));
            (ks as f64 * inv_nm, twice * inv_nm, crossings * inv_nm)
        }
        // Counts too large for that (n m past 2^62): the same sums in floating point.
        _ => fine.walk(|fc, fr| fc as f64 * inv_m - fr as f64 * inv_n),
    };
    w += 0.5 * twice_trapezoids - crossings;
    Distances { ks: ks.min(1.0), wasserstein: w }
}

/// The fine bins `distances` walks: the window's and the reference's counts, the edges.
struct Bins<'a> {
    cur: &'a [u32],
    refc: &'a [u32],
    edges: &'a [f64],
}

/// A CDF difference as `Bins::walk` carries it: exact integers scaled by n m, or a float.
trait Gap: Copy {
    fn abs(self) -> Self;
    fn larger(self, other: Self) -> Self;
    fn to_f64(self) -> f64;
    /// Of opposite signs (one of them may be zero).
    fn crosses(self, other: Self) -> bool;
}

impl Gap for i64 {
    fn abs(self) -> i64 {
        self.wrapping_abs()
    }
    fn larger(self, other: i64) -> i64 {
        self.max(other)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn crosses(self, other: i64) -> bool {
        (self ^ other) < 0
    }
}

impl Gap for f64 {
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    fn larger(self, other: f64) -> f64 {
        larger(self, other)
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn crosses(self, other: f64) -> bool {
        self * other < 0.0
    }
}

impl Bins<'_> {
    /// One pass: the largest |gap|, the sum of w (|a| + |b|) over the bins with a width, and the crossing
    /// bins' corrections w |a| |b| / (|a| + |b|) (in `gap`'s units). `gap(fc, fr)` is the CDF difference from the
    /// cumulative counts (exact in i64 for any number of 32-bit counts that fits in memory).
    #[inline(always)]
    fn walk<G: Gap>(&self, gap: impl Fn(i64, i64) -> G) -> (G, f64, f64) {
        let Bins { cur, refc, edges } = *self;
        let k = edges.len() - 1;
        let (mut fc, mut fr) = (i64::from(cur[0]), i64::from(refc[0]));
        let mut a = gap(fc, fr);
        let abs_a = a.abs();
        let mut abs_a_f = abs_a.to_f64();
        let mut ks = abs_a;
        let mut crossings = 0.0;
        let mut twice_trapezoids = 0.0;
        let mut left = edges[0];
        for ((&c, &r), &right) in cur[1..=k].iter().zip(&refc[1..=k]).zip(&edges[1..]) {
            fc += i64::from(c);
            fr += i64::from(r);
            let b = gap(fc, fr);
            let abs_b = b.abs();
            ks = ks.larger(abs_b);
            let width = right - left;
            left = right;
            let abs_b_f = abs_b.to_f64();
            twice_trapezoids += width * (abs_a_f + abs_b_f);
            if a.crosses(b) {
                crossings += width * (abs_a_f * abs_b_f / (abs_a_f + abs_b_f));
            }
            (a, abs_a_f) = (b, abs_b_f);
        }
        // The maximum's bin and the upper tail: no width, but they count for KS.
        for bin in k + 1..cur.len() {
            fc += i64::from(cur[bin]);
            fr += i64::from(refc[bin]);
            ks = ks.larger(gap(fc, fr).abs());
        }
        (ks, twice_trapezoids, crossings)
    }
}

#[cfg(test)]
mod mean_shift_tests {
    use super::*;

    #[test]
    fn welch_z_matches_the_normal_tail() {
        // z = 0.2 / sqrt(0.006^2 + 0.006^2) = 23.6: certain even on one effective sample per side.
        assert!(mean_shift_p_value(0.43, 0.006, 1.0, 0.23, 0.006, 1.0) < 1e-12);
        // A 0.003 move on the same spread is nothing (z = 0.35, p = 0.72).
        let p = mean_shift_p_value(0.439, 0.006, 1.0, 0.436, 0.006, 1.0);
        assert!((p - 0.7237).abs() < 1e-3, "{p}");
        // scipy.stats.norm.sf(1.96) * 2 = 0.04999579
        let p = mean_shift_p_value(0.0, 1.0, 2.0, 1.96, 1.0, 2.0);
        assert!((p - 0.049_995_79).abs() < 1e-6, "{p}");
        assert_eq!(mean_shift_p_value(0.5, 0.0, 10.0, 0.5, 0.0, 10.0), 1.0);
        assert_eq!(mean_shift_p_value(0.5, 0.0, 10.0, 0.6, 0.0, 10.0), 0.0);
        assert_eq!(mean_shift_p_value(0.5, 0.1, 0.0, 0.6, 0.1, 10.0), 1.0);
    }
}

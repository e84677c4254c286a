//! Drift statistics against scipy/numpy (fixtures/reference/*.json from scripts/reference/make_fixtures.py):
//! bins identical to numpy's, PSI (standard: baseline deciles, open-ended ends, empty bins at 1e-4) and JS to 1e-9
//! on those bins (the same computation in another language: only float rounding differs), out-of-range share
//! exactly, KS within 0.01 of exact `ks_2samp` (histogram resolution), KS p-values within 0.005 absolute or 10 %
//! relative of scipy's asymptotic value (scipy rounds Ne to an integer), chi-square as `chi2_contingency`.

mod common;

use framewatch_metrics::baseline::metric_from_sorted;
use framewatch_metrics::histogram::Histogram;
use framewatch_metrics::stats::{EffectiveN, chi_square_homogeneity, compare, ks_p_value};

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

#[test]
fn drift_statistics_match_scipy_and_numpy() {
    let fixture = common::read_json("reference/drift.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let mut reference = floats(&case["reference"]);
        let current = floats(&case["current"]);
        reference.sort_by(f64::total_cmp);
        let base = metric_from_sorted(name, &reference, 0, 100).expect("baseline");
        assert_eq!(base.layout.edges(), &floats(&case["edges"])[..], "{name}: edges");
        assert_eq!(base.layout.coarse_cuts(), &floats(&case["psi_cuts"])[..], "{name}: psi cuts");
        let mut cur = Histogram::new(&base.layout);
        for &v in &current {
            cur.record(&base.layout, Some(v));
        }
        let mut scratch = [Vec::new(), Vec::new(), Vec::new()];
        // The samples are independent draws: the p-value counts raw sizes, as scipy does.
        let raw = EffectiveN::raw(&base.histogram, &cur);
        let d = compare(&base.layout, &base.histogram, base.mean, base.std, &cur, raw, &mut scratch);
        assert_eq!(d.n_effective, current.len() as f64, "{name}: n_effective of raw sizes");

        let close = |got: f64, want: f64, tol: f64, what: &str| {
            assert!((got - want).abs() <= tol, "{name}: {what} = {got}, reference {want} (tolerance {tol})");
        };
        close(d.psi, case["psi"].as_f64().expect("psi"), 1e-9, "psi");
        close(d.js_distance, case["js_distance"].as_f64().expect("js"), 1e-9, "js_distance");
        close(d.out_of_range, case["out_of_range"].as_f64().expect("out_of_range"), 1e-12, "out_of_range");
        close(d.ks_statistic, case["ks_statistic"].as_f64().expect("ks"), 0.01, "ks_statistic (histogram vs exact)");
        assert!(
            d.ks_statistic <= case["ks_statistic"].as_f64().expect("ks") + 1e-12,
            "{name}: KS on bins is a lower bound"
        );
        close(d.outliers_moderate, case["outliers_moderate"].as_f64().expect("om"), 1e-12, "outliers_moderate");
        close(d.outliers_severe, case["outliers_severe"].as_f64().expect("os"), 1e-12, "outliers_severe");
        close(d.baseline_mean, case["baseline_mean"].as_f64().expect("bm"), 1e-9, "baseline_mean");
        close(d.mean.expect("mean"), case["current_mean"].as_f64().expect("cm"), 1e-9, "mean");
        close(base.std, case["baseline_std"].as_f64().expect("std"), 1e-9, "baseline std");
        // Wasserstein on histograms assumes values spread evenly within each percentile bin.
        if let Some(w) = case["wasserstein_norm"].as_f64() {
            let got = d.wasserstein_norm.expect("wasserstein");
            close(got, w, 0.02 + 0.05 * w, "wasserstein_norm");
        }
        // p-value at the exact D: our asymptotic formula vs scipy's
        let exact_d = case["ks_statistic"].as_f64().expect("ks");
        let want_p = case["ks_p_value_asymp"].as_f64().expect("p");
        let got_p = ks_p_value(exact_d, reference.len() as f64, current.len() as f64);
        assert!(
            (got_p - want_p).abs() <= 0.005 || (got_p - want_p).abs() <= 0.1 * want_p,
            "{name}: p = {got_p}, scipy asymp {want_p}"
        );
    }
}

#[test]
fn ks_p_values_match_scipy_across_sizes_including_d_zero_and_huge_n() {
    let fixture = common::read_json("reference/ks_pvalues.json");
    let rows = fixture["rows"].as_array().expect("rows");
    for r in rows {
        let (d, n, m, want) = (
            r["d"].as_f64().expect("d"),
            r["n"].as_u64().expect("n"),
            r["m"].as_u64().expect("m"),
            r["p"].as_f64().expect("p"),
        );
        let got = ks_p_value(d, n as f64, m as f64);
        assert!((0.0..=1.0).contains(&got));
        assert!(
            (got - want).abs() <= 0.005 || (got - want).abs() <= 0.1 * want,
            "D={d} n={n} m={m}: p = {got}, scipy {want}"
        );
    }
}

#[test]
fn chi_square_matches_scipy_chi2_contingency() {
    let fixture = common::read_json("reference/chi2.json");
    for r in fixture["rows"].as_array().expect("rows") {
        let t: Vec<Vec<u64>> = r["table"]
            .as_array()
            .expect("table")
            .iter()
            .map(|row| row.as_array().expect("row").iter().map(|x| x.as_u64().expect("count")).collect())
            .collect();
        let chi = chi_square_homogeneity(t[0].iter().copied().zip(t[1].iter().copied())).expect("chi2");
        let want = |k: &str| r[k].as_f64().expect(k);
        assert!((chi.statistic - want("statistic")).abs() < 1e-9 * want("statistic").max(1.0), "{t:?}");
        assert_eq!(chi.dof, r["dof"].as_u64().expect("dof"));
        assert!((chi.p_value - want("p_value")).abs() < 1e-9, "{t:?}: p {} vs {}", chi.p_value, want("p_value"));
        assert!((chi.cramers_v - want("cramers_v")).abs() < 1e-9);
    }
}

//! Rendering shared by the offline drift report (`cli::html`) and the live web view (`web`): HTML escaping, number
//! formatting, the baseline-vs-current histogram as inline SVG, a sparkline, and small JPEG thumbnails. A leaf: it
//! knows pixels and numbers, not slices, windows or requests.

use std::fmt::Write as _;

use framewatch_metrics::RgbImage;
use framewatch_metrics::analysis::box_downscale;

/// Longest side of a thumbnail, pixels (at most; the downscale factor is an integer).
pub const THUMBNAIL_SIDE: usize = 160;
/// Equal-width bars per histogram chart.
const CHART_BINS: usize = 40;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters stay as they are).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A number as charts and tables show it: integers plain, large values with one decimal, small ones with four.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        format!("{x}")
    } else if x.fract() == 0.0 && x.abs() < 1e9 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

/// One series of a histogram chart.
#[derive(Debug, Clone, Copy)]
pub enum Series<'a> {
    /// Counts over a baseline bin layout with `edges`: [below the first edge, one per edge interval, == the last
    /// edge, above it] (`framewatch_metrics::histogram`). `range` is the observed (min, max) when known: the tails
    /// are drawn at the chart's ends, which it widens.
    Binned { counts: &'a [u32], range: Option<(f64, f64)> },
    /// Raw values (the offline report's current frames: (frame number, value)).
    Values(&'a [(u32, f64)]),
}

impl Series<'_> {
    fn range(&self) -> Option<(f64, f64)> {
        match self {
            Series::Binned { range, .. } => range.filter(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo <= hi),
            Series::Values(values) => values.iter().fold(None, |r, &(_, v)| match r {
                None => Some((v, v)),
                Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
            }),
        }
    }

    /// Spreads the series over `CHART_BINS` equal bars starting at `lo`, each `width` wide (a fine bin's count is
    /// shared in proportion to its overlap with each bar).
    fn bars(&self, edges: &[f64], lo: f64, width: f64) -> [f64; CHART_BINS] {
        let bar_of = |v: f64| (((v - lo) / width).max(0.0) as usize).min(CHART_BINS - 1);
        let mut out = [0.0_f64; CHART_BINS];
        match self {
            Series::Values(values) => {
                for &(_, v) in *values {
                    out[bar_of(v)] += 1.0;
                }
            }
            Series::Binned { counts, .. } => {
                let Some(&last_edge) = edges.last() else { return out };
                let k = edges.len() - 1;
                for i in 1..=k {
                    let c = f64::from(counts.get(i).copied().unwrap_or(0));
                    if c == 0.0 {
                        continue;
                    }
                    let (a, b) = (edges[i - 1], edges[i]);
                    if b <= a {
                        out[bar_of(a)] += c;
                        continue;
                    }
                    let (first, last) = (bar_of(a), bar_of(b));
                    for (j, slot) in out.iter_mut().enumerate().take(last + 1).skip(first) {
                        let (s, e) = (lo + j as f64 * width, lo + (j + 1) as f64 * width);
                        let overlap = (b.min(e) - a.max(s)).max(0.0);
                        *slot += c * overlap / (b - a);
                    }
                }
                // The maximum (bin K+1) and anything recorded in the tails sit at the range's ends.
                out[bar_of(last_edge)] += f64::from(counts.get(k + 1).copied().unwrap_or(0));
                out[0] += f64::from(counts.first().copied().unwrap_or(0));
                out[CHART_BINS - 1] += f64::from(counts.get(k + 2).copied().unwrap_or(0));
            }
        }
        let total: f64 = out.iter().sum();
        if total > 0.0 {
            out.iter_mut().for_each(|x| *x /= total);
        }
        out
    }
}

/// One inline SVG overlaying the baseline and the current series as shares of their totals, over 40 equal-width
/// bars spanning the baseline's edges widened to the current range, with the baseline median as a dashed line.
pub fn histogram_svg(h: &mut String, edges: &[f64], baseline: Series, current: Series, median: f64) {
    let (w, ht, pad) = (360.0_f64, 120.0_f64, 4.0_f64);
    let (mut lo, mut hi) = match (edges.first(), edges.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (median, median),
    };
    for r in [baseline.range(), current.range()].into_iter().flatten() {
        lo = lo.min(r.0);
        hi = hi.max(r.1);
    }
    if hi <= lo {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let width = (hi - lo) / CHART_BINS as f64;
    let base = baseline.bars(edges, lo, width);
    let cur = current.bars(edges, lo, width);
    let top = base.iter().chain(&cur).copied().fold(0.0_f64, f64::max).max(1e-12);
    let plot_h = ht - 18.0;
    let bar_w = (w - 2.0 * pad) / CHART_BINS as f64;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\">"
    );
    let _ = write!(h, "<line class=\"axis\" x1=\"{pad}\" y1=\"{plot_h}\" x2=\"{}\" y2=\"{plot_h}\"/>", w - pad);
    for (series, class, title) in [(&base, "base", "baseline"), (&cur, "cur", "current")] {
        let _ = write!(h, "<g class=\"{class}\">");
        for (j, &s) in series.iter().enumerate() {
            if s <= 0.0 {
                continue;
            }
            let bh = (s / top * (plot_h - 4.0)).max(1.0);
            let _ = write!(
                h,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{:.1}% of {title} in [{}, {})</title></rect>",
                pad + j as f64 * bar_w,
                plot_h - bh,
                (bar_w - 0.5).max(0.5),
                bh,
                s * 100.0,
                fmt_num(lo + j as f64 * width),
                fmt_num(lo + (j + 1) as f64 * width),
            );
        }
        h.push_str("</g>");
    }
    if median.is_finite() {
        let mx = pad + (median - lo) / (hi - lo) * (w - 2.0 * pad);
        let _ = write!(h, "<line class=\"median\" x1=\"{mx:.1}\" y1=\"2\" x2=\"{mx:.1}\" y2=\"{plot_h}\"/>");
    }
    let _ = writeln!(
        h,
        "<text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        ht - 4.0,
        fmt_num(lo),
        w - pad,
        ht - 4.0,
        fmt_num(hi)
    );
}

/// A small line chart of `values` (oldest first) scaled to [0, max(values, floor)], with a dashed line at
/// `threshold` when it is within the scale; nothing drawn for fewer than two finite values.
pub fn sparkline_svg(h: &mut String, values: &[f32], threshold: f64, floor: f64) {
    let (w, ht) = (120.0_f64, 28.0_f64);
    let finite: Vec<(usize, f64)> =
        values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| (i, f64::from(*v))).collect();
    let _ = write!(h, "<svg class=\"spark\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\">");
    if finite.len() >= 2 {
        let top = finite.iter().map(|p| p.1).fold(floor, f64::max).max(1e-12);
        let step = w / (values.len().max(2) - 1) as f64;
        let y = |v: f64| ht - 2.0 - (v / top).clamp(0.0, 1.0) * (ht - 4.0);
        if threshold.is_finite() && threshold <= top {
            let ty = y(threshold);
            let _ = write!(h, "<line class=\"threshold\" x1=\"0\" y1=\"{ty:.1}\" x2=\"{w}\" y2=\"{ty:.1}\"/>");
        }
        h.push_str("<polyline points=\"");
        for (i, v) in &finite {
            let _ = write!(h, "{:.1},{:.1} ", *i as f64 * step, y(*v));
        }
        h.push_str("\"/>");
    }
    h.push_str("</svg>");
}

/// Reused buffers for making thumbnails (one per thread that makes them).
#[derive(Debug, Default)]
pub struct ThumbnailScratch {
    small: RgbImage,
    row_acc: Vec<u32>,
}

/// Why an image has no thumbnail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThumbnailError {
    #[error("image too small for a thumbnail")]
    Empty,
    #[error("thumbnail size {0}x{1} out of range")]
    TooLarge(usize, usize),
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// A JPEG of `img` box-downscaled by the smallest integer factor that brings its long side to at most
/// `THUMBNAIL_SIDE` (quality 80). Allocates only the JPEG itself once `scratch` has grown.
pub fn thumbnail_jpeg(img: &RgbImage, scratch: &mut ThumbnailScratch) -> Result<Vec<u8>, ThumbnailError> {
    if img.width == 0 || img.height == 0 {
        return Err(ThumbnailError::Empty);
    }
    let k = img.width.max(img.height).div_ceil(THUMBNAIL_SIDE).max(1);
    let small: &RgbImage = if k == 1 {
        img
    } else {
        box_downscale(img, k, &mut scratch.small, &mut scratch.row_acc);
        &scratch.small
    };
    let (w, ht) = (small.width, small.height);
    if w == 0 || ht == 0 {
        return Err(ThumbnailError::Empty);
    }
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(ht)) else {
        return Err(ThumbnailError::TooLarge(w, ht));
    };
    let mut jpeg = Vec::with_capacity(8 << 10);
    jpeg_encoder::Encoder::new(&mut jpeg, 80)
        .encode(&small.data[..w * ht * 3], w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape("<script>a&'b\"</script>"), "&lt;script&gt;a&amp;&#39;b&quot;&lt;/script&gt;");
        assert_eq!(escape("plain/path.jpg"), "plain/path.jpg");
    }

    #[test]
    fn url_encode_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(url_encode("camera_id=cam-1,x"), "camera_id%3Dcam-1%2Cx");
        assert_eq!(url_encode("a b&\"<é"), "a%20b%26%22%3C%C3%A9");
    }

    #[test]
    fn binned_and_value_series_give_the_same_bars_for_the_same_frames() {
        // Edges 0..4; values 0.5, 1.5, 1.5, 3.5 fall in fine bins 1, 2, 2, 4.
        let edges = [0.0, 1.0, 2.0, 3.0, 4.0];
        let counts = [0, 1, 2, 0, 1, 0, 0];
        let values = [(0, 0.5), (1, 1.5), (2, 1.5), (3, 3.5)];
        let (mut a, mut b) = (String::new(), String::new());
        histogram_svg(&mut a, &edges, Series::Binned { counts: &counts, range: None }, Series::Values(&values), 2.0);
        histogram_svg(&mut b, &edges, Series::Values(&values), Series::Binned { counts: &counts, range: None }, 2.0);
        let rects = |s: &str| s.matches("<rect").count();
        // Each fine bin spreads over 10 bars; each value lands in one bar.
        assert_eq!(rects(&a), 30 + 3);
        assert_eq!(rects(&b), 3 + 30);
        assert!(a.contains("25.0% of current in [0.5000, 0.6000)"), "{a}");
    }

    #[test]
    fn a_constant_baseline_with_one_edge_still_draws_its_bar() {
        // One edge: counts are [below, == max, above].
        let mut h = String::new();
        histogram_svg(&mut h, &[5.0], Series::Binned { counts: &[0, 7, 0], range: None }, Series::Values(&[]), 5.0);
        assert!(h.contains("100.0% of baseline"), "{h}");
    }

    #[test]
    fn sparkline_draws_a_point_per_finite_value_and_nothing_for_one() {
        let mut s = String::new();
        sparkline_svg(&mut s, &[0.1, f32::NAN, 0.3, 0.2], 0.25, 0.5);
        let points = s.split("points=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
        assert_eq!(points.split_whitespace().count(), 3, "{s}");
        assert!(s.contains("class=\"threshold\""));
        let mut one = String::new();
        sparkline_svg(&mut one, &[0.1], 0.25, 0.5);
        assert!(!one.contains("polyline"));
    }

    #[test]
    fn thumbnail_is_a_small_jpeg_with_the_long_side_at_most_160() {
        let img = RgbImage { width: 640, height: 360, data: vec![90; 640 * 360 * 3] };
        let jpeg = thumbnail_jpeg(&img, &mut ThumbnailScratch::default()).expect("thumbnail");
        let mut back = RgbImage::default();
        framewatch_metrics::decode::decode_into(&jpeg, &framewatch_metrics::DecodeLimits::default(), &mut back)
            .expect("decodes");
        assert_eq!((back.width, back.height), (160, 90));
        assert_eq!(thumbnail_jpeg(&RgbImage::default(), &mut ThumbnailScratch::default()), Err(ThumbnailError::Empty));
    }
}

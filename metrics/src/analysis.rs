//! The per-frame pixel work: an optional box downscale to the analysis resolution, then two fused passes (colour
//! pass over RGB, neighbourhood pass over grey) that produce every data metric at once. Buffers live in
//! `PixelScratch` and are reused frame after frame, so the hot path does not allocate once warmed up.

use crate::decode::RgbImage;

/// How frames are analysed. Recorded in every baseline: statistics computed under different settings are not
/// comparable (sharpness and noise depend on scale), so comparing them is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisSettings {
    /// Frames whose longer side exceeds this are analysed smaller, by the integer factor `factor` gives
    /// (e.g. 1920x1080 -> 960x540 at the default 1280). 0 = never downscale.
    pub max_side: u32,
    /// Grey level at or below which a pixel counts as clipped shadow (`dark_fraction`).
    pub dark_level: u8,
    /// Grey level at or above which a pixel counts as clipped highlight (`bright_fraction`).
    pub bright_level: u8,
    /// How a frame is brought down to the analysis resolution. A baseline written before this setting existed
    /// has none, and was made with `box`; `box` is not written either, so such a baseline writes the same bytes
    /// as before (the service's checkpoints fingerprint them).
    #[serde(default = "Downscale::before_the_setting", skip_serializing_if = "Downscale::is_box")]
    pub downscale: Downscale,
}

/// How a frame larger than `max_side` is brought to the analysis resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downscale {
    /// Decode in full, then average k x k blocks, k the smallest integer that fits `max_side`.
    Box,
    /// k rounded up to a power of two. A JPEG is scaled inside the decoder's inverse DCT (1/2, 1/4 or 1/8, by
    /// libjpeg-turbo), which skips most of the decoding work; beyond 1/8, and for PNG and raw frames, the rest is
    /// box-averaged. Faster for every frame larger than `max_side` (BENCHMARKS.md, "DCT-domain scaling").
    Dct,
}

impl Downscale {
    fn before_the_setting() -> Downscale {
        Downscale::Box
    }

    fn is_box(&self) -> bool {
        *self == Downscale::Box
    }
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings { max_side: 1280, dark_level: 10, bright_level: 245, downscale: Downscale::Dct }
    }
}

impl AnalysisSettings {
    /// Integer downscale factor for a frame of this size.
    pub fn factor(&self, width: usize, height: usize) -> usize {
        let side = width.max(height);
        if self.max_side == 0 || side <= self.max_side as usize {
            return 1;
        }
        let k = side.div_ceil(self.max_side as usize);
        match self.downscale {
            Downscale::Box => k,
            Downscale::Dct => k.next_power_of_two(),
        }
    }

    /// The part of `factor` a JPEG decoder can do in its inverse DCT (1, 2, 4 or 8); the rest is box-averaged.
    pub fn idct_factor(&self, width: usize, height: usize) -> usize {
        match self.downscale {
            Downscale::Box => 1,
            Downscale::Dct => self.factor(width, height).min(8),
        }
    }
}

/// Reusable buffers for one scoring worker.
#[derive(Debug, Default)]
pub struct PixelScratch {
    pub(crate) analysis: RgbImage,
    pub(crate) grey: Vec<u8>,
    /// Row sums used by the box downscale.
    row_acc: Vec<u32>,
}

/// Everything the fused passes measured on one frame, from which the data metrics are read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelStats {
    pub pixels: u64,
    pub sum_r: u64,
    pub sum_g: u64,
    pub sum_b: u64,
    /// Sum of r^2 + g^2 + b^2.
    pub sum_sq: u64,
    /// Sum of OpenCV 8-bit HSV saturation (0..255).
    pub sum_s: u64,
    pub red_px: u64,
    pub green_px: u64,
    pub blue_px: u64,
    /// Colourfulness opponent channels, kept doubled to stay integral: rg = r - g, yb2 = r + g - 2b.
    pub sum_rg: i64,
    pub sum_rg_sq: u64,
    pub sum_yb2: i64,
    pub sum_yb2_sq: u64,
    pub grey_hist: [u32; 256],
    /// Laplacian (3x3, OpenCV ksize=1 kernel) over interior pixels: count, sum, sum of squares.
    pub lap_n: u64,
    pub lap_sum: i64,
    pub lap_sum_sq: u64,
    /// Immerkaer noise operator: sum of absolute responses over interior pixels.
    pub noise_abs_sum: u64,
}

impl Default for PixelStats {
    fn default() -> Self {
        PixelStats {
            pixels: 0,
            sum_r: 0,
            sum_g: 0,
            sum_b: 0,
            sum_sq: 0,
            sum_s: 0,
            red_px: 0,
            green_px: 0,
            blue_px: 0,
            sum_rg: 0,
            sum_rg_sq: 0,
            sum_yb2: 0,
            sum_yb2_sq: 0,
            grey_hist: [0; 256],
            lap_n: 0,
            lap_sum: 0,
            lap_sum_sq: 0,
            noise_abs_sum: 0,
        }
    }
}

const HSV_SHIFT: u32 = 12;

/// OpenCV's `sdiv_table` and `hdiv_table180` for 8-bit RGB->HSV, built once at compile time would need const
/// float math; they are small, so they are built on first use per scratch instead.
#[derive(Debug)]
pub(crate) struct HsvTables {
    sdiv: [i32; 256],
    hdiv: [i32; 256],
}

impl HsvTables {
    pub(crate) fn new() -> HsvTables {
        let mut sdiv = [0i32; 256];
        let mut hdiv = [0i32; 256];
        for i in 1..256 {
            sdiv[i] = ((255u32 << HSV_SHIFT) as f64 / i as f64).round_ties_even() as i32;
            hdiv[i] = ((180u32 << HSV_SHIFT) as f64 / (6.0 * i as f64)).round_ties_even() as i32;
        }
        HsvTables { sdiv, hdiv }
    }
}

fn hsv_tables() -> &'static HsvTables {
    static TABLES: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(HsvTables::new)
}

/// OpenCV's exact 8-bit RGB->HSV (H in 0..180, S and V in 0..255), as `cv2.cvtColor(rgb, COLOR_RGB2HSV)`.
#[inline(always)]
pub fn opencv_hsv(r: u8, g: u8, b: u8) -> (i32, i32, i32) {
    let t = hsv_tables();
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let v = r.max(g).max(b);
    let vmin = r.min(g).min(b);
    let diff = v - vmin;
    let s = (diff * t.sdiv[v as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    let h = opencv_hue(r, g, b, v, diff, t);
    (h, s, v)
}

#[inline(always)]
fn opencv_hue(r: i32, g: i32, b: i32, v: i32, diff: i32, t: &HsvTables) -> i32 {
    let h = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * diff
    } else {
        r - g + 4 * diff
    };
    let h = (h * t.hdiv[diff as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    h + ((h >> 31) & 180)
}

/// OpenCV's fixed-point BT.601 grey (`COLOR_RGB2GRAY` in OpenCV 4.x/5.x, checked on all 2^24 colours):
/// (9798 R + 19235 G + 3735 B + 2^14) >> 15.
#[inline(always)]
pub fn opencv_grey(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 9798 + u32::from(g) * 19235 + u32::from(b) * 3735 + 16384) >> 15) as u8
}

/// Box-averages `src` by `k` into `dst` (rounding to nearest); trailing rows/columns that do not fill a whole
/// k x k block are dropped, so every analysis pixel averages exactly k*k source pixels.
#[inline(always)]
pub fn box_downscale(src: &RgbImage, k: usize, dst: &mut RgbImage, row_acc: &mut Vec<u32>) {
    let (w, h) = (src.width / k, src.height / k);
    dst.reset(w, h);
    if w == 0 || h == 0 {
        return;
    }
    let area = (k * k) as u64;
    // Exact rounding division by `area` as a multiply: for numerators below 2^20 (k <= 64) the reciprocal's error
    // stays under one part in 2^12, less than the 1/area gap to the next integer.
    let recip = (1u64 << 32) / area + 1;
    let half = area / 2;
    let used = w * k * 3;
    row_acc.clear();
    row_acc.resize(used, 0);
    let src_stride = src.width * 3;
    if k == 2 {
        // The common case (1080p at the default max_side): both rows and both columns in one pass.
        for oy in 0..h {
            let r0 = &src.data[2 * oy * src_stride..][..used];
            let r1 = &src.data[(2 * oy + 1) * src_stride..][..used];
            let out = &mut dst.data[oy * w * 3..][..w * 3];
            for ((o, a), b) in out.chunks_exact_mut(3).zip(r0.chunks_exact(6)).zip(r1.chunks_exact(6)) {
                for c in 0..3 {
                    let sum = u16::from(a[c]) + u16::from(a[c + 3]) + u16::from(b[c]) + u16::from(b[c + 3]);
                    o[c] = ((sum + 2) >> 2) as u8;
                }
            }
        }
        return;
    }
    for oy in 0..h {
        // Vertical sums first: a straight add over whole rows, which the compiler vectorises.
        let first = &src.data[oy * k * src_stride..][..used];
        for (a, &b) in row_acc.iter_mut().zip(first) {
            *a = u32::from(b);
        }
        for dy in 1..k {
            let row = &src.data[(oy * k + dy) * src_stride..][..used];
            for (a, &b) in row_acc.iter_mut().zip(row) {
                *a += u32::from(b);
            }
        }
        let out = &mut dst.data[oy * w * 3..][..w * 3];
        for (o, block) in out.chunks_exact_mut(3).zip(row_acc.chunks_exact(3 * k)) {
            let mut sum = [0u32; 3];
            for px in block.chunks_exact(3) {
                sum[0] += px[0];
                sum[1] += px[1];
                sum[2] += px[2];
            }
            for c in 0..3 {
                o[c] = (((u64::from(sum[c]) + half) * recip) >> 32) as u8;
            }
        }
    }
}

/// Runs both fused passes over an analysis-resolution image. `grey` is filled as a side effect.
#[inline(always)]
pub fn pixel_stats(img: &RgbImage, grey: &mut Vec<u8>) -> PixelStats {
    let mut st = PixelStats { pixels: img.pixels() as u64, ..PixelStats::default() };
    colour_pass(img, grey, &mut st);
    neighbourhood_pass(grey, img.width, img.height, &mut st);
    st
}

/// Exact integer moments of the R, G, B channels of a run of pixels: sums, sums of squares and the cross products
/// needed for the opponent-colour variances (rg = R - G, yb2 = R + G - 2B).
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    sum: [u64; 3],
    sq: [u64; 3],
    rg: u64,
    gb: u64,
    rb: u64,
}

/// 16 interleaved RGB pixels: lane i of the accumulators always holds the same channel (i % 3), so the inner
/// loops are plain lane-wise adds and multiplies that the compiler vectorises, with no shuffles.
const LANES: usize = 48;

#[inline(always)]
fn moments(bytes: &[u8], m: &mut Moments) {
    let mut chunks = bytes.chunks_exact(LANES);
    // u32 lanes take at most 255^2 per chunk: flush every 4096 chunks, far below 2^32.
    loop {
        let (mut a1, mut a2, mut a3, mut a4) = ([0u32; LANES], [0u32; LANES], [0u32; LANES], [0u32; LANES]);
        let mut any = false;
        for c in chunks.by_ref().take(4096) {
            any = true;
            for i in 0..LANES {
                let v = u32::from(c[i]);
                a1[i] += v;
                a2[i] += v * v;
            }
            for i in 0..LANES - 1 {
                a3[i] += u32::from(c[i]) * u32::from(c[i + 1]);
            }
            for i in 0..LANES - 2 {
                a4[i] += u32::from(c[i]) * u32::from(c[i + 2]);
            }
        }
        if !any {
            break;
        }
        for i in 0..LANES {
            m.sum[i % 3] += u64::from(a1[i]);
            m.sq[i % 3] += u64::from(a2[i]);
            match i % 3 {
                0 => {
                    m.rg += u64::from(a3[i]);
                    m.rb += u64::from(a4[i]);
                }
                1 => m.gb += u64::from(a3[i]),
                _ => {}
            }
        }
    }
    for px in chunks.remainder().chunks_exact(3) {
        let (r, g, b) = (u64::from(px[0]), u64::from(px[1]), u64::from(px[2]));
        m.sum[0] += r;
        m.sum[1] += g;
        m.sum[2] += b;
        m.sq[0] += r * r;
        m.sq[1] += g * g;
        m.sq[2] += b * b;
        m.rg += r * g;
        m.gb += g * b;
        m.rb += r * b;
    }
}

#[inline(always)]
fn colour_pass(img: &RgbImage, grey: &mut Vec<u8>, st: &mut PixelStats) {
    let t = hsv_tables();
    grey.clear();
    grey.resize(img.pixels(), 0);
    let mut m = Moments::default();
    moments(&img.data, &mut m);
    let (r2, g2, b2) = (m.sq[0] as i128, m.sq[1] as i128, m.sq[2] as i128);
    let (rg, gb, rb) = (m.rg as i128, m.gb as i128, m.rb as i128);
    st.sum_r = m.sum[0];
    st.sum_g = m.sum[1];
    st.sum_b = m.sum[2];
    st.sum_sq = m.sq[0] + m.sq[1] + m.sq[2];
    st.sum_rg = m.sum[0] as i64 - m.sum[1] as i64;
    st.sum_yb2 = (m.sum[0] + m.sum[1]) as i64 - 2 * m.sum[2] as i64;
    // sum (r - g)^2 and sum (r + g - 2b)^2 expanded into the moments above: exact integers, no rounding.
    st.sum_rg_sq = (r2 + g2 - 2 * rg) as u64;
    st.sum_yb2_sq = (r2 + g2 + 4 * b2 + 2 * rg - 4 * rb - 4 * gb) as u64;

    for (g, px) in grey.iter_mut().zip(img.data.chunks_exact(3)) {
        let (r, gg, b) = (u32::from(px[0]), u32::from(px[1]), u32::from(px[2]));
        *g = ((r * 9798 + gg * 19235 + b * 3735 + 16384) >> 15) as u8;
    }
    // Scalar part: grey histogram (two interleaved copies avoid store-to-load stalls on runs of equal grey) and
    // OpenCV HSV saturation; hue only for pixels inside Encord's S/V box.
    let mut hist = [[0u32; 256]; 2];
    let mut ss = 0u64;
    let (mut red, mut green, mut blue) = (0u64, 0u64, 0u64);
    for (i, (px, &y)) in img.data.chunks_exact(3).zip(grey.iter()).enumerate() {
        hist[i & 1][usize::from(y)] += 1;
        let (ri, gi, bi) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
        let v = ri.max(gi).max(bi);
        let diff = v - ri.min(gi).min(bi);
        let s = (diff * t.sdiv[v as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        ss += s as u64;
        if s >= 50 && v >= 40 {
            let h = opencv_hue(ri, gi, bi, v, diff, t);
            if h <= 10 || (170..=179).contains(&h) {
                red += 1;
            } else if (35..=75).contains(&h) {
                green += 1;
            } else if (90..=130).contains(&h) {
                blue += 1;
            }
        }
    }
    st.sum_s = ss;
    st.red_px = red;
    st.green_px = green;
    st.blue_px = blue;
    for (i, h) in st.grey_hist.iter_mut().enumerate() {
        *h = hist[0][i] + hist[1][i];
    }
}

#[inline(always)]
fn neighbourhood_pass(grey: &[u8], w: usize, h: usize, st: &mut PixelStats) {
    if w < 3 || h < 3 {
        return;
    }
    let (mut lap_sum, mut lap_sq, mut noise) = (0i64, 0u64, 0u64);
    for y in 1..h - 1 {
        let up = &grey[(y - 1) * w..y * w];
        let mid = &grey[y * w..(y + 1) * w];
        let down = &grey[(y + 1) * w..(y + 2) * w];
        // Row-local i32 accumulators keep the inner loop narrow enough to vectorise; a row of 65k pixels
        // cannot overflow them (|lap| <= 1020, lap^2 <= 1_040_400 needs u64 though, so squares stay wide).
        let mut row_lap = 0i32;
        let mut row_sq = 0u64;
        let mut row_noise = 0u32;
        for x in 1..w - 1 {
            let c = i32::from(mid[x]);
            let n = i32::from(up[x]);
            let s = i32::from(down[x]);
            let wv = i32::from(mid[x - 1]);
            let e = i32::from(mid[x + 1]);
            let lap = n + s + wv + e - 4 * c;
            row_lap += lap;
            row_sq += (lap * lap) as u64;
            let diag = i32::from(up[x - 1]) + i32::from(up[x + 1]) + i32::from(down[x - 1]) + i32::from(down[x + 1]);
            // Immerkaer mask [1 -2 1; -2 4 -2; 1 -2 1] = diagonals - 2 * edges + 4 * centre.
            let resp = diag - 2 * (n + s + wv + e) + 4 * c;
            row_noise += resp.unsigned_abs();
        }
        lap_sum += i64::from(row_lap);
        lap_sq += row_sq;
        noise += u64::from(row_noise);
    }
    st.lap_n = ((w - 2) * (h - 2)) as u64;
    st.lap_sum = lap_sum;
    st.lap_sum_sq = lap_sq;
    st.noise_abs_sum = noise;
}

/// Data metric values derived from `PixelStats`. Definitions are in METRICS.md; keep the two in step.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct DataMetrics {
    pub brightness: f64,
    pub contrast: f64,
    pub sharpness: f64,
    pub saturation: f64,
    pub colorfulness: f64,
    pub entropy: f64,
    pub red: f64,
    pub green: f64,
    pub blue: f64,
    pub red_mean: f64,
    pub green_mean: f64,
    pub blue_mean: f64,
    pub dark_fraction: f64,
    pub bright_fraction: f64,
    pub noise: f64,
}

/// Laplacian standard deviation that maps to sharpness 1.0 (Encord's normaliser: 8 * 255).
pub const SHARPNESS_SCALE: f64 = 8.0 * 255.0;

impl DataMetrics {
    pub fn from_stats(st: &PixelStats, settings: &AnalysisSettings) -> DataMetrics {
        let n = st.pixels.max(1) as f64;
        let n3 = 3.0 * n;
        let total = (st.sum_r + st.sum_g + st.sum_b) as f64;
        let mean = total / n3;
        let var = (st.sum_sq as f64 / n3 - mean * mean).max(0.0);
        let lap_var = if st.lap_n > 0 {
            let m = st.lap_sum as f64 / st.lap_n as f64;
            (st.lap_sum_sq as f64 / st.lap_n as f64 - m * m).max(0.0)
        } else {
            0.0
        };
        let sharpness = (lap_var.sqrt() / SHARPNESS_SCALE).min(1.0);
        let (mrg, myb) = (st.sum_rg as f64 / n, st.sum_yb2 as f64 / n / 2.0);
        let vrg = (st.sum_rg_sq as f64 / n - mrg * mrg).max(0.0);
        let vyb = (st.sum_yb2_sq as f64 / n / 4.0 - myb * myb).max(0.0);
        let colorfulness = (vrg + vyb).sqrt() + 0.3 * (mrg * mrg + myb * myb).sqrt();
        let mut entropy = 0.0;
        for &c in st.grey_hist.iter().filter(|&&c| c > 0) {
            let p = f64::from(c) / n;
            entropy -= p * p.log2();
        }
        let dark: u64 = st.grey_hist[..=settings.dark_level as usize].iter().map(|&c| u64::from(c)).sum();
        let bright: u64 = st.grey_hist[settings.bright_level as usize..].iter().map(|&c| u64::from(c)).sum();
        let noise = if st.lap_n > 0 {
            (std::f64::consts::PI / 2.0).sqrt() * st.noise_abs_sum as f64 / (6.0 * st.lap_n as f64) / 255.0
        } else {
            0.0
        };
        let rel = |c: u64| {
            if total > 0.0 { c as f64 / total } else { 1.0 / 3.0 }
        };
        DataMetrics {
            brightness: mean / 255.0,
            contrast: var.sqrt() / 255.0,
            sharpness,
            saturation: st.sum_s as f64 / n / 255.0,
            colorfulness,
            entropy: entropy.max(0.0),
            red: st.red_px as f64 / n,
            green: st.green_px as f64 / n,
            blue: st.blue_px as f64 / n,
            red_mean: rel(st.sum_r),
            green_mean: rel(st.sum_g),
            blue_mean: rel(st.sum_b),
            dark_fraction: dark as f64 / n,
            bright_fraction: bright as f64 / n,
            noise,
        }
    }
}

/// Drops `v`'s allocation when it holds more than `bytes` (an outlier frame made it grow).
pub(crate) fn release_above<T>(v: &mut Vec<T>, bytes: usize) {
    if v.capacity().saturating_mul(std::mem::size_of::<T>()) > bytes {
        *v = Vec::new();
    }
}

impl PixelScratch {
    /// Frees every buffer above `bytes` (the next frame allocates what it needs again).
    pub fn release_above(&mut self, bytes: usize) {
        if self.analysis.data.capacity() > bytes {
            self.analysis = RgbImage::default();
        }
        release_above(&mut self.grey, bytes);
        release_above(&mut self.row_acc, bytes);
    }

    /// Bytes the buffers hold (capacity).
    pub fn held_bytes(&self) -> usize {
        self.analysis.data.capacity() + self.grey.capacity() + self.row_acc.capacity() * 4
    }

    /// Box-averages `src` by `k` (1: not at all) to the analysis resolution and measures it: fused statistics and
    /// perceptual hash. Afterwards `view` hands out the analysed image and its grey version for custom metrics.
    pub fn analyse(&mut self, src: &RgbImage, k: usize) -> (PixelStats, u64) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: `analyse_avx2` only requires AVX2 and FMA, and the CPU has both (checked just above).
            #[allow(unsafe_code)]
            return unsafe { analyse_avx2(self, src, k) };
        }
        analyse_portable(self, src, k)
    }

    /// The analysed image (the source itself when no downscale applies) and its grey pixels.
    pub fn view<'a>(&'a self, src: &'a RgbImage, k: usize) -> (&'a RgbImage, &'a [u8]) {
        let img = if k <= 1 { src } else { &self.analysis };
        (img, &self.grey)
    }
}

/// The same code compiled for AVX2: the integer passes vectorise twice as wide. Chosen at run time, so the binary
/// still runs on any x86-64 (measured: about 20 % less time per frame, BENCHMARKS.md).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn analyse_avx2(scratch: &mut PixelScratch, src: &RgbImage, k: usize) -> (PixelStats, u64) {
    analyse_portable(scratch, src, k)
}

#[inline(always)]
fn analyse_portable(scratch: &mut PixelScratch, src: &RgbImage, k: usize) -> (PixelStats, u64) {
    let PixelScratch { analysis, grey, row_acc } = scratch;
    let img: &RgbImage = if k <= 1 {
        src
    } else {
        box_downscale(src, k, analysis, row_acc);
        analysis
    };
    let stats = pixel_stats(img, grey);
    let hash = crate::phash::perceptual_hash_inline(grey, img.width, img.height);
    (stats, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_image(w: usize, h: usize, seed: u64) -> RgbImage {
        let mut s = seed;
        let data = (0..w * h * 3)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // smooth gradient plus noise, so every pass sees structure and saturated colours
                ((i % (w * 3)) as u64 / 7 + (s >> 58)) as u8
            })
            .collect();
        RgbImage { width: w, height: h, data }
    }

    #[test]
    fn cpu_specific_and_portable_analysis_agree_exactly() {
        let settings = AnalysisSettings::default();
        for (w, h) in [(333, 211), (2600, 1500), (1920, 1080), (3, 3), (1, 7)] {
            let img = noise_image(w, h, (w * h) as u64);
            let k = settings.factor(w, h);
            let mut a = PixelScratch::default();
            let portable = analyse_portable(&mut a, &img, k);
            let mut b = PixelScratch::default();
            let dispatched = b.analyse(&img, k);
            assert_eq!(portable, dispatched, "{w}x{h}");
            assert_eq!(a.grey, b.grey);
        }
    }

    #[test]
    fn settings_without_downscale_are_box_and_box_is_not_written() {
        let old: AnalysisSettings =
            serde_json::from_str(r#"{"max_side": 1280, "dark_level": 10, "bright_level": 245}"#).expect("old");
        assert_eq!(old.downscale, Downscale::Box);
        assert!(!serde_json::to_string(&old).expect("json").contains("downscale"));
        let new = AnalysisSettings::default();
        let text = serde_json::to_string(&new).expect("json");
        assert!(text.contains(r#""downscale":"dct""#), "{text}");
        assert_eq!(serde_json::from_str::<AnalysisSettings>(&text).expect("back"), new);
        // 1080p at the default 1280: by 2 either way; 1500 px over 500: box by 3, dct by 4 (a power of two).
        assert_eq!((old.factor(1920, 1080), new.factor(1920, 1080)), (2, 2));
        let small = |downscale| AnalysisSettings { max_side: 500, downscale, ..AnalysisSettings::default() };
        assert_eq!((small(Downscale::Box).factor(1500, 10), small(Downscale::Dct).factor(1500, 10)), (3, 4));
        assert_eq!(small(Downscale::Dct).idct_factor(8000, 10), 8, "beyond 1/8 the rest is box-averaged");
        assert_eq!(small(Downscale::Box).idct_factor(8000, 10), 1);
    }

    #[test]
    fn box_downscale_averages_blocks_with_rounding() {
        let img = RgbImage {
            width: 4,
            height: 2,
            data: vec![0, 0, 0, 1, 1, 1, 10, 20, 30, 11, 21, 31, 2, 2, 2, 3, 3, 3, 12, 22, 32, 13, 23, 33],
        };
        let (mut out, mut acc) = (RgbImage::default(), Vec::new());
        box_downscale(&img, 2, &mut out, &mut acc);
        assert_eq!((out.width, out.height), (2, 1));
        // (0+1+2+3)/4 = 1.5 -> 2 ; (10+11+12+13)/4 = 11.5 -> 12
        assert_eq!(out.data, vec![2, 2, 2, 12, 22, 32]);
        let mut out3 = RgbImage::default();
        box_downscale(&noise_image(9, 7, 1), 3, &mut out3, &mut acc);
        assert_eq!((out3.width, out3.height), (3, 2));
    }
}

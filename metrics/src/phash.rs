//! 64-bit perceptual hash (DCT pHash) of a frame's grey image. Not a metric with a distribution: an attribute used
//! to tell whether consecutive frames of a camera show the same scene (frozen camera) or a different one (moved).

const SIDE: usize = 32;
const KEEP: usize = 8;

fn cos_table() -> &'static [[f64; SIDE]; KEEP] {
    static TABLE: std::sync::OnceLock<[[f64; SIDE]; KEEP]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0.0; SIDE]; KEEP];
        for (u, row) in t.iter_mut().enumerate() {
            for (x, c) in row.iter_mut().enumerate() {
                *c = (std::f64::consts::PI * (2 * x + 1) as f64 * u as f64 / (2 * SIDE) as f64).cos();
            }
        }
        t
    })
}

/// pHash: area-average the grey image to 32x32, take the 8x8 lowest DCT-II frequencies, set bit i when
/// coefficient i exceeds their median. Bit 63 is coefficient (0,0).
pub fn perceptual_hash(grey: &[u8], width: usize, height: usize) -> u64 {
    perceptual_hash_inline(grey, width, height)
}

/// `perceptual_hash`, inlined into the scorer's CPU-specific analysis function.
#[inline(always)]
pub(crate) fn perceptual_hash_inline(grey: &[u8], width: usize, height: usize) -> u64 {
    if width == 0 || height == 0 || grey.len() < width * height {
        return 0;
    }
    let mut cells = [[0u64; SIDE]; SIDE];
    let mut counts = [[0u32; SIDE]; SIDE];
    // Images smaller than 32 px on a side map several cells onto one pixel; cells with no pixel borrow it below.
    // Column ranges of the 32 cells: x belongs to cell cx when cx*width <= x*32 < (cx+1)*width.
    let start = |c: usize| (c * width).div_ceil(SIDE);
    for y in 0..height {
        let cy = y * SIDE / height;
        let row = &grey[y * width..(y + 1) * width];
        for cx in 0..SIDE {
            let (x0, x1) = (start(cx), start(cx + 1));
            if x1 > x0 {
                cells[cy][cx] += row[x0..x1].iter().map(|&g| u64::from(g)).sum::<u64>();
                counts[cy][cx] += (x1 - x0) as u32;
            }
        }
    }
    let mut f = [[0.0f64; SIDE]; SIDE];
    for cy in 0..SIDE {
        for cx in 0..SIDE {
            let (sy, sx) = (cy * height / SIDE, cx * width / SIDE);
            f[cy][cx] = if counts[cy][cx] > 0 {
                cells[cy][cx] as f64 / f64::from(counts[cy][cx])
            } else {
                f64::from(grey[sy * width + sx])
            };
        }
    }
    let t = cos_table();
    let mut rows = [[0.0f64; KEEP]; SIDE];
    for (y, frow) in f.iter().enumerate() {
        for v in 0..KEEP {
            rows[y][v] = frow.iter().zip(t[v].iter()).map(|(a, c)| a * c).sum();
        }
    }
    let mut coeffs = [0.0f64; KEEP * KEEP];
    for u in 0..KEEP {
        for v in 0..KEEP {
            coeffs[u * KEEP + v] = (0..SIDE).map(|y| t[u][y] * rows[y][v]).sum();
        }
    }
    let mut sorted = coeffs;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    coeffs.iter().fold(0u64, |acc, &c| (acc << 1) | u64::from(c > median))
}

/// Number of differing bits between two hashes (0 = same scene, ~32 = unrelated).
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

//! Turns the bytes a camera sent into RGB8 pixels, inside limits: a frame is the first thing in the pipeline that
//! comes from outside, so every failure here is a typed `DecodeError` and nothing panics or allocates without bound.

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// Why a frame's pixels could not be obtained. The `reason()` strings are stable: they label rejection counters.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty image: no bytes")]
    Empty,
    #[error("encoded image is {size} bytes, over the limit of {limit} bytes")]
    TooManyBytes { size: usize, limit: usize },
    #[error("image is {width}x{height} pixels, over the limit of {limit} pixels")]
    TooManyPixels { width: u64, height: u64, limit: u64 },
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    #[error("truncated image: the data ends before the image does")]
    Truncated,
    #[error("corrupt image: {0}")]
    Corrupt(String),
    #[error("raw image: {0}")]
    BadRawImage(String),
}

impl DecodeError {
    /// Short, stable reason label (for counters and JSON output).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty_image",
            DecodeError::TooManyBytes { .. } => "image_too_many_bytes",
            DecodeError::TooManyPixels { .. } => "image_too_many_pixels",
            DecodeError::UnsupportedFormat(_) => "unsupported_format",
            DecodeError::Truncated => "truncated_image",
            DecodeError::Corrupt(_) => "corrupt_image",
            DecodeError::BadRawImage(_) => "bad_raw_image",
        }
    }
}

/// Limits applied before and during decoding (decompression bombs, oversize uploads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest accepted encoded size in bytes.
    pub max_encoded_bytes: usize,
    /// Largest accepted width * height, checked from the header before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // 64 MiB covers any camera JPEG; 50 MP covers 8K frames with room to spare.
        DecodeLimits { max_encoded_bytes: 64 << 20, max_pixels: 50_000_000 }
    }
}

/// Pixel layout of a raw (unencoded) frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    Rgb8,
    Gray8,
}

/// An RGB8 image, row-major, tightly packed. Buffers are reused across frames.
#[derive(Debug, Default, Clone)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// Re-sizes in place, keeping the allocation when it is large enough.
    pub fn reset(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.data.resize(width * height * 3, 0);
    }

    pub fn from_rgb(width: usize, height: usize, data: Vec<u8>) -> Option<RgbImage> {
        (data.len() == width.checked_mul(height)?.checked_mul(3)?).then_some(RgbImage { width, height, data })
    }
}

/// Detected container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

/// Sniffs the format from magic bytes.
pub fn detect_format(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(ImageFormat::Jpeg);
    }
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        return Ok(ImageFormat::Png);
    }
    let what = if bytes.starts_with(b"GIF8") {
        "GIF"
    } else if bytes.starts_with(b"BM") {
        "BMP"
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "WebP"
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "TIFF"
    } else {
        "unknown (expected JPEG or PNG)"
    };
    Err(DecodeError::UnsupportedFormat(what.to_string()))
}

pub(crate) fn check_pixels(width: usize, height: usize, limits: &DecodeLimits) -> Result<(), DecodeError> {
    let (w, h) = (width as u64, height as u64);
    if w == 0 || h == 0 {
        return Err(DecodeError::Corrupt(format!("image has zero size ({w}x{h})")));
    }
    if w.saturating_mul(h) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels { width: w, height: h, limit: limits.max_pixels });
    }
    Ok(())
}

/// Decodes JPEG or PNG bytes into `out` (RGB8), reusing its allocation.
pub fn decode_into(bytes: &[u8], limits: &DecodeLimits, out: &mut RgbImage) -> Result<ImageFormat, DecodeError> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(DecodeError::TooManyBytes { size: bytes.len(), limit: limits.max_encoded_bytes });
    }
    let format = detect_format(bytes)?;
    match format {
        ImageFormat::Jpeg => decode_jpeg(bytes, limits, out)?,
        ImageFormat::Png => decode_png(bytes, limits, out)?,
    }
    Ok(format)
}

/// An encoded frame decoded for analysis: its format and size as sent, and the factor by which `out` already is
/// smaller (1, or 2/4/8 when the decoder scaled a JPEG in its IDCT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub format: ImageFormat,
    pub width: usize,
    pub height: usize,
    pub scaled_by: usize,
}

/// Decodes JPEG or PNG bytes into `out` (RGB8) for analysis under `analysis`: with `Downscale::Dct`, a JPEG
/// larger than `max_side` comes out already scaled by `AnalysisSettings::idct_factor` (libjpeg-turbo's scaled
/// IDCT); everything else comes out at full size, as from `decode_into`.
pub fn decode_for_analysis(
    bytes: &[u8],
    limits: &DecodeLimits,
    analysis: &crate::AnalysisSettings,
    out: &mut RgbImage,
) -> Result<Decoded, DecodeError> {
    if analysis.downscale == crate::Downscale::Dct && detect_format(bytes)? == ImageFormat::Jpeg {
        let header = probe(bytes, limits)?;
        let by = analysis.idct_factor(header.width, header.height);
        if by > 1 && crate::libjpeg::decode_scaled(bytes, limits, by, out)? {
            return Ok(Decoded { format: header.format, width: header.width, height: header.height, scaled_by: by });
        }
    }
    let format = decode_into(bytes, limits, out)?;
    Ok(Decoded { format, width: out.width, height: out.height, scaled_by: 1 })
}

/// What an encoded image's header says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: ImageFormat,
    pub width: usize,
    pub height: usize,
    /// Samples per pixel as stored (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
    pub channels: usize,
}

impl ImageHeader {
    /// Bytes decoding this image holds at its peak: the decoder's own samples (PNG keeps the inflated stream and
    /// the unfiltered samples, a progressive JPEG its coefficients: about two bytes per sample either way) plus
    /// the RGB8 frame it is turned into.
    pub fn decode_bytes(&self) -> u64 {
        let pixels = (self.width as u64).saturating_mul(self.height as u64);
        pixels.saturating_mul(2 * self.channels as u64 + 3)
    }
}

/// Reads an encoded image's header (format, size, channels) within `limits`, without decoding pixels: the size
/// is checked against `max_pixels` here, so an oversize image costs only its header.
pub fn probe(bytes: &[u8], limits: &DecodeLimits) -> Result<ImageHeader, DecodeError> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(DecodeError::TooManyBytes { size: bytes.len(), limit: limits.max_encoded_bytes });
    }
    let format = detect_format(bytes)?;
    let side = side_limit(limits);
    let (width, height, channels) = match format {
        ImageFormat::Jpeg => {
            let options = DecoderOptions::new_fast().set_strict_mode(true).set_max_width(side).set_max_height(side);
            let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
            decoder.decode_headers().map_err(jpeg_error)?;
            let info = decoder.info().ok_or_else(|| DecodeError::Corrupt("JPEG header has no frame".into()))?;
            (usize::from(info.width), usize::from(info.height), usize::from(info.components))
        }
        ImageFormat::Png => {
            let options = DecoderOptions::new_fast().set_strict_mode(true).set_max_width(side).set_max_height(side);
            let mut decoder = zune_png::PngDecoder::new_with_options(ZCursor::new(bytes), options);
            decoder.decode_headers().map_err(png_error)?;
            let (w, h) = decoder.dimensions().ok_or_else(|| DecodeError::Corrupt("PNG has no IHDR".into()))?;
            let colorspace =
                decoder.colorspace().ok_or_else(|| DecodeError::Corrupt("PNG colour type unknown".into()))?;
            (w, h, colorspace.num_components())
        }
    };
    check_pixels(width, height, limits)?;
    Ok(ImageHeader { format, width, height, channels: channels.max(1) })
}

fn side_limit(limits: &DecodeLimits) -> usize {
    // The decoders take side limits; the pixel-count limit is checked separately after the header is read.
    usize::try_from(limits.max_pixels).unwrap_or(usize::MAX).clamp(1, 1 << 24)
}

fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits, out: &mut RgbImage) -> Result<(), DecodeError> {
    let side = side_limit(limits);
    let options = DecoderOptions::new_fast()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        .set_max_width(side)
        .set_max_height(side);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(jpeg_error)?;
    let info = decoder.info().ok_or_else(|| DecodeError::Corrupt("JPEG header has no frame".into()))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    check_pixels(width, height, limits)?;
    let needed = decoder.output_buffer_size().ok_or_else(|| DecodeError::Corrupt("JPEG size unknown".into()))?;
    if needed != width * height * 3 {
        return Err(DecodeError::Corrupt(format!("JPEG output is {needed} bytes for {width}x{height} RGB")));
    }
    out.reset(width, height);
    decoder.decode_into(&mut out.data).map_err(jpeg_error)
}

fn jpeg_error(e: zune_jpeg::errors::DecodeErrors) -> DecodeError {
    use zune_jpeg::errors::DecodeErrors as E;
    match e {
        E::ExhaustedData => DecodeError::Truncated,
        E::IoErrors(_) => DecodeError::Truncated,
        E::Unsupported(s) => DecodeError::UnsupportedFormat(format!("JPEG variant: {s:?}")),
        E::LargeDimensions(n) => DecodeError::Corrupt(format!("JPEG dimension {n} too large")),
        other => {
            let msg = other.to_string();
            // zune reports running out of bytes in several ways; the user-facing reason should say "truncated".
            if msg.contains("No more bytes") || msg.contains("EOF") || msg.contains("end of") {
                DecodeError::Truncated
            } else {
                DecodeError::Corrupt(format!("JPEG: {msg}"))
            }
        }
    }
}

fn decode_png(bytes: &[u8], limits: &DecodeLimits, out: &mut RgbImage) -> Result<(), DecodeError> {
    let side = side_limit(limits);
    let options = DecoderOptions::new_fast()
        .png_set_strip_to_8bit(true)
        .set_strict_mode(true)
        .set_max_width(side)
        .set_max_height(side);
    let mut decoder = zune_png::PngDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(png_error)?;
    let (width, height) = decoder.dimensions().ok_or_else(|| DecodeError::Corrupt("PNG has no IHDR".into()))?;
    check_pixels(width, height, limits)?;
    let colorspace = decoder.colorspace().ok_or_else(|| DecodeError::Corrupt("PNG colour type unknown".into()))?;
    let channels = colorspace.num_components();
    let decoded = match decoder.decode().map_err(png_error)? {
        zune_core::result::DecodingResult::U8(v) => v,
        _ => {
            return Err(DecodeError::UnsupportedFormat("PNG with more than 8 bits per sample".into()));
        }
    };
    if decoded.len() != width * height * channels {
        return Err(DecodeError::Corrupt(format!(
            "PNG decoded to {} bytes, expected {}",
            decoded.len(),
            width * height * channels
        )));
    }
    out.reset(width, height);
    match channels {
        1 | 2 => {
            for (dst, src) in out.data.chunks_exact_mut(3).zip(decoded.chunks_exact(channels)) {
                dst.fill(src[0]);
            }
        }
        3 => out.data.copy_from_slice(&decoded),
        // Alpha is ignored: the metrics describe what the camera saw, not how a viewer would composite it.
        4 => {
            for (dst, src) in out.data.chunks_exact_mut(3).zip(decoded.chunks_exact(4)) {
                dst.copy_from_slice(&src[..3]);
            }
        }
        n => {
            return Err(DecodeError::UnsupportedFormat(format!("PNG with {n} channels")));
        }
    }
    Ok(())
}

fn png_error(e: zune_png::error::PngDecodeErrors) -> DecodeError {
    use zune_png::error::PngDecodeErrors as E;
    match e {
        E::IoErrors(_) => DecodeError::Truncated,
        E::UnsupportedAPNGImage => DecodeError::UnsupportedFormat("animated PNG".into()),
        other => {
            let msg = other.to_string();
            if msg.contains("No more bytes") || msg.contains("EOF") || msg.contains("end of") {
                DecodeError::Truncated
            } else {
                DecodeError::Corrupt(format!("PNG: {msg}"))
            }
        }
    }
}

/// Copies a raw frame into `out` after checking its declared size against its byte length.
pub fn raw_into(
    pixels: &[u8],
    width: usize,
    height: usize,
    format: RawFormat,
    limits: &DecodeLimits,
    out: &mut RgbImage,
) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::BadRawImage(format!("zero size ({width}x{height})")));
    }
    check_pixels(width, height, limits)?;
    let channels = match format {
        RawFormat::Rgb8 => 3,
        RawFormat::Gray8 => 1,
    };
    let expected = width * height * channels;
    if pixels.len() != expected {
        return Err(DecodeError::BadRawImage(format!(
            "{width}x{height} {format:?} needs {expected} bytes, got {}",
            pixels.len()
        )));
    }
    out.reset(width, height);
    match format {
        RawFormat::Rgb8 => out.data.copy_from_slice(pixels),
        RawFormat::Gray8 => {
            for (dst, &g) in out.data.chunks_exact_mut(3).zip(pixels) {
                dst.fill(g);
            }
        }
    }
    Ok(())
}

/// ITU-T T.81 Annex K.1 luminance quantisation table, natural (row-major) order: the table libjpeg scales by its
/// `quality` setting, and the reference `jpeg_quality` is measured against.
const ANNEX_K_LUMINANCE: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51,
    87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
];

/// Natural-order index of the k-th coefficient in zigzag order (T.81 Figure A.6): DQT stores tables in zigzag order.
const ZIGZAG_TO_NATURAL: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

/// The Annex K luminance table scaled the way libjpeg's `jpeg_set_quality` does (`jpeg_quality_scaling`, baseline
/// clamp to 1..=255), in natural order.
fn ijg_luminance_table(quality: u32) -> [u16; 64] {
    let q = quality.clamp(1, 100);
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    ANNEX_K_LUMINANCE.map(|v| ((u32::from(v) * scale + 50) / 100).clamp(1, 255) as u16)
}

/// The encoder's quality setting (1-100) estimated from a JPEG's luminance quantisation table: the quality whose
/// IJG-scaled Annex K table is nearest (least sum of absolute differences over the 64 entries) to the table the
/// first frame component uses. Exact for libjpeg, libjpeg-turbo, mozjpeg (default tables), `jpeg-encoder`, PIL and
/// OpenCV; for a camera with its own tables it is the IJG-equivalent quality. `None` for anything that is not a
/// JPEG or whose markers before the first scan are malformed or carry no usable table.
///
/// Reads only the marker segments up to the first SOS, each bounds-checked; no allocation, no panic on any input.
pub fn jpeg_quality(bytes: &[u8]) -> Option<u8> {
    let table = jpeg_luminance_table(bytes)?;
    let error = |q: u32| -> u32 {
        let candidate = ijg_luminance_table(q);
        candidate.iter().zip(&table).map(|(&a, &b)| u32::from(a.abs_diff(b))).sum()
    };
    // Ties (distinct qualities that give the same table, only near q = 1) resolve to the lowest quality.
    (1..=100u32).min_by_key(|&q| error(q)).and_then(|q| u8::try_from(q).ok())
}

/// The quantisation table of the first component of the frame, natural order, from the segments before the first
/// scan (table 0 when no frame header precedes the scan).
fn jpeg_luminance_table(bytes: &[u8]) -> Option<[u16; 64]> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut tables: [Option<[u16; 64]>; 4] = [None; 4];
    let mut first_component_table: Option<usize> = None;
    let mut pos = 2usize;
    // Each iteration consumes at least one byte, so the walk ends within bytes.len() steps.
    loop {
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        while *bytes.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = *bytes.get(pos)?;
        pos += 1;
        match marker {
            // standalone markers: TEM, RSTn, a stray SOI
            0x01 | 0xD0..=0xD8 => continue,
            // start of scan or end of image: every table the first scan needs has been seen
            0xDA | 0xD9 => break,
            _ => {}
        }
        // The length counts its own two bytes; a shorter one makes the range empty-reversed and `get` refuse it.
        let len = usize::from(u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]));
        let body = bytes.get(pos + 2..pos.checked_add(len)?)?;
        match marker {
            0xDB => read_dqt(body, &mut tables)?,
            // SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC): component 1's table id is body byte 8
            // (P, Y, Y, X, X, Nf, C1, H1V1, Tq1)
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                first_component_table = Some(usize::from(*body.get(8)? & 0x0F));
            }
            _ => {}
        }
        pos += len;
    }
    *tables.get(first_component_table.unwrap_or(0))?
}

/// Parses one DQT segment body (one or more tables) into `tables`, by table id.
fn read_dqt(mut body: &[u8], tables: &mut [Option<[u16; 64]>; 4]) -> Option<()> {
    while let Some((&pq_tq, rest)) = body.split_first() {
        let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 0x0F));
        let width = match precision {
            0 => 1,
            1 => 2,
            _ => return None,
        };
        let data = rest.get(..64 * width)?;
        let mut table = [0u16; 64];
        for (k, &natural) in ZIGZAG_TO_NATURAL.iter().enumerate() {
            table[natural] =
                if width == 1 { u16::from(data[k]) } else { u16::from_be_bytes([data[2 * k], data[2 * k + 1]]) };
        }
        *tables.get_mut(id)? = Some(table);
        body = &rest[64 * width..];
    }
    Some(())
}

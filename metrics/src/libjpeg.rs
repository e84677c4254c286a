//! JPEG decoding scaled inside the inverse DCT, by libjpeg-turbo (the `mozjpeg` crate's build of it, with its SIMD
//! code): the one place framewatch calls C. Everything else decodes with the pure-Rust zune-jpeg.
//!
//! Why C here: scaling inside the IDCT (1/2, 1/4, 1/8) skips most of the IDCT, upsampling and colour conversion
//! of a frame that is analysed smaller than it was sent, and libjpeg-turbo's Huffman decoding is as fast as any.
//! Measured in BENCHMARKS.md ("DCT-domain scaling"); the pure-Rust `jpeg-decoder` crate's scaled decode was
//! measured too and did not pay.
//!
//! The audited unsafe: libjpeg reports errors through callbacks that must not return. The error manager below
//! turns every fatal error *and every warning* into an unwind with a typed payload, caught in `decode_scaled`
//! (the crate compiles libjpeg with `-fexceptions`, so unwinding through its frames is supported). Warnings are
//! fatal on purpose: libjpeg would otherwise hand back a grey-filled image for a truncated or corrupt file, where
//! zune-jpeg in strict mode refuses it, and a frame must not be scored differently depending on which decoder
//! its size chose.

use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use mozjpeg_sys::{J_COLOR_SPACE, jpeg_common_struct, jpeg_error_mgr};

use crate::decode::{DecodeError, DecodeLimits, RgbImage, check_pixels};

/// Why libjpeg stopped: the message code it raised, whether it was a warning, and its message template.
struct Stop {
    code: c_int,
    message: String,
}

/// Warnings that say nothing about the pixels (an unknown JFIF revision, an Adobe marker's colour transform
/// flag that libjpeg overrides sensibly, a malformed ICC profile): these alone do not refuse a frame.
const HARMLESS_WARNINGS: [c_int; 3] =
    [mozjpeg_sys::JWRN_JFIF_MAJOR, mozjpeg_sys::JWRN_ADOBE_XFORM, mozjpeg_sys::JWRN_BOGUS_ICC];

/// An error manager whose exits unwind with a `Stop` instead of calling `exit()` (libjpeg's default).
fn strict_error_mgr() -> jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a plain C struct (function pointers as Options, integers and raw pointers), for
    // which all-zero bytes are a valid value; `jpeg_std_error` then fills in every field with libjpeg's defaults
    // (its static message table included), as the libjpeg documentation prescribes before use.
    #[allow(unsafe_code)]
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    // SAFETY: as above; the function only writes into the struct it is given.
    unsafe {
        mozjpeg_sys::jpeg_std_error(&mut err);
    }
    err.error_exit = Some(stop_on_error);
    err.emit_message = Some(stop_on_warning);
    err
}

/// The message template for `code` from libjpeg's static table, if the code is in it.
fn message_template(cinfo: &jpeg_common_struct, code: c_int) -> String {
    #[allow(unsafe_code)]
    // SAFETY: `cinfo.err` points at the error manager set up by `strict_error_mgr`, alive for the whole
    // decompression; `jpeg_message_table` is libjpeg's static array of `last_jpeg_message + 1` C strings, and the
    // index is checked against that bound first.
    unsafe {
        let Some(err) = cinfo.err.as_ref() else { return format!("libjpeg message {code}") };
        if code < 0 || code > err.last_jpeg_message || err.jpeg_message_table.is_null() {
            return format!("libjpeg message {code}");
        }
        let text = *err.jpeg_message_table.add(code as usize);
        if text.is_null() {
            return format!("libjpeg message {code}");
        }
        std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}

fn stop(cinfo: &mut jpeg_common_struct) -> ! {
    #[allow(unsafe_code)]
    // SAFETY: `cinfo.err` is the live error manager (see `message_template`).
    let code = unsafe { cinfo.err.as_ref().map_or(-1, |e| e.msg_code) };
    let message = message_template(cinfo, code);
    // resume_unwind, not panic!: no panic hook runs and nothing is printed for an ordinary bad frame.
    resume_unwind(Box::new(Stop { code, message }))
}

extern "C-unwind" fn stop_on_error(cinfo: &mut jpeg_common_struct) {
    stop(cinfo)
}

extern "C-unwind" fn stop_on_warning(cinfo: &mut jpeg_common_struct, level: c_int) {
    // level -1 is a warning (corrupt data, premature end); 0 and up are trace messages, never emitted at the
    // default trace level.
    if level < 0 {
        #[allow(unsafe_code)]
        // SAFETY: `cinfo.err` is the live error manager (see `message_template`).
        let code = unsafe { cinfo.err.as_ref().map_or(-1, |e| e.msg_code) };
        if !HARMLESS_WARNINGS.contains(&code) {
            stop(cinfo)
        }
    }
}

fn to_decode_error(stop: Stop) -> DecodeError {
    match stop.code {
        mozjpeg_sys::JWRN_JPEG_EOF | mozjpeg_sys::JERR_INPUT_EOF => DecodeError::Truncated,
        _ => DecodeError::Corrupt(format!("JPEG: {}", stop.message)),
    }
}

/// Decodes `bytes` (a JPEG) at 1/`denominator` of its size (1, 2, 4 or 8) into `out` as RGB8, rounding the
/// scaled size up as libjpeg does (1921 px at 1/2 gives 961). `Ok(false)` when this decoder does not take the
/// file (CMYK/YCCK: zune-jpeg converts those); the caller then decodes it in full.
pub(crate) fn decode_scaled(
    bytes: &[u8],
    limits: &DecodeLimits,
    denominator: usize,
    out: &mut RgbImage,
) -> Result<bool, DecodeError> {
    let numerator = match denominator {
        1 => 8,
        2 => 4,
        4 => 2,
        8 => 1,
        d => return Err(DecodeError::Corrupt(format!("no IDCT scale 1/{d}"))),
    };
    let run = || -> Result<bool, DecodeError> {
        let mut decoder = mozjpeg::Decompress::with_err(strict_error_mgr()).from_mem(bytes).map_err(io_error)?;
        check_pixels(decoder.width(), decoder.height(), limits)?;
        if matches!(decoder.color_space(), J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK) {
            return Ok(false);
        }
        decoder.scale(numerator);
        let mut started = decoder.rgb().map_err(io_error)?;
        out.reset(started.width(), started.height());
        started.read_scanlines_into::<u8>(&mut out.data).map_err(io_error)?;
        started.finish().map_err(io_error)?;
        Ok(true)
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(payload) => Err(match payload.downcast::<Stop>() {
            Ok(stop) => to_decode_error(*stop),
            // The mozjpeg crate's own unwinds carry a String; anything else is a bug in it, still not a crash here.
            Err(other) => DecodeError::Corrupt(match other.downcast::<String>() {
                Ok(s) => format!("JPEG: {s}"),
                Err(_) => "JPEG: the decoder stopped".to_string(),
            }),
        }),
    }
}

fn io_error(e: std::io::Error) -> DecodeError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => DecodeError::Truncated,
        _ => DecodeError::Corrupt(format!("JPEG: {e}")),
    }
}

//! Throwaway measurement (BENCHMARKS.md, both "DCT-domain scaling" sections): zune-jpeg full decode vs
//! jpeg-decoder and libjpeg-turbo (mozjpeg crate) full and scaled (1/2, 1/4, 1/8), and libjpeg-turbo entropy decoding
//! alone (jpeg_read_coefficients), on synthetic 1080p frames, plus any JPEG files named as arguments.
//! Its own workspace: `cargo run --release [photo.jpg ...]` from this directory.
use std::time::Instant;
fn median(mut v: Vec<f64>) -> f64 { v.sort_by(f64::total_cmp); v[v.len() / 2] }
fn main() {
    let mut frames = Vec::new();
    for seed in 0..8u64 {
        let mut cam = framewatch_synth::Camera::new("c", 1920, 1080, seed + 1);
        let mut buf = Vec::new();
        cam.next_frame(&mut buf);
        frames.push(buf);
    }
    let extra: Vec<Vec<u8>> = std::env::args().skip(1).filter_map(|p| std::fs::read(p).ok()).collect();
    for (name, set) in [("synth1080p", &frames), ("files", &extra)] {
        if set.is_empty() { continue; }
        let mut res: Vec<(&str, Vec<f64>)> = vec![("zune_full", vec![]), ("jd_full", vec![]), ("jd_half", vec![]), ("jd_quarter", vec![]), ("jd_eighth", vec![]), ("mj_full", vec![]), ("mj_half", vec![]), ("mj_quarter", vec![]), ("mj_eighth", vec![]), ("mj_coefficients_only", vec![])];
        for _round in 0..15 {
            for (label, times) in res.iter_mut() {
                let t = Instant::now();
                let mut px = 0usize;
                for f in set.iter() {
                    match *label {
                        "zune_full" => {
                            let opts = zune_core::options::DecoderOptions::default().jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
                            let mut d = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(f.as_slice()), opts);
                            px += d.decode().unwrap().len();
                        }
                        "mj_coefficients_only" => px += coefficients_only(f),
                        l if l.starts_with("mj_") => {
                            let mut d = mozjpeg::Decompress::new_mem(f.as_slice()).unwrap();
                            let num = match l { "mj_half" => 4, "mj_quarter" => 2, "mj_eighth" => 1, _ => 8 };
                            d.scale(num);
                            let mut s = d.rgb().unwrap();
                            let v: Vec<[u8; 3]> = s.read_scanlines().unwrap();
                            px += v.len() * 3;
                            s.finish().unwrap();
                        }
                        _ => {
                            let mut d = jpeg_decoder::Decoder::new(f.as_slice());
                            d.read_info().unwrap();
                            let info = d.info().unwrap();
                            let div = match *label { "jd_half" => 2, "jd_quarter" => 4, "jd_eighth" => 8, _ => 1 };
                            if div > 1 { d.scale(info.width / div, info.height / div).unwrap(); }
                            px += d.decode().unwrap().len();
                        }
                    }
                }
                std::hint::black_box(px);
                times.push(t.elapsed().as_secs_f64() * 1e3 / set.len() as f64);
            }
        }
        let base = median(res[0].1.clone());
        for (label, times) in res {
            let m = median(times);
            println!("{name} {label}: {m:.2} ms/frame ({:.2}x zune full)", base / m);
        }
    }
}

/// Entropy decoding alone (libjpeg's `jpeg_read_coefficients`: Huffman-decoded, quantised DCT blocks, no IDCT,
/// no upsampling, no colour conversion): the floor of any decoder built on libjpeg-turbo's Huffman decoder.
fn coefficients_only(f: &[u8]) -> usize {
    use mozjpeg_sys::*;
    // SAFETY (throwaway measurement, valid JPEGs only): the libjpeg API used as documented, default error manager.
    unsafe {
        let mut err: jpeg_error_mgr = std::mem::zeroed();
        jpeg_std_error(&mut err);
        let mut cinfo: jpeg_decompress_struct = std::mem::zeroed();
        cinfo.common.err = &mut err;
        jpeg_CreateDecompress(&mut cinfo, JPEG_LIB_VERSION, std::mem::size_of::<jpeg_decompress_struct>());
        jpeg_mem_src(&mut cinfo, f.as_ptr(), f.len() as _);
        jpeg_read_header(&mut cinfo, 1);
        let n = cinfo.image_width as usize * cinfo.image_height as usize;
        let c = jpeg_read_coefficients(&mut cinfo);
        std::hint::black_box(c);
        jpeg_finish_decompress(&mut cinfo);
        jpeg_destroy_decompress(&mut cinfo);
        n
    }
}

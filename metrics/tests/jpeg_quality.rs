//! `jpeg_quality` reads the encoder's quality back from the luminance quantisation table. jpeg-encoder scales the
//! Annex K table exactly as libjpeg does, so the estimate must be the setting itself; malformed input gives `None`
//! and never a panic.

mod common;

use std::sync::Arc;

use framewatch_metrics::decode::{RgbImage, decode_into, jpeg_quality};
use framewatch_metrics::{DecodeLimits, FramePixels, MetricRegistry, RawFormat, ScoreSettings, Scorer};
use proptest::prelude::*;

fn photo() -> RgbImage {
    let bytes = std::fs::read(common::fixtures().join("images").join("fruits.jpg")).expect("photo");
    let mut img = RgbImage::default();
    decode_into(&bytes, &DecodeLimits::default(), &mut img).expect("decode");
    img
}

fn encode(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&img.data, img.width as u16, img.height as u16, jpeg_encoder::ColorType::Rgb)
        .expect("encode");
    out
}

#[test]
fn the_estimate_is_the_encoders_quality_setting() {
    let img = photo();
    let registry = Arc::new(MetricRegistry::standard());
    let slot = registry.index_of("jpeg_quality").expect("registered");
    let mut scorer = Scorer::new(registry, ScoreSettings::default());
    for q in [1u8, 5, 10, 15, 30, 49, 50, 51, 75, 90, 95, 99, 100] {
        let bytes = encode(&img, q);
        assert_eq!(jpeg_quality(&bytes), Some(q), "quality {q}");
        let scored = scorer.score(FramePixels::Encoded(&bytes), &[]).expect("score");
        assert_eq!(scored.values[slot], Some(f64::from(q)), "scored quality {q}");
    }
    // progressive files carry the same tables before their first scan
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 42);
    enc.set_progressive(true);
    enc.encode(&img.data, img.width as u16, img.height as u16, jpeg_encoder::ColorType::Rgb).expect("encode");
    assert_eq!(jpeg_quality(&out), Some(42));
}

#[test]
fn real_camera_files_get_a_plausible_quality_and_other_formats_none() {
    for p in common::photos() {
        let bytes = std::fs::read(&p).expect("photo");
        let q = jpeg_quality(&bytes);
        assert!(q.is_some_and(|q| (1..=100).contains(&q)), "{}: {q:?}", p.display());
    }
    let png = std::fs::read(common::fixtures().join("images").join("smarties.png")).expect("png");
    assert_eq!(jpeg_quality(&png), None);
    let registry = Arc::new(MetricRegistry::standard());
    let slot = registry.index_of("jpeg_quality").expect("registered");
    let mut scorer = Scorer::new(registry, ScoreSettings::default());
    assert_eq!(scorer.score(FramePixels::Encoded(&png), &[]).expect("png").values[slot], None);
    let raw = vec![9u8; 4 * 4 * 3];
    let frame = FramePixels::Raw { pixels: &raw, width: 4, height: 4, format: RawFormat::Rgb8 };
    assert_eq!(scorer.score(frame, &[]).expect("raw").values[slot], None);
}

#[test]
fn every_truncation_of_a_jpeg_header_is_handled() {
    let bytes = encode(&photo(), 60);
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).expect("SOS");
    for end in 0..=sos + 2 {
        let q = jpeg_quality(&bytes[..end]);
        // Before the scan header is reached the tables may be incomplete: no estimate rather than a wrong one.
        assert!(q.is_none() || q == Some(60), "cut at {end}: {q:?}");
    }
    // a length field pointing past the end, a zero length, a 16-bit table, an unknown precision
    assert_eq!(jpeg_quality(&[0xFF, 0xD8, 0xFF, 0xDB, 0xFF, 0xFF, 0]), None);
    assert_eq!(jpeg_quality(&[0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x00, 0xFF, 0xDA]), None);
    let mut sixteen = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 2 + 1 + 128, 0x10];
    sixteen.extend(std::iter::repeat_n([0x00, 0x01], 64).flatten());
    sixteen.extend([0xFF, 0xDA]);
    assert_eq!(jpeg_quality(&sixteen), Some(100), "an all-ones table is quality 100");
    let mut bad = sixteen.clone();
    bad[6] = 0x20;
    assert_eq!(jpeg_quality(&bad), None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..700) {
        let mut bytes = vec![0xFF, 0xD8];
        bytes.extend(tail);
        let q = jpeg_quality(&bytes[..cut.min(bytes.len())]);
        prop_assert!(q.is_none_or(|q| (1..=100).contains(&q)));
    }

    #[test]
    fn corrupting_a_real_header_never_panics(pos in 0usize..700, byte in any::<u8>()) {
        let bytes = std::fs::read(common::fixtures().join("images").join("home.jpg")).expect("photo");
        let mut b = bytes[..bytes.len().min(4096)].to_vec();
        let i = pos % b.len();
        b[i] = byte;
        let q = jpeg_quality(&b);
        prop_assert!(q.is_none_or(|q| (1..=100).contains(&q)));
    }
}

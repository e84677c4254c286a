//! Helpers shared by the metrics crate's integration tests: fixture paths and loading.
#![allow(dead_code)]

use std::path::PathBuf;

use framewatch_metrics::Detection;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("fixtures")
}

pub fn read_json(rel: &str) -> serde_json::Value {
    let path = fixtures().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The committed real photographs (JPEG) from fixtures/images.
pub fn photos() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join("images"))
        .expect("fixtures/images")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    v.sort();
    v
}

pub fn predictions() -> std::collections::HashMap<String, Vec<Detection>> {
    let text = std::fs::read_to_string(fixtures().join("predictions.jsonl")).expect("predictions.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            #[derive(serde::Deserialize)]
            struct Rec {
                path: String,
                detections: Vec<Detection>,
            }
            let r: Rec = serde_json::from_str(l).expect("prediction line");
            (r.path, r.detections)
        })
        .collect()
}

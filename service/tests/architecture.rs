//! The house stays readable: every `crate::` reference in service/src goes from a module to a module of a lower
//! layer (or within one module), so stages never import later stages and the module graph has no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers, top (0) to bottom. A module may use modules of a strictly greater layer, or its own submodules.
const LAYERS: &[&[&str]] = &[
    &["main", "lib", "cli", "fuzzing"],
    &["demo"],
    &["server"],
    &["sources"],
    &["pipeline"],
    &["frame"],
    &["checkpoint"],
    &["http"],
    &["api", "export", "web"],
    &["alerts"],
    &["evaluate"],
    &["store", "cameras", "exemplars", "truth"],
    &["auth", "listen"],
    &["reload", "config", "telemetry"],
    &["reject", "slice", "time", "fingerprint", "charts"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Top-level module of a file under src/.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Modules named by `crate::NAME` paths, and by `use crate::{a, b::c}` groups.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

#[test]
fn stages_import_only_lower_layers_and_the_graph_is_acyclic() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for f in &files {
        let from = module_of(&src, f);
        let Some(lf) = layer_of(&from) else {
            problems.push(format!("{}: module {from:?} is in no layer of tests/architecture.rs", f.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read");
        for to in referenced(&text) {
            if to == from {
                continue;
            }
            match layer_of(&to) {
                None => problems.push(format!("{}: crate::{to} is in no layer", f.display())),
                Some(lt) if lt <= lf => {
                    problems.push(format!("{}: {from} (layer {lf}) uses {to} (layer {lt})", f.display()))
                }
                Some(_) => {}
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
    // Independent of the table: no cycle in the module graph (depth-first search).
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) {
        match state.get(n) {
            Some(2) => return,
            Some(1) => panic!("module cycle: {} -> {n}", path.join(" -> ")),
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, state, path);
        }
        path.pop();
        state.insert(n.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        visit(n, &edges, &mut state, &mut Vec::new());
    }
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 20, "the scan found the crate's imports");
}

#[test]
fn the_scan_sees_grouped_and_inline_paths() {
    let r = referenced("use crate::{store::X, time};\nfn f() { crate::slice::SliceKey::global(); }");
    assert_eq!(r, ["slice", "store", "time"].iter().map(|s| s.to_string()).collect());
}

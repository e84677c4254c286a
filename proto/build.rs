//! Compiles the protos with protox (pure Rust; no system protoc) and writes the descriptor set used by gRPC
//! reflection next to the generated code.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["framewatch/v1/frame.proto", "framewatch/v1/ingest.proto", "framewatch/v1/query.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // Imports included, so reflection clients can resolve google.protobuf.Timestamp too.
    let fds = protox::Compiler::new(["."])?.include_imports(true).open_files(protos)?.file_descriptor_set();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("framewatch_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Edge metric values by name as a BTreeMap: decoding an event's ~35 names into a std HashMap hashed each with
    // SipHash and grew the table four times (~13 % of a by-name pre-scored event's CPU); a B-tree neither hashes
    // nor rehashes, and is walked in name order (the first bad name of a frame is the same every time).
    tonic_prost_build::configure()
        .btree_map(".framewatch.v1.MetricValues.values")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

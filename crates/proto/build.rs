//! Generates the gRPC code from every `.proto` file under `../../proto`, with a vendored
//! `protoc` so that a build needs nothing but a Rust toolchain.

// `set_var` is `unsafe` in edition 2024; the generators read `PROTOC` from the
// environment, and a build script has a single thread, so this is the one exception.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: a build script is single-threaded; nothing else reads the environment now.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    // Read at run time, not with env!(): a build script compiled in another checkout of
    // the same sources must still look in this one.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    collect_protos(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // The descriptor set feeds gRPC server reflection (grpcurl without .proto files).
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out_dir.join("runnel_descriptor.bin"))
        // Entry payloads are record batches: share memory rather than copy.
        .bytes(["."])
        .compile_protos(&files, &[root])?;
    use_sized_codec(&out_dir)?;
    Ok(())
}

/// Points the generated services at `crate::codec::SizedProstCodec` (see there for
/// why). madsim-tonic-build wraps tonic-prost-build without its `codec_path` option, so
/// the generated files are rewritten instead; the simulated services (under `--cfg
/// madsim`) use no codec and are left as they are.
fn use_sized_codec(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            let rewritten = text.replace(
                "tonic_prost::ProstCodec::default()",
                "crate::codec::SizedProstCodec::default()",
            );
            if rewritten != text {
                std::fs::write(&path, rewritten)?;
            }
        }
    }
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

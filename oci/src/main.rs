//! `make oci`: each filter's `.wasm` as an OCI image layout (and a `.tar` of
//! it) under `target/oci/`, its digest printed, and its WasmPlugin manifest
//! copied with `sha256` pinned to that digest.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "Package .wasm filters as OCI image layouts for Istio's WasmPlugin")]
struct Args {
    /// Where the built filters are.
    #[arg(long, default_value = "target/wasm32-wasip1/release")]
    wasm_dir: PathBuf,
    /// Where the layouts and pinned manifests go.
    #[arg(long, default_value = "target/oci")]
    out: PathBuf,
    /// The checked-in WasmPlugin manifests (`<filter>-wasmplugin.yaml`, `_` as `-`).
    #[arg(long, default_value = "envoy-config/istio")]
    manifests: PathBuf,
    /// The tag recorded in each layout's index.
    #[arg(long, default_value = "0.1.0")]
    tag: String,
    /// Filters by name (`router`, `auth`, …).
    #[arg(required = true)]
    filters: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for filter in &args.filters {
        if let Err(e) = package(&args, filter) {
            eprintln!("{filter}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn package(args: &Args, filter: &str) -> std::io::Result<()> {
    let wasm_path = args.wasm_dir.join(format!("{filter}.wasm"));
    let wasm = std::fs::read(&wasm_path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", wasm_path.display())))?;
    let image = switchyard_oci::image(&wasm, &args.tag)?;
    let name = filter.replace('_', "-");
    let tar = switchyard_oci::write_layout(&image, &args.out.join(&name))?;
    println!("{name:<16} {}  {}", image.digest(), tar.display());
    let manifest = args.manifests.join(format!("{name}-wasmplugin.yaml"));
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let pinned = args.out.join(format!("{name}-wasmplugin.yaml"));
        std::fs::write(
            &pinned,
            switchyard_oci::pin_wasmplugin(&text, &image.digest()),
        )?;
        println!(
            "{:<16} WasmPlugin with sha256 pinned: {}",
            "",
            pinned.display()
        );
    }
    Ok(())
}

//! Packs a `.wasm` filter as an OCI image layout — the format Istio's
//! WasmPlugin pulls with `url: oci://…` — without docker: one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding
//! `plugin.wasm`, an image config, a manifest and an index, all
//! content-addressed. Everything that could vary between runs (timestamps,
//! owners, gzip headers, file order) is fixed, so the same `.wasm` always
//! gives the same digests.

use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The file Istio looks for in the layer.
pub const WASM_FILE: &str = "plugin.wasm";

/// A content-addressed blob and its OCI descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Self { media_type, bytes }
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.bytes))
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len()})
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An image: its blobs and the index that names it.
#[derive(Debug, Clone)]
pub struct Image {
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
    pub index: Vec<u8>,
}

impl Image {
    /// The image's digest (of its manifest): what a registry reports and
    /// what goes into a WasmPlugin's `sha256` (without the `sha256:`).
    pub fn digest(&self) -> String {
        self.manifest.digest()
    }
}

/// A tar with one regular file, every header field fixed.
fn tar_of(files: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *bytes)?;
    }
    builder.into_inner()
}

/// Gzip with no name and a zero timestamp, so output depends only on input.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    gz.write_all(bytes)?;
    gz.finish()
}

/// Builds the image for `wasm`, tagged `tag` in the index.
pub fn image(wasm: &[u8], tag: &str) -> std::io::Result<Image> {
    let tar = tar_of(&[(WASM_FILE, wasm)])?;
    let layer = Blob::new(LAYER_MEDIA_TYPE, gzip(&tar)?);
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]},
    });
    let config = Blob::new(CONFIG_MEDIA_TYPE, serde_json::to_vec(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob::new(MANIFEST_MEDIA_TYPE, serde_json::to_vec(&manifest)?);
    let mut descriptor = manifest.descriptor();
    descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [descriptor],
    });
    Ok(Image {
        layer,
        config,
        manifest,
        index: serde_json::to_vec(&index)?,
    })
}

/// The files of the image layout, by path within it, sorted.
pub fn layout_files(image: &Image) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_owned(), image.index.clone()),
    ];
    for blob in [&image.layer, &image.config, &image.manifest] {
        files.push((
            format!("blobs/sha256/{}", sha256_hex(&blob.bytes)),
            blob.bytes.clone(),
        ));
    }
    files.sort();
    files
}

/// Writes the layout to `dir` and a `.tar` of it beside it (`<dir>.tar`),
/// as `skopeo`/`oras`/`crane` read them. Returns the tar's path.
pub fn write_layout(image: &Image, dir: &Path) -> std::io::Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let files = layout_files(image);
    for (path, bytes) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(full, bytes)?;
    }
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let tar_path = dir.with_extension("tar");
    std::fs::write(&tar_path, tar_of(&entries)?)?;
    Ok(tar_path)
}

/// A WasmPlugin manifest (YAML text) with `spec.sha256` set to `digest`'s
/// hex, inserted after the `url:` line (replacing any `sha256:` line).
pub fn pin_wasmplugin(manifest: &str, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    let mut out = String::with_capacity(manifest.len() + 80);
    for line in manifest.lines() {
        if line.trim_start().starts_with("sha256:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if let Some(indent) = line.strip_suffix(line.trim_start()) {
            if line.trim_start().starts_with("url: oci://") {
                out.push_str(&format!("{indent}sha256: {hex}\n"));
            }
        }
    }
    out
}

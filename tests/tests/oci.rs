//! `make oci`'s images, checked against the OCI image spec independently of
//! the code that wrote them: layout files, media types, every blob's digest
//! and size, the single layer unpacking to the exact `.wasm`, reproducible
//! digests, and the pinned WasmPlugin valid against Istio's CRD schema.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use switchyard_oci::{image, pin_wasmplugin, write_layout};
use switchyard_tests::istio::CrdSchemas;
use switchyard_tests::paths;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Reads the blob a descriptor names, checking its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(sha256(&bytes), digest, "blob content matches its name");
    assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64));
    bytes
}

#[test]
fn every_filter_packs_into_a_valid_layout_whose_layer_is_the_exact_wasm() {
    let dir = tempfile::tempdir().unwrap();
    for filter in ["router", "auth", "timeouts", "shadow"] {
        let wasm = std::fs::read(paths::wasm(filter)).unwrap();
        let img = image(&wasm, "0.1.0").unwrap();
        let layout = dir.path().join(filter);
        write_layout(&img, &layout).unwrap();

        assert_eq!(
            json(&layout.join("oci-layout")),
            serde_json::json!({"imageLayoutVersion": "1.0.0"})
        );
        let index = json(&layout.join("index.json"));
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            entries[0]["annotations"]["org.opencontainers.image.ref.name"],
            "0.1.0"
        );
        let manifest: Value = serde_json::from_slice(&blob(&layout, &entries[0])).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        let config: Value = serde_json::from_slice(&blob(&layout, &manifest["config"])).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "exactly one layer");
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let layer = blob(&layout, &layers[0]);

        // Unpack: one regular file, plugin.wasm, byte for byte the filter.
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&layer[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0].as_str(),
            Some(sha256(&tar_bytes).as_str()),
            "diff_id is the uncompressed layer's digest"
        );
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut files = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            files.push((name, content));
        }
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "plugin.wasm");
        assert!(
            files[0].1 == wasm,
            "{filter}: the layer holds the exact .wasm"
        );

        // The .tar beside the layout holds the same files.
        let tar = std::fs::read(layout.with_extension("tar")).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(
            names.contains(&"index.json".to_owned()) && names.contains(&"oci-layout".to_owned())
        );
    }
}

#[test]
fn the_same_wasm_always_gives_the_same_digests() {
    let wasm = std::fs::read(paths::wasm("router")).unwrap();
    let (a, b) = (
        image(&wasm, "0.1.0").unwrap(),
        image(&wasm, "0.1.0").unwrap(),
    );
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.layer.digest(), b.layer.digest());
    let dir = tempfile::tempdir().unwrap();
    let (ta, tb) = (
        write_layout(&a, &dir.path().join("a")).unwrap(),
        write_layout(&b, &dir.path().join("b")).unwrap(),
    );
    assert!(
        std::fs::read(ta).unwrap() == std::fs::read(tb).unwrap(),
        "identical .tar"
    );
    // A different module is a different image.
    let other = image(&std::fs::read(paths::wasm("auth")).unwrap(), "0.1.0").unwrap();
    assert_ne!(other.digest(), a.digest());
}

#[test]
fn the_pinned_wasmplugin_carries_the_image_digest_and_stays_valid() {
    let schemas = CrdSchemas::load();
    for (filter, file) in [
        ("router", "router-wasmplugin.yaml"),
        ("auth", "auth-wasmplugin.yaml"),
        ("timeouts", "timeouts-wasmplugin.yaml"),
        ("shadow", "shadow-wasmplugin.yaml"),
    ] {
        let img = image(&std::fs::read(paths::wasm(filter)).unwrap(), "0.1.0").unwrap();
        let text = std::fs::read_to_string(paths::envoy_config("istio").join(file)).unwrap();
        let pinned = pin_wasmplugin(&text, &img.digest());
        let mut plugins = 0;
        for doc in serde_yaml_ng::Deserializer::from_str(&pinned) {
            let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
            if let Err(errors) = schemas.validate(&doc) {
                panic!("{file}: {errors:?}");
            }
            if doc["kind"] == "WasmPlugin" {
                plugins += 1;
                assert_eq!(
                    doc["spec"]["sha256"].as_str(),
                    img.digest().strip_prefix("sha256:")
                );
            }
        }
        assert_eq!(plugins, 1, "{file}");
    }
}

//! `make test` runs every checked-in fuzz input through its target's checks:
//! the seed corpus (`fuzz/corpus/<target>/`) and every input a fuzzing run
//! once failed on (`fuzz/regressions/<target>/`, kept as regression tests).

use std::path::Path;
use switchyard_fuzz_checks::TARGETS;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_passes_its_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for (target, check) in TARGETS {
        let seeds = inputs(&fuzz.join("corpus").join(target));
        assert!(!seeds.is_empty(), "{target}: no seed corpus");
        let regressions = inputs(&fuzz.join("regressions").join(target));
        for (name, bytes) in seeds.iter().chain(&regressions) {
            let outcome = std::panic::catch_unwind(|| check(bytes));
            assert!(outcome.is_ok(), "{target}: {name} fails its checks");
        }
    }
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = std::fs::read_to_string(fuzz.join("libfuzzer/Cargo.toml")).unwrap();
    for (target, _) in TARGETS {
        let main = std::fs::read_to_string(
            fuzz.join("libfuzzer/fuzz_targets")
                .join(format!("{target}.rs")),
        )
        .unwrap_or_else(|_| panic!("fuzz/libfuzzer/fuzz_targets/{target}.rs"));
        assert!(
            main.contains(&format!("switchyard_fuzz_checks::{target}(")),
            "{target}"
        );
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} in fuzz/libfuzzer/Cargo.toml"
        );
    }
}

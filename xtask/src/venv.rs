//! Python virtual environments under `target/`, each made from a fully pinned requirements
//! file and rebuilt when that file changes: the peers of `cargo xtask bench --peers` and the
//! official `langgraph-sdk` client that `cargo xtask test` drives the server with.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a venv is not there.
pub(crate) enum VenvError {
    /// No usable Python, or the packages could not be installed (offline, say).
    Unavailable(String),
    /// Something that should have worked failed.
    Failed(anyhow::Error),
}

/// Makes (or reuses) the venv at `venv` with `python` (3.10 or newer) and the pins in
/// `requirements`, and returns the venv's interpreter. A copy of the requirements inside the
/// venv records what it holds, so a change to the pins rebuilds it.
pub(crate) fn ensure(python: &OsStr, venv: &Path, requirements: &Path) -> Result<PathBuf, VenvError> {
    let pinned = fs::read_to_string(requirements)
        .map_err(|err| VenvError::Unavailable(format!("could not read {}: {err}", requirements.display())))?;
    let shown = python.to_string_lossy().into_owned();
    let version = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .map_err(|err| VenvError::Unavailable(format!("`{shown}` could not be started ({err}); set LGADK_PYTHON")))?;
    if !version.status.success() {
        return Err(VenvError::Unavailable(format!("`{shown}` does not run: {}", tail(&version.stderr))));
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let (major, minor) = version.split_once('.').unwrap_or(("0", "0"));
    if (major.parse::<u32>().unwrap_or(0), minor.parse::<u32>().unwrap_or(0)) < (3, 10) {
        return Err(VenvError::Unavailable(format!("`{shown}` is Python {version}; 3.10 or newer is needed")));
    }
    let venv_python = venv.join("bin").join("python");
    let stamp = venv.join("requirements.txt");
    if fs::read_to_string(&stamp).is_ok_and(|text| text == pinned) && venv_python.exists() {
        eprintln!("reusing {}", venv.display());
        return Ok(venv_python);
    }
    eprintln!("$ {shown} -m venv --clear {}", venv.display());
    match Command::new(python).arg("-m").arg("venv").arg("--clear").arg(venv).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(VenvError::Unavailable(format!(
                "`{shown} -m venv` failed (on Debian: apt-get install python3-venv): {}",
                tail(&out.stderr)
            )));
        }
        Err(err) => return Err(VenvError::Unavailable(format!("`{shown} -m venv` could not start: {err}"))),
    }
    eprintln!("$ {} -m pip install -r {}", venv_python.display(), requirements.display());
    let installed = Command::new(&venv_python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(requirements)
        .output()
        .map_err(|err| VenvError::Unavailable(format!("pip could not start: {err}")))?;
    if !installed.status.success() {
        return Err(VenvError::Unavailable(format!(
            "pip could not install the pinned packages (offline?): {}",
            tail(&installed.stderr)
        )));
    }
    fs::write(&stamp, &pinned).map_err(|err| VenvError::Failed(err.into()))?;
    Ok(venv_python)
}

/// The last lines of a command's stderr, on one line.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

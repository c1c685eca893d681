//! `cargo xtask bench [--quick] [GROUP…]`: runs the criterion benches and writes
//! `target/bench-report.md`.

use anyhow::Result;

use crate::cargo;

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let mut cmd = vec!["bench", "--package", "lgadk", "--all-features"];
    let quick = args.contains(&"--quick");
    for group in args.iter().filter(|arg| !arg.starts_with("--")) {
        cmd.extend(["--bench", group]);
    }
    if quick {
        cmd.extend(["--", "--quick"]);
    }
    cargo(&cmd)
}

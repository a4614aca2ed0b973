//! The Debian package as the tests build it: `cargo deb` over the binary the test command built
//! (the debug build, stripped; `cargo deb` for users builds the release one).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the .deb into `dir`. cargo-deb looks for the binary in `<target dir>/release/`, so a
/// target directory of the test's own holds a link to it.
pub fn build(dir: &Path) -> PathBuf {
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gatehouse"));
    if std::fs::hard_link(bin, release.join("gatehouse")).is_err() {
        std::fs::copy(bin, release.join("gatehouse")).unwrap();
    }
    let deb = dir.join("gatehouse.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", dir)
        .args(["deb", "--no-build", "--strip", "--fast", "--output"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb (install it with `cargo install cargo-deb --locked`, as ./scripts/test.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

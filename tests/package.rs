//! The Debian package, for real: `cargo deb` packages the binary the test command built (the
//! debug build, stripped, so that CI does not build a release binary too; `cargo deb` for users
//! builds the release one), `dpkg -i` installs it, and then: `gatehouse --version` from
//! `/usr/bin`, the `gatehouse` system user, the conffile in place (and kept, edited, across a
//! reinstall), the service user able to read it, `systemd-analyze verify` silent on the unit
//! and `systemd-analyze security` within "OK"; `dpkg --purge` leaves the machine as it was.
//! Installing needs root: the test fails, saying so, elsewhere. The unit under a running systemd
//! (start, reload, stop) is `tests/systemd_unit.rs`: the test machines' PID 1 is not systemd.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "common/deb.rs"]
mod deb;

use std::path::Path;
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs and requires success; returns stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, passed or failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "gatehouse"]);
    }
}

#[test]
fn deb_installs_the_binary_user_conffile_and_a_verified_unit_then_purges_clean() {
    let uid = ok("id", &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "this test installs a .deb with dpkg -i and must run as root (./scripts/test.sh does in CI; else: sudo -E cargo test --test package)"
    );
    assert!(
        !run("dpkg-query", &["-W", "gatehouse"]).status.success(),
        "a gatehouse package is already installed on this machine: the test would replace and purge it; remove it first"
    );
    let dir = tempfile::tempdir().unwrap();
    let deb = deb::build(dir.path());
    let deb = deb.to_str().unwrap();

    let fields = ok("dpkg-deb", &["--field", deb]);
    assert!(fields.contains("Package: gatehouse"), "{fields}");
    assert!(
        fields.contains("adduser"),
        "Depends names adduser: {fields}"
    );
    let contents = ok("dpkg-deb", &["--contents", deb]);
    for path in [
        "./usr/bin/gatehouse",
        "./etc/gatehouse/gatehouse.yaml",
        "systemd/system/gatehouse.service",
        "./usr/share/man/man1/gatehouse.1.gz",
        "./usr/share/bash-completion/completions/gatehouse",
        "./usr/share/doc/gatehouse/deploy.md",
    ] {
        assert!(
            contents.contains(path),
            "{path} in the package:\n{contents}"
        );
    }

    let _purge = Installed;
    ok("dpkg", &["-i", deb]);

    let version = ok("/usr/bin/gatehouse", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
    // A system user (below UID 1000) that cannot log in.
    let user = ok("getent", &["passwd", "gatehouse"]);
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "{user}");
    assert!(fields[6].ends_with("nologin"), "{user}");
    ok("getent", &["group", "gatehouse"]);

    // The config: a conffile, as shipped, that the service user can read and that validates.
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "gatehouse"]);
    assert!(
        conffiles.contains("/etc/gatehouse/gatehouse.yaml"),
        "{conffiles}"
    );
    let shipped = std::fs::read_to_string(format!("{REPO}/deploy/debian/gatehouse.yaml")).unwrap();
    let installed = std::fs::read_to_string("/etc/gatehouse/gatehouse.yaml").unwrap();
    assert_eq!(installed, shipped);
    ok(
        "runuser",
        &[
            "-u",
            "gatehouse",
            "--",
            "/usr/bin/gatehouse",
            "check",
            "/etc/gatehouse/gatehouse.yaml",
        ],
    );

    // The unit: `verify` says nothing about it (it checks the ExecStart binary, the man page
    // of Documentation=, every directive); the hardening scores "OK" (at most 2.0 of 10).
    let verify = run("systemd-analyze", &["verify", "gatehouse.service"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.lines().any(|l| l.contains("gatehouse")),
        "systemd-analyze verify warns about the unit:\n{said}"
    );
    let unit = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(|d| format!("{d}/gatehouse.service"))
        .find(|p| Path::new(p).exists())
        .expect("the unit is installed");
    let security = run(
        "systemd-analyze",
        &["security", "--offline=yes", "--threshold=20", &unit],
    );
    let report = String::from_utf8_lossy(&security.stdout).into_owned();
    let exposure = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    assert!(
        security.status.success(),
        "systemd-analyze security: above 2.0: {exposure}\n{}",
        String::from_utf8_lossy(&security.stderr)
    );
    println!("{exposure}");

    // An upgrade (here, the same package again) keeps an edited conffile.
    let edited = format!("{shipped}# edited by the administrator\n");
    std::fs::write("/etc/gatehouse/gatehouse.yaml", &edited).unwrap();
    ok("dpkg", &["-i", deb]);
    assert_eq!(
        std::fs::read_to_string("/etc/gatehouse/gatehouse.yaml").unwrap(),
        edited
    );

    // Purge: the binary, the config, the unit and its enablement, the user and the group go.
    ok("dpkg", &["--purge", "gatehouse"]);
    for gone in [
        "/usr/bin/gatehouse",
        "/etc/gatehouse",
        &unit,
        "/etc/systemd/system/multi-user.target.wants/gatehouse.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    assert!(!run("getent", &["passwd", "gatehouse"]).status.success());
    assert!(!run("getent", &["group", "gatehouse"]).status.success());
}

/// The package's man page and shell completions are files in the repository (cargo-deb
/// packages files); they must be what the binary generates.
#[test]
fn the_packaged_man_page_and_completions_are_the_binarys() {
    for (args, file) in [
        (&["man"][..], "deploy/debian/gatehouse.1"),
        (
            &["completions", "bash"],
            "deploy/debian/completions/gatehouse.bash",
        ),
        (
            &["completions", "zsh"],
            "deploy/debian/completions/_gatehouse",
        ),
        (
            &["completions", "fish"],
            "deploy/debian/completions/gatehouse.fish",
        ),
    ] {
        let printed = ok(env!("CARGO_BIN_EXE_gatehouse"), args);
        let in_repo = std::fs::read_to_string(format!("{REPO}/{file}")).unwrap();
        assert!(
            printed == in_repo,
            "{file} is stale: run `cargo run -- {} > {file}`",
            args.join(" ")
        );
    }
}

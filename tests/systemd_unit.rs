//! The Debian package's unit under a real systemd: the test machines do not boot systemd, so it
//! runs as PID 1 of a podman container (a minimal Debian 12 from `debootstrap`, built once and
//! kept). There the package is installed with `dpkg -i`, which starts the service; and then:
//! `Type=notify` (active only once serving, the `STATUS=` line, a config that does not validate
//! fails `systemctl start`), the service user, every hardening option in force with the gateway
//! still serving, `systemctl reload` (a good config and a refused one), `systemctl stop`
//! draining to a clean exit, and `dpkg --purge`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "common/deb.rs"]
mod deb;
#[path = "common/podman.rs"]
mod podman;

use gatehouse_testkit::eventually;
use podman::Podman;
use std::process::Output;
use std::time::Duration;

/// The container's systemd boots in a second or two; the margin is for a loaded CI machine.
const BOOT: Duration = Duration::from_secs(60);

struct Machine<'a> {
    p: &'a Podman,
    name: String,
}

impl Machine<'_> {
    fn sh(&self, script: &str) -> Output {
        self.p.run(&["exec", &self.name, "bash", "-c", script])
    }

    /// Runs `script` (bash) in the container and requires success; returns stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn property(&self, name: &str) -> String {
        self.ok(&format!("systemctl show gatehouse --value -p {name}"))
    }

    /// The body the gateway answers `GET /` with, asked from inside: the packaged config listens
    /// on the container's own loopback, where its fixed port clashes with nothing.
    fn body(&self) -> String {
        let reply = self.ok(
            "exec 3<>/dev/tcp/127.0.0.1/8080; printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3",
        );
        reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    }
}

#[tokio::test]
async fn the_unit_starts_reloads_and_stops_under_systemd_with_its_hardening() {
    let p = Podman::new("systemd");
    let base = p.systemd_base();
    let dir = tempfile::tempdir().unwrap();
    let package = deb::build(dir.path());

    let name = p.prefix.clone();
    p.track_container(&name);
    p.ok(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--systemd=always",
        // With every capability, the container's systemd can set up the unit's namespaces
        // (ProtectSystem, PrivateTmp, ProtectHostname, ...); without, it skips them.
        "--privileged",
        &base,
        "/sbin/init",
    ]);
    let m = Machine { p: &p, name };
    eventually("systemd is up", BOOT, || async {
        let state = m.sh("systemctl is-system-running");
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        (state == "running" || state == "degraded").then_some(())
    })
    .await;

    // dpkg -i: the postinst enables and starts the unit, and start waits for READY=1.
    p.ok(&[
        "cp",
        package.to_str().unwrap(),
        &format!("{}:/tmp/gatehouse.deb", m.name),
    ]);
    m.ok("dpkg -i /tmp/gatehouse.deb");
    assert_eq!(m.property("ActiveState"), "active");
    assert_eq!(m.property("UnitFileState"), "enabled");
    let status = m.property("StatusText");
    assert!(
        status.starts_with(
            "serving: config generation 1, public on 127.0.0.1:8080, admin on 127.0.0.1:9901"
        ),
        "{status}"
    );
    assert!(m.body().starts_with("Gatehouse is running"), "{}", m.body());
    m.ok("gatehouse ctl health");

    // The service user, and the sandbox it runs in.
    let pid = m.property("MainPID");
    let uid = m.ok("id -u gatehouse");
    let proc_status = m.ok(&format!("cat /proc/{pid}/status"));
    let line = |key: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("Uid:")[0], uid, "runs as gatehouse");
    assert_eq!(line("NoNewPrivs:"), ["1"]);
    assert_eq!(line("Seccomp:"), ["2"], "a system call filter is installed");
    // Effective and bounding capabilities: CAP_NET_BIND_SERVICE (bit 10) alone.
    assert_eq!(line("CapEff:"), ["0000000000000400"]);
    assert_eq!(line("CapBnd:"), ["0000000000000400"]);
    let mounts = m.ok(&format!("cat /proc/{pid}/mountinfo"));
    let root_ro = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && f.get(5).is_some_and(|o| o.starts_with("ro"))
    });
    assert!(
        root_ro,
        "ProtectSystem=strict: / is read-only for the service:\n{mounts}"
    );
    let journal = m.ok("journalctl -u gatehouse --no-pager -o cat");
    assert!(
        !journal.contains("is configured, but"),
        "systemd skipped some of the hardening:\n{journal}"
    );

    // systemctl reload: SIGHUP, RELOADING=1, READY=1; the new config serves.
    m.ok("sed -i 's/Gatehouse is running/Reloaded by systemctl/' /etc/gatehouse/gatehouse.yaml");
    m.ok("systemctl reload gatehouse");
    let status = m.property("StatusText");
    assert!(
        status.starts_with("serving; reloaded: config generation"),
        "{status}"
    );
    assert!(
        m.body().starts_with("Reloaded by systemctl"),
        "{}",
        m.body()
    );

    // A config that does not validate: the reload job still succeeds (the service is ready,
    // on its previous config), the status says it was refused, and the old config serves.
    m.ok("cp /etc/gatehouse/gatehouse.yaml /tmp/good.yaml && echo 'listeners: [{name: public, address: nowhere}]' > /etc/gatehouse/gatehouse.yaml");
    m.ok("systemctl reload gatehouse");
    let status = m.property("StatusText");
    assert!(
        status.starts_with("serving the previous config; the reload was refused"),
        "{status}"
    );
    assert_eq!(m.property("ActiveState"), "active");
    assert!(m.body().starts_with("Reloaded by systemctl"));

    // systemctl stop: STOPPING=1, the drain, exit 0.
    m.ok("systemctl stop gatehouse");
    assert_eq!(m.property("ActiveState"), "inactive");
    assert_eq!(m.property("Result"), "success");
    assert_eq!(m.property("ExecMainStatus"), "0");
    let journal = m.ok("journalctl -u gatehouse --no-pager -o cat");
    assert!(journal.contains("drained; exiting"), "{journal}");

    // Type=notify: with a config that does not validate, start fails (no READY=1 ever comes;
    // Restart=on-failure then tries again, and fails again, until the config is fixed).
    assert!(!m.sh("systemctl start gatehouse").status.success());
    assert_eq!(m.property("Result"), "exit-code");
    assert_ne!(m.property("ActiveState"), "active");
    m.ok("cp /tmp/good.yaml /etc/gatehouse/gatehouse.yaml && systemctl restart gatehouse");
    assert_eq!(m.property("ActiveState"), "active");

    // Purge stops the service and takes the unit, the user and the config away.
    m.ok("dpkg --purge gatehouse");
    assert!(!m.sh("id gatehouse").status.success());
    assert!(!m.sh("test -e /etc/gatehouse").status.success());
    let load = m.property("LoadState");
    assert_eq!(load, "not-found", "the unit is gone");
}

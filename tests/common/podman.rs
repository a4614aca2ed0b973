//! Real podman for the container tests: a test-owned `containers.conf`, the images the
#![allow(dead_code)] // each test file uses some of these
//! repository's `Dockerfile` builds (with only the unfetchable parts made locally: the binary
//! stage and the base images, `FROM scratch` from this machine's files), and containers and
//! compose projects removed when the test ends, passed or failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// podman with this test's `containers.conf`.
pub struct Podman {
    dir: tempfile::TempDir,
    /// A prefix for every image, container and project this test makes (unique per process
    /// and test, so concurrent runs never share one).
    pub prefix: String,
    /// Made, to be removed at the end (images, containers, compose projects).
    images: Vec<String>,
    containers: std::sync::Mutex<Vec<String>>,
    projects: std::sync::Mutex<Vec<String>>,
}

impl Podman {
    /// Panics with what to install when podman is missing (the test command installs it).
    pub fn new(test: &str) -> Podman {
        let found = Command::new("podman").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "podman is not installed: run ./scripts/test.sh, which installs Debian's podman and runc"
        );
        let dir = tempfile::tempdir().unwrap();
        // runc, not crun: crun refuses a cgroup v1 host whose v2 `unified` hierarchy has
        // controllers ("cgroups in hybrid mode not supported"), as some VMs are; runc runs
        // everywhere. The rlimits are set, as podman's defaults are refused where the host's
        // hard limits are lower: nofile the host's own, nproc 4096 (a gateway runs a thread per
        // core; a VM here refused more than 32768 even below its hard limit).
        let (_, nofile) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let (_, nproc) = rlimit::getrlimit(rlimit::Resource::NPROC).unwrap();
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={p}:{p}\"]\n[engine]\nruntime = \"runc\"\n",
            n = nofile.min(1 << 20),
            p = nproc.min(4096),
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        Podman {
            dir,
            prefix: format!("gatehouse-test-{}-{test}", std::process::id()),
            images: Vec::new(),
            containers: Default::default(),
            projects: Default::default(),
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    /// A command (`podman` or `podman-compose`) with this test's configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("CONTAINERS_CONF", self.conf());
        c
    }

    /// Runs podman; panics with its stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command("podman").args(args).output().unwrap()
    }

    /// Builds the repository's `Dockerfile` into `localhost/<prefix>`: the binary stage is an
    /// image holding the shipped binary (stripped) at `/out/gatehouse`, the runtime base one
    /// made from this machine's shared libraries with distroless's `nonroot` user (65532), CA
    /// certificates and `/tmp`. Everything after `FROM` runs as written. Returns the tag.
    pub fn build_gatehouse(&mut self) -> String {
        let work = self.dir.path().join("images");
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_gatehouse"));
        let binary_ctx = work.join("binary");
        std::fs::create_dir_all(binary_ctx.join("out")).unwrap();
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(binary_ctx.join("out/gatehouse"))
            .arg(bin)
            .status()
            .expect("strip (binutils) is needed");
        assert!(stripped.success());
        std::fs::write(
            binary_ctx.join("Containerfile"),
            "FROM scratch\nCOPY out/gatehouse /out/gatehouse\n",
        )
        .unwrap();
        let binary = self.image(&binary_ctx, "binary");

        let base_ctx = work.join("base");
        copy_with_libraries(&[bin], &base_ctx, None);
        for (path, text) in [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            ),
            ("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
            ("Containerfile", "FROM scratch\nCOPY . /\n"),
        ] {
            write(&base_ctx.join(path), text);
        }
        // As distroless has them, for upstream TLS with the system's roots.
        let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if certs.exists() {
            copy_into(certs, &base_ctx);
        }
        make_tmp(&base_ctx);
        let base = self.image(&base_ctx, "base");

        let tag = format!("localhost/{}", self.prefix);
        let repo = env!("CARGO_MANIFEST_DIR");
        self.ok(&[
            "build",
            "--quiet",
            // OCI images have no HEALTHCHECK: the docker format keeps it.
            "--format",
            "docker",
            "--build-arg",
            &format!("BINARY_FROM={binary}"),
            "--build-arg",
            &format!("RUNTIME_IMAGE={base}"),
            "-t",
            &tag,
            "-f",
            &format!("{repo}/Dockerfile"),
            repo,
        ]);
        self.images.push(tag.clone());
        tag
    }

    /// A Redis image made from this machine's `redis-server` and `redis-cli` (the compose file's
    /// `REDIS_IMAGE`); panics when they are not installed.
    pub fn build_redis(&mut self) -> String {
        let ctx = self.dir.path().join("images/redis");
        let which = |name: &str| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name} is not installed: run ./scripts/test.sh (Debian's redis-server)"
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        };
        let (server, cli) = (which("redis-server"), which("redis-cli"));
        // Under its own name: Debian's redis-server is a link that dispatches on argv[0].
        copy_with_libraries(&[&server, &cli], &ctx, Some("usr/local/bin"));
        write(
            &ctx.join("Containerfile"),
            "FROM scratch\nCOPY . /\nWORKDIR /tmp\n",
        );
        make_tmp(&ctx);
        self.image(&ctx, "redis")
    }

    /// A minimal Debian 12 with systemd as its init (`debootstrap` from the Debian mirror, then
    /// `podman import`), for running the package's unit under a real systemd. Built once per
    /// machine (a few minutes) and kept, like a build cache, as `localhost/gatehouse-test-systemd:bookworm`
    /// (`podman rmi` it to rebuild).
    pub fn systemd_base(&self) -> String {
        let tag = "localhost/gatehouse-test-systemd:bookworm".to_string();
        if self.run(&["image", "exists", &tag]).status.success() {
            return tag;
        }
        let found = Command::new("debootstrap").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "debootstrap is not installed: run ./scripts/test.sh (Debian's debootstrap)"
        );
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("rootfs");
        let out = Command::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=systemd,systemd-sysv,dbus,adduser,procps",
                "bookworm",
            ])
            .arg(&root)
            .arg("http://deb.debian.org/debian")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "debootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar = work.path().join("rootfs.tar");
        let packed = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(packed.success(), "tar of the rootfs");
        self.ok(&["import", "--quiet", tar.to_str().unwrap(), &tag]);
        tag
    }

    fn image(&mut self, ctx: &Path, what: &str) -> String {
        let tag = format!("localhost/{}-{what}", self.prefix);
        self.ok(&["build", "--quiet", "-t", &tag, ctx.to_str().unwrap()]);
        self.images.push(tag.clone());
        tag
    }

    /// Remembers a container to remove at the end.
    pub fn track_container(&self, name: &str) {
        self.containers.lock().unwrap().push(name.to_string());
    }

    /// Remembers a compose project to take down (and its network to remove) at the end.
    pub fn track_project(&self, name: &str) {
        self.projects.lock().unwrap().push(name.to_string());
    }

    /// The one container of `service` in compose project `project`.
    pub fn compose_container(&self, project: &str, service: &str) -> String {
        let names = self.ok(&[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Names}}",
        ]);
        assert_eq!(names.lines().count(), 1, "{service}: {names:?}");
        names
    }

    /// The host address a container's port is published on.
    pub fn published(&self, container: &str, port: u16) -> std::net::SocketAddr {
        let out = self.ok(&["port", container, &format!("{port}/tcp")]);
        out.lines().next().unwrap().trim().parse().unwrap()
    }

    /// The container's main process's user ID, as the host sees it.
    pub fn uid(&self, container: &str) -> u32 {
        let pid = self.ok(&["inspect", "--format", "{{.State.Pid}}", container]);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in self.containers.lock().unwrap().iter() {
            let _ = self.run(&["rm", "--force", "--time", "5", c]);
        }
        for p in self.projects.lock().unwrap().iter() {
            let label = format!("label=com.docker.compose.project={p}");
            let ids = self.run(&["ps", "--all", "--quiet", "--filter", &label]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.run(&["rm", "--force", "--time", "5", id]);
            }
            let _ = self.run(&["network", "rm", "--force", &format!("{p}_default")]);
        }
        for i in self.images.iter().rev() {
            let _ = self.run(&["rmi", "--force", i]);
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `/tmp`, writable by anyone, as in every base image.
fn make_tmp(ctx: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = ctx.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Copies `binaries` (into `into`, or where they are) and every shared library `ldd` lists for
/// them into the image context `ctx`.
fn copy_with_libraries(binaries: &[&Path], ctx: &Path, into: Option<&str>) {
    for bin in binaries {
        if let Some(dir) = into {
            let to = ctx.join(dir).join(bin.file_name().unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(bin, to).unwrap();
        }
        let ldd = Command::new("ldd").arg(bin).output().expect("ldd");
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            // Follows links: the image gets the library itself under the name it is loaded by.
            copy_into(Path::new(lib), ctx);
        }
    }
}

/// Copies the file at absolute `path` to the same path inside `ctx`.
fn copy_into(path: &Path, ctx: &Path) {
    let to = ctx.join(path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(path, to).unwrap();
}

//! Runs the shipped `gatehouse` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub _dir: tempfile::TempDir,
    /// The admin listener's address, once logged (`admin_addr`).
    admin: std::sync::Mutex<(Option<SocketAddr>, mpsc::Receiver<String>)>,
    /// Every line the process wrote on stderr so far (its JSON log).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `gatehouse run -c <yaml>` and waits for its first listener's address.
    pub fn start(yaml: &str, extra_args: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, yaml).unwrap();
        Self::spawn(Some(&path), extra_args, &[], dir, Stdio::null())
    }

    /// Like [`Running::start`], with stdout (the access log) a pipe that nobody reads.
    #[allow(dead_code)]
    pub fn start_with_unread_stdout(yaml: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, yaml).unwrap();
        Self::spawn(Some(&path), &[], &[], dir, Stdio::piped())
    }

    /// Starts `gatehouse run -c <path>` with extra environment variables.
    pub fn start_with_env(path: &std::path::Path, env: &[(&str, &str)]) -> Running {
        Self::spawn(
            Some(path),
            &[],
            env,
            tempfile::tempdir().unwrap(),
            Stdio::null(),
        )
    }

    /// Starts `gatehouse run -c <path> ARGS...` with extra environment variables.
    #[allow(dead_code)]
    pub fn start_path(path: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        Self::spawn(
            Some(path),
            args,
            env,
            tempfile::tempdir().unwrap(),
            Stdio::null(),
        )
    }

    /// Starts `gatehouse run ARGS...` (no `-c`: a config from elsewhere, such as etcd).
    #[allow(dead_code)]
    pub fn start_args(args: &[&str]) -> Running {
        Self::spawn(None, args, &[], tempfile::tempdir().unwrap(), Stdio::null())
    }

    fn spawn(
        path: Option<&std::path::Path>,
        extra_args: &[&str],
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
        stdout: Stdio,
    ) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        cmd.arg("run");
        if let Some(path) = path {
            cmd.arg("-c").arg(path);
        }
        cmd.args(extra_args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(stdout).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let (admin_tx, admin_rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Some(i) = line.find("\"address\":\"") {
                    let rest = &line[i + 11..];
                    let addr = rest[..rest.find('"').unwrap()].to_string();
                    if line.contains("admin listening") {
                        let _ = admin_tx.send(addr);
                    } else {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the gateway logged its listen address")
            .parse()
            .unwrap();
        Running {
            child,
            addr,
            _dir: dir,
            admin: std::sync::Mutex::new((None, admin_rx)),
            log,
        }
    }

    /// Whether some line of the process's log so far contains `needle`.
    #[allow(dead_code)]
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The process's log so far.
    #[allow(dead_code)]
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many lines of the process's log so far contain `needle`.
    #[allow(dead_code)]
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits up to `within` for a log line containing `needle`; panics if none comes.
    #[allow(dead_code)]
    pub async fn wait_logged(&self, needle: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while !self.logged(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?} within {within:?}:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The admin listener's address (the config must have `admin:`).
    #[allow(dead_code)]
    pub fn admin_addr(&self) -> SocketAddr {
        let mut a = self.admin.lock().unwrap();
        if a.0.is_none() {
            let addr =
                a.1.recv_timeout(Duration::from_secs(20))
                    .expect("the gateway logged its admin address");
            a.0 = Some(addr.parse().unwrap());
        }
        a.0.unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Waits up to `within` for the process to exit; panics if it has not.
    #[allow(dead_code)]
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gatehouse check` on `yaml` (as `bad.yaml`), which must be refused; returns what it
/// printed on stderr.
#[allow(dead_code)]
pub fn check_refused(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "check accepted:\n{yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

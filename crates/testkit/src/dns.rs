//! A real DNS server for discovery tests: Debian's `dnsmasq` on a free loopback port,
//! authoritative for `.test`, answering from a hosts file the test rewrites (`set_hosts`, which
//! makes dnsmasq re-read it) and from SRV records given at start. TTLs are 1 s. Killed when
//! dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct DnsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    srv: Vec<String>,
    child: Option<Child>,
}

impl DnsServer {
    /// Starts dnsmasq with `hosts` (`/etc/hosts` lines: `127.0.0.2 shop.test`) and SRV records
    /// written as dnsmasq's `--srv-host` takes them (`_http._tcp.shop.test,a.shop.test,8080,0,10`:
    /// name, target, port, priority, weight).
    pub fn start(hosts: &str, srv: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hosts"), hosts).expect("write hosts");
        let mut s = DnsServer {
            port: 0,
            dir,
            srv: srv.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        for _ in 0..5 {
            s.port = free_port();
            if s.try_spawn() {
                return s;
            }
        }
        panic!("dnsmasq did not start on any of 5 free ports");
    }

    /// `127.0.0.1:PORT`, for the gateway's `dns.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the hosts file and has dnsmasq read it again (SIGHUP also clears its cache).
    pub fn set_hosts(&self, hosts: &str) {
        let tmp = self.dir.path().join("hosts.new");
        std::fs::write(&tmp, hosts).expect("write hosts");
        std::fs::rename(&tmp, self.dir.path().join("hosts")).expect("rename hosts");
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status();
        }
    }

    /// Kills the server (a DNS outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.try_spawn(), "dnsmasq did not restart on {}", self.port);
    }

    fn try_spawn(&mut self) -> bool {
        let hosts = self.dir.path().join("hosts");
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-negcache".into(),
            format!("--addn-hosts={}", hosts.display()),
            "--local=/test/".into(),
            "--listen-address=127.0.0.1".into(),
            "--bind-interfaces".into(),
            format!("--port={}", self.port),
            "--local-ttl=1".into(),
            "--user=root".into(),
            "--pid-file".into(),
        ];
        args.extend(self.srv.iter().map(|s| format!("--srv-host={s}")));
        // Debian puts it in /usr/sbin, which a non-root PATH lacks.
        let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let child = Command::new(bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is not installed: run ./scripts/test.sh, which installs it");
        self.child = crate::process::wait_ready(child, Duration::from_secs(10), || {
            crate::process::accepts(self.port)
        });
        self.child.is_some()
    }
}

/// A port free for TCP and UDP on 127.0.0.1 right now (dnsmasq takes both).
fn free_port() -> u16 {
    for _ in 0..100 {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP in 100 tries");
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

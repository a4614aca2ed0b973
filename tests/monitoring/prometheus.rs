//! A real Prometheus (Debian's package) for the monitoring test: started on a free port with
//! temporary storage, scraping the gateway, killed on drop.

use super::*;

// ---------------------------------------------------------------------------------------
// A real Prometheus.

pub(crate) struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` every second and evaluating `rules`, on a free
    /// port (another port if that one was taken in between).
    pub(crate) async fn start(target: std::net::SocketAddr, rules: &Path) -> Prometheus {
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\nscrape_configs:\n  - job_name: gatehouse\n    static_configs: [{{targets: ['{target}']}}]\n",
                    rules.display()
                ),
            )
            .unwrap();
            let log = dir.path().join("prometheus.log");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("prometheus is not installed: run ./scripts/test.sh, which installs Debian's prometheus package");
            let mut p = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = client().get(format!("{}/-/ready", p.url)).send().await {
                    if r.status() == 200 {
                        return p;
                    }
                }
                if p.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    last_log = p.log();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("prometheus did not start:\n{last_log}");
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        client()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(crate) async fn query(&self, promql: &str) -> Value {
        self.get("/api/v1/query", &[("query", promql)]).await
    }

    /// Polls `check` every 250 ms until it gives `Ok`; panics after `deadline` with its last
    /// `Err` and Prometheus's log.
    pub(crate) async fn until<T, F, Fut>(&self, what: &str, deadline: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let end = Instant::now() + deadline;
        loop {
            match check().await {
                Ok(v) => return v,
                Err(e) if Instant::now() > end => panic!(
                    "timed out after {deadline:?} waiting for {what}: {e}\nprometheus log:\n{}",
                    self.log()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

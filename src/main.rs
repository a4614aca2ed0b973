//! The `gatehouse` command: run a config, check configs, run the embedded demo, or run one
//! demo backend. Everything else lives in the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gatehouse::demo;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// jemalloc, with its background purging: memory freed by connections that went idle (parked)
/// or closed goes back to the system within seconds, where glibc's allocator kept the peak.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "A self-healing HTTP API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file (or a config held in etcd).
    Run {
        /// The YAML config file.
        #[arg(
            short,
            long,
            required_unless_present = "config_etcd",
            conflicts_with = "config_etcd"
        )]
        config: Option<PathBuf>,
        /// Instead of a file: etcd client URLs (http://HOST:2379, comma-separated) whose key
        /// `--config-key` holds the whole config, watched.
        #[arg(long, value_delimiter = ',')]
        config_etcd: Vec<String>,
        /// The etcd key holding the config.
        #[arg(long, default_value = "/gatehouse/config", requires = "config_etcd")]
        config_key: String,
        /// Worker threads (default: one per core). 1 runs everything on one thread.
        #[arg(long)]
        worker_threads: Option<usize>,
        /// Offer the listening sockets on this unix socket (mode 0600) to a new process
        /// started with --upgrade-from, then drain and exit 0 once it serves.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<PathBuf>,
        /// Take the listening sockets and endpoint state over from the gateway offering them
        /// on this unix socket, then tell it to drain.
        #[arg(long, value_name = "PATH")]
        upgrade_from: Option<PathBuf>,
    },
    /// Validate config files: exit 0, or print every error and exit 1.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the embedded demo: built-in backends and a demo config (the default command).
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Print the demo config and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Drive a running gateway through its admin API (token from GATEHOUSE_ADMIN_TOKEN).
    Ctl {
        /// The admin listener, host:port.
        #[arg(long, env = "GATEHOUSE_ADMIN", default_value = "127.0.0.1:9901")]
        admin: String,
        /// Print the API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        what: CtlCommand,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Print the config file's JSON Schema (for editors and validators; docs/config.md).
    Schema,
    /// Print the `sha256:...` digest of an API key, for a consumer's `api_keys`.
    HashKey {
        /// The key (read from standard input when omitted).
        key: Option<String>,
    },
    /// Run one demo backend that answers with its name.
    DemoBackend {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        name: String,
        /// Share of requests answered with 500 (0.0–1.0).
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Added latency per response, like 20ms.
        #[arg(long, value_parser = gatehouse_config::units::parse_duration, default_value = "0ms")]
        latency: Duration,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Version, uptime and config generation.
    Status,
    /// Every cluster's endpoints (or one cluster's): health, breaker, drain, weight, load.
    Clusters { name: Option<String> },
    /// Stop sending new requests to an endpoint.
    Drain { cluster: String, endpoint: String },
    /// Undo a drain.
    Enable { cluster: String, endpoint: String },
    /// Open (a drill) or close an endpoint's circuit breaker.
    Breaker {
        cluster: String,
        endpoint: String,
        #[arg(value_parser = ["open", "closed"])]
        state: String,
    },
    /// Reload the config file now.
    Reload,
    /// Exit 0 when the admin listener answers GET /healthz with ok, 1 otherwise (a container
    /// HEALTHCHECK: the image has no curl).
    Health,
    /// Print state changes as they happen, until interrupted.
    Events {
        /// Keep following (the default; accepted for clarity).
        #[arg(long, short)]
        follow: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = init_tracing();
    let (threads, result) = match cli.command {
        Some(Command::Check { files }) => return check(&files),
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "gatehouse",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(Cli::command());
            return match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Some(Command::Ctl { admin, json, what }) => {
            let target = gatehouse::ctl::Target {
                admin,
                token: std::env::var("GATEHOUSE_ADMIN_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
                json,
            };
            let action = match what {
                CtlCommand::Status => gatehouse::ctl::Action::Status,
                CtlCommand::Clusters { name } => gatehouse::ctl::Action::Clusters(name),
                CtlCommand::Drain { cluster, endpoint } => {
                    gatehouse::ctl::Action::Drain(cluster, endpoint)
                }
                CtlCommand::Enable { cluster, endpoint } => {
                    gatehouse::ctl::Action::Enable(cluster, endpoint)
                }
                CtlCommand::Breaker {
                    cluster,
                    endpoint,
                    state,
                } => gatehouse::ctl::Action::Breaker(cluster, endpoint, state),
                CtlCommand::Reload => gatehouse::ctl::Action::Reload,
                CtlCommand::Events { .. } => gatehouse::ctl::Action::Events,
                CtlCommand::Health => gatehouse::ctl::Action::Health,
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("gatehouse ctl: {e}");
                    return ExitCode::FAILURE;
                }
            };
            return match rt.block_on(gatehouse::ctl::run(&target, action)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gatehouse ctl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Schema) => {
            print!("{}", gatehouse_config::json_schema::schema_json());
            return ExitCode::SUCCESS;
        }
        Some(Command::HashKey { key }) => {
            let key = key.unwrap_or_else(|| {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                line.trim_end_matches(['\r', '\n']).to_string()
            });
            if key.is_empty() {
                // The digest of nothing would let an empty key in.
                eprintln!("gatehouse hash-key: the key is empty (give it as an argument or on standard input)");
                return ExitCode::FAILURE;
            }
            println!("{}", gatehouse::filter::api_key::digest_string(&key));
            return ExitCode::SUCCESS;
        }
        Some(Command::Run {
            config,
            config_etcd,
            config_key,
            worker_threads,
            upgrade_socket,
            upgrade_from,
        }) => {
            let from = match config {
                Some(path) => ConfigFrom::File(path),
                None => ConfigFrom::Etcd(config_etcd, config_key),
            };
            let upgrade = (upgrade_socket, upgrade_from);
            (worker_threads, Box::pin(run(from, upgrade)) as BoxedRun)
        }
        Some(Command::Demo {
            listen,
            admin,
            print_config,
        }) => (
            None,
            Box::pin(run_demo(listen, admin, print_config)) as BoxedRun,
        ),
        None => (
            None,
            Box::pin(run_demo(
                "127.0.0.1:8080".into(),
                "127.0.0.1:9901".into(),
                false,
            )) as BoxedRun,
        ),
        Some(Command::DemoBackend {
            listen,
            name,
            fail_rate,
            latency,
        }) => (
            Some(1),
            Box::pin(async move {
                let stop = gatehouse::shutdown_signal();
                let l = gatehouse::listener::bind(&listen)
                    .with_context(|| format!("cannot listen on {listen}"))?;
                eprintln!("demo backend {name:?} on http://{}", l.local_addr()?);
                let spec = demo::BackendSpec {
                    name,
                    fail_rate,
                    latency,
                };
                tokio::select! {
                    _ = demo::serve_backend(l, spec) => {}
                    _ = stop => {}
                }
                Ok(())
            }) as BoxedRun,
        ),
    };
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let outcome = rt
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(result));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// JSON logs on stderr, written by a worker thread (a request task never blocks on stderr; past
/// its queue, lines are dropped rather than stalling traffic). The guard flushes at exit.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(8192)
        .finish(std::io::stderr());
    static DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
        std::sync::OnceLock::new();
    let _ = DROPS.set(writer.error_counter());
    gatehouse::observe::set_log_drops(|| DROPS.get().map_or(0, |c| c.dropped_lines()));
    tracing_subscriber::fmt()
        .json()
        // Fields beside the message, not nested: the same flat shape as the event lines.
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .with_current_span(false)
        .init();
    guard
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        let name = f.display().to_string();
        let loaded = std::fs::read_to_string(f)
            .map_err(|_| gatehouse_config::load_file(f).err())
            .and_then(|text| {
                let config = gatehouse_config::load_str_at(&text, f).map_err(Some)?;
                for w in gatehouse_config::warnings(&text, &name, &config).0 {
                    let at = format!("{}:{}:{}: {}", w.source, w.line, w.col, w.path);
                    eprintln!("{at}: warning: {}", w.message);
                }
                // What building the snapshot would find: key files that cannot be read, ...
                let mut problems = gatehouse::runtime::filters::preflight(&config);
                // ... and TLS files that cannot be read, keys that are not their certificate's,
                // certificates that have expired.
                problems.extend(gatehouse::tls::preflight(&config));
                problems.extend(gatehouse::observe::access_log::preflight(&config));
                problems.extend(
                    gatehouse::runtime::upstream_tls(&config)
                        .err()
                        .unwrap_or_default(),
                );
                if problems.is_empty() {
                    print_services(&config);
                    Ok(())
                } else {
                    Err(Some(gatehouse_config::locate(&text, &name, problems)))
                }
            });
        match loaded {
            Ok(()) => println!("{name}: ok"),
            Err(errors) => {
                ok = false;
                if let Some(errors) = errors {
                    eprintln!("{errors}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the `services:` shorthand expanded to, so the user sees what will run.
fn print_services(config: &gatehouse_config::Config) {
    for name in config.services.keys() {
        let Some(c) = config.clusters.iter().find(|c| &c.name == name) else {
            continue;
        };
        let endpoints: Vec<&str> = c.endpoints.iter().map(|e| e.address.as_str()).collect();
        println!(
            "services.{name}: cluster {name:?} (round robin over {}), reached as /v1/proxy/{name}/... through route {:?}",
            endpoints.join(", "),
            gatehouse_config::services::ROUTE_NAME
        );
    }
    if !config.services.is_empty() {
        let listeners: Vec<&str> = config
            .listeners
            .iter()
            .map(|l| l.address.as_str())
            .collect();
        println!("listening on {}", listeners.join(", "));
    }
}

/// Raises the open-file limit to the hard limit: each connection holds a descriptor, and the
/// default soft limit (often 1024) is far below what `max_connections` allows.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(nofile = n, "open file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
}

/// Where `run` takes its config from.
enum ConfigFrom {
    File(PathBuf),
    /// etcd client URLs and the key.
    Etcd(Vec<String>, String),
}

/// `--upgrade-socket` and `--upgrade-from`.
type UpgradePaths = (Option<PathBuf>, Option<PathBuf>);

async fn run(from: ConfigFrom, (offer_at, take_from): UpgradePaths) -> anyhow::Result<()> {
    raise_nofile_limit();
    let signals = gatehouse::service::Signals::install()?;
    #[cfg(not(unix))]
    if offer_at.is_some() || take_from.is_some() {
        anyhow::bail!("--upgrade-socket and --upgrade-from need a unix system");
    }
    #[cfg(unix)]
    let (taken, takeover) = {
        if let Some(p) = &offer_at {
            gatehouse::upgrade::check_path(p, take_from.as_deref())?;
        }
        match &take_from {
            Some(p) => {
                let (taken, takeover) = gatehouse::upgrade::take(p).await?;
                (Some(taken), takeover)
            }
            None => (None, gatehouse::Takeover::default()),
        }
    };
    #[cfg(not(unix))]
    let takeover = gatehouse::Takeover::default();
    // A config that does not start ends this process here: the old one never hears `ready`
    // and keeps serving.
    let gw = match from {
        ConfigFrom::File(path) => {
            gatehouse::Gateway::start_file_taking_over(&path, None, takeover).await?
        }
        ConfigFrom::Etcd(urls, key) => {
            gatehouse::Gateway::start_etcd(urls, &key, None, takeover).await?
        }
    };
    #[allow(unused_mut)]
    let mut upgrades = gatehouse::service::Upgrades::default();
    #[cfg(unix)]
    {
        if let Some(taken) = taken {
            let (pid, path) = (taken.from_pid, taken.path().to_path_buf());
            if let Err(e) = taken.confirm().await {
                // Both were accepting; the old one still is, with everything it had.
                gw.shutdown(std::time::Duration::from_secs(5)).await;
                return Err(e.context("the upgrade failed; the running gateway keeps serving"));
            }
            tracing::info!(
                old_pid = pid,
                "upgrade: the old process drains; this one serves"
            );
            upgrades.took_over_from = Some(pid);
            // The old process's socket is dead; the same path is replaced below.
            if offer_at.as_deref() != Some(path.as_path()) {
                let _ = std::fs::remove_file(&path);
            }
        }
        if let Some(p) = &offer_at {
            match gatehouse::upgrade::Offer::listen(p) {
                Ok(o) => upgrades.offer = Some(o),
                // Serving already (and the old process draining): say so, don't stop.
                Err(e) if upgrades.took_over_from.is_some() => {
                    tracing::error!(error = %format!("{e:#}"), "cannot offer the sockets for the next upgrade")
                }
                Err(e) => {
                    gw.shutdown(std::time::Duration::from_secs(5)).await;
                    return Err(e);
                }
            }
        }
    }
    gatehouse::service::serve(gw, signals, upgrades).await
}

async fn run_demo(listen: String, admin: String, print_config: bool) -> anyhow::Result<()> {
    // The addresses go into the demo's YAML: only an IP:port may.
    for (what, a) in [("--listen", &listen), ("--admin", &admin)] {
        a.parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow::anyhow!("{what} {a:?}: expected IP:port, like 127.0.0.1:8080"))?;
    }
    if !print_config {
        raise_nofile_limit();
    }
    let mut addrs = Vec::new();
    let mut lines = Vec::new();
    // The backends take the three ports after the gateway's (8081-8083 by default), so the
    // addresses that `--print-config` shows are the ones a run uses; with `--listen` on port
    // 0 (tests) the system picks.
    let base_port = listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.port())
        .unwrap_or(0);
    for (i, spec) in demo::demo_backends().into_iter().enumerate() {
        let port = if base_port == 0 {
            0
        } else {
            base_port.saturating_add(i as u16 + 1)
        };
        let at = format!("127.0.0.1:{port}");
        if print_config && port != 0 {
            // Only printing: the addresses are known without taking the ports.
            addrs.push(at.parse()?);
            continue;
        }
        let l = gatehouse::listener::bind(&at).map_err(|e| {
            anyhow::anyhow!("demo backend {} cannot listen on {at}: {e} (the demo uses the three ports after --listen's; pick another --listen)", spec.name)
        })?;
        let addr = l.local_addr()?;
        lines.push(format!(
            "  {:<6} http://{addr}{}",
            spec.name,
            if spec.fail_rate > 0.0 {
                format!(
                    "   (fails {:.0} % of requests on purpose)",
                    spec.fail_rate * 100.0
                )
            } else {
                String::new()
            }
        ));
        addrs.push(addr);
        tokio::spawn(demo::serve_backend(l, spec));
    }
    let yaml = demo::demo_config(&listen, &admin, &addrs);
    if print_config {
        print!("{yaml}");
        return Ok(());
    }
    let gamma = addrs[2];
    let config = gatehouse_config::load_str(&yaml, "<demo>").map_err(|e| anyhow::anyhow!("{e}"))?;
    let signals = gatehouse::service::Signals::install()?;
    let gw = gatehouse::Gateway::start(config, None).await?;
    let g = format!("http://{}", gw.addrs()[0].1);
    let a = gw
        .admin_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    println!(
        "Gatehouse {} demo\n\nGateway: {g}\nDashboard: {a}/dashboard\nDemo backends:\n{}\n\nTry:\n  curl -i {g}/api/products            # round robin over alpha, beta, gamma; gamma's 500s are retried on another endpoint\n  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' '{g}/v1/proxy/flaky/?status=500'; done   # 500 500 500 503: gamma's breaker opened\n  curl -i {g}/v1/proxy/stable/hello    # the cluster named in the path\n  curl -i '{g}/api/slow?delay=2s'      # 504: the slow cluster's request timeout is 1s\n  curl -i '{g}/api/catalog?max_age=30' # cached: X-Cache MISS, then HIT (stale while stable is down)\n  curl -i {g}/nothing/here             # 404 JSON local reply\n  curl -i --http2-prior-knowledge {g}/api/products   # HTTP/2 (h2c)\n\nAdmin API: {a}\n  curl -s {a}/clusters/products      # every endpoint's health, breaker, weights, latency\n  curl -sN {a}/events                # live state transitions (server-sent events)\n  curl -s --json '{{\"state\":\"closed\"}}' {a}/clusters/flaky/endpoints/{gamma}/breaker   # admin actions take JSON\n  curl -s --json '{{}}' {a}/clusters/flaky/endpoints/{gamma}/drain\n\nOne JSON access-log line per request follows on stdout. Ctrl-C stops (in-flight requests finish first).\n",
        env!("CARGO_PKG_VERSION"),
        lines.join("\n")
    );
    gatehouse::service::serve(gw, signals, Default::default()).await
}

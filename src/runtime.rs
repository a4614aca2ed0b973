//! The current snapshot (one atomic pointer) and the registries of runtime state that outlive
//! snapshots, keyed by identity: endpoints by (cluster, address), upstream clients (pools) by
//! (cluster, address, transport settings). Keys never contain tunables such as weights.

use crate::cluster::endpoint::EndpointState;
use crate::cluster::ClusterState;
use crate::filter::limit::{redis_store::RedisStore, Limiter, LocalStore};
use crate::observe::access_log::AccessLogSink;
use crate::observe::events::Events;
use crate::observe::metrics::{Metrics, RouteMetrics};
use crate::observe::otel::Pipeline;
use crate::route::RouteTable;
use crate::upstream::UpstreamClient;
use arc_swap::ArcSwap;
use gatehouse_config::telemetry::Tracing as TracingConfig;
use gatehouse_config::validate::Problem;
use gatehouse_config::{Config, HealthCheck, Protocol, Timeouts};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

pub mod filters;
mod prune;
mod snapshot;

pub use snapshot::upstream_tls;

pub use snapshot::Snapshot;

type EndpointKey = (Arc<str>, Arc<str>);
/// A pool is one endpoint spoken to in one protocol; its timeouts are settings of the pool, so
/// a timeout change replaces it rather than adding another beside it.
type ClientKey = (Arc<str>, Arc<str>, Protocol);
/// What a pool was built with; a change builds a new pool.
type PoolSettings = (Timeouts, usize, Option<u64>);

/// What a health-check task is started with; a change restarts the task.
type HealthSettings = (HealthCheck, std::time::Duration, Timeouts, Protocol);

/// A running health-check task and the settings it was started with.
struct HealthTask {
    settings: HealthSettings,
    handle: AbortHandle,
}

/// A health-check task a new snapshot wants.
struct WantedTask {
    key: EndpointKey,
    settings: HealthSettings,
    state: Arc<EndpointState>,
    client: UpstreamClient,
}

pub struct Runtime {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointState>>>,
    clients: Mutex<HashMap<ClientKey, (PoolSettings, UpstreamClient)>>,
    /// Endpoints no snapshot uses any more, and since when: their state is kept for a grace
    /// period (a quick re-add keeps its breaker and health), then dropped.
    retired: Mutex<HashMap<EndpointKey, tokio::time::Instant>>,
    clusters: Mutex<HashMap<Arc<str>, Arc<ClusterState>>>,
    health_tasks: Mutex<HashMap<EndpointKey, HealthTask>>,
    limiter_state: Mutex<HashMap<Arc<str>, Arc<LocalStore>>>,
    redis: Mutex<Option<(gatehouse_config::traffic::Redis, Arc<RedisStore>)>>,
    /// The cache's memory store, kept while `cache.memory.max_bytes` is unchanged.
    cache_memory: Mutex<Option<(u64, Arc<crate::filter::cache::memory::Memory>)>>,
    cache_coalescer: Arc<crate::filter::cache::coalesce::Coalescer>,
    /// The OTLP export pipeline and the `tracing:` settings it was built from; kept while
    /// they are unchanged (a reload that only changes `sampling_ratio` keeps it).
    tracing: Mutex<Option<(TracingConfig, Arc<Pipeline>)>>,
    sweeper: Mutex<Option<AbortHandle>>,
    pub access_log: Option<AccessLogSink>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// Every TLS listener's certificates and handshake config, by listener name.
    pub tls: crate::tls::Registry,
    /// Flips once on shutdown: upgraded connections (tunnels) close when it does.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Every upgraded connection's tunnel: the drain of an upgrade waits for them.
    pub tunnels: tokio_util::task::TaskTracker,
    /// Set once a new process has taken the listening sockets over: HTTP/1.1 responses then
    /// say `Connection: close`, so each keep-alive connection ends between requests.
    handing_over: std::sync::atomic::AtomicBool,
    /// Endpoints of clusters with `endpoints_from`, and the tasks that find them.
    pub discovery: crate::discovery::Discovery,
    /// The config as loaded (before discovered endpoints are filled in): a discovery change
    /// re-applies it. Held while a config is applied, so a reload and a discovery change
    /// never interleave.
    base: Mutex<Option<Config>>,
}

impl Runtime {
    /// Builds the runtime and its first snapshot. Must run inside a tokio runtime (health
    /// checks are spawned).
    /// Fails (and starts nothing) when the config's snapshot cannot be built.
    pub fn new(
        config: Config,
        access_log: Option<AccessLogSink>,
    ) -> Result<Arc<Self>, Vec<Problem>> {
        Self::with_events(config, access_log, Events::default())
    }

    pub fn with_events(
        config: Config,
        access_log: Option<AccessLogSink>,
        events: Events,
    ) -> Result<Arc<Self>, Vec<Problem>> {
        Self::create(config, access_log, events, None)
    }

    /// [`Runtime::new`] whose first snapshot has the given generation (a config from etcd).
    pub fn new_at(
        config: Config,
        access_log: Option<AccessLogSink>,
        generation: Option<u64>,
    ) -> Result<Arc<Self>, Vec<Problem>> {
        Self::create(config, access_log, Events::default(), generation)
    }

    fn create(
        config: Config,
        access_log: Option<AccessLogSink>,
        events: Events,
        generation: Option<u64>,
    ) -> Result<Arc<Self>, Vec<Problem>> {
        let (discovery, mut changed) = crate::discovery::Discovery::new();
        let rt = Arc::new(Runtime {
            current: ArcSwap::from_pointee(Snapshot {
                generation: 0,
                config: Arc::new(config.clone()),
                routes: RouteTable::default(),
                clusters: HashMap::new(),
                route_clusters: Vec::new(),
                route_filters: Vec::new(),
                limiters: HashMap::new(),
                route_metrics: Vec::new(),
                unrouted: RouteMetrics::new(&Metrics::default(), "none"),
                identity: crate::filter::IdentityHeaders::new(&config.identity),
                tracing: None,
            }),
            generation: AtomicU64::new(0),
            endpoints: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
            health_tasks: Mutex::new(HashMap::new()),
            limiter_state: Mutex::new(HashMap::new()),
            redis: Mutex::new(None),
            cache_memory: Mutex::new(None),
            cache_coalescer: Arc::default(),
            tracing: Mutex::new(None),
            sweeper: Mutex::new(None),
            access_log,
            events,
            metrics: Arc::new(Metrics::default()),
            tls: crate::tls::Registry::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            tunnels: tokio_util::task::TaskTracker::new(),
            handing_over: std::sync::atomic::AtomicBool::new(false),
            discovery,
            base: Mutex::new(None),
        });
        rt.apply_as(config, generation)?;
        // A discovered cluster changed: apply the loaded config again with its new endpoints.
        let weak = Arc::downgrade(&rt);
        tokio::spawn(async move {
            while let Some(cluster) = changed.recv().await {
                let Some(rt) = weak.upgrade() else { break };
                if let Err(problems) = rt.rediscovered() {
                    let errors: Vec<String> = problems
                        .iter()
                        .map(|(at, msg)| format!("{at}: {msg}"))
                        .collect();
                    tracing::error!(%cluster, ?errors, "discovered endpoints could not be applied");
                }
            }
        });
        crate::observe::metrics::count_events(&rt.events, rt.metrics.clone());
        // Every 10 s: forget idle rate-limit keys so memory follows active clients, expire
        // retired endpoint state.
        let weak = Arc::downgrade(&rt);
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(rt) = weak.upgrade() else { break };
                let snap = rt.snapshot();
                let now = crate::clock::now_us(tokio::time::Instant::now());
                for l in snap.limiters.values() {
                    l.local.sweep(&l.params, now);
                }
                rt.expire_retired();
            }
        });
        *rt.sweeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(sweeper.abort_handle());
        Ok(rt)
    }

    /// The snapshot a request uses from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot from a validated config and publishes it with one atomic store.
    /// Runtime state of endpoints whose identity is unchanged is carried over.
    ///
    /// Fails closed: when a filter cannot be built (a key file that cannot be read, a policy
    /// that does not exist), nothing changes and the errors are returned.
    pub fn apply(&self, config: Config) -> Result<u64, Vec<Problem>> {
        self.apply_as(config, None)
    }

    /// [`Runtime::apply`] with the generation given (a config from etcd is its key's
    /// revision, the same on every instance) instead of the next one.
    pub fn apply_as(&self, config: Config, generation: Option<u64>) -> Result<u64, Vec<Problem>> {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.build_and_publish(config.clone(), Gen::from(generation))?;
        *base = Some(config);
        Ok(generation)
    }

    /// Applies the loaded config again with the discovered endpoints as they are now; the
    /// generation (which counts configs) stays.
    fn rediscovered(&self) -> Result<u64, Vec<Problem>> {
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        match base.clone() {
            Some(config) => self.build_and_publish(config, Gen::Keep),
            None => Ok(self.generation.load(Ordering::SeqCst)),
        }
    }

    /// [`Runtime::apply`]'s work.
    fn build_and_publish(&self, mut config: Config, gen: Gen) -> Result<u64, Vec<Problem>> {
        self.discovery.fill(&mut config);
        let tls = self.tls.prepare(&config)?;
        let upstream_tls = snapshot::upstream_tls(&config)?;
        let pipeline = self.tracing_pipeline(&config)?;
        let limiters = self.build_limiters(&config);
        let caches = filters::CacheStores {
            memory: self.cache_memory(&config),
            redis: self.redis_store(&config),
            coalescer: self.cache_coalescer.clone(),
        };
        let route_filters = filters::build(&config, &limiters, &self.metrics, &caches)?;
        self.keep_limiter_state(&limiters);
        // The first snapshot replaces the placeholder of generation 0.
        let first = self.current.load().generation == 0;
        let generation = match gen {
            Gen::Next => self.generation.fetch_add(1, Ordering::SeqCst) + 1,
            Gen::Keep => self.generation.load(Ordering::SeqCst),
            Gen::Set(g) => {
                self.generation.store(g, Ordering::SeqCst);
                g
            }
        };
        let (clusters, wanted_tasks) = self.build_clusters(&config, first, &upstream_tls);
        let route_metrics = config
            .routes
            .iter()
            .map(|r| RouteMetrics::new(&self.metrics, &r.name))
            .collect();
        self.metrics.generation.set(generation as i64);
        let tracing_config = config.tracing.clone();
        let tracing = tracing_config
            .as_ref()
            .zip(pipeline.clone())
            .map(|(t, p)| crate::observe::otel::Tracing::new(p, t.sampling_ratio));
        let snapshot = Snapshot {
            tracing,
            generation,
            route_filters,
            limiters,
            route_metrics,
            unrouted: RouteMetrics::new(&self.metrics, "none"),
            identity: crate::filter::IdentityHeaders::new(&config.identity),
            routes: RouteTable::new(&config.routes),
            route_clusters: snapshot::route_clusters(&config, &clusters),
            config: Arc::new(config),
            clusters,
        };
        if let Some(log) = &self.access_log {
            if !first && access_output(&self.snapshot().config) != access_output(&snapshot.config) {
                tracing::warn!("access_log output and path changes apply at the next restart; min_status, sample and fields apply now");
            }
            log.configure(&snapshot.config.access_log);
        }
        let previous = self.current.swap(Arc::new(snapshot));
        // A replaced pipeline exports what its remaining spans send it, then ends.
        *self.tracing.lock().unwrap_or_else(|p| p.into_inner()) = tracing_config.zip(pipeline);
        self.tls.publish(tls, &self.events, &self.metrics);
        self.reconcile_health_tasks(wanted_tasks);
        self.discovery
            .reconcile(&self.snapshot().config, &self.events, &self.metrics);
        self.prune(&previous);
        Ok(generation)
    }

    /// Drops what no snapshot uses any more: pools and cluster state of removed identities at
    /// once, their metric series at once, endpoint state after [`prune::RETIRED_GRACE`].
    fn prune(&self, previous: &Snapshot) {
        let now = tokio::time::Instant::now();
        let current = self.snapshot();
        let live = prune::Live::of(&current);
        let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        prune::retire(&mut eps, &mut retired, &live, now);
        drop((eps, retired));
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(c, a, p), _| live.pools.contains(&(c.clone(), a.clone(), *p)));
        self.clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c, _| live.clusters.contains(c));
        prune::forget_metrics(&self.metrics, &prune::Live::of(previous), &live);
    }

    /// Drops endpoint state retired longer than the grace period (also run periodically, so it
    /// goes even when no reload follows).
    fn expire_retired(&self) {
        let now = tokio::time::Instant::now();
        let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        prune::expire(&mut eps, &mut retired, now);
    }

    /// Keeps health-check tasks whose settings did not change, restarts changed ones, stops
    /// removed ones.
    fn reconcile_health_tasks(&self, wanted: Vec<WantedTask>) {
        let mut tasks = self.health_tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        for w in wanted {
            match tasks.remove(&w.key) {
                Some(old) if old.settings == w.settings => {
                    next.insert(w.key, old);
                }
                old => {
                    if let Some(old) = old {
                        old.handle.abort();
                    }
                    let (hc, slow_start, _, _) = w.settings.clone();
                    let handle = tokio::spawn(crate::cluster::health::run(
                        hc,
                        slow_start,
                        w.state,
                        w.client,
                        self.events.clone(),
                    ))
                    .abort_handle();
                    next.insert(
                        w.key,
                        HealthTask {
                            settings: w.settings,
                            handle,
                        },
                    );
                }
            }
        }
        for (_, old) in tasks.drain() {
            old.handle.abort();
        }
        *tasks = next;
    }

    /// Rate-limit policies for a snapshot; their local state is kept by policy name.
    fn build_limiters(&self, config: &Config) -> HashMap<Arc<str>, Arc<Limiter>> {
        let redis = self.redis_store(config);
        let mut states = self.limiter_state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for rl in &config.rate_limits {
            let name: Arc<str> = rl.name.as_str().into();
            let local = states.entry(name.clone()).or_default().clone();
            out.insert(name, Arc::new(Limiter::new(rl, local, redis.clone())));
        }
        out
    }

    /// Forgets the local state of policies the published snapshot no longer has.
    fn keep_limiter_state(&self, limiters: &HashMap<Arc<str>, Arc<Limiter>>) {
        let mut states = self.limiter_state.lock().unwrap_or_else(|p| p.into_inner());
        states.retain(|k, _| limiters.contains_key(k));
    }

    /// The cache's memory store: the running one while its budget is unchanged (entries
    /// survive reloads), a new, empty one when it changed.
    pub fn cache_memory(&self, config: &Config) -> Arc<crate::filter::cache::memory::Memory> {
        let max = config.cache.memory.max_bytes.0;
        let mut cur = self.cache_memory.lock().unwrap_or_else(|p| p.into_inner());
        match cur.as_ref() {
            Some((m, store)) if *m == max => store.clone(),
            _ => {
                let store = Arc::new(crate::filter::cache::memory::Memory::new(
                    max,
                    &self.metrics,
                ));
                *cur = Some((max, store.clone()));
                store
            }
        }
    }

    /// The Redis store, kept (with its connection) while the `redis` section is unchanged.
    pub fn redis_store(&self, config: &Config) -> Option<Arc<RedisStore>> {
        let cfg = config.redis.as_ref()?;
        let mut cur = self.redis.lock().unwrap_or_else(|p| p.into_inner());
        match cur.as_ref() {
            Some((c, store)) if c == cfg => Some(store.clone()),
            _ => {
                let store = RedisStore::new(cfg);
                *cur = Some((cfg.clone(), store.clone()));
                Some(store)
            }
        }
    }

    /// The export pipeline `config` wants: the running one while its settings are unchanged,
    /// else a new one (published with the snapshot; nothing changes if the apply fails).
    fn tracing_pipeline(&self, config: &Config) -> Result<Option<Arc<Pipeline>>, Vec<Problem>> {
        let Some(t) = &config.tracing else {
            return Ok(None);
        };
        let cur = self.tracing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, p)) = cur
            .as_ref()
            .filter(|(c, _)| c.pipeline_key() == t.pipeline_key())
        {
            return Ok(Some(p.clone()));
        }
        Pipeline::start(t, &self.metrics)
            .map(|p| Some(Arc::new(p)))
            .map_err(|e| vec![("tracing.otlp.endpoint".into(), e)])
    }

    /// Exports the spans still queued, for at most `within` (on shutdown, after the drain).
    pub async fn flush_tracing(&self, within: std::time::Duration) {
        let pipeline = self
            .tracing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, p)| p.clone());
        if let Some(p) = pipeline {
            p.shutdown(within).await;
        }
    }

    /// Tells long-lived work (upgraded connections) that the gateway is shutting down.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// A new process serves the listening sockets now (a binary upgrade): see `handing_over`.
    pub fn begin_handover(&self) {
        self.handing_over.store(true, Ordering::Relaxed);
    }

    /// Whether responses should close their HTTP/1.1 connection (a handover's drain).
    pub fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    /// Resolves (changes) when shutdown begins.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Stops background tasks (health checks, the limiter sweeper).
    pub fn stop(&self) {
        if let Some(s) = self
            .sweeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            s.abort();
        }
        let mut tasks = self.health_tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, t) in tasks.drain() {
            t.handle.abort();
        }
        self.discovery.stop();
    }

    /// The runtime state of `address` in `cluster`, for a binary upgrade to seed: the
    /// endpoint's own when a snapshot has it; for a cluster whose endpoints are discovered
    /// (not found yet in a starting process), new state kept as retired, which the snapshot
    /// that discovers the endpoint takes up (or which expires after the grace period).
    /// `None` when the config has no such cluster or lists its endpoints without this one.
    pub fn endpoint_or_seed(&self, cluster: &str, address: &str) -> Option<Arc<EndpointState>> {
        let key: EndpointKey = (Arc::from(cluster), Arc::from(address));
        let snap = self.snapshot();
        let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = eps.get(&key) {
            return Some(s.clone());
        }
        let c = snap.config.clusters.iter().find(|c| c.name == cluster)?;
        c.endpoints_from.as_ref()?;
        let state = Arc::new(EndpointState::new(
            key.0.clone(),
            key.1.clone(),
            &c.circuit_breaker,
        ));
        eps.insert(key.clone(), state.clone());
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, tokio::time::Instant::now());
        Some(state)
    }

    /// The runtime state of one endpoint, if any snapshot created it.
    pub fn endpoint(&self, cluster: &str, address: &str) -> Option<Arc<EndpointState>> {
        let eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        eps.get(&(Arc::from(cluster), Arc::from(address))).cloned()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which generation a published snapshot gets.
enum Gen {
    /// A new config: the next number.
    Next,
    /// Only discovered endpoints changed: the same config, the same generation.
    Keep,
    /// A config whose generation is given (its etcd revision).
    Set(u64),
}

impl From<Option<u64>> for Gen {
    fn from(g: Option<u64>) -> Self {
        g.map_or(Gen::Next, Gen::Set)
    }
}

/// Where `access_log:` sends lines (what only a restart changes).
fn access_output(c: &Config) -> (gatehouse_config::AccessOutput, Option<&str>) {
    (c.access_log.output, c.access_log.path.as_deref())
}

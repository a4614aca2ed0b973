//! Building a snapshot's route filters from the config. Fails closed: a filter that cannot be
//! built (its policy or issuer is missing, its key file cannot be read) is an error for the
//! whole config, never a filter that silently vanishes from its route.

use crate::filter::cache::{coalesce::Coalescer, memory::Memory, RouteCache};
use crate::filter::limit::Limiter;
use crate::filter::{api_key::ApiKeyAuth, jwt::JwtAuth, Filter, LimitCounters};
use crate::observe::metrics::Metrics;
use gatehouse_config::traffic::Filter as FilterConfig;
use gatehouse_config::validate::Problem;
use gatehouse_config::Config;
use std::collections::HashMap;
use std::sync::Arc;

/// The stores cache filters use; they outlive snapshots (entries survive reloads).
pub struct CacheStores {
    pub memory: Arc<Memory>,
    pub redis: Option<Arc<crate::filter::limit::redis_store::RedisStore>>,
    pub coalescer: Arc<Coalescer>,
}

/// Each route's filters, by the route's position in the config; or every filter that could not
/// be built, each named by its field path.
pub fn build(
    config: &Config,
    limiters: &HashMap<Arc<str>, Arc<Limiter>>,
    metrics: &Metrics,
    caches: &CacheStores,
) -> Result<Vec<Vec<Filter>>, Vec<Problem>> {
    let mut errors = Vec::new();
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let mut built = Vec::with_capacity(r.filters.len());
        let auth = Arc::new(crate::observe::metrics::AuthCounters::new(metrics, &r.name));
        for (j, f) in r.filters.iter().enumerate() {
            if let FilterConfig::Cache(c) = f {
                built.push(Filter::Cache(Arc::new(RouteCache::new(
                    &r.name,
                    c,
                    (caches.memory.clone(), caches.redis.clone()),
                    caches.coalescer.clone(),
                    metrics,
                ))));
                continue;
            }
            match build_one(f, (&r.name, &auth), config, limiters, metrics) {
                Ok(f) => built.push(f),
                Err(e) => errors.push((format!("routes[{i}].filters[{j}]"), e)),
            }
        }
        routes.push(built);
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(errors)
    }
}

/// What `gatehouse check` adds to validation: builds every filter as a snapshot would (reading
/// key files), without starting anything.
pub fn preflight(config: &Config) -> Vec<Problem> {
    let limiters = config
        .rate_limits
        .iter()
        .map(|rl| {
            let local = Arc::default();
            (
                rl.name.as_str().into(),
                Arc::new(Limiter::new(rl, local, None)),
            )
        })
        .collect();
    let metrics = Metrics::default();
    let caches = CacheStores {
        memory: Arc::new(Memory::new(1 << 20, &metrics)),
        redis: None,
        coalescer: Arc::default(),
    };
    build(config, &limiters, &metrics, &caches)
        .err()
        .unwrap_or_default()
}

fn build_one(
    f: &FilterConfig,
    (route, auth_counters): (&str, &Arc<crate::observe::metrics::AuthCounters>),
    config: &Config,
    limiters: &HashMap<Arc<str>, Arc<Limiter>>,
    metrics: &Metrics,
) -> Result<Filter, String> {
    match f {
        FilterConfig::RateLimit(name) => {
            let limiter = limiters
                .get(name.as_str())
                .cloned()
                .ok_or_else(|| format!("no rate limit named {name:?}"))?;
            let decision = |d: &str| {
                metrics
                    .rate_limit_decisions
                    .get_or_create(&vec![
                        ("route", route.to_string()),
                        ("policy", name.clone()),
                        ("decision", d.to_string()),
                    ])
                    .clone()
            };
            let counters = LimitCounters {
                allowed: decision("allowed"),
                limited: decision("limited"),
            };
            Ok(Filter::RateLimit(limiter, counters))
        }
        FilterConfig::Cache(_) => Err("the cache filter is built by the caller".into()),
        FilterConfig::Cors(c) => Ok(Filter::Cors(Arc::new(crate::filter::cors::Cors::new(c)))),
        FilterConfig::Fault(f) => {
            if f.abort.is_none() && f.delay.is_none() {
                return Err("a fault filter needs abort or delay".into());
            }
            Ok(Filter::Fault(f.clone()))
        }
        FilterConfig::Auth(a) => match (&a.api_key, &a.jwt, &a.client_cert) {
            (None, None, Some(c)) => Ok(Filter::ClientCert(
                Arc::new(crate::filter::ClientCertAuth::new(c, &config.consumers)),
                auth_counters.clone(),
            )),
            (Some(k), None, None) => Ok(Filter::ApiKey(
                Arc::new(
                    ApiKeyAuth::new(k, &config.consumers)
                        .map_err(|e| format!("auth.api_key: {e}"))?,
                ),
                auth_counters.clone(),
            )),
            (None, Some(j), None) => {
                let issuer = config
                    .jwt_issuers
                    .iter()
                    .find(|i| i.name == j.issuer)
                    .ok_or_else(|| format!("auth.jwt: no jwt issuer named {:?}", j.issuer))?;
                let auth = JwtAuth::new(issuer, j.forward)
                    .map_err(|e| format!("auth.jwt: issuer {:?}: {e}", issuer.name))?;
                Ok(Filter::Jwt(Arc::new(auth), auth_counters.clone()))
            }
            _ => Err("auth needs exactly one of api_key, jwt and client_cert".into()),
        },
    }
}

//! `GET /metrics`, in Prometheus' text format: what an operator graphs and alerts on.
//!
//! - `luminaguard_sandboxes{backend}`: running sandboxes, counted from the records at scrape time;
//! - `luminaguard_sandbox_events_total{kind}`: creates, destroys, expiries, OOM kills, approvals
//!   requested and decided (from the service's events, so sandboxes of every front-end of this
//!   daemon count);
//! - `luminaguard_create_seconds`, `luminaguard_exec_seconds`: how long a create takes (to an
//!   agent that answers) and a command runs (start to exit);
//! - `luminaguard_pool_ready{pool}`: sandboxes ready in each warm pool;
//! - `luminaguard_api_requests_total`, `luminaguard_api_errors_total{code}`,
//!   `luminaguard_connections`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Backend {
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Pool {
    pub pool: String,
}

/// Latency buckets from 1 ms to ~65 s (doubling): process sandboxes start in milliseconds,
/// microVMs under TCG in seconds.
fn buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub sandboxes: Family<Backend, Gauge>,
    pub events: Family<Kind, Counter>,
    pub create_seconds: Histogram,
    pub exec_seconds: Histogram,
    pub pool_ready: Family<Pool, Gauge>,
    pub requests: Counter,
    pub errors: Family<Code, Counter>,
    pub connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("luminaguard");
        let sandboxes = Family::<Backend, Gauge>::default();
        registry.register("sandboxes", "Running sandboxes", sandboxes.clone());
        let events = Family::<Kind, Counter>::default();
        registry.register(
            "sandbox_events",
            "Sandboxes created, destroyed, expired; OOM kills",
            events.clone(),
        );
        let create_seconds = Histogram::new(buckets());
        registry.register(
            "create_seconds",
            "Time to create a sandbox, until its agent answers",
            create_seconds.clone(),
        );
        let exec_seconds = Histogram::new(buckets());
        registry.register(
            "exec_seconds",
            "Time a command ran, start to exit",
            exec_seconds.clone(),
        );
        let pool_ready = Family::<Pool, Gauge>::default();
        registry.register(
            "pool_ready",
            "Sandboxes ready in each warm pool",
            pool_ready.clone(),
        );
        let requests = Counter::default();
        registry.register("api_requests", "API requests", requests.clone());
        let errors = Family::<Code, Counter>::default();
        registry.register(
            "api_errors",
            "API requests that failed, by error code",
            errors.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Open API connections", connections.clone());
        Self {
            registry,
            sandboxes,
            events,
            create_seconds,
            exec_seconds,
            pool_ready,
            requests,
            errors,
            connections,
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

//! Prometheus metrics of one node, served at `/metrics` on the admin port. The names are
//! the ones the Grafana dashboard and the alert rules in `deploy/observability/` use:
//! change them together.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpCode {
    pub op: &'static str,
    /// The gRPC code name (`OK`, `UNAVAILABLE`, ...).
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Role {
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// Every metric this node exports. Cheap to clone handles live inside.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<OpCode, Counter>,
    pub request_bytes: Family<Op, Counter>,
    pub request_duration: Family<Op, Histogram>,
    pub records_appended: Counter,
    pub elections: Counter,
    pub shards: Family<Role, Gauge>,
    pub commit_lag: Family<ShardLabel, Gauge>,
    pub under_replicated: Gauge,
    pub leaderless: Gauge,
    pub node_up: Family<NodeLabel, Gauge>,
    pub disk_used: Gauge<u64, AtomicU64>,
    pub disk_free: Gauge<u64, AtomicU64>,
    pub fsync_duration: Histogram,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics {
            requests: Family::default(),
            request_bytes: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            records_appended: Counter::default(),
            elections: Counter::default(),
            shards: Family::default(),
            commit_lag: Family::default(),
            under_replicated: Gauge::default(),
            leaderless: Gauge::default(),
            node_up: Family::default(),
            disk_used: Gauge::default(),
            disk_free: Gauge::default(),
            fsync_duration: latency_histogram(),
        };
        let mut r = Registry::with_prefix("runnel");
        r.register(
            "requests",
            "Requests by operation and gRPC code",
            m.requests.clone(),
        );
        r.register(
            "request_bytes",
            "Request payload bytes by operation",
            m.request_bytes.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request latency by operation",
            m.request_duration.clone(),
        );
        r.register(
            "records_appended",
            "Records committed by shards this node leads",
            m.records_appended.clone(),
        );
        r.register(
            "raft_elections",
            "Leaderships this node's replicas won (one per group and term; see gauges.rs)",
            m.elections.clone(),
        );
        r.register(
            "shards",
            "Shard replicas on this node by role",
            m.shards.clone(),
        );
        r.register(
            "shard_commit_lag_entries",
            "Entries a replica is behind its leader",
            m.commit_lag.clone(),
        );
        r.register(
            "under_replicated_shards",
            "Shards with fewer live replicas than desired",
            m.under_replicated.clone(),
        );
        r.register(
            "leaderless_shards",
            "Shards with no leader",
            m.leaderless.clone(),
        );
        r.register(
            "node_up",
            "1 when the meta leader sees the node up (meta leader only)",
            m.node_up.clone(),
        );
        r.register(
            "disk_used_bytes",
            "Bytes used on the data directory's filesystem",
            m.disk_used.clone(),
        );
        r.register(
            "disk_free_bytes",
            "Bytes free on the data directory's filesystem",
            m.disk_free.clone(),
        );
        r.register(
            "fsync_duration_seconds",
            "Latency of log fsyncs",
            m.fsync_duration.clone(),
        );
        (m, r)
    }
}

/// The registry in Prometheus' text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_names_are_exported() {
        let (m, r) = Metrics::new();
        m.requests
            .get_or_create(&OpCode {
                op: "PutRecords",
                code: "OK",
            })
            .inc();
        m.request_duration
            .get_or_create(&Op { op: "PutRecords" })
            .observe(0.002);
        m.shards.get_or_create(&Role { role: "leader" }).set(4);
        let text = render(&r);
        for name in [
            "runnel_requests_total{op=\"PutRecords\",code=\"OK\"} 1",
            "runnel_request_duration_seconds_bucket{",
            "runnel_shards{role=\"leader\"} 4",
            "runnel_under_replicated_shards",
            "runnel_fsync_duration_seconds_bucket",
            "runnel_disk_free_bytes",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}

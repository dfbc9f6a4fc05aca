//! What realtime counts: open connections and subscriptions, events delivered and
//! dropped, connections cut off for overflowing their buffer, and the delay from a
//! write's commit to its event being queued for a subscriber.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabels {
    pub(crate) transport: &'static str,
}

/// Seconds: 0.5 ms to 10 s.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Realtime's metrics on this node.
#[derive(Clone)]
pub struct RealtimeMetrics {
    pub(crate) connections: Family<TransportLabels, Gauge>,
    pub(crate) subscriptions: Gauge,
    pub(crate) delivered: Counter,
    pub(crate) dropped: Counter,
    pub(crate) overflows: Counter,
    pub(crate) lag: Histogram,
}

impl Default for RealtimeMetrics {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            subscriptions: Gauge::default(),
            delivered: Counter::default(),
            dropped: Counter::default(),
            overflows: Counter::default(),
            lag: histogram(),
        }
    }
}

impl RealtimeMetrics {
    /// Adds the metrics to a registry (the node's `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_connections",
            "Open realtime connections on this node, by transport (sse, websocket)",
            self.connections.clone(),
        );
        registry.register(
            "realtime_subscriptions",
            "Live subscriptions on this node",
            self.subscriptions.clone(),
        );
        registry.register(
            "realtime_events_delivered",
            "Events queued for a subscriber",
            self.delivered.clone(),
        );
        registry.register(
            "realtime_events_dropped",
            "Events a subscriber was owed but did not get because its connection was cut off (it resumes from its last seq)",
            self.dropped.clone(),
        );
        registry.register(
            "realtime_buffer_overflows",
            "Connections cut off because they fell a whole buffer behind",
            self.overflows.clone(),
        );
        registry.register(
            "realtime_delivery_lag_seconds",
            "Time from a write's commit to its event being queued for a subscriber",
            self.lag.clone(),
        );
    }
}

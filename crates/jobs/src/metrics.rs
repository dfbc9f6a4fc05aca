//! What the worker counts: attempts by job type and outcome, their run time, and how
//! late jobs start after they were due. The queue depths per state come from the store
//! when `/metrics` is read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Seconds: 1 ms to 5 min.
const BUCKETS: [f64; 14] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The worker's metrics.
#[derive(Clone)]
pub struct JobMetrics {
    attempts: Family<AttemptLabels, Counter>,
    run_time: Family<KindLabels, Histogram, fn() -> Histogram>,
    pickup: Family<KindLabels, Histogram, fn() -> Histogram>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            attempts: Family::default(),
            run_time: Family::new_with_constructor(histogram),
            pickup: Family::new_with_constructor(histogram),
        }
    }
}

impl JobMetrics {
    /// Adds the metrics to a registry (the node's `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "job_attempts",
            "Job attempts ended, by job type and outcome (completed, retryable, dead, accepted, lost)",
            self.attempts.clone(),
        );
        registry.register(
            "job_run_duration_seconds",
            "Time an attempt ran on this node, by job type",
            self.run_time.clone(),
        );
        registry.register(
            "job_pickup_delay_seconds",
            "Time from a job being due to its attempt starting, by job type",
            self.pickup.clone(),
        );
    }

    pub(crate) fn started(&self, kind: &str, late_seconds: f64) {
        self.pickup
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(late_seconds.max(0.0));
    }

    pub(crate) fn ended(&self, kind: &str, outcome: &'static str, seconds: f64) {
        self.attempts
            .get_or_create(&AttemptLabels {
                kind: kind.to_owned(),
                outcome,
            })
            .inc();
        self.run_time
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(seconds);
    }
}

//! Prometheus metrics, kept behind this small module so the library can be swapped cheaply.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub nodes: IntGaugeVec,
    pub instances: IntGaugeVec,
    pub placement_failures: IntCounter,
    pub placement_conflicts: IntCounter,
    pub enroll_refused: IntCounter,
    pub agent_sessions: IntCounter,
    pub planner_batch_seconds: Histogram,
    pub planner_batch_size: Histogram,
    pub evictions: IntCounter,
    pub evictions_blocked: IntGauge,
    /// Requests refused for a missing, wrong, revoked or expired key (401), or a role that
    /// does not allow the route (403).
    pub auth_failures: IntCounterVec,
    /// Audit rows that could not be written (logged as errors).
    pub audit_write_failures: IntCounter,
    /// Requests refused with 429 (per-key rate limit and login attempts).
    pub rate_limited: IntCounter,
    /// Events stored and published.
    pub events: IntCounter,
    /// Events dropped because the writer's queue was full.
    pub events_dropped: IntCounter,
    /// Open WebSocket clients (events, logs, stats, consoles).
    pub ws_clients: IntGauge,
    /// Messages received from agents, by kind (heartbeat, telemetry, observed, logs, hello).
    pub agent_messages: IntCounterVec,
    /// The same counters, resolved once: the per-message path does no label lookup.
    pub agent_message_counters: AgentMessageCounters,
}

pub struct AgentMessageCounters {
    pub hello: IntCounter,
    pub heartbeat: IntCounter,
    pub telemetry: IntCounter,
    pub observed: IntCounter,
    pub log_chunk: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static: a failure here is a programming error caught by the
    // unit test below on every build.
    #[allow(clippy::expect_used)]
    r.expect("static metric definition")
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("thecloud".into()), None).unwrap_or_else(|_| Registry::new());
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        ));
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["method", "route"],
        ));
        let nodes = must(IntGaugeVec::new(
            Opts::new("nodes", "Nodes by status"),
            &["status"],
        ));
        let instances = must(IntGaugeVec::new(
            Opts::new("instances", "Instances by status"),
            &["status"],
        ));
        let placement_failures = must(IntCounter::new(
            "placement_failures_total",
            "Instance requests refused for lack of capacity",
        ));
        let placement_conflicts = must(IntCounter::new(
            "placement_conflicts_total",
            "Placements re-planned because a node changed concurrently",
        ));
        let enroll_refused = must(IntCounter::new(
            "enroll_refused_total",
            "Enrollments refused for an unknown, used or expired join token",
        ));
        let agent_sessions = must(IntCounter::new(
            "agent_sessions_total",
            "Agent sessions opened",
        ));
        let planner_batch_seconds = must(Histogram::with_opts(
            HistogramOpts::new("planner_batch_seconds", "Time to plan and commit one batch")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
        ));
        let planner_batch_size = must(Histogram::with_opts(
            HistogramOpts::new("planner_batch_size", "Requests per planner batch")
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 512.0]),
        ));
        let evictions = must(IntCounter::new(
            "evictions_total",
            "Instances moved off down or draining nodes",
        ));
        let evictions_blocked = must(IntGauge::new(
            "evictions_blocked",
            "1 while too many nodes are down for evictions to run",
        ));
        let auth_failures = must(IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "API requests refused: unauthenticated (401) or forbidden (403)",
            ),
            &["reason"],
        ));
        let audit_write_failures = must(IntCounter::new(
            "audit_write_failures_total",
            "Audit rows that could not be written",
        ));
        let rate_limited = must(IntCounter::new(
            "rate_limited_total",
            "API requests refused by a rate limit (429)",
        ));
        let events = must(IntCounter::new(
            "events_total",
            "Events stored and published",
        ));
        let events_dropped = must(IntCounter::new(
            "events_dropped_total",
            "Events dropped because the event writer fell behind",
        ));
        let ws_clients = must(IntGauge::new("websocket_clients", "Open WebSocket clients"));
        let agent_messages = must(IntCounterVec::new(
            Opts::new(
                "agent_messages_total",
                "Messages received from agents, by kind",
            ),
            &["kind"],
        ));
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(nodes.clone()),
            Box::new(instances.clone()),
            Box::new(placement_failures.clone()),
            Box::new(placement_conflicts.clone()),
            Box::new(enroll_refused.clone()),
            Box::new(agent_sessions.clone()),
            Box::new(planner_batch_seconds.clone()),
            Box::new(planner_batch_size.clone()),
            Box::new(evictions.clone()),
            Box::new(evictions_blocked.clone()),
            Box::new(agent_messages.clone()),
            Box::new(auth_failures.clone()),
            Box::new(audit_write_failures.clone()),
            Box::new(rate_limited.clone()),
            Box::new(events.clone()),
            Box::new(events_dropped.clone()),
            Box::new(ws_clients.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            http_requests,
            http_duration,
            nodes,
            instances,
            placement_failures,
            placement_conflicts,
            enroll_refused,
            agent_sessions,
            planner_batch_seconds,
            planner_batch_size,
            evictions,
            evictions_blocked,
            auth_failures,
            audit_write_failures,
            rate_limited,
            events,
            events_dropped,
            ws_clients,
            agent_message_counters: AgentMessageCounters {
                hello: agent_messages.with_label_values(&["hello"]),
                heartbeat: agent_messages.with_label_values(&["heartbeat"]),
                telemetry: agent_messages.with_label_values(&["telemetry"]),
                observed: agent_messages.with_label_values(&["observed"]),
                log_chunk: agent_messages.with_label_values(&["log_chunk"]),
            },
            agent_messages,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["GET", "/v1/instances", "200"])
            .inc();
        m.nodes.with_label_values(&["ready"]).set(3);
        let text = m.render();
        assert!(text.contains("thecloud_http_requests_total{method=\"GET\",route=\"/v1/instances\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains("thecloud_nodes{status=\"ready\"} 3"),
            "{text}"
        );
    }
}

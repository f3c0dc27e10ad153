//! Background tasks. Each is idempotent and driven by a timer: running one twice, or after a
//! restart, converges to the same state.

use crate::app::App;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often heartbeat times are written to the store per node.
const HEARTBEAT_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Declares nodes `down` when they miss heartbeats for `node_down_after`, and persists
/// heartbeat times in batches.
pub async fn liveness(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let tick =
        (app.config.node_down_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for node in app.sessions.take_overdue(app.config.node_down_after) {
            if let Err(e) = app.node_mark_down(node).await {
                tracing::error!(%node, error = %e, "cannot mark node down; will retry");
                app.sessions.expect_alive([node]);
            }
        }
        let beats = app.sessions.heartbeats_to_flush(HEARTBEAT_FLUSH_EVERY);
        if !beats.is_empty() {
            // One writer for liveness rows: the status writer.
            app.status_writer
                .send(crate::statuswriter::Write::Heartbeats(beats))
                .await;
        }
    }
}

/// Sets the node/instance-by-status gauges from the store (called at scrape time).
pub async fn refresh_state_gauges(app: &App) {
    match app.store.node_count_by_status().await {
        Ok(counts) => {
            for s in cloud_api::NodeStatus::ALL {
                let n = counts
                    .iter()
                    .find(|c| c.status == s.as_str())
                    .map_or(0, |c| c.count);
                app.metrics.nodes.with_label_values(&[s.as_str()]).set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count nodes"),
    }
    match app.store.instance_count_by_status().await {
        Ok(counts) => {
            for s in cloud_api::InstanceStatus::ALL {
                let n = counts
                    .iter()
                    .find(|c| c.status == s.as_str())
                    .map_or(0, |c| c.count);
                app.metrics
                    .instances
                    .with_label_values(&[s.as_str()])
                    .set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count instances"),
    }
}

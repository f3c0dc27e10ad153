//! Moves workloads off nodes that are down or draining, safely.
//!
//! * A down node's `always`/`on-failure` instances move after `reschedule_after`; `never`
//!   instances stay `lost`. A node drained with `evacuate` has its movable instances moved at
//!   once and its `never` instances stopped in place; one drained with `keep_instances` keeps
//!   them (until it is down for `reschedule_after`).
//! * Rate limit: at most `evictions_per_second` nodes are evicted per second (token bucket).
//! * Mass-failure guard: while more than `max_down_fraction` of the nodes are down, nothing
//!   moves: a scheduler cut off from much of the fleet must not reschedule it.
//! * Fencing: a move bumps the old node's generation, so its desired state no longer holds the
//!   instance; when a down node returns, its agent stops the moved copy.
//!
//! Idempotent and timer-driven: every pass re-reads the store and does what is still to do.

use crate::app::App;
use crate::error::Error;
use crate::store::InstanceRecord;
use chrono::Utc;
use cloud_api::{InstanceId, NodeId, ProjectId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const PASS_EVERY: Duration = Duration::from_millis(500);

/// A token bucket of node evictions.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn movable(i: &InstanceRecord) -> bool {
    matches!(i.restart_policy.as_str(), "always" | "on-failure") && i.status != "deleting"
}

pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut bucket = Bucket::new(app.config.evictions_per_second);
    let mut blocked = false;
    let mut interval = tokio::time::interval(PASS_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = pass(&app, &mut bucket, &mut blocked).await {
            tracing::warn!(error = %e, "eviction pass failed; will retry");
        }
    }
}

async fn pass(app: &App, bucket: &mut Bucket, blocked: &mut bool) -> Result<(), Error> {
    let unavailable = app.store.node_list_unavailable().await?;
    if unavailable.is_empty() {
        set_blocked(app, blocked, false, 0, 0);
        return Ok(());
    }
    let (total, down) = app.store.node_count_live_and_down().await?;
    let too_many = total > 0 && (down as f64 / total as f64) > app.config.max_down_fraction;
    set_blocked(app, blocked, too_many, down, total);
    if too_many {
        return Ok(());
    }
    let now = Utc::now();
    let grace = chrono::Duration::from_std(app.config.reschedule_after).unwrap_or_default();
    for (id, name, status, since) in unavailable {
        let node = NodeId(id);
        if status == "down" && since.is_some_and(|t| now - t < grace) {
            continue;
        }
        let instances = app.store.instance_list_by_node(node).await?;
        let todo: Vec<InstanceRecord> = instances
            .into_iter()
            .filter(|i| {
                movable(i)
                    || (status == "draining"
                        && i.status != "deleting"
                        && i.desired_state == "running")
            })
            .collect();
        if todo.is_empty() || !bucket.take() {
            continue;
        }
        tracing::info!(%node, %name, %status, instances = todo.len(), "evicting");
        let reason = if status == "down" {
            format!("moved: node {name} is down")
        } else {
            format!("moved: node {name} is draining")
        };
        let moves = todo.into_iter().map(|inst| {
            let reason = reason.clone();
            async move {
                if movable(&inst) {
                    let (id, iname) = (inst.id, inst.name.clone());
                    match app.planner.move_instance(inst, reason).await {
                        Ok(placed) => {
                            app.metrics.evictions.inc();
                            tracing::info!(instance = %id, name = %iname, to = %placed.node_name, "instance moved");
                        }
                        Err(e) => tracing::warn!(instance = %id, name = %iname, error = %e, "cannot move instance yet"),
                    }
                } else if let Err(e) = app
                    .store
                    .instance_set_desired(ProjectId(inst.project_id), InstanceId(inst.id), "stopped", "stopping")
                    .await
                {
                    tracing::warn!(instance = %inst.id, error = %e, "cannot stop instance on draining node");
                } else {
                    app.sessions.notify_desired(node);
                }
            }
        });
        futures::future::join_all(moves).await;
    }
    Ok(())
}

fn set_blocked(app: &App, blocked: &mut bool, now: bool, down: i64, total: i64) {
    if now != *blocked {
        if now {
            tracing::error!(
                down,
                total,
                max_fraction = app.config.max_down_fraction,
                "too many nodes are down: evictions paused (is this scheduler partitioned?)"
            );
        } else {
            tracing::info!("evictions resumed");
        }
        *blocked = now;
    }
    app.metrics.evictions_blocked.set(i64::from(now));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_the_rate() {
        let mut b = Bucket::new(2.0);
        assert!(b.take());
        assert!(b.take());
        assert!(!b.take(), "burst is the rate");
        std::thread::sleep(Duration::from_millis(600));
        assert!(b.take(), "refills over time");
        assert!(!b.take());
    }
}

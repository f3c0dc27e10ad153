//! Writes what agents observe, in batches: every session hands its instance observations,
//! applied generations and confirmed deletions to this one task, which folds whatever queued
//! meanwhile into one transaction of a few multi-row statements. Under load, thousands of
//! status changes cost a handful of statements; when idle, a change is written at once.
//!
//! Observations are level-triggered (agents resend their full state periodically), so a batch
//! that fails is logged and dropped rather than retried forever.

use crate::app::App;
use crate::store::{DeletionConfirm, ObservationWrite};
use cloud_api::NodeId;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 5000;
/// Queue depth; session workers wait when the store falls this far behind.
const QUEUE: usize = 50_000;

pub enum Write {
    Observation(ObservationWrite),
    Applied(NodeId, u64),
    Deleted(DeletionConfirm),
    /// Heartbeat times to persist (from the liveness task).
    Heartbeats(Vec<(NodeId, chrono::DateTime<chrono::Utc>)>),
}

#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::Sender<Write>,
}

impl StatusWriter {
    pub fn new() -> (Self, mpsc::Receiver<Write>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, rx)
    }

    pub async fn send(&self, w: Write) {
        // Only fails at shutdown.
        let _ = self.tx.send(w).await;
    }
}

pub async fn run(app: Arc<App>, mut rx: mpsc::Receiver<Write>, mut stop: watch::Receiver<bool>) {
    loop {
        let first = tokio::select! {
            w = rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut observations: HashMap<cloud_api::InstanceId, ObservationWrite> = HashMap::new();
        let mut applied: HashMap<NodeId, u64> = HashMap::new();
        let mut deletions: HashMap<cloud_api::InstanceId, DeletionConfirm> = HashMap::new();
        let mut beats: HashMap<NodeId, chrono::DateTime<chrono::Utc>> = HashMap::new();
        let mut fold = |w: Write| match w {
            // A later observation of the same instance replaces an earlier one.
            Write::Observation(o) => {
                observations.insert(o.id, o);
            }
            Write::Applied(node, g) => {
                let e = applied.entry(node).or_insert(g);
                *e = (*e).max(g);
            }
            Write::Deleted(d) => {
                deletions.insert(d.id, d);
            }
            Write::Heartbeats(v) => beats.extend(v),
        };
        fold(first);
        let mut count = 1;
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => {
                    fold(w);
                    count += 1;
                }
                Err(_) => break,
            }
        }
        let observations: Vec<ObservationWrite> = observations.into_values().collect();
        let applied: Vec<(NodeId, u64)> = applied.into_iter().collect();
        let deletions: Vec<DeletionConfirm> = deletions.into_values().collect();
        // Instance rows and node rows go in separate transactions (see observations_write);
        // a transaction rolled back by a deadlock is simply run again.
        for attempt in 1..=3 {
            match app
                .store
                .observations_write(&observations, &deletions)
                .await
            {
                Ok((deleted, changes)) => {
                    for c in changes {
                        app.events.emit(
                            Some(c.project_id),
                            "instance.status",
                            "instance",
                            c.id,
                            serde_json::json!({
                                "from": c.from, "to": c.to, "reason": c.reason, "node_id": c.node,
                            }),
                        );
                    }
                    for (instance, node, project) in deleted {
                        app.events.emit(
                            Some(project),
                            "instance.deleted",
                            "instance",
                            instance,
                            serde_json::json!({ "node_id": node }),
                        );
                        tracing::info!(%instance, node = %node, "instance deleted");
                        app.specs.remove(&instance);
                        app.planner
                            .notify(crate::planner::Event::NodeChanged(NodeId(node)));
                    }
                    break;
                }
                Err(crate::store::StoreError::Conflict) if attempt < 3 => continue,
                Err(e) => {
                    tracing::warn!(error = %e, writes = count, "cannot write observed states; agents will report them again");
                    break;
                }
            }
        }
        let beats: Vec<_> = beats.into_iter().collect();
        if let Err(e) = app.store.node_record_heartbeats(&beats).await {
            tracing::warn!(error = %e, "cannot persist heartbeats");
        }
        for attempt in 1..=3 {
            match app.store.node_applied_write(&applied).await {
                Ok(()) => break,
                Err(crate::store::StoreError::Conflict) if attempt < 3 => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record applied generations");
                    break;
                }
            }
        }
    }
}

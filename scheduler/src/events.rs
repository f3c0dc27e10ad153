//! The event bus: services emit events (state changes, placements, deletions, node changes);
//! one writer task stores them in order (so `seq` order is commit order and clients can resume
//! from the last `seq` they saw) and then publishes them to live subscribers (WebSockets).
//! Emitting never blocks a caller: the queue is bounded and, when it is full, the event is
//! counted and logged as dropped rather than stalling the control plane. One scheduler writes
//! a database's events (it numbers them).

use crate::app::App;
use crate::store::{EventRecord, NewEvent};
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

const QUEUE: usize = 10_000;
/// Live subscribers that fall this far behind are dropped (they resume from their last seq).
pub const LIVE_BUFFER: usize = 4096;
const MAX_BATCH: usize = 500;
/// Events are kept this long.
const RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

#[derive(Clone)]
pub struct EventBus {
    tx: mpsc::Sender<NewEvent>,
    live: broadcast::Sender<Arc<EventRecord>>,
    /// Events dropped so far (the metric is the count).
    dropped: prometheus::IntCounter,
}

impl EventBus {
    pub fn new(dropped: prometheus::IntCounter) -> (Self, mpsc::Receiver<NewEvent>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        (Self { tx, live, dropped }, rx)
    }

    /// Queues an event; `project` None: a fleet event.
    pub fn emit(
        &self,
        project: Option<Uuid>,
        kind: &str,
        resource_type: &str,
        resource_id: impl ToString,
        data: Value,
    ) {
        let e = NewEvent {
            at: Utc::now(),
            project_id: project,
            kind: kind.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_string(),
            data,
        };
        if self.tx.try_send(e).is_err() {
            self.dropped.inc();
            let n = self.dropped.get();
            if n % 1000 == 1 {
                tracing::warn!(dropped = n, "the event queue is full; events are dropped");
            }
        }
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.live.subscribe()
    }
}

/// The writer: stores queued events in batches, then publishes them.
pub async fn run(app: Arc<App>, mut rx: mpsc::Receiver<NewEvent>, mut stop: watch::Receiver<bool>) {
    let mut pruned_at = tokio::time::Instant::now() - Duration::from_secs(3600);
    let mut next_seq = loop {
        match app.store.events_last_seq().await {
            Ok(s) => break s + 1,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last event; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };
    loop {
        let first = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        match app.store.events_append(next_seq, &batch).await {
            Ok(stored) => {
                next_seq += stored.len() as i64;
                app.metrics.events.inc_by(stored.len() as u64);
                for e in stored {
                    // No subscriber is fine.
                    let _ = app.events.live.send(Arc::new(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, events = batch.len(), "cannot store events; they are lost")
            }
        }
        if pruned_at.elapsed() > Duration::from_secs(3600) {
            pruned_at = tokio::time::Instant::now();
            if let Err(e) = app.store.events_prune(Utc::now() - RETENTION).await {
                tracing::warn!(error = %e, "cannot prune old events");
            }
        }
    }
}

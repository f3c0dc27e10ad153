//! In-memory state of connected agents: one session slot per node, liveness (last heartbeat),
//! latest telemetry, and the relay of log streams requested from agents.
//!
//! Nothing here is durable: after a scheduler restart agents reconnect and fill it again.
//! Heartbeats are counted here and flushed to the store in batches by the liveness task, so
//! a large fleet does not turn every heartbeat into a database write.

use chrono::{DateTime, Utc};
use cloud_api::{HostUsage, InstanceId, InstanceUsage, NodeId};
use cloud_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Outbound queue depth per agent session.
const SESSION_QUEUE: usize = 256;
/// Queue depth per relayed follow stream; a consumer slower than this is dropped.
const STREAM_QUEUE: usize = 64;
/// Queue depth of a one-shot log read: room for the whole answer (16 MiB in 64 KiB chunks),
/// so a reader that is briefly descheduled does not lose it.
const ONESHOT_QUEUE: usize = 260;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("node {0} is not connected to the scheduler")]
    NotConnected(NodeId),
    #[error("node {0} is not keeping up with requests")]
    Busy(NodeId),
}

/// What a session task needs to run.
pub struct SessionTicket {
    pub id: u64,
    pub node: NodeId,
    /// Fired when the node's desired state changed.
    pub desired_changed: Arc<Notify>,
    /// Fired when a newer session of the same node replaced this one.
    pub replaced: Arc<Notify>,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<pb::SchedulerMessage>,
    desired_changed: Arc<Notify>,
    replaced: Arc<Notify>,
}

#[derive(Default)]
struct NodeLive {
    slot: Option<Slot>,
    last_seen: Option<Instant>,
    last_seen_at: Option<DateTime<Utc>>,
    flushed_at: Option<DateTime<Utc>>,
    usage: Option<HostUsage>,
    instance_usage: HashMap<InstanceId, InstanceUsage>,
    /// Set once the store has the node `down`; cleared once it is `ready` again. While set,
    /// every message from the node asks for a revive, so a heartbeat that raced the
    /// mark-down cannot leave a live node `down`.
    marked_down: bool,
}

struct StreamWaiter {
    node: NodeId,
    tx: mpsc::Sender<pb::LogChunk>,
}

#[derive(Default)]
pub struct Sessions {
    nodes: Mutex<HashMap<NodeId, NodeLive>>,
    streams: Mutex<HashMap<u64, StreamWaiter>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent in a way that
    // matters (each operation is a single insert/remove), so recover the guard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    fn next(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a new session for `node`, replacing (and kicking) any older one.
    pub fn attach(
        &self,
        node: NodeId,
    ) -> (
        SessionTicket,
        mpsc::Receiver<pb::SchedulerMessage>,
        mpsc::Sender<pb::SchedulerMessage>,
    ) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let ticket = SessionTicket {
            id: self.next(),
            node,
            desired_changed: Arc::new(Notify::new()),
            replaced: Arc::new(Notify::new()),
        };
        let slot = Slot {
            id: ticket.id,
            tx: tx.clone(),
            desired_changed: ticket.desired_changed.clone(),
            replaced: ticket.replaced.clone(),
        };
        let mut nodes = lock(&self.nodes);
        let live = nodes.entry(node).or_default();
        if let Some(old) = live.slot.replace(slot) {
            old.replaced.notify_one();
        }
        live.last_seen = Some(Instant::now());
        live.last_seen_at = Some(Utc::now());
        (ticket, rx, tx)
    }

    /// Removes the session if it is still the current one of its node.
    pub fn detach(&self, ticket: &SessionTicket) {
        let detached = {
            let mut nodes = lock(&self.nodes);
            match nodes.get_mut(&ticket.node) {
                Some(live) if live.slot.as_ref().is_some_and(|s| s.id == ticket.id) => {
                    live.slot = None;
                    true
                }
                _ => false,
            }
        };
        if detached {
            // The agent forgot its streams with the session: end their waiters (a console
            // WebSocket is closed with the reason instead of hanging).
            lock(&self.streams).retain(|_, w| {
                if w.node != ticket.node {
                    return true;
                }
                let _ = w.tx.try_send(pb::LogChunk {
                    eof: true,
                    error: "the node's session ended".into(),
                    ..Default::default()
                });
                false
            });
        }
    }

    /// Ends every session (scheduler shutdown); agents reconnect to the next scheduler.
    pub fn close_all(&self) {
        for live in lock(&self.nodes).values_mut() {
            if let Some(slot) = live.slot.take() {
                slot.replaced.notify_one();
            }
        }
    }

    /// Whether `session` is still the node's current session.
    pub fn is_current(&self, node: NodeId, session: u64) -> bool {
        lock(&self.nodes)
            .get(&node)
            .and_then(|l| l.slot.as_ref())
            .is_some_and(|s| s.id == session)
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        lock(&self.nodes)
            .get(&node)
            .is_some_and(|l| l.slot.is_some())
    }

    /// Wakes the node's session so it sends the current desired state.
    pub fn notify_desired(&self, node: NodeId) {
        if let Some(slot) = lock(&self.nodes).get(&node).and_then(|l| l.slot.as_ref()) {
            slot.desired_changed.notify_one();
        }
    }

    /// Records a sign of life (heartbeat or any message). Returns true when the store has the
    /// node `down` and it should be revived.
    pub fn touch(&self, node: NodeId) -> bool {
        let mut nodes = lock(&self.nodes);
        let live = nodes.entry(node).or_default();
        live.last_seen = Some(Instant::now());
        live.last_seen_at = Some(Utc::now());
        live.marked_down
    }

    /// The store now has the node `down` (or `ready` again when `down` is false).
    pub fn set_marked_down(&self, node: NodeId, down: bool) {
        lock(&self.nodes).entry(node).or_default().marked_down = down;
    }

    /// Starts the down-detection clock for nodes the store says are up, e.g. after a
    /// scheduler restart: they get a full `node_down_after` to reconnect.
    pub fn expect_alive(&self, nodes: impl IntoIterator<Item = NodeId>) {
        let mut map = lock(&self.nodes);
        let now = Instant::now();
        for n in nodes {
            let live = map.entry(n).or_default();
            live.last_seen.get_or_insert(now);
        }
    }

    /// Nodes silent for longer than `after`. They leave the liveness clock until they are
    /// heard from again, so a dead node is reported once.
    pub fn take_overdue(&self, after: Duration) -> Vec<NodeId> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, live) in lock(&self.nodes).iter_mut() {
            if let Some(seen) = live.last_seen
                && now.duration_since(seen) > after
            {
                live.last_seen = None;
                out.push(*id);
            }
        }
        out
    }

    /// Heartbeat times not yet written to the store, at most one per `every` per node.
    pub fn heartbeats_to_flush(&self, every: Duration) -> Vec<(NodeId, DateTime<Utc>)> {
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::seconds(5));
        let mut out = Vec::new();
        for (id, live) in lock(&self.nodes).iter_mut() {
            if let Some(at) = live.last_seen_at
                && live.flushed_at.is_none_or(|f| at - f >= every)
            {
                live.flushed_at = Some(at);
                out.push((*id, at));
            }
        }
        out
    }

    /// The most recent heartbeat seen in memory (fresher than the store's copy).
    pub fn last_seen_at(&self, node: NodeId) -> Option<DateTime<Utc>> {
        lock(&self.nodes).get(&node).and_then(|l| l.last_seen_at)
    }

    pub fn set_usage(&self, node: NodeId, usage: HostUsage) {
        lock(&self.nodes).entry(node).or_default().usage = Some(usage);
    }

    pub fn usage(&self, node: NodeId) -> Option<HostUsage> {
        lock(&self.nodes).get(&node).and_then(|l| l.usage.clone())
    }

    /// Replaces the per-instance usage of a node with its latest sample.
    pub fn set_instance_usage(&self, node: NodeId, usage: HashMap<InstanceId, InstanceUsage>) {
        lock(&self.nodes).entry(node).or_default().instance_usage = usage;
    }

    pub fn instance_usage(&self, node: NodeId, instance: InstanceId) -> Option<InstanceUsage> {
        lock(&self.nodes)
            .get(&node)
            .and_then(|l| l.instance_usage.get(&instance).cloned())
    }

    /// Asks the node's agent to stream an instance's logs. Chunks arrive on the receiver;
    /// call `close_stream` when done (it tells the agent to stop a follow stream).
    pub fn open_log_stream(
        &self,
        node: NodeId,
        instance: InstanceId,
        tail: u32,
        follow: bool,
    ) -> Result<(u64, mpsc::Receiver<pb::LogChunk>), SessionError> {
        self.open_stream(node, instance, pb::StreamKind::Logs, tail, follow)
    }

    /// Asks the node's agent to relay a VM's console: output arrives on the receiver, input
    /// goes through `send_input`; `close_stream` ends it.
    pub fn open_console_stream(
        &self,
        node: NodeId,
        instance: InstanceId,
    ) -> Result<(u64, mpsc::Receiver<pb::LogChunk>), SessionError> {
        self.open_stream(node, instance, pb::StreamKind::Console, 0, true)
    }

    /// Sends user bytes to a bidirectional stream's agent (waits while the session's queue
    /// is full). False when the stream or its session is gone.
    pub async fn send_input(&self, request_id: u64, data: Vec<u8>) -> bool {
        let tx = {
            let Some(node) = lock(&self.streams).get(&request_id).map(|w| w.node) else {
                return false;
            };
            lock(&self.nodes)
                .get(&node)
                .and_then(|l| l.slot.as_ref().map(|s| s.tx.clone()))
        };
        let Some(tx) = tx else { return false };
        tx.send(pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::StreamInput(pb::StreamInput {
                request_id,
                data,
            })),
        })
        .await
        .is_ok()
    }

    fn open_stream(
        &self,
        node: NodeId,
        instance: InstanceId,
        kind: pb::StreamKind,
        tail: u32,
        follow: bool,
    ) -> Result<(u64, mpsc::Receiver<pb::LogChunk>), SessionError> {
        let tx = lock(&self.nodes)
            .get(&node)
            .and_then(|l| l.slot.as_ref().map(|s| s.tx.clone()))
            .ok_or(SessionError::NotConnected(node))?;
        let request_id = self.next();
        let (ctx, crx) = mpsc::channel(if follow { STREAM_QUEUE } else { ONESHOT_QUEUE });
        lock(&self.streams).insert(request_id, StreamWaiter { node, tx: ctx });
        let msg = pb::SchedulerMessage {
            msg: Some(pb::scheduler_message::Msg::StreamRequest(
                pb::StreamRequest {
                    request_id,
                    instance_id: instance.to_string(),
                    kind: kind as i32,
                    tail,
                    follow,
                },
            )),
        };
        if tx.try_send(msg).is_err() {
            lock(&self.streams).remove(&request_id);
            return Err(SessionError::Busy(node));
        }
        Ok((request_id, crx))
    }

    /// Ends a relayed stream (idempotent).
    pub fn close_stream(&self, request_id: u64) {
        let Some(waiter) = lock(&self.streams).remove(&request_id) else {
            return;
        };
        let tx = lock(&self.nodes)
            .get(&waiter.node)
            .and_then(|l| l.slot.as_ref().map(|s| s.tx.clone()));
        if let Some(tx) = tx {
            let _ = tx.try_send(pb::SchedulerMessage {
                msg: Some(pb::scheduler_message::Msg::StreamCancel(pb::StreamCancel {
                    request_id,
                })),
            });
        }
    }

    /// Routes a chunk from `node` to its waiter. A chunk for a stream another node owns is
    /// dropped; a waiter that is not keeping up is dropped (bounded memory).
    pub fn deliver_chunk(&self, node: NodeId, chunk: pb::LogChunk) {
        let request_id = chunk.request_id;
        let done = chunk.eof || !chunk.error.is_empty();
        let overflow = {
            let streams = lock(&self.streams);
            match streams.get(&request_id) {
                Some(w) if w.node == node => w.tx.try_send(chunk).is_err(),
                _ => return,
            }
        };
        if overflow {
            self.close_stream(request_id);
        } else if done {
            lock(&self.streams).remove(&request_id);
        }
    }

    /// A guard that closes the stream when dropped (e.g. when the HTTP client goes away).
    pub fn stream_guard(&self, request_id: u64) -> StreamGuard<'_> {
        StreamGuard {
            sessions: self,
            request_id,
        }
    }

    /// Number of relayed streams open (for tests and metrics).
    pub fn open_streams(&self) -> usize {
        lock(&self.streams).len()
    }
}

/// Closes a relayed stream when dropped.
pub struct StreamGuard<'a> {
    sessions: &'a Sessions,
    request_id: u64,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.sessions.close_stream(self.request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_session_replaces_older() {
        let s = Sessions::new();
        let node = NodeId::new();
        let (t1, _rx1, _tx1) = s.attach(node);
        let (t2, _rx2, _tx2) = s.attach(node);
        assert!(s.is_connected(node));
        s.detach(&t1); // stale detach must not remove the new session
        assert!(s.is_connected(node));
        s.detach(&t2);
        assert!(!s.is_connected(node));
    }

    #[test]
    fn overdue_nodes_are_reported_once() {
        let s = Sessions::new();
        let node = NodeId::new();
        s.expect_alive([node]);
        assert!(s.take_overdue(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.take_overdue(Duration::from_millis(10)), vec![node]);
        assert!(s.take_overdue(Duration::from_millis(10)).is_empty());
        assert!(!s.touch(node), "not marked down yet: no revive needed");
        s.set_marked_down(node, true);
        assert!(
            s.touch(node),
            "marked down: every message asks for a revive"
        );
        assert!(s.touch(node), "until the revive succeeded");
        s.set_marked_down(node, false);
        assert!(!s.touch(node));
        assert!(s.take_overdue(Duration::from_secs(60)).is_empty());
    }

    #[tokio::test]
    async fn log_chunks_route_only_from_the_owning_node() {
        let s = Sessions::new();
        let node = NodeId::new();
        let other = NodeId::new();
        let (_t, mut agent_rx, _tx) = s.attach(node);
        assert_eq!(
            s.open_log_stream(other, InstanceId::new(), 10, false)
                .unwrap_err(),
            SessionError::NotConnected(other)
        );
        let (rid, mut rx) = s
            .open_log_stream(node, InstanceId::new(), 10, false)
            .unwrap();
        let req = agent_rx.recv().await.unwrap();
        assert!(
            matches!(req.msg, Some(pb::scheduler_message::Msg::StreamRequest(ref r)) if r.request_id == rid)
        );
        let chunk = |eof| pb::LogChunk {
            request_id: rid,
            data: b"hi\n".to_vec(),
            eof,
            error: String::new(),
        };
        s.deliver_chunk(other, chunk(false));
        s.deliver_chunk(node, chunk(true));
        let got = rx.recv().await.unwrap();
        assert!(got.eof, "the injected chunk from another node was dropped");
        assert_eq!(s.open_streams(), 0);
    }

    #[tokio::test]
    async fn slow_stream_consumers_are_dropped() {
        let s = Sessions::new();
        let node = NodeId::new();
        let (_t, _agent_rx, _tx) = s.attach(node);
        let (rid, _rx) = s.open_log_stream(node, InstanceId::new(), 0, true).unwrap();
        for _ in 0..=STREAM_QUEUE {
            s.deliver_chunk(
                node,
                pb::LogChunk {
                    request_id: rid,
                    data: vec![0; 10],
                    eof: false,
                    error: String::new(),
                },
            );
        }
        assert_eq!(s.open_streams(), 0);
        let (rid, _rx) = s
            .open_log_stream(node, InstanceId::new(), 0, false)
            .unwrap();
        drop(s.stream_guard(rid));
        assert_eq!(s.open_streams(), 0, "the guard closes abandoned streams");
    }
}

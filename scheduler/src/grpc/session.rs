//! One agent session: Hello, then a loop that applies what the agent reports and pushes the
//! node's desired state whenever it changes (and re-checks it on a timer, so a failed push or
//! a change made by another scheduler process is never missed).

use super::convert;
use super::status::to_status;
use crate::app::App;
use crate::sessions::SessionTicket;
use cloud_api::NodeId;
use cloud_proto::v1 as pb;
use cloud_proto::v1::agent_message::Msg as Up;
use cloud_proto::v1::scheduler_message::Msg as Down;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a session re-checks the node's desired state without a change notice (a safety
/// net; every change notifies), and how soon it retries after a failed push.
const DESIRED_RECHECK: Duration = Duration::from_secs(60);
const DESIRED_RETRY: Duration = Duration::from_secs(1);

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

/// Validates the session start and spawns the session loop.
pub async fn open(
    app: Arc<App>,
    node: NodeId,
    mut inbound: Streaming<pb::AgentMessage>,
) -> Result<Outbound, Status> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("the agent sent no Hello within 10 s"))??
        .ok_or_else(|| Status::invalid_argument("the session closed before Hello"))?;
    let Some(Up::Hello(hello)) = first.msg else {
        return Err(Status::invalid_argument(
            "the first session message must be Hello",
        ));
    };
    let facts = convert::facts_from_hello(&hello);
    let record = app
        .node_hello(node, &facts, hello.applied_generation)
        .await
        .map_err(to_status)?;
    let (ticket, rx, tx) = app.sessions.attach(node);
    app.metrics.agent_sessions.inc();
    let accepted = pb::SchedulerMessage {
        msg: Some(Down::Accepted(pb::SessionAccepted {
            node_id: node.to_string(),
            node_name: record.node.name.clone(),
            heartbeat_interval_ms: millis(app.config.heartbeat_interval),
            telemetry_interval_ms: millis(app.config.telemetry_interval),
        })),
    };
    tx.send(accepted)
        .await
        .map_err(|_| Status::unavailable("session closed"))?;
    tracing::info!(%node, name = %record.node.name, applied = hello.applied_generation, "agent session open");
    tokio::spawn(run(app, ticket, inbound, tx));
    Ok(Box::pin(ReceiverStream::new(rx).map(Ok)))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

async fn run(
    app: Arc<App>,
    ticket: SessionTicket,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: mpsc::Sender<pb::SchedulerMessage>,
) {
    let node = ticket.node;
    // Observations are applied by a worker, latest first: a slow database must not stop this
    // loop from reading heartbeats (or the node would look dead).
    let (observed_tx, observed_rx) = watch::channel(None);
    let worker = tokio::spawn(apply_observations(
        app.clone(),
        node,
        ticket.id,
        observed_rx,
    ));
    let mut last_pushed: Option<i64> = None;
    // The first push happens at once; later rechecks of thousands of sessions are spread
    // over the period.
    let jitter = Duration::from_millis(rand::random::<u64>() % 10_000);
    let recheck = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(recheck);
    loop {
        tokio::select! {
            biased;
            _ = ticket.replaced.notified() => {
                tracing::info!(%node, "session replaced by a newer one from the same node");
                break;
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => handle(&app, node, m, &observed_tx).await,
                Ok(None) => {
                    tracing::info!(%node, "agent closed its session");
                    break;
                }
                Err(status) => {
                    tracing::info!(%node, error = %status, "agent session ended");
                    break;
                }
            },
            _ = ticket.desired_changed.notified() => {
                let ok = push_desired(&app, node, &tx, &mut last_pushed).await;
                recheck.as_mut().reset(tokio::time::Instant::now() + if ok { DESIRED_RECHECK } else { DESIRED_RETRY });
            }
            _ = &mut recheck => {
                let ok = push_desired(&app, node, &tx, &mut last_pushed).await;
                recheck.as_mut().reset(tokio::time::Instant::now() + if ok { DESIRED_RECHECK + jitter } else { DESIRED_RETRY });
            }
        }
    }
    worker.abort();
    app.sessions.detach(&ticket);
}

async fn handle(
    app: &App,
    node: NodeId,
    m: pb::AgentMessage,
    observed: &watch::Sender<Option<pb::ObservedState>>,
) {
    let Some(msg) = m.msg else { return };
    if app.sessions.touch(node) {
        // The store has this node down while its session is alive.
        if let Err(e) = app.node_revive(node).await {
            tracing::error!(%node, error = %e, "cannot mark node ready again; will retry");
        }
    }
    let counters = &app.metrics.agent_message_counters;
    match &msg {
        Up::Hello(_) => counters.hello.inc(),
        Up::Heartbeat(_) => counters.heartbeat.inc(),
        Up::Telemetry(_) => counters.telemetry.inc(),
        Up::Observed(_) => counters.observed.inc(),
        Up::LogChunk(_) => counters.log_chunk.inc(),
    }
    match msg {
        Up::Hello(h) => {
            // A later Hello updates the node's facts (e.g. a driver came up).
            let facts = convert::facts_from_hello(&h);
            if let Err(e) = app.node_hello(node, &facts, h.applied_generation).await {
                tracing::error!(%node, error = %e, "cannot update node facts");
            }
        }
        Up::Heartbeat(_) => {}
        Up::Telemetry(t) => app.node_telemetry(node, &t),
        Up::Observed(o) => {
            observed.send_replace(Some(o));
        }
        Up::LogChunk(c) => app.sessions.deliver_chunk(node, c),
    }
}

/// Applies the latest observed state of the node, skipping ones superseded while the previous
/// was being written. Stops writing once its session is no longer the node's current one.
async fn apply_observations(
    app: Arc<App>,
    node: NodeId,
    session: u64,
    mut rx: watch::Receiver<Option<pb::ObservedState>>,
) {
    while rx.changed().await.is_ok() {
        let Some(observed) = rx.borrow_and_update().clone() else {
            continue;
        };
        if !app.sessions.is_current(node, session) {
            return;
        }
        if let Err(e) = app.node_observed(node, &observed).await {
            tracing::error!(%node, error = format!("{e:#}"), "cannot apply observed state");
        }
    }
}

/// Sends the node's desired state unless this session already sent that generation. The
/// generation and the instances come from one statement, so a document's generation always
/// matches its content.
async fn push_desired(
    app: &App,
    node: NodeId,
    tx: &mpsc::Sender<pb::SchedulerMessage>,
    last: &mut Option<i64>,
) -> bool {
    // One statement reads the generation and the instances' changing state together (one
    // snapshot); the immutable rest of each spec comes from the cache.
    let (generation, states) = match app.store.node_desired_light(node).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%node, error = %e, "cannot load the desired state; will retry");
            return false;
        }
    };
    if *last == Some(generation) {
        return true;
    }
    let missing = app.specs.missing(states.iter().map(|s| s.id));
    if !missing.is_empty() {
        match app.store.instances_get_many(&missing).await {
            Ok(records) => records.iter().for_each(|r| app.specs.insert(r)),
            Err(e) => {
                tracing::error!(%node, error = %e, "cannot load instance specs; will retry");
                return false;
            }
        }
    }
    let mut instances = Vec::with_capacity(states.len());
    for st in &states {
        match app.specs.get(&st.id) {
            Some(base) => instances.push(crate::specs::spec(&base, st)),
            // Deleted between the two reads: it is gone from the next document anyway.
            None => return false,
        }
    }
    let vpcs = match crate::netdesired::fill(&app.store, node.0, &mut instances).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%node, error = %e, "cannot load the node's VPC networking; will retry");
            return false;
        }
    };
    let storage = if app.has_volumes(node.0) {
        match crate::voldesired::fill(&app.store, node.0, &mut instances).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(%node, error = %e, "cannot load the node's volumes; will retry");
                return false;
            }
        }
    } else {
        crate::voldesired::NodeStorage::default()
    };
    let doc = pb::DesiredState {
        generation: crate::store::to_u64(generation),
        instances,
        vpcs,
        volumes: storage.volumes,
        delete_volumes: storage.delete_volumes,
        snapshots: storage.snapshots,
        delete_snapshots: storage.delete_snapshots,
    };
    let count = doc.instances.len();
    if tx
        .send(pb::SchedulerMessage {
            msg: Some(Down::Desired(doc)),
        })
        .await
        .is_ok()
    {
        *last = Some(generation);
        tracing::debug!(%node, generation, instances = count, "desired state sent");
        true
    } else {
        false
    }
}

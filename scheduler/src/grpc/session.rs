//! One agent session: Hello, then a loop that applies what the agent reports and pushes the
//! node's desired state whenever it changes.

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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

/// Validates the session start and spawns the session loop.
pub async fn open(app: Arc<App>, node: NodeId, mut inbound: Streaming<pb::AgentMessage>) -> Result<Outbound, Status> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("the agent sent no Hello within 10 s"))??
        .ok_or_else(|| Status::invalid_argument("the session closed before Hello"))?;
    let Some(Up::Hello(hello)) = first.msg else {
        return Err(Status::invalid_argument("the first session message must be Hello"));
    };
    let facts = convert::facts_from_hello(&hello);
    let record = app.node_hello(node, &facts).await.map_err(to_status)?;
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
    let mut last_pushed: Option<i64> = None;
    push_desired(&app, node, &tx, &mut last_pushed).await;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => handle(&app, node, m).await,
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
                push_desired(&app, node, &tx, &mut last_pushed).await;
            }
            _ = ticket.replaced.notified() => {
                tracing::info!(%node, "session replaced by a newer one from the same node");
                break;
            }
        }
    }
    app.sessions.detach(&ticket);
}

async fn handle(app: &App, node: NodeId, m: pb::AgentMessage) {
    let Some(msg) = m.msg else { return };
    if app.sessions.touch(node) {
        // The node had been declared down while this session stayed open.
        if let Err(e) = app.node_revive(node).await {
            tracing::error!(%node, error = %e, "cannot mark node ready again");
        }
    }
    match msg {
        Up::Hello(_) => tracing::warn!(%node, "ignoring a second Hello in one session"),
        Up::Heartbeat(_) => {}
        Up::Telemetry(t) => app.node_telemetry(node, &t),
        Up::Observed(o) => {
            if let Err(e) = app.node_observed(node, &o).await {
                tracing::error!(%node, error = format!("{e:#}"), "cannot apply observed state");
            }
        }
        Up::LogChunk(c) => app.sessions.deliver_chunk(node, c),
    }
}

/// Sends the node's desired state unless this session already sent that generation. The
/// generation is read before the instances, so a document never claims a generation newer
/// than its content.
async fn push_desired(app: &App, node: NodeId, tx: &mpsc::Sender<pb::SchedulerMessage>, last: &mut Option<i64>) {
    let generation = match app.store.node_get(node).await {
        Ok(n) => n.node.generation,
        Err(e) => {
            tracing::error!(%node, error = %e, "cannot load node generation");
            return;
        }
    };
    if *last == Some(generation) {
        return;
    }
    let instances = match app.store.instance_list_by_node(node).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%node, error = %e, "cannot load desired instances");
            return;
        }
    };
    let doc = pb::DesiredState {
        generation: crate::store::to_u64(generation),
        instances: instances
            .iter()
            .filter(|i| i.status != "deleting")
            .map(convert::instance_spec)
            .collect(),
    };
    let count = doc.instances.len();
    if tx.send(pb::SchedulerMessage { msg: Some(Down::Desired(doc)) }).await.is_ok() {
        *last = Some(generation);
        tracing::debug!(%node, generation, instances = count, "desired state sent");
    }
}

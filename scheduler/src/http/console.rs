//! `GET /v1/instances/{id}/console`: a VM's VNC console as a WebSocket (binary frames carry
//! the RFB protocol as it is). The caller authenticated with the API key like on every route;
//! the node's agent authenticates to QEMU with the domain's own password and offers the
//! client RFB security type "None", so any VNC client works through a local WebSocket bridge
//! (`cloud instance console` is one).

use super::error::ApiResult;
use super::extract::ApiPath;
use super::ws;
use crate::app::App;
use crate::error::Error;
use crate::services::Caller;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::Response;
use cloud_api::{InstanceId, NodeId};
use std::sync::Arc;

/// Largest WebSocket message from a console client.
const MAX_INPUT: usize = 64 * 1024;

pub async fn console(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let inst = app.instance_lookup(&caller, &id).await?;
    if inst.kind != "vm" {
        return Err(Error::Conflict(format!(
            "instance {:?} is a container: consoles are for VMs (see its logs instead)",
            inst.name
        ))
        .into());
    }
    if inst.status != "running" {
        return Err(Error::Conflict(format!(
            "instance {:?} is {}: its console is available while it runs",
            inst.name, inst.status
        ))
        .into());
    }
    let Some(node) = inst.node_id.map(NodeId) else {
        return Err(Error::Conflict(format!("instance {:?} has no node", inst.name)).into());
    };
    let (request_id, rx) = app
        .sessions
        .open_console_stream(node, InstanceId(inst.id))
        .map_err(|e| Error::Unavailable(format!("console of {:?}: {e}", inst.name)))?;
    tracing::info!(instance = %inst.id, request_id, "console opened");
    // Small messages only: each becomes one message on the node's session, which must never
    // approach its 4 MiB limit (VNC clients send a few bytes at a time).
    Ok(ws
        .max_message_size(MAX_INPUT)
        .max_frame_size(MAX_INPUT)
        .on_upgrade(move |socket| relay(app, request_id, rx, socket)))
}

async fn relay(
    app: Arc<App>,
    request_id: u64,
    mut rx: tokio::sync::mpsc::Receiver<cloud_proto::v1::LogChunk>,
    mut socket: WebSocket,
) {
    let _close = app.sessions.stream_guard(request_id);
    let _counted = ws::counted(&app.metrics.ws_clients);
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else {
                    let _ = socket.send(ws::close_frame(1011, "the node closed the console")).await;
                    return;
                };
                if !chunk.data.is_empty()
                    && socket.send(Message::Binary(chunk.data.into())).await.is_err()
                {
                    return;
                }
                if chunk.eof || !chunk.error.is_empty() {
                    let reason = if chunk.error.is_empty() { "console closed".to_owned() } else { chunk.error };
                    let _ = socket.send(ws::close_frame(1000, &reason)).await;
                    return;
                }
            }
            msg = socket.recv() => {
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if !app.sessions.send_input(request_id, b.to_vec()).await {
                            let _ = socket.send(ws::close_frame(1011, "the node's session ended")).await;
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {} // text, ping, pong: nothing to relay
                }
            }
        }
    }
}

//! Live WebSockets of one instance: `/v1/instances/{id}/logs?follow=true` relays the node's
//! log stream (binary frames, output as it comes), `/v1/instances/{id}/stats?follow=true`
//! pushes each new usage sample (JSON text frames). A client that stops reading is dropped
//! (close code 4008) and its node stream cancelled, so memory never grows with a slow client.

use super::error::ApiResult;
use super::extract::{ApiPath, ApiQuery};
use super::ws::{self, close};
use crate::app::App;
use crate::error::Error;
use crate::services::Caller;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::Response;
use cloud_api::InstanceId;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The logs WebSocket (the plain GET of the same path returns them at once).
pub async fn logs(
    app: Arc<App>,
    caller: Caller,
    id: String,
    tail: u32,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let (request_id, mut rx) = app.instance_log_follow(&caller, &id, tail).await?;
    Ok(ws.max_message_size(4096).on_upgrade(move |mut socket| async move {
        let _counted = ws::counted(&app.metrics.ws_clients);
        let _close = app.sessions.stream_guard(request_id);
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(c) if !c.error.is_empty() => {
                        close(&mut socket, 1011, &format!("cannot read logs: {}", c.error)).await;
                        break;
                    }
                    Some(c) => {
                        if !c.data.is_empty() && !ws::send(&mut socket, Message::Binary(c.data.into()), "too slow").await {
                            break;
                        }
                        if c.eof {
                            close(&mut socket, 1000, "end of logs").await;
                            break;
                        }
                    }
                    None => {
                        close(&mut socket, 1011, "the node closed the log stream").await;
                        break;
                    }
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    follow: Option<bool>,
}

/// `GET /v1/instances/{id}/stats`: the latest usage sample; with `?follow=true` (WebSocket)
/// every new sample as it arrives.
pub async fn stats(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiQuery(q): ApiQuery<StatsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let inst = app.instance_lookup(&caller, &id).await?;
    let (node, instance) = (inst.node_id, InstanceId(inst.id));
    let usage = move |app: &App| node.and_then(|n| app.sessions.instance_usage(n.into(), instance));
    if q.follow != Some(true) {
        let u = usage(&app).ok_or_else(|| {
            Error::NotFound(format!(
                "no usage sample of {:?} yet (is it running?)",
                inst.name
            ))
        })?;
        return Ok(axum::response::IntoResponse::into_response(axum::Json(u)));
    }
    let ws = ws.map_err(|_| {
        Error::Invalid("follow: a WebSocket endpoint; connect with Upgrade: websocket".into())
    })?;
    let period = app.config.telemetry_interval.min(Duration::from_secs(5));
    Ok(ws
        .max_message_size(4096)
        .on_upgrade(move |mut socket| async move {
            let _counted = ws::counted(&app.metrics.ws_clients);
            let mut last = None;
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let Some(u) = usage(&app) else { continue };
                        if last == Some(u.sampled_at) {
                            continue;
                        }
                        last = Some(u.sampled_at);
                        let Ok(text) = serde_json::to_string(&u) else { continue };
                        if !ws::send(&mut socket, Message::Text(text.into()), "too slow").await {
                            break;
                        }
                    }
                    msg = socket.recv() => match msg {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
        }))
}

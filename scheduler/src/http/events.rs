//! `GET /v1/events` (paged, after a `seq`) and the WebSocket `/v1/ws/events` (replay from a
//! `seq`, then live), filtered to the caller's project (plus fleet events for operators).
//! A live client that cannot keep up is disconnected (close code 4008, "too slow"): it
//! resumes from the last `seq` it saw. Memory per client is bounded by the bus's buffer.

use super::error::ApiResult;
use super::extract::ApiQuery;
use super::{page, ws};
use crate::app::App;
use crate::error::Error;
use crate::services::Caller;
use crate::store::EventRecord;
use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::Response;
use cloud_api::{Event, Page, PageQuery};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

const SLOW: &str = "too slow: resume from your last seq";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Events after this seq. `cursor` is the same thing (a page's `next_cursor`).
    #[serde(alias = "cursor")]
    after: Option<i64>,
    limit: Option<u32>,
}

pub fn view(e: &EventRecord) -> Event {
    Event {
        seq: e.seq,
        at: e.at,
        kind: e.kind.clone(),
        project_id: e.project_id,
        resource_type: e.resource_type.clone(),
        resource_id: e.resource_id.clone(),
        data: e.data.0.clone(),
    }
}

fn visible(caller: &Caller, e: &EventRecord) -> bool {
    match e.project_id {
        Some(p) => p == caller.project.0,
        None => caller.is_operator(),
    }
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<Page<Event>>> {
    let (_, limit) = page::parse::<i64>(&PageQuery {
        limit: q.limit,
        cursor: None,
    })?;
    let rows = app
        .store
        .events_after(
            caller.project.0,
            caller.is_operator(),
            q.after.unwrap_or(0),
            limit,
        )
        .await
        .map_err(Error::from)?;
    let items: Vec<Event> = rows.iter().map(view).collect();
    let next_cursor = page::next_cursor(&items, limit, |e| e.seq.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn stream(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<EventQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if q.limit.is_some() {
        return Err(Error::Malformed("limit: not for the stream".into()).into());
    }
    let after = q.after.unwrap_or(0);
    Ok(ws
        .max_message_size(4096)
        .on_upgrade(move |socket| serve(app, caller, after, socket)))
}

/// Sends one event; false when the client is gone or too slow (then closed, see `ws`).
async fn send(socket: &mut WebSocket, e: &EventRecord) -> bool {
    let Ok(text) = serde_json::to_string(&view(e)) else {
        return true;
    };
    ws::send(socket, Message::Text(text.into()), SLOW).await
}

async fn serve(app: Arc<App>, caller: Caller, after: i64, mut socket: WebSocket) {
    let _counted = ws::counted(&app.metrics.ws_clients);
    // Subscribe before replaying, so nothing falls between the two.
    let mut live = app.events.subscribe();
    let mut last = after;
    loop {
        let page = match app
            .store
            .events_after(caller.project.0, caller.is_operator(), last, 500)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot replay events");
                ws::close(&mut socket, 1011, "cannot read events; reconnect").await;
                return;
            }
        };
        let n = page.len();
        for e in &page {
            if !send(&mut socket, e).await {
                return;
            }
            last = e.seq;
        }
        if n < 500 {
            break;
        }
    }
    loop {
        tokio::select! {
            got = live.recv() => match got {
                Ok(e) => {
                    if e.seq <= last || !visible(&caller, &e) {
                        continue;
                    }
                    if !send(&mut socket, &e).await {
                        tracing::info!(last, "events client too slow or gone; dropped");
                        break;
                    }
                    last = e.seq;
                }
                Err(RecvError::Lagged(_)) => {
                    tracing::info!(last, "events client fell behind; dropped");
                    ws::close(&mut socket, ws::TOO_SLOW, SLOW).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            msg = socket.recv() => match msg {
                // Clients only ping or close.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}

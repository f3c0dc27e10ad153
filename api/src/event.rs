//! The event stream: `GET /v1/events?after=SEQ` (paged) and the WebSocket
//! `/v1/ws/events?after=SEQ` (replay, then live). Events are the caller's project's (and fleet
//! events for operators); resume from the last `seq` seen.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Event {
    /// Position in the stream (strictly increasing).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `instance.placed`, `instance.status`, `instance.deleted`, `instance.moved`,
    /// `volume.status`, `node.ready`, `node.down`, `node.draining`, `node.undrained`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Absent for fleet events (nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    pub resource_type: String,
    pub resource_id: String,
    /// Details: `{from, to, reason}` for status changes, `{node_id, node_name}` for placements.
    pub data: serde_json::Value,
}

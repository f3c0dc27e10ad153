//! WebSockets of the API: the VM console (`GET /v1/instances/{id}/console`) and the event
//! stream (`/v1/ws/events`), plus the paged event list.

use crate::API_KEY_HEADER;
use crate::client::{Client, ClientError};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// An open console: binary messages carry RFB (security type "None" on this side).
pub type ConsoleStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Client {
    /// Opens a VM's VNC console (plain `ws://` endpoints; put TLS in front with a proxy).
    pub async fn instance_console(&self, id_or_name: &str) -> Result<ConsoleStream, ClientError> {
        self.websocket(self.url(&["v1", "instances", id_or_name, "console"]))
            .await
    }

    /// Opens a WebSocket on the API with this client's key.
    pub(crate) async fn websocket(
        &self,
        mut url: reqwest::Url,
    ) -> Result<ConsoleStream, ClientError> {
        let scheme = match url.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => {
                return Err(ClientError::Unexpected {
                    status: 0,
                    body: format!("WebSockets need an http(s):// API URL, not {other}://"),
                });
            }
        };
        let _ = url.set_scheme(scheme);
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Unexpected {
                status: 0,
                body: e.to_string(),
            })?;
        if let Some(key) = &self.key {
            let v = HeaderValue::from_str(key).map_err(|e| ClientError::Unexpected {
                status: 0,
                body: format!("the API key is not a valid header value: {e}"),
            })?;
            req.headers_mut().insert(API_KEY_HEADER, v);
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Err(crate::client::error_from_parts(status, &body))
            }
            Err(e) => Err(ClientError::Unexpected {
                status: 0,
                body: format!("WebSocket: {e}"),
            }),
        }
    }

    /// Follows an instance's output (binary messages, as it comes) after its last `tail` lines.
    pub async fn instance_logs_follow(
        &self,
        id_or_name: &str,
        tail: Option<u32>,
    ) -> Result<ConsoleStream, ClientError> {
        let mut url = self.url(&["v1", "instances", id_or_name, "logs"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("follow", "true");
            if let Some(t) = tail {
                q.append_pair("tail", &t.to_string());
            }
        }
        self.websocket(url).await
    }

    /// Each new usage sample of an instance (text messages, one `InstanceUsage` each).
    pub async fn instance_stats_follow(
        &self,
        id_or_name: &str,
    ) -> Result<ConsoleStream, ClientError> {
        let mut url = self.url(&["v1", "instances", id_or_name, "stats"]);
        url.query_pairs_mut().append_pair("follow", "true");
        self.websocket(url).await
    }

    /// One page of events after `after` (oldest first).
    pub async fn events(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<crate::Page<crate::Event>, ClientError> {
        let mut url = self.url(&["v1", "events"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string());
        self.json(self.request(reqwest::Method::GET, url)).await
    }

    /// The live event stream from `after` on (text messages carry one `Event` each).
    pub async fn events_stream(&self, after: i64) -> Result<ConsoleStream, ClientError> {
        let mut url = self.url(&["v1", "ws", "events"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string());
        self.websocket(url).await
    }
}

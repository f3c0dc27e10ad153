//! The VM console WebSocket (`GET /v1/instances/{id}/console`).

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
        let mut url = self.url(&["v1", "instances", id_or_name, "console"]);
        let scheme = match url.scheme() {
            "http" => "ws",
            other => {
                return Err(ClientError::Unexpected {
                    status: 0,
                    body: format!("consoles need an http:// API URL, not {other}://"),
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
                body: format!("console: {e}"),
            }),
        }
    }
}

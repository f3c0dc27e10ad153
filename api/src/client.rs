//! A typed client of the REST API, used by the `cloud` CLI and by the end-to-end tests.

use crate::error::{ErrorCode, ErrorEnvelope};
use crate::instance::{CreateInstanceRequest, Instance};
use crate::node::{CreateJoinTokenRequest, JoinToken, Node};
use crate::{API_KEY_HEADER, Page, PageQuery, REQUEST_ID_HEADER};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with the error envelope.
    #[error("{message} ({code}, HTTP {status}, request {request_id})")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        request_id: String,
    },
    /// The server answered something that is not the documented contract.
    #[error("unexpected response (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
    #[error("cannot reach the API at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("invalid API URL {0:?}: {1}")]
    BadUrl(String, String),
}

impl ClientError {
    /// The taxonomy code when the server answered with an error envelope.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// A client bound to one API endpoint and one API key.
#[derive(Clone)]
pub struct Client {
    base: Url,
    pub(crate) key: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Client {
    /// `base_url` is e.g. `http://127.0.0.1:8080`.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        // reqwest is built without a bundled crypto provider: use ring, like the rest of the
        // workspace. Installing twice is harmless (the second call reports "already set").
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut base = Url::parse(base_url)
            .map_err(|e| ClientError::BadUrl(base_url.to_string(), e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl(
                base_url.to_string(),
                "expected an http:// or https:// URL".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base_url.to_string(),
                source: e,
            })?;
        Ok(Self {
            base,
            key: api_key,
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    pub(crate) fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url);
        if let Some(key) = &self.key {
            rb = rb.header(API_KEY_HEADER, key);
        }
        rb
    }

    pub(crate) async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = rb.send().await.map_err(|e| ClientError::Transport {
            url: self.base.to_string(),
            source: e,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(rb).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: self.base.to_string(),
            source: e,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status,
            body: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, self.url(segments)))
            .await
    }

    pub(crate) async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, self.url(segments)).json(body))
            .await
    }

    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Vec<T>, ClientError> {
        let mut out = Vec::new();
        let mut query = PageQuery::default();
        loop {
            let page: Page<T> = self
                .json(self.request(Method::GET, self.url(segments)).query(&query))
                .await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    // ------------------------------------------------------------------ instances

    pub async fn instance_create(
        &self,
        req: &CreateInstanceRequest,
    ) -> Result<Instance, ClientError> {
        self.post_json(&["v1", "instances"], req).await
    }

    /// Every instance of the caller's project (follows the cursor).
    pub async fn instance_list(&self) -> Result<Vec<Instance>, ClientError> {
        self.list_all(&["v1", "instances"]).await
    }

    pub async fn instance_list_page(
        &self,
        query: &PageQuery,
    ) -> Result<Page<Instance>, ClientError> {
        self.json(
            self.request(Method::GET, self.url(&["v1", "instances"]))
                .query(query),
        )
        .await
    }

    /// By id or name.
    pub async fn instance_get(&self, id_or_name: &str) -> Result<Instance, ClientError> {
        self.get_json(&["v1", "instances", id_or_name]).await
    }

    pub async fn instance_delete(&self, id_or_name: &str) -> Result<Instance, ClientError> {
        self.json(self.request(Method::DELETE, self.url(&["v1", "instances", id_or_name])))
            .await
    }

    pub async fn instance_stop(&self, id_or_name: &str) -> Result<Instance, ClientError> {
        self.post_json(
            &["v1", "instances", id_or_name, "stop"],
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn instance_start(&self, id_or_name: &str) -> Result<Instance, ClientError> {
        self.post_json(
            &["v1", "instances", id_or_name, "start"],
            &serde_json::json!({}),
        )
        .await
    }

    /// The last `tail` lines of the instance's output (all when `None`).
    pub async fn instance_logs(
        &self,
        id_or_name: &str,
        tail: Option<u32>,
    ) -> Result<String, ClientError> {
        let mut rb = self.request(
            Method::GET,
            self.url(&["v1", "instances", id_or_name, "logs"]),
        );
        if let Some(t) = tail {
            rb = rb.query(&[("tail", t)]);
        }
        let resp = self.send(rb).await?;
        resp.text().await.map_err(|e| ClientError::Transport {
            url: self.base.to_string(),
            source: e,
        })
    }

    // ------------------------------------------------------------------ nodes

    pub async fn node_list(&self) -> Result<Vec<Node>, ClientError> {
        self.list_all(&["v1", "nodes"]).await
    }

    pub async fn node_get(&self, id_or_name: &str) -> Result<Node, ClientError> {
        self.get_json(&["v1", "nodes", id_or_name]).await
    }

    /// Stops placing on the node; moves its instances away unless `keep_instances`.
    pub async fn node_drain(
        &self,
        id_or_name: &str,
        keep_instances: bool,
    ) -> Result<Node, ClientError> {
        let query = crate::DrainQuery {
            keep_instances: keep_instances.then_some(true),
        };
        self.json(
            self.request(
                Method::POST,
                self.url(&["v1", "nodes", id_or_name, "drain"]),
            )
            .query(&query)
            .json(&serde_json::json!({})),
        )
        .await
    }

    /// Lets a drained node take work again.
    pub async fn node_undrain(&self, id_or_name: &str) -> Result<Node, ClientError> {
        self.post_json(
            &["v1", "nodes", id_or_name, "undrain"],
            &serde_json::json!({}),
        )
        .await
    }

    /// A join token agents enroll with.
    pub async fn join_token_create(
        &self,
        req: &CreateJoinTokenRequest,
    ) -> Result<JoinToken, ClientError> {
        self.post_json(&["v1", "nodes", "join-tokens"], req).await
    }

    // ------------------------------------------------------------------ raw

    /// A raw request, for tests of the contract itself (bad input, headers).
    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone());
        self.request(method, url)
    }
}

/// The error of a non-HTTP-client answer (the console's WebSocket handshake) from its
/// status and body.
pub(crate) fn error_from_parts(status: u16, body: &str) -> ClientError {
    match serde_json::from_str::<ErrorEnvelope>(body) {
        Ok(env) => ClientError::Api {
            status,
            code: env.error.code,
            message: env.error.message,
            request_id: env.request_id,
        },
        Err(_) => ClientError::Unexpected {
            status,
            body: body.chars().take(500).collect(),
        },
    }
}

async fn error_from(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    let header_id = resp
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(env) => ClientError::Api {
            status: status.as_u16(),
            code: env.error.code,
            message: env.error.message,
            request_id: if env.request_id.is_empty() {
                header_id
            } else {
                env.request_id
            },
        },
        Err(_) => ClientError::Unexpected {
            status: status.as_u16(),
            body: describe(status, &body),
        },
    }
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("no body").to_string()
    } else {
        text.chars().take(500).collect()
    }
}

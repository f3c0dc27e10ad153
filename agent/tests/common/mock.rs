//! A mock scheduler for many nodes: enrollment with single- or multi-use join tokens, one
//! mutual-TLS session per node (the node is identified by its client certificate, as the real
//! scheduler does), and a record per node of what it said. Tests poll the records and push
//! desired state to any connected node.

use super::{Pki, pki};
use cloud_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use cloud_proto::v1::{
    AgentMessage, DesiredState, EnrollRequest, EnrollResponse, Hello, InstanceSpec, ObservedState,
    SchedulerMessage, SessionAccepted, agent_message, scheduler_message,
};
use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// The join token written to `token_file`.
pub const TOKEN: &str = "mock-join-token";

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Uses left on [`TOKEN`]; `None` = unlimited.
    pub token_uses: Option<usize>,
    pub heartbeat_ms: u32,
    pub telemetry_ms: u32,
    /// Send `DesiredState { generation: 1, instances: [] }` right after `SessionAccepted`
    /// (like a scheduler with nothing placed on the node).
    pub send_empty_desired: bool,
    /// Address to listen on.
    pub listen: SocketAddr,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            token_uses: None,
            heartbeat_ms: 100,
            telemetry_ms: 200,
            send_empty_desired: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// What the mock knows about one node.
#[derive(Debug, Clone, Default)]
pub struct NodeRecord {
    pub node_id: String,
    pub name: String,
    /// The last `Hello` received on the current (or last) session.
    pub hello: Option<Hello>,
    /// Whether a session is open now.
    pub connected: bool,
    pub sessions_opened: usize,
    pub sessions_closed: usize,
    pub heartbeats: u64,
    pub telemetry: u64,
    /// The last observed state received on the current (or last) session.
    pub observed: Option<ObservedState>,
    session: u64,
    tx: Option<mpsc::Sender<Result<SchedulerMessage, Status>>>,
}

/// Totals over all nodes.
#[derive(Debug, Default)]
pub struct Counters {
    pub heartbeats: AtomicU64,
    pub telemetry: AtomicU64,
    pub observed: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
}

pub struct State {
    pub pki: Pki,
    opts: MockOptions,
    token_uses: Mutex<Option<Option<usize>>>,
    /// Client certificate (DER) → node id.
    certs: Mutex<HashMap<Vec<u8>, String>>,
    nodes: Mutex<HashMap<String, NodeRecord>>,
    next_session: AtomicU64,
    pub counters: Counters,
}

impl State {
    fn nodes(&self) -> MutexGuard<'_, HashMap<String, NodeRecord>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct Service(Arc<State>);

type SessionStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Service {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let req = request.into_inner();
        {
            let mut uses = self.0.token_uses.lock().unwrap();
            let refused = || Status::unauthenticated("join token unknown, used or expired");
            match uses.as_mut() {
                Some(_) if req.join_token != TOKEN => return Err(refused()),
                None => return Err(refused()),
                Some(None) => {}
                Some(Some(0)) => return Err(refused()),
                Some(Some(n)) => *n -= 1,
            }
        }
        let name = if req.name.is_empty() {
            req.hostname.clone()
        } else {
            req.name.clone()
        };
        if self.0.nodes().values().any(|n| n.name == name) {
            return Err(Status::already_exists(format!(
                "a node named {name:?} already exists"
            )));
        }
        let node_id = uuid::Uuid::new_v4().to_string();
        let mut csr = CertificateSigningRequestParams::from_pem(&req.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, node_id.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.params = params;
        let cert = csr.signed_by(&self.0.pki.issuer).unwrap();
        self.0
            .certs
            .lock()
            .unwrap()
            .insert(cert.der().to_vec(), node_id.clone());
        self.0.nodes().insert(
            node_id.clone(),
            NodeRecord {
                node_id: node_id.clone(),
                name: name.clone(),
                ..NodeRecord::default()
            },
        );
        Ok(Response::new(EnrollResponse {
            node_id,
            certificate_pem: cert.pem(),
            ca_pem: self.0.pki.ca_pem.clone(),
            node_name: name,
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let der = request
            .peer_certs()
            .and_then(|c| c.first().map(|c| c.to_vec()))
            .ok_or_else(|| Status::unauthenticated("client certificate required"))?;
        let node_id = self
            .0
            .certs
            .lock()
            .unwrap()
            .get(&der)
            .cloned()
            .ok_or_else(|| Status::permission_denied("unknown node certificate"))?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let accepted = SessionAccepted {
            node_id: node_id.clone(),
            node_name: String::new(),
            heartbeat_interval_ms: self.0.opts.heartbeat_ms,
            telemetry_interval_ms: self.0.opts.telemetry_ms,
        };
        let _ = tx
            .send(Ok(SchedulerMessage {
                msg: Some(scheduler_message::Msg::Accepted(accepted)),
            }))
            .await;
        if self.0.opts.send_empty_desired {
            let _ = tx
                .send(Ok(SchedulerMessage {
                    msg: Some(scheduler_message::Msg::Desired(DesiredState {
                        generation: 1,
                        instances: Vec::new(),
                        vpcs: Vec::new(),
                        volumes: Vec::new(),
                        delete_volumes: Vec::new(),
                        snapshots: Vec::new(),
                        delete_snapshots: Vec::new(),
                    })),
                }))
                .await;
        }
        let session = self.0.next_session.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut nodes = self.0.nodes();
            let rec = nodes.entry(node_id.clone()).or_default();
            rec.session = session;
            rec.connected = true;
            // What a node reports is per session: nothing stale from an earlier one.
            rec.hello = None;
            rec.observed = None;
            rec.sessions_opened += 1;
            rec.tx = Some(tx);
        }
        self.0
            .counters
            .sessions_opened
            .fetch_add(1, Ordering::Relaxed);
        let state = self.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                let c = &state.counters;
                let mut nodes = state.nodes();
                let Some(rec) = nodes.get_mut(&node_id) else {
                    break;
                };
                match m.msg {
                    Some(agent_message::Msg::Hello(h)) => rec.hello = Some(h),
                    Some(agent_message::Msg::Heartbeat(_)) => {
                        rec.heartbeats += 1;
                        c.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(agent_message::Msg::Telemetry(_)) => {
                        rec.telemetry += 1;
                        c.telemetry.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(agent_message::Msg::Observed(o)) => {
                        rec.observed = Some(o);
                        c.observed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            let mut nodes = state.nodes();
            if let Some(rec) = nodes.get_mut(&node_id) {
                rec.sessions_closed += 1;
                if rec.session == session {
                    rec.connected = false;
                    rec.tx = None;
                }
            }
            state
                .counters
                .sessions_closed
                .fetch_add(1, Ordering::Relaxed);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A running mock scheduler; its CA and token files live in `dir`.
pub struct Mock {
    pub state: Arc<State>,
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
}

impl Mock {
    /// Starts the mock on `opts.listen`, writing `ca.pem` and `token` into `dir`.
    pub async fn start(dir: &std::path::Path, opts: MockOptions) -> Mock {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = pki();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem))
            .client_auth_optional(true);
        let ca_file = dir.join("ca.pem");
        let token_file = dir.join("token");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let state = Arc::new(State {
            pki,
            token_uses: Mutex::new(Some(opts.token_uses)),
            opts: opts.clone(),
            certs: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let listener = tokio::net::TcpListener::bind(opts.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = AgentServiceServer::new(Service(state.clone()));
        tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Mock {
            state,
            addr,
            ca_file,
            token_file,
        }
    }

    /// Revokes the join token: every later enrollment is refused.
    pub fn revoke_token(&self) {
        *self.state.token_uses.lock().unwrap() = None;
    }

    pub fn enrolled(&self) -> usize {
        self.state.certs.lock().unwrap().len()
    }

    pub fn connected(&self) -> usize {
        self.state.nodes().values().filter(|n| n.connected).count()
    }

    /// A copy of the record of node `node_id`.
    pub fn node(&self, node_id: &str) -> NodeRecord {
        self.state.nodes().get(node_id).cloned().unwrap_or_default()
    }

    /// Sends a message to the node's current session; false when it has none.
    pub fn send(&self, node_id: &str, m: scheduler_message::Msg) -> bool {
        let tx = self.state.nodes().get(node_id).and_then(|n| n.tx.clone());
        tx.is_some_and(|tx| tx.try_send(Ok(SchedulerMessage { msg: Some(m) })).is_ok())
    }

    pub fn send_desired(
        &self,
        node_id: &str,
        generation: u64,
        instances: Vec<InstanceSpec>,
    ) -> bool {
        self.send(
            node_id,
            scheduler_message::Msg::Desired(DesiredState {
                generation,
                instances,
                vpcs: Vec::new(),
                volumes: Vec::new(),
                delete_volumes: Vec::new(),
                snapshots: Vec::new(),
                delete_snapshots: Vec::new(),
            }),
        )
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes.
    pub async fn wait(&self, timeout: Duration, mut cond: impl FnMut(&Mock) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

//! A whole agent (library API, fake runtime) against an in-process mock scheduler speaking the
//! real gRPC contract over real TLS: enrollment, mutual-TLS session, Hello, heartbeats,
//! telemetry, desired → observed, logs, reconnects, refusal, kill -9 and re-adoption.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Pki, pki};

use cloud_agent::runtime::FakeRuntime;
use cloud_agent::{AgentConfig, Capacity, CapacityOverride, StaticProbe};
use cloud_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use cloud_proto::v1::{
    AgentMessage, DesiredState, EnrollRequest, EnrollResponse, InstanceSpec, InstanceState,
    LogChunk, RunState, SchedulerMessage, SessionAccepted, StreamCancel, StreamKind, StreamRequest,
    agent_message, scheduler_message,
};
use rcgen::{CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const IMG: &str = "local/busybox:latest";
const WAIT: Duration = Duration::from_secs(10);

/// What the mock scheduler saw and how to talk back.
struct Shared {
    pki: Pki,
    tokens: Mutex<Vec<String>>,
    enrolled: Mutex<Vec<String>>,
    inbound: Mutex<mpsc::UnboundedSender<AgentMessage>>,
    to_agent: Mutex<Option<mpsc::Sender<Result<SchedulerMessage, Status>>>>,
    refuse_sessions: AtomicBool,
    sessions_opened: AtomicUsize,
}

#[derive(Clone)]
struct MockScheduler(Arc<Shared>);

type SessionStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for MockScheduler {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let req = request.into_inner();
        {
            let mut tokens = self.0.tokens.lock().unwrap();
            let Some(pos) = tokens.iter().position(|t| *t == req.join_token) else {
                return Err(Status::unauthenticated(
                    "join token unknown, used or expired",
                ));
            };
            tokens.remove(pos);
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
        self.0.enrolled.lock().unwrap().push(node_id.clone());
        let name = if req.name.is_empty() {
            req.hostname
        } else {
            req.name
        };
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
        self.0.sessions_opened.fetch_add(1, Ordering::SeqCst);
        if request.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("client certificate required"));
        }
        if self.0.refuse_sessions.load(Ordering::SeqCst) {
            return Err(Status::permission_denied("node deleted"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tx.send(Ok(SchedulerMessage {
            msg: Some(scheduler_message::Msg::Accepted(SessionAccepted {
                node_id: String::new(),
                node_name: String::new(),
                heartbeat_interval_ms: 100,
                telemetry_interval_ms: 200,
            })),
        }))
        .await
        .unwrap();
        *self.0.to_agent.lock().unwrap() = Some(tx);
        let sink = self.0.inbound.lock().unwrap().clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                let _ = sink.send(m);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Harness {
    shared: Arc<Shared>,
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<AgentMessage>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
        let pki = pki();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem))
            .client_auth_optional(true);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pki,
            tokens: Mutex::new(vec!["good-token".into(), "second-token".into()]),
            enrolled: Mutex::new(Vec::new()),
            inbound: Mutex::new(tx),
            to_agent: Mutex::new(None),
            refuse_sessions: AtomicBool::new(false),
            sessions_opened: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = AgentServiceServer::new(MockScheduler(shared.clone()));
        tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &shared.pki.ca_pem).unwrap();
        Self {
            shared,
            addr,
            rx,
            dir,
        }
    }

    fn config(&self, data: &str, token: &str) -> AgentConfig {
        let token_file = self.dir.path().join(format!("{data}.token"));
        std::fs::write(&token_file, format!("  {token}\n")).unwrap();
        let mut c = AgentConfig::new(
            self.addr.to_string(),
            self.dir.path().join("ca.pem"),
            token_file,
            self.dir.path().join(data),
        );
        c.name = Some(format!("node-{data}"));
        c.hostname = Some("sim-host".into());
        c.labels.insert("zone".into(), "a".into());
        c.capacity_override = CapacityOverride {
            cpu_millis: Some(1500),
            ..CapacityOverride::default()
        };
        c.host_probe = Some(Arc::new(StaticProbe {
            capacity: Capacity {
                cpu_millis: 4000,
                memory_mb: 8192,
                disk_gb: 100,
            },
            usage: Default::default(),
        }));
        c
    }

    async fn send(&self, m: scheduler_message::Msg) {
        let tx = self.shared.to_agent.lock().unwrap().clone().unwrap();
        tx.send(Ok(SchedulerMessage { msg: Some(m) }))
            .await
            .unwrap();
    }

    /// Waits for the first agent message matching `f`.
    async fn expect<T>(&mut self, mut f: impl FnMut(agent_message::Msg) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let m = self.rx.recv().await.unwrap();
                if let Some(t) = m.msg.and_then(&mut f) {
                    return t;
                }
            }
        })
        .await
        .expect("expected agent message did not arrive")
    }
}

fn spec(id: &str, desired: RunState, cg: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        name: id.into(),
        image: IMG.into(),
        memory_mb: 32,
        cpu_millis: 100,
        desired: desired as i32,
        kind: "container".into(),
        change_generation: cg,
        ..InstanceSpec::default()
    }
}

fn desired(generation: u64, instances: Vec<InstanceSpec>) -> scheduler_message::Msg {
    scheduler_message::Msg::Desired(DesiredState {
        generation,
        instances,
        vpcs: Vec::new(),
        volumes: Vec::new(),
        delete_volumes: Vec::new(),
        snapshots: Vec::new(),
        delete_snapshots: Vec::new(),
    })
}

fn key_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_runs_a_session_and_readopts_after_kill() {
    let mut h = Harness::new().await;
    let rt = Arc::new(FakeRuntime::with_images([IMG]));
    let config = h.config("a", "good-token");
    let data_dir = config.data_dir.clone();
    let agent = cloud_agent::start(config.clone(), rt.clone())
        .await
        .unwrap();
    assert_eq!(
        h.shared.enrolled.lock().unwrap().as_slice(),
        [agent.node_id()]
    );
    assert_eq!(agent.node_name(), "node-a");
    assert_eq!(key_mode(&data_dir.join("node.key")), 0o600);
    for f in ["node.crt", "ca.crt", "node.json"] {
        assert!(data_dir.join(f).exists(), "{f} persisted");
    }

    // Hello first, with the facts.
    let hello = h
        .expect(|m| match m {
            agent_message::Msg::Hello(h) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(hello.hostname, "sim-host");
    assert_eq!(hello.drivers, vec!["docker"]);
    assert_eq!(hello.protocol_version, cloud_proto::PROTOCOL_VERSION);
    assert_eq!(hello.applied_generation, 0);
    assert_eq!(hello.labels.get("zone").map(String::as_str), Some("a"));
    let cap = hello.capacity.unwrap();
    assert_eq!(
        (cap.cpu_millis, cap.memory_mb, cap.disk_gb),
        (1500, 8192, 100)
    );
    assert!(agent.wait_connected(WAIT).await);

    // Heartbeats and telemetry at the accepted intervals.
    h.expect(|m| matches!(m, agent_message::Msg::Heartbeat(_)).then_some(()))
        .await;
    h.expect(|m| matches!(m, agent_message::Msg::Telemetry(_)).then_some(()))
        .await;

    // Desired → observed.
    h.send(desired(1, vec![spec("i1", RunState::Running, 1)]))
        .await;
    let observed = h
        .expect(|m| match m {
            agent_message::Msg::Observed(o) if o.applied_generation == 1 => Some(o),
            _ => None,
        })
        .await;
    let i1 = &observed.instances[0];
    assert_eq!(i1.instance_id, "i1");
    assert_eq!(i1.state, InstanceState::Running as i32);
    let container = rt.container_of("i1").unwrap();
    assert_eq!(i1.runtime_id, container.id);
    h.expect(|m| match m {
        agent_message::Msg::Heartbeat(hb) if hb.applied_generation == 1 => Some(()),
        _ => None,
    })
    .await;

    // Logs: tail then EOF; unknown instance → error EOF.
    rt.push_log("i1", b"hello\nworld\n");
    h.send(scheduler_message::Msg::StreamRequest(StreamRequest {
        request_id: 1,
        instance_id: "i1".into(),
        kind: StreamKind::Logs as i32,
        tail: 1,
        follow: false,
    }))
    .await;
    let chunks: Vec<LogChunk> = {
        let mut v = Vec::new();
        loop {
            let c = h
                .expect(|m| match m {
                    agent_message::Msg::LogChunk(c) if c.request_id == 1 => Some(c),
                    _ => None,
                })
                .await;
            let eof = c.eof;
            v.push(c);
            if eof {
                break v;
            }
        }
    };
    let data: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(data, b"world\n");
    assert!(chunks.last().unwrap().error.is_empty());
    h.send(scheduler_message::Msg::StreamRequest(StreamRequest {
        request_id: 2,
        instance_id: "nope".into(),
        kind: StreamKind::Logs as i32,
        tail: 0,
        follow: false,
    }))
    .await;
    let err = h
        .expect(|m| match m {
            agent_message::Msg::LogChunk(c) if c.request_id == 2 => Some(c),
            _ => None,
        })
        .await;
    assert!(err.eof);
    assert_eq!(err.error, "instance nope is not on this node");

    // Follow, then cancel.
    h.send(scheduler_message::Msg::StreamRequest(StreamRequest {
        request_id: 3,
        instance_id: "i1".into(),
        kind: StreamKind::Logs as i32,
        tail: 1,
        follow: true,
    }))
    .await;
    h.expect(|m| match m {
        agent_message::Msg::LogChunk(c) if c.request_id == 3 && c.data == b"world\n" => Some(()),
        _ => None,
    })
    .await;
    rt.push_log("i1", b"live\n");
    h.expect(|m| match m {
        agent_message::Msg::LogChunk(c) if c.request_id == 3 && c.data == b"live\n" => Some(()),
        _ => None,
    })
    .await;
    h.send(scheduler_message::Msg::StreamCancel(StreamCancel {
        request_id: 3,
    }))
    .await;

    // The scheduler drops the session: the agent reconnects and resends its observed state.
    let opened = h.shared.sessions_opened.load(Ordering::SeqCst);
    h.shared.to_agent.lock().unwrap().take();
    let hello = h
        .expect(|m| match m {
            agent_message::Msg::Hello(h) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(
        hello.applied_generation, 1,
        "applied generation survives reconnects"
    );
    h.expect(|m| match m {
        agent_message::Msg::Observed(o) if o.applied_generation == 1 => Some(()),
        _ => None,
    })
    .await;
    assert!(h.shared.sessions_opened.load(Ordering::SeqCst) > opened);

    // kill -9: the workload keeps running.
    agent.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rt.container_of("i1").unwrap().status,
        cloud_agent::runtime::ContainerStatus::Running
    );

    // Restart on the same data dir: no new enrollment (the token is spent), no action before
    // the desired state, the container is re-adopted untouched.
    rt.clear_calls();
    let agent = cloud_agent::start(config, rt.clone()).await.unwrap();
    assert_eq!(h.shared.enrolled.lock().unwrap().len(), 1);
    let hello = h
        .expect(|m| match m {
            agent_message::Msg::Hello(h) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(hello.applied_generation, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rt.calls().is_empty());
    h.send(desired(1, vec![spec("i1", RunState::Running, 1)]))
        .await;
    let observed = h
        .expect(|m| match m {
            agent_message::Msg::Observed(o) if o.applied_generation == 1 => Some(o),
            _ => None,
        })
        .await;
    assert_eq!(observed.instances[0].runtime_id, container.id);
    assert_eq!(
        observed.instances[0].started_at_unix_ms,
        container.started_at_unix_ms
    );
    assert!(rt.calls().is_empty(), "{:?}", rt.calls());

    // Graceful stop leaves workloads running too.
    agent.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        rt.container_of("i1").unwrap().status,
        cloud_agent::runtime::ContainerStatus::Running
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refusal_is_fatal_with_the_servers_message() {
    let h = Harness::new().await;
    let rt = Arc::new(FakeRuntime::new());
    let err = cloud_agent::start(h.config("b", "wrong-token"), rt)
        .await
        .unwrap_err();
    assert!(err.is_enrollment_refused(), "{err:?}");
    assert!(
        err.to_string()
            .contains("join token unknown, used or expired"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_is_retried_not_fatal() {
    let mut h = Harness::new().await;
    h.shared.refuse_sessions.store(true, Ordering::SeqCst);
    let rt = Arc::new(FakeRuntime::new());
    let mut config = h.config("c", "second-token");
    // Refusals wait the capped backoff; keep it short here.
    config.session.backoff_cap = Duration::from_millis(300);
    let agent = cloud_agent::start(config, rt).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while h.shared.sessions_opened.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent keeps retrying");
    assert!(!agent.is_connected());
    h.shared.refuse_sessions.store(false, Ordering::SeqCst);
    assert!(agent.wait_connected(Duration::from_secs(15)).await);
    h.expect(|m| matches!(m, agent_message::Msg::Heartbeat(_)).then_some(()))
        .await;
    agent.stop(Duration::from_secs(5)).await.unwrap();
}

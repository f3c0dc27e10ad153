//! The long-lived mutual-TLS session with the scheduler: `Hello` first, then heartbeats,
//! telemetry and observed state up; desired state and stream requests down. Reconnects forever
//! with exponential backoff plus jitter. The reconciler keeps running on the last desired state
//! while disconnected.

use crate::backoff::Backoff;
use crate::config::NodeNetwork;
use crate::config::{CapacityOverride, SessionTiming};
use crate::convert;
use crate::identity::NodeIdentity;
use crate::jitter;
use crate::logs::{self, LogRequest};
use crate::model::{DesiredState, ObservedState};
use crate::runtime::ContainerRuntime;
use crate::telemetry::{self, HostProbe};
use crate::tls::{SchedulerAddr, TlsError, error_chain};
use cloud_proto::v1::agent_service_client::AgentServiceClient;
use cloud_proto::v1::{
    AgentMessage, Heartbeat, Hello, LogChunk, SessionAccepted, StreamKind, agent_message,
    scheduler_message,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Outgoing messages buffered per session (log chunks are ≤ 64 KiB each).
const OUT_CAPACITY: usize = 64;
/// Pending user input of one console (a user that outpaces the VM is cut off).
const CONSOLE_INPUT_QUEUE: usize = 256;

/// Why a session ended (other than shutdown).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Connect(#[from] TlsError),
    /// The scheduler refused this node (deleted node, revoked or unknown certificate).
    #[error("the scheduler refused the session ({code:?}): {message}")]
    Refused { code: Code, message: String },
    #[error("session failed: {0}")]
    Status(#[source] tonic::Status),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the scheduler closed the session")]
    Closed,
    /// The link was cut on purpose (simulated partition).
    #[error("the link to the scheduler is cut (partition)")]
    Partitioned,
}

/// Everything a session needs; shared across reconnects.
pub struct SessionContext {
    pub addr: SchedulerAddr,
    pub identity: NodeIdentity,
    pub hostname: String,
    /// Reported as `agent_version`.
    pub version: String,
    pub labels: BTreeMap<String, String>,
    pub capacity_override: CapacityOverride,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub probe: Arc<dyn HostProbe>,
    pub desired_tx: watch::Sender<Option<Arc<DesiredState>>>,
    pub observed_rx: watch::Receiver<Option<Arc<ObservedState>>>,
    pub connected_tx: watch::Sender<bool>,
    pub timing: SessionTiming,
    /// VPC networking of this node, advertised in `Hello` (None: not available).
    pub network: Option<NodeNetwork>,
    /// The volume backend, whose pool capacity goes into telemetry.
    pub volumes: Option<Arc<dyn crate::storage::VolumeBackend>>,
    /// This node runs VMs (advertises the `libvirt` driver): hypervisor (consoles) and files
    /// (serial logs).
    pub vms: Option<crate::config::NodeVms>,
    /// CPU-time samples of this node's VMs (CPU percent between telemetry reports).
    pub vm_sampler: Arc<crate::vm::VmSampler>,
}

impl SessionContext {
    fn applied_generation(&self) -> u64 {
        self.observed_rx
            .borrow()
            .as_ref()
            .map_or(0, |o| o.applied_generation)
    }

    async fn hello(&self) -> Hello {
        let detected = self.probe.capacity().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot detect capacity; advertising overrides only");
            crate::model::Capacity::default()
        });
        let capacity = telemetry::apply_override(detected, &self.capacity_override);
        let ping = tokio::time::timeout(Duration::from_secs(5), self.runtime.ping()).await;
        let drivers = match ping {
            Ok(Ok(())) => vec![self.runtime.driver().to_owned()],
            Err(_) => {
                tracing::warn!(
                    "container runtime did not answer within 5 s; advertising no drivers"
                );
                Vec::new()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "container runtime not available; advertising no drivers");
                Vec::new()
            }
        };
        let mut drivers = drivers;
        if self.vms.is_some() {
            drivers.push("libvirt".to_owned());
        }
        Hello {
            hostname: self.hostname.clone(),
            capacity: Some(convert::capacity_to_pb(capacity)),
            drivers,
            labels: self.labels.clone().into_iter().collect(),
            agent_version: self.version.clone(),
            protocol_version: cloud_proto::PROTOCOL_VERSION,
            applied_generation: self.applied_generation(),
            underlay_ip: self
                .network
                .as_ref()
                .map(|n| n.underlay_ip.to_string())
                .unwrap_or_default(),
            underlay_mtu: self.network.as_ref().map_or(0, |n| n.underlay_mtu),
        }
    }
}

fn msg(m: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

fn classify(status: tonic::Status) -> SessionError {
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => SessionError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        },
        _ => SessionError::Status(status),
    }
}

fn interval_ms(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(u64::from(ms).max(50))
    }
}

/// Runs sessions until `shutdown` turns true. While `partitioned` is true (a simulated cut
/// link) no session is open: a running one is dropped, none is attempted, and the first
/// attempt after the link is restored starts at once.
pub async fn run_forever(
    ctx: Arc<SessionContext>,
    mut shutdown: watch::Receiver<bool>,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(ctx.timing.backoff_base, ctx.timing.backoff_cap);
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if *partitioned.borrow_and_update() {
            ctx.connected_tx.send_replace(false);
            tracing::info!("link to the scheduler is cut (partition); waiting to be healed");
            tokio::select! {
                r = partitioned.wait_for(|p| !*p) => if r.is_err() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            tracing::info!("link to the scheduler restored; reconnecting");
            backoff.reset();
            failures = 0;
            continue;
        }
        let started = Instant::now();
        // Shutdown and a partition also interrupt a connect or handshake in progress.
        let mut inner = shutdown.clone();
        let mut cut = partitioned.clone();
        let result = tokio::select! {
            r = run_session(&ctx, &mut inner) => r,
            _ = shutdown.wait_for(|stop| *stop) => Ok(()),
            r = cut.wait_for(|p| *p) => match r {
                Ok(_) => Err(SessionError::Partitioned),
                Err(_) => Ok(()),
            },
        };
        ctx.connected_tx.send_replace(false);
        let lasted = started.elapsed();
        // A session that failed because the agent is stopping (the reconciler ended first)
        // is a shutdown, not an error to retry.
        let result = if *shutdown.borrow() { Ok(()) } else { result };
        match result {
            Ok(()) => {
                tracing::info!("session closed for shutdown");
                return;
            }
            Err(SessionError::Partitioned) => {
                tracing::info!("session dropped: link to the scheduler cut (partition)");
            }
            Err(e) => {
                if lasted > ctx.timing.backoff_reset_after {
                    backoff.reset();
                    failures = 0;
                }
                failures += 1;
                // A refusal will not resolve itself quickly: wait the capped delay at once.
                let delay = match &e {
                    SessionError::Refused { .. } => {
                        let cap = ctx.timing.backoff_cap;
                        Backoff::new(cap, cap).next_delay()
                    }
                    _ => backoff.next_delay(),
                };
                let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                let error = error_chain(&e);
                match &e {
                    SessionError::Refused { .. } => tracing::error!(
                        node_id = %ctx.identity.node_id, error = %error, retry_in_ms,
                        "SCHEDULER REFUSED THIS NODE: it may have been deleted or its certificate revoked; re-enroll with a new data dir and join token if this persists"
                    ),
                    _ if error.contains("certificate") || error.contains("Certificate") => {
                        tracing::error!(
                            node_id = %ctx.identity.node_id, error = %error, retry_in_ms, attempt = failures,
                            "TLS failure talking to the scheduler; check the node certificate and CA"
                        )
                    }
                    _ => {
                        tracing::warn!(error = %error, retry_in_ms, attempt = failures, lasted_ms = u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX), "session ended; reconnecting")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                    // A cut link ends the wait; the loop then waits for the heal instead.
                    _ = partitioned.wait_for(|p| *p) => {}
                }
            }
        }
    }
}

/// One session: connect, Hello, wait for SessionAccepted, then serve until it breaks.
/// `Ok(())` only on shutdown.
async fn run_session(
    ctx: &SessionContext,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let id = &ctx.identity;
    let channel = ctx
        .addr
        .connect_mtls(&id.ca_pem, &id.cert_pem, &id.key_pem)
        .await?;
    let mut client = AgentServiceClient::new(channel);
    let (out_tx, out_rx) = mpsc::channel::<AgentMessage>(OUT_CAPACITY);
    let hello = ctx.hello().await;
    let mut drivers = hello.drivers.clone();
    tracing::info!(scheduler = %ctx.addr.authority, node_id = %id.node_id, applied_generation = hello.applied_generation, drivers = ?hello.drivers, "opening session");
    out_tx
        .send(msg(agent_message::Msg::Hello(hello)))
        .await
        .map_err(|_| SessionError::Closed)?;
    let response = tokio::time::timeout(
        ctx.timing.accept_timeout,
        client.session(ReceiverStream::new(out_rx)),
    )
    .await
    .map_err(|_| {
        SessionError::Protocol(format!(
            "the scheduler did not answer the session call within {:?}",
            ctx.timing.accept_timeout
        ))
    })?
    .map_err(classify)?;
    let mut inbound = response.into_inner();

    let first = tokio::time::timeout(ctx.timing.accept_timeout, inbound.message())
        .await
        .map_err(|_| {
            SessionError::Protocol(format!(
                "no SessionAccepted within {:?}",
                ctx.timing.accept_timeout
            ))
        })?
        .map_err(classify)?
        .ok_or(SessionError::Closed)?;
    let mut state = SessionState::new(ctx, out_tx);
    match first.msg {
        Some(scheduler_message::Msg::Accepted(a)) => state.accepted(&a),
        other => {
            tracing::warn!(
                "first scheduler message was not SessionAccepted; using default intervals"
            );
            state.accepted(&SessionAccepted::default());
            state.handle(other).await?;
        }
    }
    ctx.connected_tx.send_replace(true);
    // Full observed state at the start of each session.
    state.send_observed(true).await?;

    loop {
        tokio::select! {
            biased;
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return Ok(());
                }
            }
            // `StreamExt::next` is cancel-safe: nothing is lost when another branch wins.
            m = inbound.next() => match m {
                Some(Ok(m)) => state.handle(m.msg).await?,
                None => return Err(SessionError::Closed),
                Some(Err(status)) => return Err(classify(status)),
            },
            _ = state.heartbeat.tick() => {
                let hb = Heartbeat { applied_generation: ctx.applied_generation() };
                state.send(msg(agent_message::Msg::Heartbeat(hb))).await?;
            }
            _ = state.telemetry.tick() => state.start_telemetry(),
            r = state.observed_rx.changed() => {
                if r.is_err() {
                    return Err(SessionError::Protocol("reconciler stopped".into()));
                }
                state.send_observed(false).await?;
            }
            _ = state.resend.tick() => state.send_observed(true).await?,
            _ = state.facts.tick() => {
                // Re-announce the node when its runtime came up or went away, so placement
                // follows what the node can really run.
                let up = matches!(
                    tokio::time::timeout(Duration::from_secs(2), ctx.runtime.ping()).await,
                    Ok(Ok(()))
                );
                let advertised = drivers.iter().any(|d| d == ctx.runtime.driver());
                if up != advertised {
                    let hello = ctx.hello().await;
                    tracing::info!(drivers = ?hello.drivers, "container runtime availability changed; updating node facts");
                    drivers = hello.drivers.clone();
                    state.send(msg(agent_message::Msg::Hello(hello))).await?;
                }
            }
            Some(done) = state.tasks.join_next() => state.task_done(done),
        }
    }
}

/// Per-session state: timers, outgoing queue, running stream tasks.
struct SessionState<'a> {
    ctx: &'a SessionContext,
    out: mpsc::Sender<AgentMessage>,
    heartbeat: tokio::time::Interval,
    telemetry: tokio::time::Interval,
    resend: tokio::time::Interval,
    /// Re-checks the node's facts (driver availability).
    facts: tokio::time::Interval,
    observed_rx: watch::Receiver<Option<Arc<ObservedState>>>,
    last_sent: Option<Arc<ObservedState>>,
    /// Log streams return `Some(request_id)`, telemetry returns `None`.
    tasks: JoinSet<Option<u64>>,
    streams: HashMap<u64, AbortHandle>,
    /// Input queues of bidirectional streams (consoles), by request id.
    inputs: HashMap<u64, mpsc::Sender<bytes::Bytes>>,
    telemetry_in_flight: bool,
}

impl<'a> SessionState<'a> {
    fn new(ctx: &'a SessionContext, out: mpsc::Sender<AgentMessage>) -> Self {
        let t = &ctx.timing;
        Self {
            ctx,
            out,
            heartbeat: jitter::interval(t.default_heartbeat),
            telemetry: jitter::interval(t.default_telemetry),
            // Mean first delay of one period, at a random phase.
            resend: jitter::interval_after(t.observed_resend / 2, t.observed_resend),
            facts: jitter::interval_after(t.facts_recheck / 2, t.facts_recheck),
            observed_rx: ctx.observed_rx.clone(),
            last_sent: None,
            tasks: JoinSet::new(),
            streams: HashMap::new(),
            inputs: HashMap::new(),
            telemetry_in_flight: false,
        }
    }

    fn accepted(&mut self, a: &SessionAccepted) {
        let t = &self.ctx.timing;
        let hb = interval_ms(a.heartbeat_interval_ms, t.default_heartbeat);
        let tm = interval_ms(a.telemetry_interval_ms, t.default_telemetry);
        tracing::info!(node_id = %a.node_id, node_name = %a.node_name, heartbeat_ms = hb.as_millis() as u64, telemetry_ms = tm.as_millis() as u64, "session accepted");
        if !a.node_id.is_empty() && a.node_id != self.ctx.identity.node_id {
            tracing::warn!(ours = %self.ctx.identity.node_id, theirs = %a.node_id, "scheduler reports a different node id than our identity file");
        }
        // Each node heartbeats and reports at its own phase, never in lockstep with others;
        // the first of each still comes within one interval.
        self.heartbeat = jitter::interval(hb);
        self.telemetry = jitter::interval(tm);
    }

    async fn send(&self, m: AgentMessage) -> Result<(), SessionError> {
        self.out.send(m).await.map_err(|_| SessionError::Closed)
    }

    /// Sends the reconciler's latest observation when it differs from the last one sent on
    /// this session, or always when `full`.
    async fn send_observed(&mut self, full: bool) -> Result<(), SessionError> {
        let Some(obs) = self.observed_rx.borrow_and_update().clone() else {
            return Ok(());
        };
        if !full && self.last_sent.as_deref() == Some(&*obs) {
            return Ok(());
        }
        tracing::debug!(
            applied_generation = obs.applied_generation,
            instances = obs.instances.len(),
            full,
            "sending observed state"
        );
        self.send(msg(agent_message::Msg::Observed(convert::observed_to_pb(
            &obs,
        ))))
        .await?;
        self.last_sent = Some(obs);
        Ok(())
    }

    fn start_telemetry(&mut self) {
        if self.telemetry_in_flight {
            return;
        }
        self.telemetry_in_flight = true;
        let probe = self.ctx.probe.clone();
        let runtime = self.ctx.runtime.clone();
        let volumes = self.ctx.volumes.clone();
        let observed = self.ctx.observed_rx.borrow().clone();
        let out = self.out.clone();
        let vms = self.ctx.vms.as_ref().map(|v| v.hypervisor.clone());
        let sampler = self.ctx.vm_sampler.clone();
        let node_id = self.ctx.identity.node_id.clone();
        self.tasks
            .spawn(tracing::Instrument::in_current_span(async move {
                let instances = observed.map(|o| o.instances.clone()).unwrap_or_default();
                let mut report = telemetry::collect(
                    probe.as_ref(),
                    runtime.as_ref(),
                    volumes.as_deref(),
                    &instances,
                )
                .await;
                if let Some(hv) = vms {
                    report
                        .instances
                        .extend(sampler.sample(hv.as_ref(), &node_id).await);
                    report
                        .instances
                        .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
                }
                let m = msg(agent_message::Msg::Telemetry(convert::telemetry_to_pb(
                    &report,
                )));
                // Telemetry is disposable: skip a tick rather than queue behind a full buffer.
                if out.try_send(m).is_err() {
                    tracing::debug!("telemetry skipped: outgoing buffer full");
                }
                None
            }));
    }

    fn task_done(&mut self, done: Result<Option<u64>, tokio::task::JoinError>) {
        match done {
            Ok(Some(request_id)) => {
                self.streams.remove(&request_id);
                self.inputs.remove(&request_id);
            }
            Ok(None) => self.telemetry_in_flight = false,
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                // A panicking telemetry task must not block telemetry for good.
                self.telemetry_in_flight = false;
                tracing::error!(error = %e, "session task panicked");
            }
        }
    }

    async fn handle(&mut self, m: Option<scheduler_message::Msg>) -> Result<(), SessionError> {
        match m {
            Some(scheduler_message::Msg::Accepted(a)) => self.accepted(&a),
            Some(scheduler_message::Msg::Desired(d)) => {
                let d = convert::desired_from_pb(d);
                let generation = d.generation;
                let accepted = self.ctx.desired_tx.send_if_modified(|cur| match cur {
                    Some(c) if c.generation >= generation => false,
                    _ => {
                        *cur = Some(Arc::new(d));
                        true
                    }
                });
                if accepted {
                    tracing::debug!(generation, "desired state received");
                } else {
                    tracing::debug!(
                        generation,
                        "desired state not newer than the current one; ignored"
                    );
                }
            }
            Some(scheduler_message::Msg::StreamRequest(r))
                if r.kind == StreamKind::Console as i32 =>
            {
                if let Some(old) = self.streams.remove(&r.request_id) {
                    old.abort();
                }
                let (tx, rx) = mpsc::channel(CONSOLE_INPUT_QUEUE);
                self.inputs.insert(r.request_id, tx);
                let hv = self.ctx.vms.as_ref().map(|v| v.hypervisor.clone());
                let out = self.out.clone();
                let request_id = r.request_id;
                let handle = self
                    .tasks
                    .spawn(tracing::Instrument::in_current_span(async move {
                        crate::console::serve(hv, request_id, r.instance_id, out, rx).await;
                        Some(request_id)
                    }));
                self.streams.insert(request_id, handle);
            }
            Some(scheduler_message::Msg::StreamInput(i)) => {
                let error = match self.inputs.get(&i.request_id) {
                    Some(tx) => match tx.try_send(bytes::Bytes::from(i.data)) {
                        Ok(()) => return Ok(()),
                        // The console is not keeping up with its user: end it (bounded memory).
                        Err(_) => "console input overflow: the user sent faster than the VM reads",
                    },
                    // Ended meanwhile, or begun in an earlier session of this agent.
                    None => "no such console stream on this node",
                };
                tracing::info!(request_id = i.request_id, error, "closing console stream");
                self.inputs.remove(&i.request_id);
                if let Some(h) = self.streams.remove(&i.request_id) {
                    h.abort();
                }
                let chunk = LogChunk {
                    request_id: i.request_id,
                    data: Vec::new(),
                    eof: true,
                    error: error.to_owned(),
                };
                return self.send(msg(agent_message::Msg::LogChunk(chunk))).await;
            }
            Some(scheduler_message::Msg::StreamRequest(r)) => {
                if r.kind != StreamKind::Logs as i32 {
                    let chunk = LogChunk {
                        request_id: r.request_id,
                        data: Vec::new(),
                        eof: true,
                        error: format!("unsupported stream kind {}", r.kind),
                    };
                    return self.send(msg(agent_message::Msg::LogChunk(chunk))).await;
                }
                if let Some(old) = self.streams.remove(&r.request_id) {
                    old.abort();
                }
                let req = LogRequest {
                    request_id: r.request_id,
                    instance_id: r.instance_id,
                    tail: r.tail,
                    follow: r.follow,
                };
                let runtime = self.ctx.runtime.clone();
                let vm_files = self.ctx.vms.as_ref().map(|v| v.files.clone());
                let node_id = self.ctx.identity.node_id.clone();
                let out = self.out.clone();
                let request_id = req.request_id;
                let handle = self
                    .tasks
                    .spawn(tracing::Instrument::in_current_span(async move {
                        logs::serve(runtime, vm_files, node_id, req, out).await;
                        Some(request_id)
                    }));
                self.streams.insert(request_id, handle);
            }
            Some(scheduler_message::Msg::StreamCancel(c)) => {
                self.inputs.remove(&c.request_id);
                if let Some(h) = self.streams.remove(&c.request_id) {
                    tracing::debug!(request_id = c.request_id, "log stream cancelled");
                    h.abort();
                }
            }
            None => {}
        }
        Ok(())
    }
}

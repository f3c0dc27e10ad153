//! Starting and stopping one agent. `start` enrolls (or loads the identity), then runs the
//! reconciler and the session loop inside one supervisor task whose `JoinSet` owns every task
//! of this agent: aborting the handle stops them all. Neither stopping nor aborting ever
//! touches containers; a restarted agent re-adopts them.

use crate::config::AgentConfig;
use crate::identity::{self, EnrollParams, IdentityError};
use crate::model::ObservedState;
use crate::reconcile::{ReconcileError, Reconciler};
use crate::runtime::ContainerRuntime;
use crate::session::{self, SessionContext};
use crate::telemetry::{HostProbe, ProcfsProbe};
use crate::tls::{SchedulerAddr, TlsError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Errors starting or running an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("CA file {path} is not readable: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("agent task failed: {0}")]
    Task(String),
}

impl AgentError {
    /// True when the scheduler itself refused the enrollment (bad/used token, name taken).
    pub fn is_enrollment_refused(&self) -> bool {
        matches!(self, AgentError::Identity(IdentityError::Refused { .. }))
    }
}

/// A running agent. Dropping the handle aborts the agent like [`AgentHandle::abort`].
pub struct AgentHandle {
    node_id: String,
    node_name: String,
    shutdown_tx: watch::Sender<bool>,
    observed_rx: watch::Receiver<Option<Arc<ObservedState>>>,
    connected_rx: watch::Receiver<bool>,
    partition_tx: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), AgentError>>>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// This node's id (from the identity issued at enrollment).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's name as registered with the scheduler.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Whether a session is currently established (SessionAccepted received).
    pub fn is_connected(&self) -> bool {
        *self.connected_rx.borrow()
    }

    /// Waits until a session is established, up to `timeout`. Returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected_rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Cuts (`true`) or restores (`false`) this agent's link to the scheduler, for the node
    /// simulator and tests. While partitioned the session is closed and not re-opened, and
    /// any connect in progress is abandoned; the reconciler keeps enforcing the last desired
    /// state it received. When restored, the agent reconnects at once (no backoff wait),
    /// sends `Hello` and its full observed state, and converges to the desired state it then
    /// receives. Nothing else about the agent changes.
    pub fn set_partitioned(&self, on: bool) {
        self.partition_tx.send_if_modified(|cur| {
            let changed = *cur != on;
            *cur = on;
            changed
        });
    }

    /// Whether the link to the scheduler is currently cut by [`AgentHandle::set_partitioned`].
    pub fn is_partitioned(&self) -> bool {
        *self.partition_tx.borrow()
    }

    /// The reconciler's latest observation (`None` before the first desired state).
    pub fn observed(&self) -> Option<Arc<ObservedState>> {
        self.observed_rx.borrow().clone()
    }

    /// Asks the agent to stop gracefully (the current reconcile pass finishes, the session is
    /// closed). Await [`AgentHandle::join`] to wait for it.
    pub fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// Waits for the agent to end (after `shutdown`, or on an internal failure).
    pub async fn join(mut self) -> Result<(), AgentError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Task(e.to_string())),
        }
    }

    /// `shutdown` + `join`, aborting if the graceful stop takes longer than `grace`.
    pub async fn stop(mut self, grace: Duration) -> Result<(), AgentError> {
        self.shutdown();
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(AgentError::Task(e.to_string())),
            Err(_) => {
                tracing::warn!(node_id = %self.node_id, "graceful stop timed out; aborting");
                task.abort();
                Ok(())
            }
        }
    }

    /// Stops every task of this agent immediately, like `kill -9` (containers keep running).
    pub fn abort(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn system_hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Starts an agent: validates the configuration, loads the identity or enrolls (scheduler
/// refusals are returned as errors; transport errors are retried), then spawns the reconciler
/// and the session loop.
pub async fn start(
    config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
) -> Result<AgentHandle, AgentError> {
    // tonic picks ring explicitly; this makes any other rustls user in the process agree.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = SchedulerAddr::parse(&config.scheduler)?;
    std::fs::metadata(&config.ca_file).map_err(|source| AgentError::CaFile {
        path: config.ca_file.clone(),
        source,
    })?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    for k in config.labels.keys() {
        if k.is_empty() {
            return Err(AgentError::Config("label keys must not be empty".into()));
        }
    }
    let hostname = config.hostname.clone().unwrap_or_else(system_hostname);
    let identity = identity::load_or_enroll(&EnrollParams {
        scheduler: addr.clone(),
        ca_file: config.ca_file.clone(),
        join_token_file: config.join_token_file.clone(),
        data_dir: config.data_dir.clone(),
        name: config.name.clone(),
        hostname: hostname.clone(),
    })
    .await?;
    let reconciler = Reconciler::new(
        &identity.node_id,
        runtime.clone(),
        &config.data_dir,
        config.reconciler.clone(),
    )?;
    let reconciler = match &config.network {
        Some(n) => reconciler.with_network(n.backend.clone()),
        None => reconciler,
    };
    let reconciler = match &config.volumes {
        Some(v) => reconciler.with_volumes(v.clone()),
        None => reconciler,
    };
    // Each node keeps its VM files in its own subdirectory of the VM directory.
    let vms = config.vms.clone().map(|v| crate::config::NodeVms {
        files: v.files.for_node(&identity.node_id),
        ..v
    });
    let reconciler = match &vms {
        Some(v) => reconciler.with_vms(v.hypervisor.clone(), v.files.clone()),
        None => reconciler,
    };
    let probe: Arc<dyn HostProbe> = match &config.host_probe {
        Some(p) => p.clone(),
        None => Arc::new(ProcfsProbe::new(&config.data_dir)),
    };

    let (desired_tx, desired_rx) = watch::channel(None);
    let (observed_tx, observed_rx) = watch::channel(None);
    let (connected_tx, connected_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (partition_tx, partition_rx) = watch::channel(config.partitioned);
    let node_id = identity.node_id.clone();
    let node_name = identity.node_name.clone();
    let ctx = Arc::new(SessionContext {
        addr,
        identity,
        hostname,
        version: config.version.clone(),
        labels: config.labels.clone(),
        capacity_override: config.capacity_override,
        runtime,
        probe,
        desired_tx,
        observed_rx: observed_rx.clone(),
        connected_tx,
        timing: config.session.clone(),
        network: config.network.clone(),
        volumes: config.volumes.clone(),
        vms,
        vm_sampler: Arc::default(),
    });

    let span = tracing::info_span!("agent", node_id = %node_id);
    let task = tokio::spawn(tracing::Instrument::instrument(
        supervise(
            reconciler,
            ctx,
            desired_rx,
            observed_tx,
            shutdown_rx,
            partition_rx,
        ),
        span,
    ));
    Ok(AgentHandle {
        node_id,
        node_name,
        shutdown_tx,
        observed_rx,
        connected_rx,
        partition_tx,
        task: Some(task),
    })
}

async fn supervise(
    reconciler: Reconciler,
    ctx: Arc<SessionContext>,
    desired_rx: watch::Receiver<Option<Arc<crate::model::DesiredState>>>,
    observed_tx: watch::Sender<Option<Arc<ObservedState>>>,
    shutdown_rx: watch::Receiver<bool>,
    partition_rx: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut tasks = JoinSet::new();
    tasks.spawn(tracing::Instrument::in_current_span(reconciler.run(
        desired_rx,
        observed_tx,
        shutdown_rx.clone(),
    )));
    tasks.spawn(tracing::Instrument::in_current_span(session::run_forever(
        ctx,
        shutdown_rx,
        partition_rx,
    )));
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tracing::error!(error = %e, "agent task panicked; stopping the agent");
            result = Err(AgentError::Task(e.to_string()));
            tasks.abort_all();
        }
    }
    tracing::info!("agent stopped");
    result
}

//! The planner: one task that takes instance requests from many concurrent API calls, plans
//! them in batches against an in-memory snapshot of the fleet (the pure `cloud-placement`
//! engine), and commits each batch in one transaction guarded by node placement generations.
//! Nodes whose guard fails are reloaded and only their requests are re-planned.
//!
//! API handlers never hold a lock for the whole request: they enqueue a job and await its
//! answer. Batching is natural (whatever queued while the previous batch committed), so one
//! transaction carries many placements when the API is busy.

mod batch;
mod ipam;
mod state;

use crate::error::{Error, Result};
use crate::store::{InstanceRecord, NewInstance};
use cloud_api::NodeId;
use cloud_placement as placement;
use tokio::sync::{mpsc, oneshot};

pub use batch::run;

/// Most jobs planned and committed together.
pub const MAX_BATCH: usize = 512;

/// Where a new instance went.
#[derive(Debug, Clone)]
pub struct Placed {
    pub node: NodeId,
    pub node_name: String,
    pub change_generation: i64,
    /// The address and MAC the planner's IPAM gave a new instance's port.
    pub private_ip: Option<String>,
    pub mac: Option<String>,
}

/// Work for the planner.
pub enum Job {
    /// Place and record a new instance.
    Create {
        new: NewInstance,
        reply: oneshot::Sender<Result<Placed>>,
    },
    /// Move an existing instance off its node (node down or draining).
    Move {
        instance: InstanceRecord,
        reason: String,
        reply: oneshot::Sender<Result<Placed>>,
    },
}

/// Changes the planner must fold into its snapshot before the next plan. Sent after the
/// change committed, so the reload it causes reads the new state. (Resources freed by a
/// deletion are picked up by reloading the node too: exact, and never counted twice.)
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Reload this node from the store (hello, status change, instance removed or moved).
    NodeChanged(NodeId),
}

/// The receiving ends, handed to [`run`] once.
pub struct Inbox {
    pub jobs: mpsc::Receiver<Job>,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// The sending ends, shared by the API and background tasks.
#[derive(Clone)]
pub struct Planner {
    jobs: mpsc::Sender<Job>,
    events: mpsc::UnboundedSender<Event>,
}

impl Planner {
    pub fn new() -> (Self, Inbox) {
        let (jobs, jobs_rx) = mpsc::channel(16 * MAX_BATCH);
        let (events, events_rx) = mpsc::unbounded_channel();
        (
            Self { jobs, events },
            Inbox {
                jobs: jobs_rx,
                events: events_rx,
            },
        )
    }

    async fn submit(&self, job: Job, rx: oneshot::Receiver<Result<Placed>>) -> Result<Placed> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::Unavailable("the planner is not running".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the planner stopped before answering".into()))?
    }

    /// Places and records a new instance; returns where it went.
    pub async fn create(&self, new: NewInstance) -> Result<Placed> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Create { new, reply }, rx).await
    }

    /// Moves an instance to another node (its current one is down or draining).
    pub async fn move_instance(&self, instance: InstanceRecord, reason: String) -> Result<Placed> {
        let (reply, rx) = oneshot::channel();
        self.submit(
            Job::Move {
                instance,
                reason,
                reply,
            },
            rx,
        )
        .await
    }

    /// Tells the planner something changed outside it.
    pub fn notify(&self, event: Event) {
        // The planner only stops at shutdown; nothing to do then.
        let _ = self.events.send(event);
    }
}

/// Group key of the placement engine: groups are per project.
pub fn group_key(project: uuid::Uuid, group: &str) -> String {
    format!("{project}/{group}")
}

/// Resources of an instance as the placement engine counts them.
pub fn demand(cpu_millis: u64, memory_mb: u64) -> placement::Resources {
    placement::Resources {
        cpu_millis,
        memory_mb,
        disk_gb: 0,
    }
}

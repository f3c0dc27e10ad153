//! `cloud-agent`: the privileged node agent of The Cloud.
//!
//! It enrolls once with a join token, then keeps one mutual-TLS gRPC session to the scheduler,
//! converges local containers toward the desired state it receives (level-triggered), and
//! reports observed state, heartbeats, telemetry and logs. The library API runs whole agents
//! in-process: the binary uses it, and so do end-to-end tests and the node simulator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloud_agent::AgentError> {
//! use std::sync::Arc;
//! let config = cloud_agent::AgentConfig::new("127.0.0.1:7443", "ca.crt", "token", "/var/lib/cloud-agent");
//! let runtime = Arc::new(cloud_agent::runtime::FakeRuntime::with_images(["local/busybox:latest"]));
//! let agent = cloud_agent::start(config, runtime).await?;
//! println!("node {}", agent.node_id());
//! agent.stop(std::time::Duration::from_secs(15)).await?;
//! # Ok(()) }
//! ```

mod agent;
mod backoff;
pub mod config;
pub mod console;
mod convert;
mod convert_network;
mod fsutil;
pub mod identity;
mod jitter;
mod logs;
pub mod model;
pub mod network;
pub mod reconcile;
pub mod runtime;
mod session;
pub mod sim;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod vm;

pub use agent::{AgentError, AgentHandle, start};
pub use config::{AgentConfig, CapacityOverride, NodeVms, SessionTiming};
pub use model::{
    Capacity, DesiredState, InstanceObservation, InstanceSpec, InstanceState, ObservedState,
    RestartPolicy, RunState,
};
pub use reconcile::{Reconciler, ReconcilerConfig};
pub use runtime::{ContainerRuntime, DockerRuntime, FakeRuntime};
pub use telemetry::{HostProbe, ProcfsProbe, StaticProbe};

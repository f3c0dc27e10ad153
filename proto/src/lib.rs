//! The agent <-> scheduler contract: generated protobuf types and gRPC stubs.
//!
//! Fields are append-only: an agent one version older must keep working during rolling
//! upgrades. Generated types stay inside the gRPC modules of the agent and the scheduler and
//! convert to domain types there.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("thecloud.agent.v1");
}

pub use v1::*;

/// Version of this contract, sent in `Hello.agent_version` next to the binary version.
pub const PROTOCOL_VERSION: u32 = 1;

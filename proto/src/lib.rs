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

/// The calling binary's version as a `&'static str`: its crate version, plus `+<id>` when it
/// was built with `THECLOUD_BUILD_ID=<id>` (builds are stamped so that `agent_version` and
/// `--version` tell builds apart during a rolling upgrade). A macro so that the variable is
/// read when the *calling* crate compiles: a new stamp rebuilds only the binaries.
#[macro_export]
macro_rules! build_version {
    () => {{
        static VERSION: ::std::sync::OnceLock<String> = ::std::sync::OnceLock::new();
        VERSION
            .get_or_init(|| match option_env!("THECLOUD_BUILD_ID") {
                Some(id) if !id.is_empty() => format!("{}+{id}", env!("CARGO_PKG_VERSION")),
                _ => env!("CARGO_PKG_VERSION").to_owned(),
            })
            .as_str()
    }};
}

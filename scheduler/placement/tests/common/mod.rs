//! Helpers shared by the integration tests: compact node and request builders.
#![allow(dead_code)]

use cloud_placement::{NodeInfo, NodeState, Request, Resources};
use uuid::Uuid;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// A docker node with `cpu` millicores, `mem` MiB and 100 GB of disk, nothing allocated.
pub fn node(n: u128, state: NodeState, cpu: u64, mem: u64) -> NodeInfo {
    NodeInfo::new(
        id(n),
        state,
        Resources::new(cpu, mem, 100),
        vec!["docker".into()],
    )
}

pub fn ready(n: u128, cpu: u64, mem: u64) -> NodeInfo {
    node(n, NodeState::Ready, cpu, mem)
}

pub fn with_labels(mut node: NodeInfo, labels: &[(&str, &str)]) -> NodeInfo {
    for (k, v) in labels {
        node.labels.insert((*k).into(), (*v).into());
    }
    node
}

pub fn with_allocated(mut node: NodeInfo, cpu: u64, mem: u64) -> NodeInfo {
    node.allocated = Resources::new(cpu, mem, 0);
    node
}

/// A docker request with id 1000 + `n`.
pub fn req(n: u128, cpu: u64, mem: u64) -> Request {
    Request::new(id(1000 + n), Resources::new(cpu, mem, 0), "docker")
}

/// The node chosen for the only request of a plan, if placed.
pub fn chosen(plan: &cloud_placement::Plan) -> Option<Uuid> {
    plan.placements.first().map(|p| p.node)
}

/// The reason of the only unplaced request of a plan.
pub fn reason(plan: &cloud_placement::Plan) -> String {
    plan.unplaced
        .first()
        .map(|u| u.reason.clone())
        .unwrap_or_default()
}

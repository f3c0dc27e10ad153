//! The pure half of the reconciler: desired state + actual containers + memory (acted change
//! generations, recent failures) → the actions of one pass. No I/O, no clock reads.

use crate::model::{DesiredState, InstanceSpec, RunState};
use crate::runtime::{ContainerInfo, ContainerStatus, labels};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// A failed action, remembered to throttle retries and to explain FAILED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Change generation the failed action answered.
    pub change_generation: u64,
    pub at: Instant,
    pub reason: String,
}

/// One thing to do to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pull the image if needed, create `tc-<id>` and start it.
    Create { spec: InstanceSpec },
    /// Start an existing container.
    Start {
        spec: InstanceSpec,
        container_id: String,
    },
    /// Stop a running container (graceful).
    Stop {
        spec: InstanceSpec,
        container_id: String,
    },
    /// Stop and remove a container that is not desired (any more).
    Remove {
        instance_id: Option<String>,
        container_id: String,
    },
}

/// Container name of an instance.
pub fn container_name(instance_id: &str) -> String {
    format!("tc-{instance_id}")
}

/// Instance kinds this agent runs.
pub fn kind_supported(kind: &str) -> bool {
    kind.is_empty() || kind == "container"
}

/// Groups the node's own containers by instance id. When several claim the same instance, the
/// one named `tc-<id>` (else the first) is kept; the rest are returned as extras to remove.
pub fn index_containers(
    actual: &[ContainerInfo],
) -> (BTreeMap<&str, &ContainerInfo>, Vec<&ContainerInfo>) {
    let mut by_instance: BTreeMap<&str, &ContainerInfo> = BTreeMap::new();
    let mut extras = Vec::new();
    for c in actual {
        let Some(id) = c.label(labels::INSTANCE_ID) else {
            extras.push(c);
            continue;
        };
        match by_instance.get(id) {
            None => {
                by_instance.insert(id, c);
            }
            Some(prev) => {
                if c.name == container_name(id) && prev.name != container_name(id) {
                    extras.push(*prev);
                    by_instance.insert(id, c);
                } else {
                    extras.push(c);
                }
            }
        }
    }
    (by_instance, extras)
}

/// The `thecloud.mounts` label of an instance's container: `VOLUME=PATH` pairs joined by `,`
/// (empty without volumes). A container whose label differs is recreated.
pub fn mounts_label(spec: &InstanceSpec) -> String {
    spec.mounts
        .iter()
        .map(|(volume, path)| format!("{volume}={path}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a recent failure at this (or a newer) change generation forbids another attempt.
pub fn throttled(
    failure: Option<&Failure>,
    spec: &InstanceSpec,
    now: Instant,
    retry_after: Duration,
) -> bool {
    failure.is_some_and(|f| {
        f.change_generation >= spec.change_generation
            && now.saturating_duration_since(f.at) < retry_after
    })
}

/// Computes the actions of one reconcile pass. `actual` must hold only this node's containers.
pub fn plan(
    desired: &DesiredState,
    actual: &[ContainerInfo],
    acted: &dyn Fn(&str) -> u64,
    failures: &HashMap<String, Failure>,
    now: Instant,
    retry_after: Duration,
) -> Vec<Action> {
    let (by_instance, extras) = index_containers(actual);
    let mut actions = Vec::new();
    let mut wanted = std::collections::BTreeSet::new();
    for spec in &desired.instances {
        wanted.insert(spec.instance_id.as_str());
        if !kind_supported(&spec.kind) {
            continue;
        }
        if throttled(failures.get(&spec.instance_id), spec, now, retry_after) {
            continue;
        }
        let container = by_instance.get(spec.instance_id.as_str());
        // Volumes attached or detached: Docker cannot change a container's mounts, so the
        // container is recreated (same instance id): removed now, created next pass.
        if let Some(c) = container
            && c.status != ContainerStatus::Removing
            && c.label(labels::MOUNTS).unwrap_or("") != mounts_label(spec)
        {
            actions.push(Action::Remove {
                instance_id: Some(spec.instance_id.clone()),
                container_id: c.id.clone(),
            });
            continue;
        }
        let action = match (spec.desired, container) {
            (RunState::Running, None) => Some(Action::Create { spec: spec.clone() }),
            (RunState::Running, Some(c)) => match c.status {
                ContainerStatus::Created => Some(Action::Start {
                    spec: spec.clone(),
                    container_id: c.id.clone(),
                }),
                // Exited on its own unless this change generation asks again.
                ContainerStatus::Exited | ContainerStatus::Dead | ContainerStatus::Unknown
                    if spec.change_generation > acted(&spec.instance_id) =>
                {
                    Some(Action::Start {
                        spec: spec.clone(),
                        container_id: c.id.clone(),
                    })
                }
                _ => None,
            },
            (RunState::Stopped, Some(c))
                if matches!(
                    c.status,
                    ContainerStatus::Running
                        | ContainerStatus::Restarting
                        | ContainerStatus::Paused
                ) =>
            {
                Some(Action::Stop {
                    spec: spec.clone(),
                    container_id: c.id.clone(),
                })
            }
            (RunState::Stopped, _) => None,
        };
        actions.extend(action);
    }
    for (id, c) in &by_instance {
        if !wanted.contains(id) && c.status != ContainerStatus::Removing {
            actions.push(Action::Remove {
                instance_id: Some((*id).to_owned()),
                container_id: c.id.clone(),
            });
        }
    }
    for c in extras {
        if c.status != ContainerStatus::Removing {
            actions.push(Action::Remove {
                instance_id: c.label(labels::INSTANCE_ID).map(str::to_owned),
                container_id: c.id.clone(),
            });
        }
    }
    actions
}

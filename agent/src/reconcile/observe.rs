//! The reporting half of the reconciler: desired state + actual containers + recent failures →
//! the `ObservedState` sent to the scheduler. Pure; no I/O.

use super::plan::{Failure, index_containers, kind_supported};
use crate::model::{
    DesiredState, InstanceObservation, InstanceSpec, InstanceState, ObservedState, RunState,
};
use crate::runtime::{ContainerInfo, ContainerStatus};
use std::collections::HashMap;

const MIB: i64 = 1024 * 1024;

/// Builds the observation of every desired instance, plus own containers still being removed.
/// `exit_notes` maps a container id to the last line it printed before failing.
pub fn observe(
    desired: &DesiredState,
    actual: &[ContainerInfo],
    failures: &HashMap<String, Failure>,
    exit_notes: &HashMap<&str, &str>,
) -> ObservedState {
    let (by_instance, _) = index_containers(actual);
    let mut instances = Vec::with_capacity(desired.instances.len());
    for spec in &desired.instances {
        let failure = failures
            .get(&spec.instance_id)
            .filter(|f| f.change_generation >= spec.change_generation);
        let container = by_instance.get(spec.instance_id.as_str()).copied();
        let note = container.and_then(|c| exit_notes.get(c.id.as_str()).copied());
        instances.push(observe_one(spec, container, failure, note));
    }
    for (id, c) in &by_instance {
        if desired.instances.iter().any(|s| s.instance_id == *id) {
            continue;
        }
        let reason = match failures.get(*id) {
            Some(f) => format!("removal failed: {}", f.reason),
            None => "being removed".to_owned(),
        };
        instances.push(InstanceObservation {
            runtime_id: c.id.clone(),
            ..InstanceObservation::new(id, InstanceState::Stopping, reason)
        });
    }
    instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    ObservedState {
        applied_generation: desired.generation,
        instances,
        // Filled in by the reconciler's volume half.
        volumes: Vec::new(),
        snapshots: Vec::new(),
    }
}

fn observe_one(
    spec: &InstanceSpec,
    container: Option<&ContainerInfo>,
    failure: Option<&Failure>,
    exit_note: Option<&str>,
) -> InstanceObservation {
    use InstanceState as S;
    let id = spec.instance_id.as_str();
    if !kind_supported(&spec.kind) {
        return InstanceObservation::new(
            id,
            S::Failed,
            format!("unsupported instance kind {:?} on this node", spec.kind),
        );
    }
    let Some(c) = container else {
        return match (failure, spec.desired) {
            (Some(f), _) => InstanceObservation::new(id, S::Failed, f.reason.clone()),
            (None, RunState::Stopped) => InstanceObservation::new(id, S::Stopped, ""),
            (None, RunState::Running) => {
                InstanceObservation::new(id, S::Starting, "container not created yet")
            }
        };
    };
    let exit_code = c.exit_code.and_then(|x| i32::try_from(x).ok());
    let (state, reason, exit) = match c.status {
        ContainerStatus::Running => match (spec.desired, failure) {
            (RunState::Running, _) => (S::Running, String::new(), None),
            (RunState::Stopped, Some(f)) => {
                (S::Running, format!("stop failed: {}", f.reason), None)
            }
            (RunState::Stopped, None) => (S::Stopping, "stopping".to_owned(), None),
        },
        ContainerStatus::Paused => (S::Running, "paused".to_owned(), None),
        ContainerStatus::Restarting => match spec.desired {
            RunState::Running => (
                S::Starting,
                format!(
                    "restarting (restart policy) after exit with code {}",
                    exit_code.unwrap_or(0)
                ),
                exit_code,
            ),
            RunState::Stopped => (S::Stopping, "stopping".to_owned(), exit_code),
        },
        ContainerStatus::Removing => (S::Stopping, "being removed".to_owned(), None),
        ContainerStatus::Created => match (failure, spec.desired) {
            (Some(f), _) => (S::Failed, f.reason.clone(), None),
            (None, RunState::Stopped) => (S::Stopped, String::new(), None),
            (None, RunState::Running) if !c.error.is_empty() => (S::Failed, c.error.clone(), None),
            (None, RunState::Running) => (S::Starting, "created, not started yet".to_owned(), None),
        },
        ContainerStatus::Exited | ContainerStatus::Dead | ContainerStatus::Unknown => {
            match (failure, spec.desired) {
                (Some(f), _) => (S::Failed, f.reason.clone(), exit_code),
                (None, RunState::Stopped) => (S::Stopped, "stopped".to_owned(), exit_code),
                (None, RunState::Running) => {
                    let (s, r) = exit_reason(spec, c, exit_code.unwrap_or(0), exit_note);
                    (s, r, exit_code)
                }
            }
        }
    };
    InstanceObservation {
        instance_id: id.to_owned(),
        state,
        reason,
        runtime_id: c.id.clone(),
        started_at_unix_ms: c.started_at_unix_ms,
        exit_code: exit,
    }
}

/// Why a container that should run is not running (it stopped on its own).
fn exit_reason(
    spec: &InstanceSpec,
    c: &ContainerInfo,
    code: i32,
    note: Option<&str>,
) -> (InstanceState, String) {
    if c.oom_killed {
        let limit_mb = if spec.memory_mb > 0 {
            spec.memory_mb
        } else {
            u64::try_from(c.memory_bytes / MIB).unwrap_or(0)
        };
        return (
            InstanceState::Failed,
            format!("killed: out of memory (limit {limit_mb} MiB)"),
        );
    }
    if c.status == ContainerStatus::Dead {
        return (InstanceState::Failed, "container is dead".to_owned());
    }
    if code == 0 {
        (InstanceState::Stopped, "exited with code 0".to_owned())
    } else {
        match note.filter(|n| !n.is_empty()) {
            Some(n) => (
                InstanceState::Failed,
                format!("exited with code {code}: {n}"),
            ),
            None => (InstanceState::Failed, format!("exited with code {code}")),
        }
    }
}

//! The planner loop: take whatever jobs are queued, check names and groups, plan against the
//! snapshot, commit with node guards, re-plan what conflicted, answer everyone.

use super::state::State;
use super::{Inbox, Job, MAX_BATCH, Placed, demand, group_key};
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::{InstanceRecord, NewInstance, NodeGuard, StoreError, to_u64};
use cloud_api::{InstanceId, NodeId};
use cloud_placement as placement;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Re-planning rounds per batch (conflicts, refresh) before giving up on a request.
const MAX_ROUNDS: usize = 4;

pub(super) enum What {
    Create(NewInstance),
    Move {
        instance: InstanceRecord,
        reason: String,
    },
}

pub(super) struct Item {
    pub(super) what: What,
    request: placement::Request,
    group: Option<String>,
    reply: oneshot::Sender<Result<Placed>>,
}

impl Item {
    fn id(&self) -> InstanceId {
        match &self.what {
            What::Create(n) => n.id,
            What::Move { instance, .. } => InstanceId(instance.id),
        }
    }

    pub(super) fn answer(self, r: Result<Placed>) {
        // The caller may have given up (client gone); nothing to do then.
        let _ = self.reply.send(r);
    }
}

fn strategy(s: Option<&str>) -> Option<placement::Strategy> {
    match s {
        Some("spread") => Some(placement::Strategy::Spread),
        Some("binpack") => Some(placement::Strategy::BinPack),
        _ => None,
    }
}

fn driver_for(kind: &str) -> &'static str {
    if kind == "vm" { "libvirt" } else { "docker" }
}

fn item(job: Job) -> Item {
    match job {
        Job::Create { new, reply } => {
            let group = new
                .placement_group
                .as_ref()
                .map(|(g, _)| group_key(new.project_id.0, g));
            let request = placement::Request {
                id: new.id.0,
                demand: demand(new.cpu_millis, new.memory_mb),
                driver: driver_for(&new.kind).to_string(),
                node_selector: new.node_selector.clone(),
                group: new
                    .placement_group
                    .as_ref()
                    .map(|(_, policy)| placement::PlacementGroup {
                        name: group.clone().unwrap_or_default(),
                        policy: if policy == "pack" {
                            placement::GroupPolicy::Pack
                        } else {
                            placement::GroupPolicy::Spread
                        },
                    }),
                required_node: new.required_node.map(|n| n.0),
                strategy: strategy(new.placement_strategy.as_deref()),
            };
            Item {
                what: What::Create(new),
                request,
                group,
                reply,
            }
        }
        Job::Move {
            instance,
            reason,
            reply,
        } => {
            let group = instance
                .placement_group
                .as_ref()
                .map(|g| group_key(instance.project_id, g));
            let request = placement::Request {
                id: instance.id,
                demand: demand(to_u64(instance.cpu_millis), to_u64(instance.memory_mb)),
                driver: driver_for(&instance.kind).to_string(),
                node_selector: instance.node_selector.0.clone(),
                group: instance.placement_policy.as_deref().and_then(|p| {
                    Some(placement::PlacementGroup {
                        name: group.clone()?,
                        policy: if p == "pack" {
                            placement::GroupPolicy::Pack
                        } else {
                            placement::GroupPolicy::Spread
                        },
                    })
                }),
                required_node: None,
                strategy: strategy(instance.placement_strategy.as_deref()),
            };
            Item {
                what: What::Move { instance, reason },
                request,
                group,
                reply,
            }
        }
    }
}

/// Runs until `stop` is set.
pub async fn run(app: Arc<App>, mut inbox: Inbox, mut stop: watch::Receiver<bool>) {
    let mut state = loop {
        match State::load(&app.store).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(error = %e, "planner cannot load the fleet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };
    tracing::info!(nodes = state.snapshot.len(), "planner ready");
    loop {
        let first = tokio::select! {
            j = inbox.jobs.recv() => match j {
                Some(j) => j,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match inbox.jobs.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = state.apply_events(&app.store, &mut inbox.events).await {
            // The node guards keep commits safe on a stale view; carry on.
            tracing::warn!(error = %e, "planner cannot apply node changes; planning on its current view");
        }
        let started = Instant::now();
        let count = jobs.len();
        process(&app, &mut state, jobs.into_iter().map(item).collect()).await;
        app.metrics
            .planner_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        app.metrics.planner_batch_size.observe(count as f64);
    }
}

async fn process(app: &App, state: &mut State, items: Vec<Item>) {
    let items = check_names_and_groups(app, items).await;
    let items = super::ipam::assign(app, items).await;
    let mut pending = items;
    let mut refreshed = false;
    for round in 0..MAX_ROUNDS {
        if pending.is_empty() {
            return;
        }
        let requests: Vec<placement::Request> = pending.iter().map(|i| i.request.clone()).collect();
        let plan = placement::place_with(
            &state.snapshot,
            &requests,
            app.next_placement_seed(),
            &app.placement_options(),
        );
        let target: HashMap<uuid::Uuid, uuid::Uuid> = plan
            .placements
            .iter()
            .map(|p| (p.request, p.node))
            .collect();
        let reasons: HashMap<uuid::Uuid, String> = plan
            .unplaced
            .into_iter()
            .map(|u| (u.request, u.reason))
            .collect();

        let mut placed = Vec::new();
        let mut retry = Vec::new();
        let mut need_refresh = false;
        for it in pending {
            let id = it.id().0;
            if let Some(node) = target.get(&id) {
                placed.push((it, NodeId(*node)));
            } else if !refreshed && state.is_stale() {
                need_refresh = true;
                retry.push(it);
            } else {
                let mut reason = reasons
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "no node fits".into());
                if let What::Create(n) = &it.what {
                    // Group names are keyed by project inside the engine; show the user's name.
                    reason = reason.replace(&format!("{}/", n.project_id), "");
                }
                app.metrics.placement_failures.inc();
                let err = match &it.what {
                    What::Create(_) => Error::InsufficientCapacity(reason),
                    What::Move { .. } => {
                        Error::InsufficientCapacity(format!("cannot move it: {reason}"))
                    }
                };
                it.answer(Err(err));
            }
        }
        let conflicted = commit(app, state, placed, &mut retry).await;
        if need_refresh || !conflicted.is_empty() {
            if need_refresh {
                match State::load(&app.store).await {
                    Ok(s) => {
                        *state = s;
                        refreshed = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "planner refresh failed"),
                }
            } else {
                for node in &conflicted {
                    if let Err(e) = state.reload_node(&app.store, *node).await {
                        tracing::warn!(%node, error = %e, "cannot reload a conflicting node");
                    }
                }
            }
        }
        if !retry.is_empty() {
            tracing::debug!(
                round,
                retry = retry.len(),
                conflicts = conflicted.len(),
                "re-planning"
            );
        }
        pending = retry;
    }
    for it in pending {
        it.answer(Err(Error::Unavailable(
            "placement kept conflicting with concurrent changes; retry the request".into(),
        )));
    }
}

/// Commits placed items (creates in one transaction, moves in another). Items on nodes whose
/// guard failed go to `retry`; returns those nodes.
async fn commit(
    app: &App,
    state: &mut State,
    placed: Vec<(Item, NodeId)>,
    retry: &mut Vec<Item>,
) -> HashSet<NodeId> {
    let (creates, moves): (Vec<_>, Vec<_>) = placed
        .into_iter()
        .partition(|(i, _)| matches!(i.what, What::Create(_)));
    let mut conflicted = HashSet::new();
    if !creates.is_empty() {
        conflicted.extend(commit_creates(app, state, creates, retry).await);
    }
    if !moves.is_empty() {
        conflicted.extend(commit_moves(app, state, moves, retry).await);
    }
    conflicted
}

fn guards(state: &State, nodes: impl Iterator<Item = NodeId>) -> Vec<NodeGuard> {
    let set: HashSet<NodeId> = nodes.collect();
    let mut v: Vec<NodeGuard> = set
        .into_iter()
        .map(|node| NodeGuard {
            node,
            placement_generation: state.placement_generation.get(&node).copied().unwrap_or(-1),
        })
        .collect();
    // A stable lock order across transactions.
    v.sort_by_key(|g| g.node);
    v
}

async fn commit_creates(
    app: &App,
    state: &mut State,
    placed: Vec<(Item, NodeId)>,
    retry: &mut Vec<Item>,
) -> HashSet<NodeId> {
    let guards = guards(state, placed.iter().map(|(_, n)| *n));
    let rows: Vec<(&NewInstance, NodeId)> = placed
        .iter()
        .filter_map(|(i, n)| match &i.what {
            What::Create(new) => Some((new, *n)),
            What::Move { .. } => None,
        })
        .collect();
    let outcome = match app.store.placements_commit(&guards, &rows).await {
        Ok(o) => o,
        Err(StoreError::Conflict) => {
            // The transaction was rolled back (e.g. a deadlock): nothing was written; plan
            // these again.
            app.metrics.placement_conflicts.inc();
            retry.extend(placed.into_iter().map(|(it, _)| it));
            return guards.iter().map(|g| g.node).collect();
        }
        Err(e) => {
            let err = match e {
                StoreError::Duplicate => Error::AlreadyExists(
                    "an instance with one of these names was created concurrently; retry".into(),
                ),
                other => Error::from(other),
            };
            tracing::error!(error = %err, "cannot commit placements");
            for (it, _) in placed {
                it.answer(Err(Error::Unavailable(format!(
                    "cannot record the placement: {err}"
                ))));
            }
            return HashSet::new();
        }
    };
    finish(
        app,
        state,
        placed,
        &outcome.committed,
        &outcome.conflicted,
        &outcome.over_quota,
        retry,
    );
    outcome.conflicted
}

async fn commit_moves(
    app: &App,
    state: &mut State,
    placed: Vec<(Item, NodeId)>,
    retry: &mut Vec<Item>,
) -> HashSet<NodeId> {
    let guards = guards(state, placed.iter().map(|(_, n)| *n));
    let rows: Vec<crate::store::MoveRow> = placed
        .iter()
        .filter_map(|(i, to)| match &i.what {
            What::Move { instance, reason } => Some(crate::store::MoveRow {
                id: InstanceId(instance.id),
                from: NodeId(instance.node_id?),
                to: *to,
                reason: reason.clone(),
            }),
            What::Create(_) => None,
        })
        .collect();
    let outcome = match app.store.placements_move(&guards, &rows).await {
        Ok(o) => o,
        Err(StoreError::Conflict) => {
            app.metrics.placement_conflicts.inc();
            retry.extend(placed.into_iter().map(|(it, _)| it));
            return guards.iter().map(|g| g.node).collect();
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot commit moves");
            for (it, _) in placed {
                it.answer(Err(Error::Unavailable(format!(
                    "cannot record the move: {e}"
                ))));
            }
            return HashSet::new();
        }
    };
    for row in &rows {
        if outcome.commit.committed.contains_key(&row.to) {
            app.sessions.notify_desired(row.from);
            app.planner.notify(super::Event::NodeChanged(row.from));
        }
    }
    let moved: HashSet<InstanceId> = outcome.moved.iter().copied().collect();
    let (gone, placed): (Vec<_>, Vec<_>) = placed.into_iter().partition(|(it, to)| {
        outcome.commit.committed.contains_key(to) && !moved.contains(&it.id())
    });
    for (it, _) in gone {
        it.answer(Err(Error::NotFound(
            "the instance was deleted or moved meanwhile".into(),
        )));
    }
    finish(
        app,
        state,
        placed,
        &outcome.commit.committed,
        &outcome.commit.conflicted,
        &HashMap::new(),
        retry,
    );
    outcome.commit.conflicted
}

/// Folds committed placements into the snapshot, answers their callers, wakes their nodes;
/// queues items of conflicted nodes for another round.
fn finish(
    app: &App,
    state: &mut State,
    placed: Vec<(Item, NodeId)>,
    committed: &HashMap<NodeId, crate::store::NodeGenerations>,
    conflicted: &HashSet<NodeId>,
    over_quota: &HashMap<InstanceId, String>,
    retry: &mut Vec<Item>,
) {
    for (node, g) in committed {
        state
            .placement_generation
            .insert(*node, g.placement_generation);
    }
    let mut woken = BTreeMap::new();
    for (it, node) in placed {
        if let What::Create(n) = &it.what
            && let Some(why) = over_quota.get(&n.id)
        {
            it.answer(Err(Error::Forbidden(why.clone())));
            continue;
        }
        if conflicted.contains(&node) {
            app.metrics.placement_conflicts.inc();
            retry.push(it);
            continue;
        }
        let Some(g) = committed.get(&node) else {
            retry.push(it);
            continue;
        };
        state
            .snapshot
            .allocate(node.0, it.request.demand, it.group.as_deref());
        woken.insert(node, ());
        let name = state.names.get(&node).cloned().unwrap_or_default();
        let (private_ip, mac) = match &it.what {
            What::Create(n) => (n.private_ip.clone(), n.mac.clone()),
            What::Move { .. } => (None, None),
        };
        let (kind, project, instance) = match &it.what {
            What::Create(n) => ("instance.placed", n.project_id.0, n.id.0),
            What::Move { instance, .. } => ("instance.moved", instance.project_id, instance.id),
        };
        app.events.emit(
            Some(project),
            kind,
            "instance",
            instance,
            serde_json::json!({ "node_id": node.0, "node_name": name }),
        );
        it.answer(Ok(Placed {
            node,
            node_name: name,
            change_generation: g.generation,
            private_ip,
            mac,
        }));
    }
    for node in woken.keys() {
        app.sessions.notify_desired(*node);
    }
}

/// Refuses creates whose name is taken (in the store or earlier in the batch) or whose
/// placement group is used with another policy.
async fn check_names_and_groups(app: &App, items: Vec<Item>) -> Vec<Item> {
    let mut by_project: HashMap<uuid::Uuid, Vec<String>> = HashMap::new();
    let mut groups_by_project: HashMap<uuid::Uuid, Vec<String>> = HashMap::new();
    for it in &items {
        if let What::Create(n) = &it.what {
            by_project
                .entry(n.project_id.0)
                .or_default()
                .push(n.name.clone());
            if let Some((g, _)) = &n.placement_group {
                groups_by_project
                    .entry(n.project_id.0)
                    .or_default()
                    .push(g.clone());
            }
        }
    }
    let mut taken: HashSet<(uuid::Uuid, String)> = HashSet::new();
    let mut policies: HashMap<(uuid::Uuid, String), String> = HashMap::new();
    for (project, names) in &by_project {
        match app
            .store
            .instance_names_taken((*project).into(), names)
            .await
        {
            Ok(t) => taken.extend(t.into_iter().map(|n| (*project, n))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot pre-check names; the unique index still guards them")
            }
        }
    }
    for (project, groups) in &groups_by_project {
        match app
            .store
            .placement_group_policies((*project).into(), groups)
            .await
        {
            Ok(p) => policies.extend(p.into_iter().map(|(g, pol)| ((*project, g), pol))),
            Err(e) => tracing::warn!(error = %e, "cannot check placement group policies"),
        }
    }
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let What::Create(n) = &it.what else {
            out.push(it);
            continue;
        };
        let key = (n.project_id.0, n.name.clone());
        if !taken.insert(key) {
            let name = n.name.clone();
            it.answer(Err(Error::AlreadyExists(format!(
                "an instance named {name:?} already exists in this project; pick another name or delete it first"
            ))));
            continue;
        }
        if let Some((group, policy)) = &n.placement_group {
            let key = (n.project_id.0, group.clone());
            match policies.get(&key) {
                Some(existing) if existing != policy => {
                    let msg = format!(
                        "placement_group: group {group:?} already places its members with policy {existing:?}, not {policy:?}"
                    );
                    it.answer(Err(Error::Conflict(msg)));
                    continue;
                }
                Some(_) => {}
                None => {
                    policies.insert(key, policy.clone());
                }
            }
        }
        out.push(it);
    }
    out
}

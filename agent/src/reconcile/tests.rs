//! Reconciler rules against the fake runtime.

use super::*;
use crate::model::{InstanceState, RestartPolicy, RunState};
use crate::runtime::fake::FakeCall;
use crate::runtime::{ContainerStatus, EngineRestartPolicy, FakeRuntime};
use std::collections::BTreeMap;
use tempfile::TempDir;

const NODE: &str = "node-a";
const IMG: &str = "local/busybox:latest";

pub(super) fn spec(id: &str, desired: RunState, cg: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        name: format!("web-{id}"),
        image: IMG.into(),
        command: vec!["sleep".into(), "1000".into()],
        env: BTreeMap::from([("SECRET".into(), "s3cr3t".into())]),
        cpu_millis: 250,
        memory_mb: 64,
        restart_policy: RestartPolicy::Never,
        desired,
        kind: "container".into(),
        change_generation: cg,
        mounts: Vec::new(),
        network: None,
        vm: None,
    }
}

fn doc(generation: u64, instances: Vec<InstanceSpec>) -> Arc<DesiredState> {
    Arc::new(DesiredState {
        generation,
        instances,
        vpcs: Vec::new(),
        volumes: Vec::new(),
        delete_volumes: Vec::new(),
        snapshots: Vec::new(),
        delete_snapshots: Vec::new(),
    })
}

struct Fixture {
    rt: Arc<FakeRuntime>,
    dir: TempDir,
    rec: Reconciler,
}

impl Fixture {
    fn new() -> Self {
        let rt = Arc::new(FakeRuntime::with_images([IMG]));
        let dir = tempfile::tempdir().unwrap();
        let rec =
            Reconciler::new(NODE, rt.clone(), dir.path(), ReconcilerConfig::default()).unwrap();
        Self { rt, dir, rec }
    }

    /// A fresh reconciler over the same runtime and data dir: an agent restart.
    fn restart(&mut self) {
        self.rec = Reconciler::new(
            NODE,
            self.rt.clone(),
            self.dir.path(),
            ReconcilerConfig::default(),
        )
        .unwrap();
    }

    async fn pass(&mut self) -> ObservedState {
        self.rec.reconcile_once().await.unwrap().unwrap()
    }

    async fn apply(&mut self, d: Arc<DesiredState>) -> ObservedState {
        self.rec.set_desired(d);
        self.pass().await
    }
}

fn obs<'a>(o: &'a ObservedState, id: &str) -> &'a crate::model::InstanceObservation {
    o.instance(id)
        .unwrap_or_else(|| panic!("{id} not observed in {o:?}"))
}

fn own_labels(node: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NODE_ID.to_owned(), node.to_owned()),
        (labels::INSTANCE_ID.to_owned(), instance.to_owned()),
    ])
}

fn planted(name: &str, labels: BTreeMap<String, String>) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: IMG.into(),
        labels,
        ..ContainerSpec::default()
    }
}

#[tokio::test(start_paused = true)]
async fn does_nothing_before_the_first_desired_state() {
    let mut f = Fixture::new();
    // An undesired container of ours and an exited one: both would be acted on later.
    f.rt.insert_container(&planted("tc-old", own_labels(NODE, "old")), true);
    f.rt.insert_container(&planted("tc-ex", own_labels(NODE, "ex")), false);
    assert!(f.rec.reconcile_once().await.unwrap().is_none());
    assert!(f.rec.desired().is_none());
    assert!(
        f.rt.calls().is_empty(),
        "no runtime action: {:?}",
        f.rt.calls()
    );
    assert_eq!(f.rt.containers().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn creates_and_starts_with_labels_limits_policy_env_and_command() {
    let mut f = Fixture::new();
    let mut s = spec("i1", RunState::Running, 1);
    s.restart_policy = RestartPolicy::Always;
    let o = f.apply(doc(1, vec![s])).await;
    let c = f.rt.container_of("i1").unwrap();
    assert_eq!(c.name, "tc-i1");
    assert_eq!(c.status, ContainerStatus::Running);
    assert_eq!(c.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(c.nano_cpus, 250_000_000);
    assert_eq!(c.restart_policy, EngineRestartPolicy::UnlessStopped);
    assert_eq!(c.label(labels::NODE_ID), Some(NODE));
    assert_eq!(c.label(labels::INSTANCE_ID), Some("i1"));
    assert_eq!(c.label(labels::INSTANCE_NAME), Some("web-i1"));
    assert_eq!(c.label(labels::MANAGED_BY), Some("cloud-agent"));
    let created = f.rt.spec_of("i1").unwrap();
    assert_eq!(created.command, vec!["sleep", "1000"]);
    assert_eq!(
        created.env.get("SECRET").map(String::as_str),
        Some("s3cr3t")
    );

    assert_eq!(o.applied_generation, 1);
    let i = obs(&o, "i1");
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.runtime_id, c.id);
    assert_eq!(i.started_at_unix_ms, c.started_at_unix_ms);
    assert!(i.started_at_unix_ms > 0);

    // Level-triggered: the next passes change nothing.
    f.rt.clear_calls();
    let again = f.pass().await;
    assert_eq!(again, o);
    assert!(f.rt.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn restart_policies_map_to_docker_names() {
    let mut f = Fixture::new();
    let mut never = spec("n", RunState::Running, 1);
    never.restart_policy = RestartPolicy::Never;
    let mut onf = spec("f", RunState::Running, 1);
    onf.restart_policy = RestartPolicy::OnFailure;
    f.apply(doc(1, vec![never, onf])).await;
    assert_eq!(
        f.rt.container_of("n").unwrap().restart_policy,
        EngineRestartPolicy::No
    );
    assert_eq!(
        f.rt.container_of("f").unwrap().restart_policy,
        EngineRestartPolicy::OnFailure
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_on_its_own_is_reported_not_restarted() {
    let mut f = Fixture::new();
    f.apply(doc(
        1,
        vec![
            spec("ok", RunState::Running, 1),
            spec("bad", RunState::Running, 1),
        ],
    ))
    .await;
    assert!(f.rt.exit("ok", 0));
    assert!(f.rt.exit("bad", 3));
    f.rt.clear_calls();
    for _ in 0..3 {
        let o = f.pass().await;
        let ok = obs(&o, "ok");
        assert_eq!(ok.state, InstanceState::Stopped);
        assert_eq!(ok.reason, "exited with code 0");
        assert_eq!(ok.exit_code, Some(0));
        let bad = obs(&o, "bad");
        assert_eq!(bad.state, InstanceState::Failed);
        assert_eq!(bad.reason, "exited with code 3");
        assert_eq!(bad.exit_code, Some(3));
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    assert!(f.rt.calls().is_empty(), "{:?}", f.rt.calls());

    // A newer change generation asks for a start again: acted on once.
    let id = f.rt.container_of("bad").unwrap().id;
    let o = f
        .apply(doc(
            2,
            vec![
                spec("ok", RunState::Running, 1),
                spec("bad", RunState::Running, 2),
            ],
        ))
        .await;
    assert_eq!(f.rt.calls(), vec![FakeCall::Start { id: id.clone() }]);
    assert_eq!(obs(&o, "bad").state, InstanceState::Running);
    assert_eq!(obs(&o, "bad").runtime_id, id, "same container, restarted");
    assert_eq!(obs(&o, "ok").state, InstanceState::Stopped);
    f.rt.exit("bad", 1);
    f.rt.clear_calls();
    f.pass().await;
    assert!(f.rt.calls().is_empty(), "once per change generation");
}

#[tokio::test(start_paused = true)]
async fn oom_and_restarting_are_reported() {
    let mut f = Fixture::new();
    let mut restarting = spec("r", RunState::Running, 1);
    restarting.restart_policy = RestartPolicy::Always;
    f.apply(doc(1, vec![spec("oom", RunState::Running, 1), restarting]))
        .await;
    assert!(f.rt.oom_kill("oom"));
    assert!(f.rt.set_restarting("r", 2));
    let o = f.pass().await;
    let oom = obs(&o, "oom");
    assert_eq!(oom.state, InstanceState::Failed);
    assert_eq!(oom.reason, "killed: out of memory (limit 64 MiB)");
    assert_eq!(oom.exit_code, Some(137));
    let r = obs(&o, "r");
    assert_eq!(r.state, InstanceState::Starting);
    assert!(r.reason.contains("restarting"), "{}", r.reason);
}

#[tokio::test(start_paused = true)]
async fn docker_restart_policy_keeps_always_instances_running() {
    let mut f = Fixture::new();
    let mut s = spec("a", RunState::Running, 1);
    s.restart_policy = RestartPolicy::Always;
    f.apply(doc(1, vec![s])).await;
    f.rt.exit("a", 1);
    f.rt.clear_calls();
    let o = f.pass().await;
    assert_eq!(obs(&o, "a").state, InstanceState::Running);
    assert!(
        f.rt.calls().is_empty(),
        "docker restarted it, not the agent"
    );
}

#[tokio::test(start_paused = true)]
async fn desired_stopped_stops_running_and_never_creates() {
    let mut f = Fixture::new();
    f.apply(doc(1, vec![spec("a", RunState::Running, 1)])).await;
    let id = f.rt.container_of("a").unwrap().id;
    f.rt.clear_calls();
    let o = f
        .apply(doc(
            2,
            vec![
                spec("a", RunState::Stopped, 2),
                spec("b", RunState::Stopped, 2),
            ],
        ))
        .await;
    assert_eq!(f.rt.calls(), vec![FakeCall::Stop { id: id.clone() }]);
    let a = obs(&o, "a");
    assert_eq!(a.state, InstanceState::Stopped);
    assert_eq!(a.runtime_id, id);
    let b = obs(&o, "b");
    assert_eq!(b.state, InstanceState::Stopped);
    assert!(b.runtime_id.is_empty());
    assert!(
        f.rt.container_of("b").is_none(),
        "stopped instances are not created"
    );

    // Started again by a newer change.
    f.rt.clear_calls();
    let o = f.apply(doc(3, vec![spec("a", RunState::Running, 3)])).await;
    assert_eq!(f.rt.calls(), vec![FakeCall::Start { id }]);
    assert_eq!(obs(&o, "a").state, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn removes_undesired_own_containers_only() {
    let mut f = Fixture::new();
    f.apply(doc(
        1,
        vec![
            spec("keep", RunState::Running, 1),
            spec("gone", RunState::Running, 1),
        ],
    ))
    .await;
    let other_node =
        f.rt.insert_container(&planted("tc-x", own_labels("node-b", "x")), true);
    let unlabelled =
        f.rt.insert_container(&planted("someone", BTreeMap::new()), true);
    let gone = f.rt.container_of("gone").unwrap().id;
    f.rt.clear_calls();

    let o = f
        .apply(doc(2, vec![spec("keep", RunState::Running, 1)]))
        .await;
    assert_eq!(
        f.rt.calls(),
        vec![
            FakeCall::Stop { id: gone.clone() },
            FakeCall::Remove { id: gone }
        ]
    );
    assert!(o.instance("gone").is_none(), "removed instances disappear");
    assert_eq!(o.instances.len(), 1);
    let names: Vec<_> = f.rt.containers().into_iter().map(|c| c.id).collect();
    assert!(names.contains(&other_node) && names.contains(&unlabelled));
    assert_eq!(obs(&o, "keep").state, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn never_touches_another_nodes_container_even_for_a_desired_instance() {
    let mut f = Fixture::new();
    // Another agent on the same dockerd runs an exited container for instance "x".
    let theirs =
        f.rt.insert_container(&planted("tc-x-elsewhere", own_labels("node-b", "x")), false);
    let o = f.apply(doc(1, vec![spec("y", RunState::Running, 1)])).await;
    assert!(o.instance("x").is_none());
    let c =
        f.rt.containers()
            .into_iter()
            .find(|c| c.id == theirs)
            .unwrap();
    assert_eq!(c.status, ContainerStatus::Created);
    assert!(
        !f.rt.calls().iter().any(|c| matches!(c,
        FakeCall::Start { id } | FakeCall::Stop { id } | FakeCall::Remove { id } if *id == theirs))
    );
}

#[tokio::test(start_paused = true)]
async fn missing_image_fails_with_a_readable_reason_and_retries_are_throttled() {
    let mut f = Fixture::new();
    let mut s = spec("i", RunState::Running, 1);
    s.image = "local/nope:1".into();
    let o = f.apply(doc(1, vec![s.clone()])).await;
    let i = obs(&o, "i");
    assert_eq!(i.state, InstanceState::Failed);
    assert!(
        i.reason
            .starts_with("image \"local/nope:1\" is not available on node: pull access denied"),
        "{}",
        i.reason
    );
    assert_eq!(
        f.rt.calls(),
        vec![FakeCall::Pull {
            image: "local/nope:1".into()
        }]
    );

    // Within 30 s: no new attempt, same answer.
    f.rt.clear_calls();
    tokio::time::advance(Duration::from_secs(20)).await;
    let o = f.pass().await;
    assert_eq!(obs(&o, "i").state, InstanceState::Failed);
    assert!(f.rt.calls().is_empty());

    // After 30 s: one retry; the image became pullable meanwhile.
    f.rt.add_pullable_image("local/nope:1");
    tokio::time::advance(Duration::from_secs(11)).await;
    let o = f.pass().await;
    assert_eq!(obs(&o, "i").state, InstanceState::Running);
    assert_eq!(
        f.rt.calls()[..2],
        [
            FakeCall::Pull {
                image: "local/nope:1".into()
            },
            FakeCall::Create {
                name: "tc-i".into()
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_newer_change_generation_retries_a_failure_at_once() {
    let mut f = Fixture::new();
    let mut s = spec("i", RunState::Running, 1);
    s.image = "local/nope:1".into();
    f.apply(doc(1, vec![s.clone()])).await;
    f.rt.clear_calls();
    s.change_generation = 2;
    s.image = IMG.into();
    let o = f.apply(doc(2, vec![s])).await;
    assert_eq!(obs(&o, "i").state, InstanceState::Running);
    assert_eq!(f.rt.calls().len(), 2, "create + start: {:?}", f.rt.calls());
}

#[tokio::test(start_paused = true)]
async fn bad_command_fails_with_dockers_message_and_is_throttled() {
    let mut f = Fixture::new();
    f.rt.add_missing_executable("nosuchcmd");
    let mut s = spec("i", RunState::Running, 1);
    s.command = vec!["nosuchcmd".into()];
    let o = f.apply(doc(1, vec![s])).await;
    let i = obs(&o, "i");
    assert_eq!(i.state, InstanceState::Failed);
    assert!(
        i.reason
            .contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{}",
        i.reason
    );
    f.rt.clear_calls();
    tokio::time::advance(Duration::from_secs(10)).await;
    let o = f.pass().await;
    assert_eq!(obs(&o, "i").state, InstanceState::Failed);
    assert!(f.rt.calls().is_empty());
    tokio::time::advance(Duration::from_secs(25)).await;
    f.pass().await;
    assert!(
        matches!(f.rt.calls().as_slice(), [FakeCall::Start { .. }]),
        "one retry of the existing container: {:?}",
        f.rt.calls()
    );
    // After an agent restart the engine's recorded error still explains the failure.
    f.restart();
    f.rec
        .set_desired(doc(1, vec![spec_with_cmd("i", "nosuchcmd")]));
    let o = f.pass().await;
    assert_eq!(obs(&o, "i").state, InstanceState::Failed);
}

fn spec_with_cmd(id: &str, cmd: &str) -> InstanceSpec {
    let mut s = spec(id, RunState::Running, 1);
    s.command = vec![cmd.into()];
    s
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_readopts_running_containers_untouched() {
    let mut f = Fixture::new();
    let d = doc(
        5,
        vec![
            spec("a", RunState::Running, 4),
            spec("b", RunState::Running, 4),
        ],
    );
    let before = f.apply(d.clone()).await;
    f.rt.exit("b", 0);

    f.restart();
    f.rt.clear_calls();
    // The restarted agent has no desired state yet: nothing happens.
    assert!(f.rec.reconcile_once().await.unwrap().is_none());
    let after = f.apply(d).await;
    assert!(f.rt.calls().is_empty(), "{:?}", f.rt.calls());
    let (a0, a1) = (obs(&before, "a"), obs(&after, "a"));
    assert_eq!(a1.state, InstanceState::Running);
    assert_eq!(a1.runtime_id, a0.runtime_id);
    assert_eq!(a1.started_at_unix_ms, a0.started_at_unix_ms);
    // b exited on its own while the agent was "down": still not restarted.
    assert_eq!(obs(&after, "b").state, InstanceState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn adopted_containers_are_not_restarted_after_exiting_on_their_own() {
    let mut f = Fixture::new();
    // A container created by an earlier agent whose state file was lost.
    let mut labels = own_labels(NODE, "a");
    labels.insert(labels::MANAGED_BY.into(), "cloud-agent".into());
    f.rt.insert_container(&planted("tc-a", labels), true);
    let o = f.apply(doc(1, vec![spec("a", RunState::Running, 1)])).await;
    assert_eq!(obs(&o, "a").state, InstanceState::Running);
    f.rt.exit("a", 0);
    f.rt.clear_calls();
    f.pass().await;
    assert!(f.rt.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ignores_older_desired_documents() {
    let mut f = Fixture::new();
    assert!(
        f.rec
            .set_desired(doc(3, vec![spec("a", RunState::Running, 3)]))
    );
    assert!(!f.rec.set_desired(doc(2, vec![])));
    assert!(!f.rec.set_desired(doc(3, vec![])));
    let o = f.pass().await;
    assert_eq!(o.applied_generation, 3);
    assert_eq!(obs(&o, "a").state, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_runtime_skips_the_pass_without_touching_anything() {
    let mut f = Fixture::new();
    f.apply(doc(1, vec![spec("a", RunState::Running, 1)])).await;
    f.rt.set_unavailable(true);
    f.rec.set_desired(doc(2, vec![]));
    assert!(matches!(
        f.rec.reconcile_once().await,
        Err(ReconcileError::Runtime(RuntimeError::Unavailable(_)))
    ));
    f.rt.set_unavailable(false);
    assert_eq!(
        f.rt.container_of("a").unwrap().status,
        ContainerStatus::Running
    );
}

#[tokio::test(start_paused = true)]
async fn vms_fail_without_action_on_a_node_without_a_hypervisor() {
    let mut f = Fixture::new();
    let mut s = spec("vm1", RunState::Running, 1);
    s.kind = "vm".into();
    let o = f.apply(doc(1, vec![s])).await;
    assert_eq!(obs(&o, "vm1").state, InstanceState::Failed);
    assert!(
        obs(&o, "vm1").reason.contains("no hypervisor"),
        "{:?}",
        obs(&o, "vm1")
    );
    assert!(f.rt.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn run_loop_waits_for_desired_state_then_publishes_observations() {
    let f = Fixture::new();
    f.rt.insert_container(&planted("tc-old", own_labels(NODE, "old")), true);
    let (desired_tx, desired_rx) = watch::channel(None);
    let (observed_tx, mut observed_rx) = watch::channel(None);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let rt = f.rt.clone();
    let task = tokio::spawn(f.rec.run(desired_rx, observed_tx, shutdown_rx));
    // Several timer ticks without a desired state: nothing is touched.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(rt.calls().is_empty());
    assert!(observed_rx.borrow().is_none());

    desired_tx.send_replace(Some(doc(1, vec![spec("a", RunState::Running, 1)])));
    let o = observed_rx
        .wait_for(|o| o.as_ref().is_some_and(|o| o.applied_generation == 1))
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(obs(&o, "a").state, InstanceState::Running);
    assert!(o.instance("old").is_none(), "undesired container removed");
    shutdown_tx.send_replace(true);
    task.await.unwrap();
    assert_eq!(
        rt.container_of("a").unwrap().status,
        ContainerStatus::Running,
        "stopping the reconciler leaves workloads running"
    );
}

#[tokio::test(start_paused = true)]
async fn env_values_never_appear_in_debug_output() {
    let s = spec("a", RunState::Running, 1);
    let shown = format!("{s:?} {:?}", Action::Create { spec: s.clone() });
    assert!(shown.contains("SECRET"));
    assert!(!shown.contains("s3cr3t"));
}

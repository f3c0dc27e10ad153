//! The reconciler's VM half against the fake hypervisor, with real per-VM files (qemu-img and
//! genisoimage must be installed; the tests skip saying so otherwise, unless
//! THECLOUD_REQUIRE_LIBVIRT=1).

use super::*;
use crate::model::{InstanceState, VmSpec};
use crate::runtime::FakeRuntime;
use crate::storage::VolumeBackend;
use crate::vm::files::VmImage;
use crate::vm::{DomainState, FakeHypervisor, Hypervisor, VmFiles};
use tempfile::TempDir;

fn tools_present() -> bool {
    let missing = crate::vm::files::missing_tools();
    if !missing.is_empty() {
        if std::env::var("THECLOUD_REQUIRE_LIBVIRT").as_deref() == Ok("1") {
            panic!("THECLOUD_REQUIRE_LIBVIRT=1 but {missing:?} missing");
        }
        eprintln!("skipping: VM file tests need {missing:?}");
    }
    missing.is_empty()
}

struct Fixture {
    hv: FakeHypervisor,
    dir: TempDir,
    rec: Reconciler,
    generation: u64,
}

fn config() -> ReconcilerConfig {
    ReconcilerConfig {
        vm_shutdown_timeout: Duration::from_secs(10),
        ..ReconcilerConfig::default()
    }
}

impl Fixture {
    fn new() -> Self {
        let hv = FakeHypervisor::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.raw"), vec![0u8; 1 << 20]).unwrap();
        let rec = Self::reconciler(&hv, &dir);
        Self {
            hv,
            dir,
            rec,
            generation: 0,
        }
    }

    fn reconciler(hv: &FakeHypervisor, dir: &TempDir) -> Reconciler {
        let rt = Arc::new(FakeRuntime::new());
        Reconciler::new("node-a", rt, dir.path(), config())
            .unwrap()
            .with_vms(Arc::new(hv.clone()), VmFiles::new(dir.path().join("vms")))
    }

    fn vm(&self, id: &str, desired: RunState, cg: u64, policy: RestartPolicy) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.into(),
            name: format!("vm-{id}"),
            kind: "vm".into(),
            cpu_millis: 1500,
            memory_mb: 256,
            desired,
            restart_policy: policy,
            change_generation: cg,
            vm: Some(VmSpec {
                image: VmImage {
                    image_id: "img-1".into(),
                    path: self.dir.path().join("base.raw").display().to_string(),
                    format: "raw".into(),
                    ..Default::default()
                },
                disk_gb: 2,
                user_data: "#cloud-config\npassword: s3cret\n".into(),
                hostname: String::new(),
            }),
            ..Default::default()
        }
    }

    async fn apply(&mut self, instances: Vec<InstanceSpec>) -> ObservedState {
        self.generation += 1;
        let d = DesiredState {
            generation: self.generation,
            instances,
            ..Default::default()
        };
        assert!(self.rec.set_desired(Arc::new(d)));
        self.pass().await
    }

    async fn pass(&mut self) -> ObservedState {
        self.rec.reconcile_once().await.unwrap().unwrap()
    }
}

fn state(o: &ObservedState, id: &str) -> (InstanceState, String) {
    let i = o
        .instance(id)
        .unwrap_or_else(|| panic!("{id} not in {o:?}"));
    (i.state, i.reason.clone())
}

#[tokio::test(start_paused = true)]
async fn a_vm_is_created_started_and_reported_running() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    let spec = f.vm("v1", RunState::Running, 1, RestartPolicy::Never);
    let o = f.apply(vec![spec.clone()]).await;
    assert_eq!(f.hv.take_calls(), vec!["define tc-vm-v1", "start tc-vm-v1"]);
    assert_eq!(state(&o, "v1").0, InstanceState::Running);
    let xml = f.hv.xml_of("tc-vm-v1").unwrap();
    assert!(
        xml.contains("<vcpu>2</vcpu>"),
        "1500 millicores → 2 vCPUs: {xml}"
    );
    assert!(xml.contains("<memory unit='MiB'>256</memory>"));
    assert!(xml.starts_with("<domain type='qemu'>"));
    let vmdir = f.dir.path().join("vms/v1");
    assert!(vmdir.join("root.qcow2").exists() && vmdir.join("seed.iso").exists());
    assert!(
        !vmdir.join("seed").exists(),
        "the seed's sources (user-data) are removed"
    );
    // Converged: the next passes do nothing.
    f.pass().await;
    f.apply(vec![spec]).await;
    assert!(f.hv.take_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stopping_asks_acpi_then_destroys_after_the_timeout_and_a_new_change_starts_it() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    f.apply(vec![f.vm("v1", RunState::Running, 1, RestartPolicy::Never)])
        .await;
    f.hv.take_calls();
    f.hv.ignore_acpi(true);
    let o = f
        .apply(vec![f.vm("v1", RunState::Stopped, 2, RestartPolicy::Never)])
        .await;
    assert_eq!(f.hv.take_calls(), vec!["shutdown tc-vm-v1"]);
    assert_eq!(state(&o, "v1").0, InstanceState::Stopping);
    tokio::time::advance(Duration::from_secs(5)).await;
    f.pass().await;
    assert!(f.hv.take_calls().is_empty(), "within the timeout: waiting");
    tokio::time::advance(Duration::from_secs(6)).await;
    let o = f.pass().await;
    assert_eq!(f.hv.take_calls(), vec!["destroy tc-vm-v1"]);
    assert_eq!(state(&o, "v1").0, InstanceState::Stopped);
    // Started again by a newer change, once.
    let o = f
        .apply(vec![f.vm("v1", RunState::Running, 3, RestartPolicy::Never)])
        .await;
    assert_eq!(f.hv.take_calls(), vec!["start tc-vm-v1"]);
    assert_eq!(state(&o, "v1").0, InstanceState::Running);
}

/// v1 (`never`) and v2 (`restarting`) run, then both guests end in `ended`; one pass later:
/// the calls it made and what it observed.
async fn after_guests_end(
    ended: DomainState,
    restarting: RestartPolicy,
) -> Option<(Vec<String>, ObservedState)> {
    if !tools_present() {
        return None;
    }
    let mut f = Fixture::new();
    f.apply(vec![
        f.vm("v1", RunState::Running, 1, RestartPolicy::Never),
        f.vm("v2", RunState::Running, 1, restarting),
    ])
    .await;
    f.hv.take_calls();
    f.hv.set_state("tc-vm-v1", ended);
    f.hv.set_state("tc-vm-v2", ended);
    let o = f.pass().await;
    Some((f.hv.take_calls(), o))
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_powers_off_stays_off_unless_its_policy_says_otherwise() {
    let Some((calls, o)) = after_guests_end(DomainState::ShutOff, RestartPolicy::Always).await
    else {
        return;
    };
    assert_eq!(calls, vec!["start tc-vm-v2"]);
    assert_eq!(
        state(&o, "v1"),
        (InstanceState::Stopped, "the guest powered off".into())
    );
    assert_eq!(state(&o, "v2").0, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn undesired_vms_are_removed_with_their_files() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    f.apply(vec![f.vm("v1", RunState::Running, 1, RestartPolicy::Never)])
        .await;
    f.hv.take_calls();
    let o = f.apply(vec![]).await;
    assert_eq!(
        f.hv.take_calls(),
        vec!["destroy tc-vm-v1", "undefine tc-vm-v1"]
    );
    assert!(o.instances.is_empty());
    assert!(!f.dir.path().join("vms/v1").exists(), "files removed");
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_fails_with_the_cause_and_defines_nothing() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    let mut spec = f.vm("v1", RunState::Running, 1, RestartPolicy::Never);
    if let Some(vm) = spec.vm.as_mut() {
        vm.image.path = "/nonexistent/disk.qcow2".into();
    }
    let o = f.apply(vec![spec]).await;
    let (s, reason) = state(&o, "v1");
    assert_eq!(s, InstanceState::Failed);
    assert!(reason.contains("is not on this node"), "{reason}");
    assert!(f.hv.take_calls().is_empty());
    assert!(f.hv.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_re_adopts_running_vms_untouched() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    let spec = f.vm("v1", RunState::Running, 1, RestartPolicy::Never);
    f.apply(vec![spec.clone()]).await;
    f.hv.take_calls();
    // A new process over the same hypervisor and directories.
    let mut rec = Fixture::reconciler(&f.hv, &f.dir);
    rec.set_desired(Arc::new(DesiredState {
        generation: 9,
        instances: vec![spec],
        ..Default::default()
    }));
    let o = rec.reconcile_once().await.unwrap().unwrap();
    assert!(f.hv.take_calls().is_empty(), "{:?}", f.hv.take_calls());
    assert_eq!(state(&o, "v1").0, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn a_vanished_domain_is_recreated_or_reported_by_policy() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    f.apply(vec![
        f.vm("v1", RunState::Running, 1, RestartPolicy::Never),
        f.vm("v2", RunState::Running, 1, RestartPolicy::Always),
    ])
    .await;
    f.hv.take_calls();
    f.hv.vanish("tc-vm-v1");
    f.hv.vanish("tc-vm-v2");
    let o = f.pass().await;
    assert_eq!(f.hv.take_calls(), vec!["define tc-vm-v2", "start tc-vm-v2"]);
    assert_eq!(
        state(&o, "v1"),
        (InstanceState::Failed, "its libvirt domain vanished".into())
    );
    assert_eq!(state(&o, "v2").0, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn without_a_hypervisor_vms_fail_clearly() {
    let rt = Arc::new(FakeRuntime::new());
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Reconciler::new("node-a", rt, dir.path(), config()).unwrap();
    rec.set_desired(Arc::new(DesiredState {
        generation: 1,
        instances: vec![InstanceSpec {
            instance_id: "v1".into(),
            kind: "vm".into(),
            change_generation: 1,
            ..Default::default()
        }],
        ..Default::default()
    }));
    let o = rec.reconcile_once().await.unwrap().unwrap();
    let (s, reason) = state(&o, "v1");
    assert_eq!(s, InstanceState::Failed);
    assert!(reason.contains("no hypervisor"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn another_nodes_domains_are_never_touched() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    // A domain another agent on the same libvirtd created (same naming, other node).
    f.hv.define(
        "<domain><name>tc-vm-theirs</name><metadata><thecloud:instance \
             xmlns:thecloud='https://thecloud.dev/xmlns/instance/1' id='theirs' node='node-b'/>\
             </metadata></domain>",
    )
    .await
    .unwrap();
    f.hv.start("tc-vm-theirs").await.unwrap();
    f.hv.take_calls();
    let o = f
        .apply(vec![f.vm("v1", RunState::Running, 1, RestartPolicy::Never)])
        .await;
    assert_eq!(f.hv.take_calls(), vec!["define tc-vm-v1", "start tc-vm-v1"]);
    assert_eq!(f.hv.state_of("tc-vm-theirs"), Some(DomainState::Running));
    assert!(o.instance("theirs").is_none());
    assert!(f.hv.xml_of("tc-vm-v1").unwrap().contains("node='node-a'"));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_libvirtd_keeps_the_last_known_states_and_acts_on_nothing() {
    if !tools_present() {
        return;
    }
    let mut f = Fixture::new();
    f.apply(vec![f.vm("v1", RunState::Running, 1, RestartPolicy::Never)])
        .await;
    f.hv.take_calls();
    f.hv.fail_next(crate::vm::VmError::Libvirt("socket gone".into()));
    let o = f
        .apply(vec![
            f.vm("v1", RunState::Running, 1, RestartPolicy::Never),
            f.vm("v2", RunState::Running, 2, RestartPolicy::Never),
        ])
        .await;
    assert!(f.hv.take_calls().is_empty(), "nothing acted on blind");
    assert_eq!(state(&o, "v1").0, InstanceState::Running, "last known");
    let (s, reason) = state(&o, "v2");
    assert_eq!(s, InstanceState::Starting);
    assert!(reason.contains("libvirt unreachable"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn volumes_are_virtio_disks_attached_at_creation_and_hot_plugged_later() {
    if !tools_present() {
        return;
    }
    const A: &str = "01a22355-bf78-7117-9e6f-ce93a3165224";
    const B: &str = "0196f1b8-3c1e-7a4b-8d2f-5e6a7b8c9d0e";
    let vols = crate::storage::FakeVolumes::new(1 << 30);
    vols.create(A, 1 << 20).await.unwrap();
    vols.create(B, 1 << 20).await.unwrap();
    vols.mount(A).await.unwrap(); // served a container before
    let hv = FakeHypervisor::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.raw"), vec![0u8; 1 << 20]).unwrap();
    let mut f = Fixture {
        rec: Fixture::reconciler(&hv, &dir).with_volumes(Arc::new(vols.clone())),
        hv,
        dir,
        generation: 0,
    };
    let desired_vols = vec![
        crate::model::VolumeSpec {
            volume_id: A.into(),
            size_bytes: 1 << 20,
            from_snapshot_id: None,
        },
        crate::model::VolumeSpec {
            volume_id: B.into(),
            size_bytes: 1 << 20,
            from_snapshot_id: None,
        },
    ];
    let with = |f: &Fixture, mounts: &[(&str, &str)], cg: u64| {
        let mut s = f.vm("v1", RunState::Running, cg, RestartPolicy::Never);
        s.mounts = mounts
            .iter()
            .map(|(v, p)| ((*v).into(), (*p).into()))
            .collect();
        s
    };
    let apply = async |f: &mut Fixture, spec: InstanceSpec| {
        f.generation += 1;
        let d = DesiredState {
            generation: f.generation,
            instances: vec![spec],
            volumes: desired_vols.clone(),
            ..Default::default()
        };
        assert!(f.rec.set_desired(Arc::new(d)));
        f.pass().await
    };
    // At creation: a disk in the definition, unmounted from the host first.
    let spec = with(&f, &[(A, "/dev/vdb")], 1);
    apply(&mut f, spec).await;
    let xml = f.hv.xml_of("tc-vm-v1").unwrap();
    assert!(xml.contains("<target dev='vdb' bus='virtio'/>"), "{xml}");
    assert!(
        !vols.mounted(A).await.unwrap(),
        "QEMU is the volume's only user"
    );
    let o = f.pass().await;
    assert_eq!(
        o.volumes
            .iter()
            .find(|v| v.volume_id == A)
            .map(|v| v.instance_id.as_str()),
        Some("v1"),
        "reported in use by the VM: {:?}",
        o.volumes
    );
    f.hv.take_calls();
    // Attached to the running VM: hot-plugged; detached: unplugged.
    let spec = with(&f, &[(A, "/dev/vdb"), (B, "/dev/vdc")], 1);
    apply(&mut f, spec).await;
    assert_eq!(f.hv.take_calls(), vec!["attach_disk tc-vm-v1"]);
    assert!(f.hv.xml_of("tc-vm-v1").unwrap().contains("dev='vdc'"));
    let spec = with(&f, &[(B, "/dev/vdc")], 1);
    apply(&mut f, spec).await;
    assert_eq!(f.hv.take_calls(), vec!["detach_disk tc-vm-v1"]);
    let xml = f.hv.xml_of("tc-vm-v1").unwrap();
    assert!(
        !xml.contains("dev='vdb'") && xml.contains("dev='vdc'"),
        "{xml}"
    );
    // Converged: nothing more.
    f.pass().await;
    assert!(f.hv.take_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crashed_guest_is_restarted_by_on_failure_and_reported_otherwise() {
    let Some((calls, o)) = after_guests_end(DomainState::Crashed, RestartPolicy::OnFailure).await
    else {
        return;
    };
    assert_eq!(calls, vec!["start tc-vm-v2"]);
    assert_eq!(
        state(&o, "v1"),
        (InstanceState::Failed, "the guest crashed".into())
    );
    assert_eq!(state(&o, "v2").0, InstanceState::Running);
}

mod vpc {
    use super::super::net_tests::{attachment as port, vpc};
    use super::*;
    use crate::network::fake::VM_PORT;
    use crate::network::{FakeNetwork, NetworkAttachment, VpcSpec};

    fn attachment() -> NetworkAttachment {
        port(5)
    }

    async fn apply(
        f: &mut Fixture,
        instances: Vec<InstanceSpec>,
        vpcs: Vec<VpcSpec>,
    ) -> ObservedState {
        f.generation += 1;
        let d = DesiredState {
            generation: f.generation,
            instances,
            vpcs,
            ..Default::default()
        };
        assert!(f.rec.set_desired(Arc::new(d)));
        f.pass().await
    }

    #[tokio::test(start_paused = true)]
    async fn a_vm_gets_its_port_before_its_domain_keeps_it_across_restarts_and_loses_it_with_its_instance()
     {
        if !tools_present() {
            return;
        }
        let mut f = Fixture::new();
        let net = FakeNetwork::new();
        f.rec = Fixture::reconciler(&f.hv, &f.dir).with_network(Arc::new(net.clone()));
        let spec = InstanceSpec {
            network: Some(Ok(attachment())),
            ..f.vm("v1", RunState::Running, 1, RestartPolicy::Never)
        };

        // Its VPC is not built here: no port, so no domain; the reason says why.
        let o = apply(&mut f, vec![spec.clone()], vec![]).await;
        let (st, why) = state(&o, "v1");
        assert_eq!(st, InstanceState::Failed, "{why}");
        assert!(why.contains("not built on this host"), "{why}");
        assert!(
            f.hv.take_calls().is_empty(),
            "nothing defined without a port"
        );

        // With the VPC: the port first, then the domain with a NIC on the port's host link.
        let o = apply(&mut f, vec![spec.clone()], vec![vpc()]).await;
        assert_eq!(state(&o, "v1").0, InstanceState::Running);
        assert_eq!(f.hv.take_calls(), vec!["define tc-vm-v1", "start tc-vm-v1"]);
        let (ns, a) = net.port("v1").expect("a port");
        assert_eq!((ns.to_str(), a), (Some(VM_PORT), attachment()));
        let xml = f.hv.xml_of("tc-vm-v1").unwrap();
        let link = crate::network::vm_link_name("fake", "v1");
        assert!(
            xml.contains(&format!(
                "<interface type='direct'><mac address='02:7c:0a:00:01:05'/><source dev='{link}' mode='bridge'/>"
            )),
            "{xml}"
        );
        let calls = net.attach_calls();
        f.pass().await;
        assert_eq!(
            net.attach_calls(),
            calls,
            "a port that is right is not touched"
        );

        // An agent restart: the running domain is re-adopted and its port re-asserted in place.
        f.rec = Fixture::reconciler(&f.hv, &f.dir).with_network(Arc::new(net.clone()));
        let o = apply(&mut f, vec![spec.clone()], vec![vpc()]).await;
        assert_eq!(state(&o, "v1").0, InstanceState::Running);
        assert!(f.hv.take_calls().is_empty(), "the domain is left alone");
        assert_eq!(net.attach_calls(), calls + 1);
        assert!(net.port("v1").is_some());

        // Deleted: the domain and the port go (the VPC stays while it is wanted).
        apply(&mut f, vec![], vec![vpc()]).await;
        assert!(net.port("v1").is_none(), "the port is removed");
        assert!(f.hv.xml_of("tc-vm-v1").is_none());
    }
}

//! The reconciler's network half against the fake runtime and the fake data plane.

use super::tests::spec;
use super::*;
use crate::model::{InstanceState, RunState};
use crate::network::{FakeNetwork, Mac, NetworkAttachment, NetworkError, SubnetSpec, VpcSpec};
use crate::runtime::{EngineRestartPolicy, FakeRuntime};
use std::net::Ipv4Addr;

const NODE: &str = "node-a";
const IMG: &str = "local/busybox:latest";

pub(super) fn attachment(last: u8) -> NetworkAttachment {
    NetworkAttachment {
        vpc_id: "vpc-1".into(),
        vni: 4242,
        subnet_id: "sub-1".into(),
        ip: Ipv4Addr::new(10, 0, 1, last),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 1, 1),
        mac: Mac([2, 0x7c, 10, 0, 1, last]),
        ingress: vec![],
        egress: vec![],
        egress_restricted: false,
    }
}

pub(super) fn vpc() -> VpcSpec {
    VpcSpec {
        vpc_id: "vpc-1".into(),
        vni: 4242,
        subnets: vec![SubnetSpec {
            subnet_id: "sub-1".into(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            nat_egress: false,
        }],
        peers: vec![Ipv4Addr::new(192, 0, 2, 2)],
        remote_endpoints: vec![],
    }
}

fn networked(id: &str, last: u8) -> InstanceSpec {
    InstanceSpec {
        network: Some(Ok(attachment(last))),
        ..spec(id, RunState::Running, 1)
    }
}

fn doc(generation: u64, instances: Vec<InstanceSpec>, vpcs: Vec<VpcSpec>) -> Arc<DesiredState> {
    Arc::new(DesiredState {
        generation,
        instances,
        vpcs,
        volumes: Vec::new(),
        delete_volumes: Vec::new(),
        snapshots: Vec::new(),
        delete_snapshots: Vec::new(),
    })
}

struct Fixture {
    rt: Arc<FakeRuntime>,
    net: FakeNetwork,
    _dir: tempfile::TempDir,
    rec: Reconciler,
}

impl Fixture {
    fn new(net: FakeNetwork) -> Self {
        let rt = Arc::new(FakeRuntime::with_images([IMG]));
        let dir = tempfile::tempdir().unwrap();
        let rec = Reconciler::new(NODE, rt.clone(), dir.path(), ReconcilerConfig::default())
            .unwrap()
            .with_network(Arc::new(net.clone()));
        Self {
            rt,
            net,
            _dir: dir,
            rec,
        }
    }

    async fn apply(&mut self, d: Arc<DesiredState>) -> ObservedState {
        self.rec.set_desired(d);
        self.rec.reconcile_once().await.unwrap().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn plugs_a_new_container_into_its_vpc_before_calling_it_running() {
    let mut f = Fixture::new(FakeNetwork::new());
    let o = f.apply(doc(1, vec![networked("a", 2)], vec![vpc()])).await;
    assert_eq!(o.instance("a").unwrap().state, InstanceState::Running);
    let c = f.rt.container_of("a").unwrap();
    assert!(
        f.rt.spec_of("a").unwrap().network_none,
        "Docker networking must be off"
    );
    let (netns, att) = f.net.port("a").expect("port plugged");
    assert_eq!(netns, PathBuf::from(format!("/proc/{}/ns/net", c.pid)));
    assert_eq!(att, attachment(2));
    assert_eq!(f.net.vpcs().keys().collect::<Vec<_>>(), vec!["vpc-1"]);

    // Nothing changed: no second attach.
    let calls = f.net.attach_calls();
    f.apply(doc(2, vec![networked("a", 2)], vec![vpc()])).await;
    assert_eq!(f.net.attach_calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn replugs_after_a_restart_and_when_rules_change() {
    let mut f = Fixture::new(FakeNetwork::new());
    let mut s = networked("a", 2);
    s.restart_policy = crate::model::RestartPolicy::Always;
    f.apply(doc(1, vec![s.clone()], vec![vpc()])).await;
    assert_eq!(
        f.rt.container_of("a").unwrap().restart_policy,
        EngineRestartPolicy::UnlessStopped
    );
    let first_pid = f.rt.container_of("a").unwrap().pid;
    // The process dies and the engine restarts it: a new network namespace.
    f.rt.exit("a", 1);
    let new_pid = f.rt.container_of("a").unwrap().pid;
    assert_ne!(first_pid, new_pid);
    f.apply(doc(2, vec![s.clone()], vec![vpc()])).await;
    let (netns, _) = f.net.port("a").unwrap();
    assert_eq!(netns, PathBuf::from(format!("/proc/{new_pid}/ns/net")));

    // New security group rules reach the data plane.
    let mut with_rule = s.clone();
    let mut att = attachment(2);
    att.ingress.push(crate::network::FirewallRule {
        protocol: crate::network::Protocol::Tcp,
        port_min: 80,
        port_max: 80,
        cidrs: vec!["0.0.0.0/0".parse().unwrap()],
    });
    with_rule.network = Some(Ok(att.clone()));
    f.apply(doc(3, vec![with_rule], vec![vpc()])).await;
    assert_eq!(f.net.port("a").unwrap().1, att);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attach_is_reported_and_retried() {
    let mut f = Fixture::new(FakeNetwork::new());
    f.net
        .fail_attach(Some(NetworkError::Netlink("no bridge".into())));
    let o = f.apply(doc(1, vec![networked("a", 2)], vec![vpc()])).await;
    let a = o.instance("a").unwrap();
    assert_eq!(a.state, InstanceState::Failed);
    assert!(
        a.reason.contains("network: netlink: no bridge"),
        "{}",
        a.reason
    );
    f.net.fail_attach(None);
    let o = f.apply(doc(2, vec![networked("a", 2)], vec![vpc()])).await;
    assert_eq!(o.instance("a").unwrap().state, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn without_a_data_plane_vpc_instances_fail_clearly() {
    let rt = Arc::new(FakeRuntime::with_images([IMG]));
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Reconciler::new(NODE, rt, dir.path(), ReconcilerConfig::default()).unwrap();
    rec.set_desired(doc(
        1,
        vec![networked("a", 2), spec("b", RunState::Running, 1)],
        vec![vpc()],
    ));
    let o = rec.reconcile_once().await.unwrap().unwrap();
    let a = o.instance("a").unwrap();
    assert_eq!(a.state, InstanceState::Failed);
    assert!(
        a.reason.contains("not available on this node"),
        "{}",
        a.reason
    );
    assert_eq!(o.instance("b").unwrap().state, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn an_unusable_attachment_fails_with_the_reason() {
    let mut f = Fixture::new(FakeNetwork::new());
    let bad = InstanceSpec {
        network: Some(Err("mac: bad MAC address \"x\"".into())),
        ..spec("a", RunState::Running, 1)
    };
    let o = f.apply(doc(1, vec![bad], vec![vpc()])).await;
    let a = o.instance("a").unwrap();
    assert_eq!(a.state, InstanceState::Failed);
    assert!(
        a.reason.contains("invalid network attachment"),
        "{}",
        a.reason
    );
}

#[tokio::test(start_paused = true)]
async fn removing_the_instance_unplugs_it_and_tears_the_vpc_down() {
    let mut f = Fixture::new(FakeNetwork::new());
    f.apply(doc(1, vec![networked("a", 2)], vec![vpc()])).await;
    assert!(f.net.port("a").is_some());
    f.apply(doc(2, vec![], vec![])).await;
    assert!(f.net.port("a").is_none());
    assert!(f.net.vpcs().is_empty());
    assert!(f.rt.container_of("a").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_removes_vpcs_left_from_before() {
    let mut f = Fixture::new(FakeNetwork::new());
    f.apply(doc(1, vec![networked("a", 2)], vec![vpc()])).await;
    // The agent restarts (new reconciler, same host state); meanwhile the instance was
    // deleted, so the first document has nothing in a VPC.
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Reconciler::new(NODE, f.rt.clone(), dir.path(), ReconcilerConfig::default())
        .unwrap()
        .with_network(Arc::new(f.net.clone()));
    rec.set_desired(doc(5, vec![], vec![]));
    rec.reconcile_once().await.unwrap().unwrap();
    assert!(
        f.net.vpcs().is_empty(),
        "leftover VPC removed: {:?}",
        f.net.vpcs()
    );
}

//! VMs end to end on real libvirt/QEMU (`qemu:///system`, TCG): a tiny guest (Debian cloud
//! kernel + busybox initramfs, built by tests/guest/build.sh) is launched through the API,
//! prints its marker and the cloud-init user-data it read from the NoCloud seed on its serial
//! console (read back through `GET /v1/instances/{id}/logs`), is stopped (ACPI, then destroy
//! after the timeout, since the busybox guest ignores ACPI) and deleted, leaving no domain,
//! disk or seed behind. Bad input is refused before anything reaches the node.
//!
//! Needs root, libvirtd and the test guest; skips with a reason otherwise, unless
//! THECLOUD_REQUIRE_LIBVIRT=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{
    ClientError, CreateImageRequest, CreateInstanceRequest, ImageFormat, InstanceKind,
    InstanceStatus,
};
use cloud_tests::{Cluster, busybox, wait_for};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn guest_dir() -> PathBuf {
    std::env::var("THECLOUD_TEST_GUEST_DIR")
        .unwrap_or_else(|_| "/var/lib/libvirt/images/thecloud-test".into())
        .into()
}

fn available() -> bool {
    let dir = guest_dir();
    let libvirtd = Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let guest = ["vmlinuz", "initrd.gz", "base.raw"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if libvirtd && guest {
        return true;
    }
    let why = if libvirtd {
        format!(
            "the test guest is not in {} (run tests/guest/build.sh)",
            dir.display()
        )
    } else {
        "libvirtd is not answering on qemu:///system".to_string()
    };
    if std::env::var("THECLOUD_REQUIRE_LIBVIRT").as_deref() == Ok("1") {
        panic!("THECLOUD_REQUIRE_LIBVIRT=1 but {why}");
    }
    eprintln!("skipping: {why}");
    false
}

fn domains() -> String {
    let o = Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--all", "--name"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(e) => (e.status().unwrap_or(0), e.to_string()),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Removes the test's domains and files, pass or fail.
struct Cleanup(PathBuf, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.1 {
            let name = format!("tc-vm-{d}");
            let _ = Command::new("virsh")
                .args(["-c", "qemu:///system", "destroy", &name])
                .output();
            let _ = Command::new("virsh")
                .args(["-c", "qemu:///system", "undefine", &name])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch VM directory (removed with the returned guard, with the domains it lists) and
/// the real hypervisor parts of a node (TCG).
async fn vm_node_parts() -> (PathBuf, Cleanup, cloud_agent::NodeVms) {
    let vm_dir = guest_dir()
        .parent()
        .unwrap()
        .join(format!("thecloud-e2e-{}", uuid::Uuid::now_v7().simple()));
    let cleanup = Cleanup(vm_dir.clone(), Vec::new());
    let hv = cloud_agent::vm::LibvirtHypervisor::connect(
        "qemu:///system",
        Some(cloud_agent::vm::VirtType::Qemu),
    )
    .await
    .unwrap();
    let vms = cloud_agent::NodeVms {
        hypervisor: Arc::new(hv),
        files: cloud_agent::vm::VmFiles::new(&vm_dir),
    };
    (vm_dir, cleanup, vms)
}

/// The tiny test guest as the image "tiny" (direct kernel boot).
fn tiny_image() -> CreateImageRequest {
    let g = guest_dir();
    CreateImageRequest {
        name: "tiny".into(),
        path: g.join("base.raw").display().to_string(),
        format: ImageFormat::Raw,
        kernel: Some(g.join("vmlinuz").display().to_string()),
        initrd: Some(g.join("initrd.gz").display().to_string()),
        cmdline: Some("console=ttyS0".into()),
        public: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_guest_boots_reads_its_user_data_and_leaves_nothing_behind() {
    if !available() {
        return;
    }
    let c = Cluster::start().await;
    let (vm_dir, mut cleanup, vms) = vm_node_parts().await;
    // Volume images where QEMU (libvirt's unprivileged user) can reach them.
    let volumes = cloud_agent::storage::FileBackend::new(cloud_agent::storage::FileBackendConfig {
        image_dir: vm_dir.join("volume-images"),
        mount_dir: vm_dir.join("volume-mounts"),
    })
    .unwrap();
    let _node = c
        .fake_node_with("hv", |cfg| {
            cfg.vms = Some(vms);
            cfg.volumes = Some(Arc::new(volumes));
            cfg.reconciler.vm_shutdown_timeout = Duration::from_secs(3);
        })
        .await;
    let client = c.client();
    let node = client.node_get("hv").await.unwrap();
    wait_for("volume pool reported", Duration::from_secs(15), || {
        let client = client.clone();
        async move { client.node_get("hv").await.ok()?.usage?.volume_pool }
    })
    .await;
    for name in ["vm-data", "vm-extra"] {
        client
            .volume_create(&cloud_api::CreateVolumeRequest {
                name: name.into(),
                size_gb: 1,
                node: Some("hv".into()),
                node_selector: Default::default(),
            })
            .await
            .unwrap();
        let n = name.to_string();
        wait_for("volume available", Duration::from_secs(30), || {
            let (client, n) = (client.clone(), n.clone());
            async move {
                (client.volume_get(&n).await.ok()?.status == cloud_api::VolumeStatus::Available)
                    .then_some(())
            }
        })
        .await;
    }
    assert!(
        node.drivers.iter().any(|d| d == "libvirt"),
        "{:?}",
        node.drivers
    );

    client.image_create(&tiny_image()).await.unwrap();
    let marker = format!("e2e-marker-{}", uuid::Uuid::now_v7().simple());
    let vm = |name: &str| CreateInstanceRequest {
        kind: InstanceKind::Vm,
        image: "tiny".into(),
        command: Vec::new(),
        cpu_millis: 1000,
        memory_mb: 256,
        disk_gb: Some(1),
        user_data: Some(format!(
            "#cloud-config\nwrite_files: [{{path: /m, content: {marker}}}]\n"
        )),
        ..busybox(name, &[])
    };

    // Bad input: refused, nothing reaches the node.
    for (req, code, says) in [
        (
            CreateInstanceRequest {
                image: "ghost".into(),
                ..vm("bad1")
            },
            422,
            "image",
        ),
        (
            CreateInstanceRequest {
                user_data: Some("x".repeat(70_000)),
                ..vm("bad2")
            },
            422,
            "user_data",
        ),
        (
            CreateInstanceRequest {
                memory_mb: 64 * 1024,
                ..vm("bad3")
            },
            409,
            "memory",
        ),
        (
            CreateInstanceRequest {
                disk_gb: Some(0),
                ..vm("bad4")
            },
            422,
            "disk_gb",
        ),
        (
            CreateInstanceRequest {
                command: vec!["sh".into()],
                ..vm("bad5")
            },
            422,
            "command",
        ),
    ] {
        let (s, m) = status(client.instance_create(&req).await);
        assert_eq!(s, code, "{}: {m}", req.name.clone().unwrap());
        assert!(m.contains(says), "{}: {m}", req.name.clone().unwrap());
    }
    assert!(client.instance_list().await.unwrap().is_empty());

    // Launch: POST → running (domain started) → the guest's marker line.
    let t0 = Instant::now();
    let inst = client
        .instance_create(&CreateInstanceRequest {
            volumes: vec![cloud_api::VolumeMount {
                volume: "vm-data".into(),
                mount_path: "/dev/vdb".into(),
            }],
            ..vm("tiny-1")
        })
        .await
        .unwrap();
    cleanup.1.push(inst.id.to_string());
    let running = c.wait_instance("tiny-1", InstanceStatus::Running).await;
    let to_running = t0.elapsed();
    let files = vm_dir.join(node.id.to_string()).join(inst.id.to_string());
    assert!(
        files.join("root.qcow2").is_file(),
        "the node's own subdirectory holds the disk"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(files.join("seed.iso"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the seed (user-data) is private: {mode:o}");
    }
    assert!(
        running
            .vm
            .as_ref()
            .is_some_and(|v| v.image_name == "tiny" && v.user_data)
    );
    let logs = wait_for("guest ready", Duration::from_secs(120), || {
        let client = client.clone();
        async move {
            let l = client.instance_logs("tiny-1", None).await.ok()?;
            l.contains("THECLOUD-GUEST-READY").then_some(l)
        }
    })
    .await;
    let to_marker = t0.elapsed();
    eprintln!(
        "VM: POST -> running {:.2} s, -> guest marker {:.2} s",
        to_running.as_secs_f64(),
        to_marker.as_secs_f64()
    );
    assert!(logs.contains("THECLOUD-SEED-LABEL cidata"), "{logs}");
    assert!(
        logs.contains(&format!("THECLOUD-META-DATA: instance-id: {}", inst.id)),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "THECLOUD-USER-DATA: write_files: [{{path: /m, content: {marker}}}]"
        )),
        "{logs}"
    );
    // Telemetry: the VM's CPU and memory as the node samples them from libvirt.
    let usage = wait_for("VM usage reported", Duration::from_secs(30), || {
        let client = client.clone();
        async move { client.instance_get("tiny-1").await.ok()?.usage }
    })
    .await;
    assert_eq!(usage.memory_used_bytes, 256 << 20, "{usage:?}");
    // The guest probed its virtio disks while booting: disk counters are reported.
    assert!(usage.disk_read_bytes.is_some_and(|b| b > 0), "{usage:?}");
    assert!(
        logs.contains("THECLOUD-DISKS: vda vdb "),
        "the guest sees its root disk and the volume: {logs}"
    );

    // Console: through the scheduler and the agent to QEMU's VNC server. The agent answers
    // QEMU's password challenge; the client is offered security type None.
    {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut ws = client.instance_console("tiny-1").await.unwrap();
        let mut got = Vec::new();
        let next = async |ws: &mut cloud_api::ConsoleStream, got: &mut Vec<u8>, n: usize| {
            while got.len() < n {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
                    other => panic!("console: {other:?}"),
                }
            }
            got.drain(..n).collect::<Vec<u8>>()
        };
        assert_eq!(next(&mut ws, &mut got, 12).await, b"RFB 003.008\n");
        ws.send(Message::Binary(b"RFB 003.008\n".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws, &mut got, 2).await,
            vec![1, 1],
            "security type None"
        );
        ws.send(Message::Binary(vec![1].into())).await.unwrap();
        assert_eq!(
            next(&mut ws, &mut got, 4).await,
            vec![0, 0, 0, 0],
            "security result OK"
        );
        ws.send(Message::Binary(vec![1].into())).await.unwrap(); // ClientInit (shared)
        let init = next(&mut ws, &mut got, 24).await; // ServerInit: size, pixel format, name length
        let (w, h) = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        assert!(w >= 320 && h >= 200, "a real framebuffer: {w}x{h}");
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let name = next(&mut ws, &mut got, name_len).await;
        assert!(
            String::from_utf8_lossy(&name).contains(&format!("tc-vm-{}", inst.id)),
            "{name:?}"
        );
        let _ = ws.close(None).await;
    }
    // Consoles are for running VMs of the caller's project.
    let (s, m) = status(client.instance_console("ghost").await);
    assert_eq!(s, 404, "{m}");

    // Volumes: vm-data is the guest's vdb from the start; vm-extra is hot-plugged as vdc.
    let blk = |id: String| {
        let o = Command::new("virsh")
            .args(["-c", "qemu:///system", "domblklist", &format!("tc-vm-{id}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let data_id = client.volume_get("vm-data").await.unwrap().id;
    let listed = blk(inst.id.to_string());
    assert!(
        listed.contains("vdb") && listed.contains(&format!("vol-{data_id}.raw")),
        "{listed}"
    );
    wait_for("vm-data in use", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            (client.volume_get("vm-data").await.ok()?.status == cloud_api::VolumeStatus::InUse)
                .then_some(())
        }
    })
    .await;
    let (s, m) = status(client.volume_attach("vm-extra", "tiny-1", "/data").await);
    assert_eq!(s, 422, "a VM takes a disk device: {m}");
    client
        .volume_attach("vm-extra", "tiny-1", "/dev/vdc")
        .await
        .unwrap();
    let extra_id = client.volume_get("vm-extra").await.unwrap().id;
    wait_for("vm-extra hot-plugged", Duration::from_secs(30), || {
        let listed = blk(inst.id.to_string());
        let want = format!("vol-{extra_id}.raw");
        async move { (listed.contains("vdc") && listed.contains(&want)).then_some(()) }
    })
    .await;
    assert_eq!(
        client.instance_get("tiny-1").await.unwrap().runtime_id,
        running.runtime_id,
        "hot-plugged: the same domain, not recreated"
    );
    wait_for(
        "the guest sees the hot-plugged disk",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let l = client.instance_logs("tiny-1", Some(3)).await.ok()?;
                l.contains("THECLOUD-DISKS-NOW: vda vdb vdc ").then_some(())
            }
        },
    )
    .await;

    // libvirtd restarts under the agent (an upgrade, a crash): the guest keeps running and
    // the agent reconnects, so stopping and deleting below still work.
    let _ = Command::new("pkill").args(["-x", "libvirtd"]).status();
    wait_for("libvirtd gone", Duration::from_secs(30), || async {
        (!Command::new("pgrep")
            .args(["-x", "libvirtd"])
            .status()
            .unwrap()
            .success())
        .then_some(())
    })
    .await;
    assert!(
        Command::new("libvirtd")
            .arg("-d")
            .status()
            .unwrap()
            .success()
    );
    wait_for("libvirtd back", Duration::from_secs(30), || async {
        Command::new("virsh")
            .args(["-c", "qemu:///system", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        client.instance_get("tiny-1").await.unwrap().status,
        InstanceStatus::Running,
        "still running across the libvirtd restart"
    );

    // Stop: ACPI is ignored by this guest, so the domain is destroyed after 3 s.
    client.instance_stop("tiny-1").await.unwrap();
    c.wait_instance("tiny-1", InstanceStatus::Stopped).await;
    let listed = domains();
    assert!(
        listed.contains(&format!("tc-vm-{}", inst.id)),
        "defined while stopped: {listed}"
    );

    // Delete: no domain, disk or seed left.
    client.instance_delete("tiny-1").await.unwrap();
    c.wait_instance_gone("tiny-1").await;
    let node_dir = vm_dir.join(node.id.to_string());
    wait_for("domain and files gone", Duration::from_secs(30), || {
        let dir = node_dir.join(inst.id.to_string());
        let name = format!("tc-vm-{}", inst.id);
        async move { (!domains().contains(&name) && !dir.exists()).then_some(()) }
    })
    .await;
}

/// Prefix of the VPC test's interfaces, namespaces and nft tables.
const NET_PREFIX: &str = "vmt";
/// The single node's underlay address, on a veth of this namespace.
const NET_UNDERLAY: &str = "172.30.255.1";

/// Removes the VPC test's namespaces, links and nft tables, pass or fail.
struct NetLab;

impl Drop for NetLab {
    fn drop(&mut self) {
        let run = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output();
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(NET_PREFIX) {
                let _ = run(&["ip", "netns", "del", &name]);
            }
        }
        if let Ok(o) = run(&["ip", "-o", "link", "show"]) {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let Some(name) = line.split(": ").nth(1) else {
                    continue;
                };
                let name = name.split('@').next().unwrap_or(name);
                if name.starts_with(NET_PREFIX) {
                    let _ = run(&["ip", "link", "del", name]);
                }
            }
        }
        if let Ok(o) = run(&["nft", "list", "tables"]) {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.len() == 3 && w[2].starts_with(NET_PREFIX) {
                    let _ = run(&["nft", "delete", "table", w[1], w[2]]);
                }
            }
        }
    }
}

fn ok(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vm_in_a_vpc_gets_its_address_and_its_port() {
    if !available() {
        return;
    }
    let _lab = NetLab;
    drop(NetLab); // a previous run's leftovers
    let lab_link = format!("{NET_PREFIX}lab0");
    // (No `dummy` driver on every kernel: a veth pair serves.)
    assert!(ok(&[
        "ip",
        "link",
        "add",
        &lab_link,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{NET_PREFIX}lab1")
    ]));
    assert!(ok(&[
        "ip",
        "addr",
        "add",
        &format!("{NET_UNDERLAY}/32"),
        "dev",
        &lab_link
    ]));
    assert!(ok(&["ip", "link", "set", &lab_link, "up"]));

    let c = Cluster::start().await;
    let (_, mut cleanup, vms) = vm_node_parts().await;
    let underlay: std::net::Ipv4Addr = NET_UNDERLAY.parse().unwrap();
    // The agent's own namespace is the host: libvirt makes the macvtap there.
    let backend =
        cloud_agent::network::LinuxNetwork::new(cloud_agent::network::LinuxNetworkConfig {
            underlay_ip: underlay,
            underlay_mtu: 1500,
            prefix: NET_PREFIX.into(),
            host_netns: None,
        });
    let _node = c
        .fake_node_with("hv-net", |cfg| {
            cfg.vms = Some(vms);
            cfg.reconciler.vm_shutdown_timeout = Duration::from_secs(3);
            cfg.network = Some(cloud_agent::config::NodeNetwork {
                underlay_ip: underlay,
                underlay_mtu: 1500,
                backend: Arc::new(backend),
            });
        })
        .await;
    let client = c.client();
    client.image_create(&tiny_image()).await.unwrap();
    let vpc = client
        .vpc_create(&cloud_api::CreateVpcRequest {
            name: "lab".into(),
            cidr: "10.78.0.0/16".into(),
        })
        .await
        .unwrap();
    let subnet = client
        .subnet_create(
            "lab",
            &cloud_api::CreateSubnetRequest {
                name: "s".into(),
                cidr: "10.78.1.0/24".into(),
                nat_egress: false,
            },
        )
        .await
        .unwrap();
    client
        .sg_create(&cloud_api::CreateSecurityGroupRequest {
            name: "ping".into(),
            description: String::new(),
            rules: vec![cloud_api::SecurityGroupRule {
                direction: cloud_api::Direction::Ingress,
                protocol: cloud_api::Protocol::Icmp,
                port_min: None,
                port_max: None,
                cidr: Some("10.78.0.0/16".into()),
                source_group: None,
            }],
        })
        .await
        .unwrap();

    let inst = client
        .instance_create(&CreateInstanceRequest {
            kind: InstanceKind::Vm,
            image: "tiny".into(),
            command: Vec::new(),
            cpu_millis: 1000,
            memory_mb: 256,
            disk_gb: Some(1),
            subnet_id: Some(subnet.id),
            security_groups: vec!["ping".into()],
            ..busybox("net-1", &[])
        })
        .await
        .unwrap();
    cleanup.1.push(inst.id.to_string());
    let running = c.wait_instance("net-1", InstanceStatus::Running).await;
    let ip = running.private_ip.clone().expect("a VPC address");
    let mac = running.mac.clone().expect("a MAC");
    let link = cloud_agent::network::vm_link_name(NET_PREFIX, &inst.id.to_string());

    // The port: the host end of its veth, with the guest's macvtap on it.
    let macvtaps = Command::new("ip")
        .args(["-o", "-d", "link", "show", "type", "macvtap"])
        .output()
        .unwrap();
    let macvtaps = String::from_utf8_lossy(&macvtaps.stdout).into_owned();
    assert!(
        macvtaps
            .lines()
            .any(|l| l.contains(&format!("@{link}:")) && l.contains(&mac)),
        "a macvtap with the guest's MAC over {link}: {macvtaps}"
    );
    let iflist = Command::new("virsh")
        .args([
            "-c",
            "qemu:///system",
            "domiflist",
            &format!("tc-vm-{}", inst.id),
        ])
        .output()
        .unwrap();
    let iflist = String::from_utf8_lossy(&iflist.stdout).into_owned();
    assert!(
        iflist.contains("direct") && iflist.contains(&link) && iflist.contains(&mac),
        "{iflist}"
    );

    // The guest configured its address from the seed's network-config and reached its gateway.
    let logs = wait_for("guest networked", Duration::from_secs(120), || {
        let client = client.clone();
        async move {
            let l = client.instance_logs("net-1", None).await.ok()?;
            l.contains("THECLOUD-GUEST-READY").then_some(l)
        }
    })
    .await;
    assert!(
        logs.contains(&format!("{mac} {ip}/24 via 10.78.1.1")),
        "{logs}"
    );
    assert!(logs.contains("THECLOUD-PING-GATEWAY-OK"), "{logs}");
    // And it answers from inside its VPC.
    let ns = format!("{NET_PREFIX}v{}", vpc.vni);
    assert!(
        ok(&[
            "ip", "netns", "exec", &ns, "ping", "-c", "2", "-W", "2", &ip
        ]),
        "the VM answers pings from its VPC"
    );
    // NIC counters in telemetry.
    let usage = wait_for("VM network counters", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let u = client.instance_get("net-1").await.ok()?.usage?;
            (u.net_rx_bytes? > 0 && u.net_tx_bytes? > 0).then_some(u)
        }
    })
    .await;
    eprintln!("VM network usage: {usage:?}");

    // Delete: the domain, its port (both veth ends and the macvtap) go.
    client.instance_delete("net-1").await.unwrap();
    c.wait_instance_gone("net-1").await;
    wait_for("port gone", Duration::from_secs(30), || {
        let link = link.clone();
        let name = format!("tc-vm-{}", inst.id);
        async move {
            (!domains().contains(&name) && !ok(&["ip", "link", "show", &link])).then_some(())
        }
    })
    .await;
    client.subnet_delete("lab", "s").await.unwrap();
    client.vpc_delete("lab").await.unwrap();
    wait_for("VPC namespace gone", Duration::from_secs(30), || {
        let path = PathBuf::from("/run/netns").join(&ns);
        async move { (!path.exists()).then_some(()) }
    })
    .await;
}

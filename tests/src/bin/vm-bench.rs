//! `vm-bench`: time from `POST /v1/instances` (kind vm) to status `running` and to the guest's
//! marker line on its serial console, next to a plain `virsh start` of an equivalent domain
//! (same kernel, initrd, overlay disk and seed, defined beforehand) to `running` and to the
//! marker. Interleaved, medians of N. Needs the platform running with VMs enabled (the
//! quickstart agent enables them when libvirtd runs) and the test guest (tests/guest/build.sh).

use clap::Parser;
use cloud_api::{
    Client, CreateImageRequest, CreateInstanceRequest, ImageFormat, InstanceKind, InstanceStatus,
    RestartPolicy,
};
use cloud_tests::benchstats::{median, ms, summary};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "vm-bench",
    about = "VM launch through the API vs plain virsh start"
)]
struct Args {
    #[arg(long, env = "CLOUD_API_URL", default_value = "http://127.0.0.1:8080")]
    api_url: String,
    #[arg(long, env = "CLOUD_API_KEY")]
    api_key: String,
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Where tests/guest/build.sh put the guest.
    #[arg(long, default_value = "/var/lib/libvirt/images/thecloud-test")]
    guest_dir: PathBuf,
}

const MARKER: &str = "THECLOUD-GUEST-READY";

fn virsh(args: &[&str]) -> anyhow::Result<String> {
    let o = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        o.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

async fn wait_file_contains(path: &Path, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{needle} not in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One launch through the API: (→ running, → marker).
async fn once_api(client: &Client, name: &str) -> anyhow::Result<(Duration, Duration)> {
    let t = Instant::now();
    let inst = client
        .instance_create(&CreateInstanceRequest {
            name: Some(name.into()),
            kind: InstanceKind::Vm,
            image: "bench-tiny".into(),
            command: Vec::new(),
            env: Default::default(),
            cpu_millis: 1000,
            memory_mb: 256,
            restart_policy: RestartPolicy::Never,
            node_selector: Default::default(),
            placement_group: None,
            placement_strategy: None,
            subnet_id: None,
            private_ip: None,
            security_groups: Vec::new(),
            volumes: Vec::new(),
            disk_gb: Some(1),
            user_data: Some("#cloud-config\n".into()),
        })
        .await?;
    let id = inst.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let running = loop {
        let i = client.instance_get(&id).await?;
        if i.status == InstanceStatus::Running {
            break t.elapsed();
        }
        anyhow::ensure!(
            i.status != InstanceStatus::Failed,
            "{name} failed: {:?}",
            i.status_reason
        );
        anyhow::ensure!(Instant::now() < deadline, "{name} still {}", i.status);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let marker = loop {
        let logs = client.instance_logs(&id, Some(5)).await.unwrap_or_default();
        if logs.contains(MARKER) {
            break t.elapsed();
        }
        anyhow::ensure!(Instant::now() < deadline, "{name}: no marker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    client.instance_delete(&id).await?;
    while client.instance_get(&id).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((running, marker))
}

/// One plain `virsh start` of an equivalent, already defined domain: (→ running, → marker).
async fn once_virsh(guest: &Path, work: &Path, i: usize) -> anyhow::Result<(Duration, Duration)> {
    let name = format!("bench-plain-{i}");
    let dir = work.join(&name);
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("root.qcow2");
    let base = guest.join("base.raw");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&disk)
        .arg("1G")
        .status()?;
    anyhow::ensure!(st.success(), "qemu-img failed");
    std::fs::write(dir.join("user-data"), "#cloud-config\n")?;
    std::fs::write(dir.join("meta-data"), format!("instance-id: {name}\n"))?;
    let seed = dir.join("seed.iso");
    let st = Command::new("genisoimage")
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(&seed)
        .arg(dir.join("user-data"))
        .arg(dir.join("meta-data"))
        .status()?;
    anyhow::ensure!(st.success(), "genisoimage failed");
    let serial = dir.join("serial.log");
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{k}</kernel><initrd>{r}</initrd>\
         <cmdline>console=ttyS0</cmdline></os><features><acpi/><apic/></features><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{d}'/><target dev='vda' bus='virtio'/></disk>\
         <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{s}'/><target dev='hdc' bus='ide'/><readonly/></disk>\
         <serial type='file'><source path='{l}'/></serial></devices></domain>",
        k = guest.join("vmlinuz").display(),
        r = guest.join("initrd.gz").display(),
        d = disk.display(),
        s = seed.display(),
        l = serial.display(),
    );
    let xml_file = dir.join("domain.xml");
    std::fs::write(&xml_file, xml)?;
    virsh(&["define", &xml_file.display().to_string()])?;
    let t = Instant::now();
    virsh(&["start", &name])?;
    let running = t.elapsed();
    wait_file_contains(&serial, MARKER, Duration::from_secs(120)).await?;
    let marker = t.elapsed();
    let _ = virsh(&["destroy", &name]);
    let _ = virsh(&["undefine", &name]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((running, marker))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = Client::new(&a.api_url, Some(a.api_key.clone()))?;
    let g = &a.guest_dir;
    if client.image_get("bench-tiny").await.is_err() {
        client
            .image_create(&CreateImageRequest {
                name: "bench-tiny".into(),
                path: g.join("base.raw").display().to_string(),
                format: ImageFormat::Raw,
                kernel: Some(g.join("vmlinuz").display().to_string()),
                initrd: Some(g.join("initrd.gz").display().to_string()),
                cmdline: Some("console=ttyS0".into()),
                public: None,
            })
            .await?;
    }
    let work = g.parent().unwrap_or(g).join("thecloud-vm-bench");
    let (mut api_run, mut api_mark, mut v_run, mut v_mark) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.count {
        let (r, m) = once_api(&client, &format!("bench-vm-{i}")).await?;
        api_run.push(r);
        api_mark.push(m);
        let (vr, vm) = once_virsh(g, &work, i).await?;
        v_run.push(vr);
        v_mark.push(vm);
        eprintln!(
            "run {}/{}: api running {:.0} ms marker {:.0} ms | virsh start {:.0} ms marker {:.0} ms",
            i + 1,
            a.count,
            ms(r),
            ms(m),
            ms(vr),
            ms(vm)
        );
    }
    println!(
        "POST /v1/instances (vm) -> running : {}",
        summary(&mut api_run)
    );
    println!(
        "POST /v1/instances (vm) -> marker  : {}",
        summary(&mut api_mark)
    );
    println!(
        "virsh start -> running (baseline)  : {}",
        summary(&mut v_run)
    );
    println!(
        "virsh start -> marker (baseline)   : {}",
        summary(&mut v_mark)
    );
    println!(
        "ratio of medians to the marker (api/virsh): {:.2}",
        ms(median(&api_mark)) / ms(median(&v_mark))
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

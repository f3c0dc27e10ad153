//! Domain XML from an instance's VM spec: vCPUs, memory, machine type, `kvm` or `qemu`
//! (TCG), ACPI on (libvirt 9 with QEMU 10 needs it), the root disk (a qcow2 overlay), the
//! cloud-init seed as a CD-ROM, volumes as virtio disks, the serial console into a log file
//! (rotated by virtlogd), the VPC port as a virtio NIC on a macvtap over the port's host link,
//! VNC on 127.0.0.1 only with a per-domain password, and our metadata (instance id).
//!
//! Every value is XML-escaped; paths are the agent's own.

use std::fmt::Write;
use std::path::PathBuf;

/// The namespace of our `<metadata>` element.
pub const METADATA_NS: &str = "https://thecloud.dev/xmlns/instance/1";

/// Everything a domain definition needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainParams {
    pub name: String,
    pub instance_id: String,
    /// The node whose agent owns the domain.
    pub node_id: String,
    pub virt_type: super::VirtType,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `pc` (i440fx) by default.
    pub machine: String,
    pub root_disk: PathBuf,
    pub seed_iso: Option<PathBuf>,
    /// Attached volumes: (raw image file or block device, guest device `vdb`…`vdz`).
    pub volumes: Vec<(PathBuf, String)>,
    /// Direct kernel boot: kernel, initrd, command line.
    pub kernel: Option<(PathBuf, Option<PathBuf>, String)>,
    /// The VPC port: (host link under the macvtap, the guest's MAC).
    pub nic: Option<(String, String)>,
    pub serial_log: PathBuf,
    /// At most 8 characters (VNC's limit).
    pub vnc_password: String,
}

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

fn path(p: &std::path::Path) -> String {
    escape(&p.to_string_lossy())
}

/// The `<disk>` element of a volume: a raw file or block device on virtio as `dev`.
pub fn disk_xml(source: &std::path::Path, dev: &str) -> String {
    let (kind, attr) = if source.starts_with("/dev/") {
        ("block", "dev")
    } else {
        ("file", "file")
    };
    format!(
        "<disk type='{kind}' device='disk'><driver name='qemu' type='raw' cache='none'/><source {attr}='{}'/><target dev='{}' bus='virtio'/></disk>",
        path(source),
        escape(dev)
    )
}

/// (guest device, source) of every disk but the root disk (`vda`) in domain XML.
pub fn volume_disks(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<disk ") {
        let Some(j) = rest[i..].find("</disk>") else {
            break;
        };
        let disk = &rest[i..i + j];
        rest = &rest[i + j..];
        if !disk.contains("device='disk'") && !disk.contains("device=\"disk\"") {
            continue;
        }
        let dev = super::xml_attr(disk, "target", "dev");
        let src = super::xml_attr(disk, "source", "file")
            .or_else(|| super::xml_attr(disk, "source", "dev"));
        if let (Some(dev), Some(src)) = (dev, src)
            && dev != "vda"
        {
            out.push((dev, src));
        }
    }
    out
}

/// MAC addresses of the domain's NICs in domain XML.
pub fn interface_macs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<interface ") {
        let Some(j) = rest[i..].find("</interface>") else {
            break;
        };
        if let Some(mac) = super::xml_attr(&rest[i..i + j], "mac", "address") {
            out.push(mac);
        }
        rest = &rest[i + j..];
    }
    out
}

/// The domain XML.
pub fn domain_xml(p: &DomainParams) -> String {
    let mut x = String::new();
    // `write!` into a String cannot fail.
    let _ = writeln!(x, "<domain type='{}'>", p.virt_type.as_str());
    let _ = writeln!(x, "  <name>{}</name>", escape(&p.name));
    let _ = writeln!(
        x,
        "  <metadata><thecloud:instance xmlns:thecloud='{METADATA_NS}' id='{}' node='{}'/></metadata>",
        escape(&p.instance_id),
        escape(&p.node_id)
    );
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", p.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", p.vcpus.max(1));
    let _ = writeln!(x, "  <os>");
    let _ = writeln!(
        x,
        "    <type arch='x86_64' machine='{}'>hvm</type>",
        escape(&p.machine)
    );
    match &p.kernel {
        Some((kernel, initrd, cmdline)) => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", path(kernel));
            if let Some(i) = initrd {
                let _ = writeln!(x, "    <initrd>{}</initrd>", path(i));
            }
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", escape(cmdline));
        }
        None => {
            let _ = writeln!(x, "    <boot dev='hd'/>");
        }
    }
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    let _ = writeln!(
        x,
        "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>",
        path(&p.root_disk)
    );
    for (v, dev) in &p.volumes {
        let _ = writeln!(x, "    {}", disk_xml(v, dev));
    }
    if let Some(seed) = &p.seed_iso {
        let _ = writeln!(
            x,
            "    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{}'/><target dev='hdc' bus='ide'/><readonly/></disk>",
            path(seed)
        );
    }
    if let Some((link, mac)) = &p.nic {
        // macvtap in bridge mode over the host end of the instance's veth: frames leave with
        // the guest's MAC, which the VPC bridge's anti-spoofing rules pin.
        let _ = writeln!(
            x,
            "    <interface type='direct'><mac address='{}'/><source dev='{}' mode='bridge'/><model type='virtio'/></interface>",
            escape(mac),
            escape(link)
        );
    }
    // A pty whose output virtlogd also writes to the log file, rotating it (virtlogd's
    // max_size/max_backups, 2 MiB × 3 by default): a chatty guest cannot fill the disk.
    let _ = writeln!(
        x,
        "    <serial type='pty'><log file='{}' append='on'/><target port='0'/></serial>",
        path(&p.serial_log)
    );
    let _ = writeln!(
        x,
        "    <graphics type='vnc' listen='127.0.0.1' autoport='yes' passwd='{}'/>",
        escape(&p.vnc_password)
    );
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DomainParams {
        DomainParams {
            name: "tc-vm-i1".into(),
            instance_id: "i1".into(),
            node_id: "n1".into(),
            virt_type: super::super::VirtType::Qemu,
            vcpus: 2,
            memory_mib: 512,
            machine: "pc".into(),
            root_disk: "/vms/i1/root.qcow2".into(),
            seed_iso: Some("/vms/i1/seed.iso".into()),
            volumes: vec![
                ("/data/vol-a.raw".into(), "vdb".into()),
                ("/dev/vg/vol-b".into(), "vdc".into()),
            ],
            kernel: None,
            nic: Some(("tcm0123456789ab".into(), "02:7c:0a:00:00:05".into())),
            serial_log: "/vms/i1/serial.log".into(),
            vnc_password: "pw<&>'\"".into(),
        }
    }

    #[test]
    fn the_xml_has_every_device_and_escapes_values() {
        let x = domain_xml(&params());
        assert!(x.starts_with("<domain type='qemu'>"), "{x}");
        assert!(x.contains("<features><acpi/>"), "{x}");
        assert!(x.contains("<vcpu>2</vcpu>") && x.contains("<memory unit='MiB'>512</memory>"));
        assert!(x.contains("source file='/vms/i1/root.qcow2'/><target dev='vda'"));
        assert!(x.contains("source file='/data/vol-a.raw'/><target dev='vdb'"));
        assert!(
            x.contains("type='block'")
                && x.contains("source dev='/dev/vg/vol-b'/><target dev='vdc'")
        );
        assert!(x.contains("device='cdrom'") && x.contains("/vms/i1/seed.iso"));
        assert!(x.contains("listen='127.0.0.1'"));
        assert!(x.contains("passwd='pw&lt;&amp;&gt;&apos;&quot;'"), "{x}");
        assert!(x.contains(&format!("xmlns:thecloud='{METADATA_NS}' id='i1' node='n1'")));
        assert!(x.contains("<boot dev='hd'/>"));
        assert!(x.contains("<interface type='direct'><mac address='02:7c:0a:00:00:05'/><source dev='tcm0123456789ab' mode='bridge'/><model type='virtio'/></interface>"), "{x}");
        assert_eq!(interface_macs(&x), vec!["02:7c:0a:00:00:05".to_string()]);
        let mut no_nic = params();
        no_nic.nic = None;
        assert!(!domain_xml(&no_nic).contains("<interface"));
    }

    #[test]
    fn volume_disks_are_read_back_without_the_root_disk() {
        let x = domain_xml(&params());
        assert_eq!(
            volume_disks(&x),
            vec![
                ("vdb".to_string(), "/data/vol-a.raw".to_string()),
                ("vdc".to_string(), "/dev/vg/vol-b".to_string()),
            ]
        );
    }

    #[test]
    fn direct_kernel_boot_replaces_the_boot_device() {
        let mut p = params();
        p.kernel = Some((
            "/img/vmlinuz".into(),
            Some("/img/initrd.gz".into()),
            "console=ttyS0".into(),
        ));
        p.virt_type = super::super::VirtType::Kvm;
        let x = domain_xml(&p);
        assert!(x.starts_with("<domain type='kvm'>"));
        assert!(x.contains("<kernel>/img/vmlinuz</kernel>"));
        assert!(x.contains("<initrd>/img/initrd.gz</initrd>"));
        assert!(x.contains("<cmdline>console=ttyS0</cmdline>"));
        assert!(!x.contains("<boot dev="));
    }
}

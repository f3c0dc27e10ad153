//! CPU and memory of running VMs for telemetry: CPU percent from the growth of each domain's
//! CPU time between two samples (100 % = one vCPU busy, like Docker's figure), memory as the
//! domain's current allocation, disk and NIC byte counters from libvirt.

use super::{DomainState, Hypervisor, instance_of};
use crate::model::InstanceUsage;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// Keeps the previous CPU-time sample of each domain.
#[derive(Default)]
pub struct VmSampler {
    prev: Mutex<HashMap<String, (u64, Instant)>>,
}

impl VmSampler {
    /// Usage of this node's running VMs (the first sample of a domain has 0 % CPU).
    pub async fn sample(&self, hv: &dyn Hypervisor, node_id: &str) -> Vec<InstanceUsage> {
        let domains = match hv.list().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "no VM usage: cannot list domains");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let out = self.cpu(domains, node_id, now);
        let mut usage = Vec::with_capacity(out.len());
        for (name, mut u) in out {
            if let Ok(io) = hv.io(&name).await {
                u.disk_io = Some(io.disk);
                u.net_io = io.net;
            }
            usage.push(u);
        }
        usage
    }

    /// CPU and memory of this node's running domains, against the previous sample (which this
    /// replaces).
    fn cpu(
        &self,
        domains: Vec<super::DomainInfo>,
        node_id: &str,
        now: Instant,
    ) -> Vec<(String, InstanceUsage)> {
        let mut prev = self.prev.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        for d in domains {
            if d.state != DomainState::Running || d.node_id.as_deref() != Some(node_id) {
                continue;
            }
            let Some(id) = instance_of(&d.name) else {
                continue;
            };
            let cpu_percent = match prev.get(&d.name) {
                Some((cpu, at)) if d.cpu_time_ns >= *cpu => {
                    let wall = now.saturating_duration_since(*at).as_nanos() as f64;
                    if wall > 0.0 {
                        (d.cpu_time_ns - cpu) as f64 / wall * 100.0
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            seen.insert(d.name.clone(), (d.cpu_time_ns, now));
            out.push((
                d.name.clone(),
                InstanceUsage {
                    instance_id: id.to_owned(),
                    cpu_percent,
                    memory_used_bytes: d.memory_kib.saturating_mul(1024),
                    memory_limit_bytes: d.memory_kib.saturating_mul(1024),
                    disk_io: None,
                    net_io: None,
                },
            ));
        }
        *prev = seen;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::FakeHypervisor;

    #[tokio::test(start_paused = true)]
    async fn cpu_percent_comes_from_cpu_time_growth() {
        let hv = FakeHypervisor::new();
        hv.define("<domain><name>tc-vm-a</name><metadata><thecloud:instance id='a' node='n1'/></metadata></domain>")
            .await
            .unwrap();
        hv.start("tc-vm-a").await.unwrap();
        let s = VmSampler::default();
        let first = s.sample(&hv, "n1").await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].cpu_percent, 0.0, "no previous sample");
        hv.set_usage("tc-vm-a", 500_000_000, 262_144);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let second = s.sample(&hv, "n1").await;
        assert!((second[0].cpu_percent - 50.0).abs() < 0.1, "{second:?}");
        assert_eq!(second[0].memory_used_bytes, 256 << 20);
        hv.set_disk_io("tc-vm-a", 4096, 8192);
        assert_eq!(s.sample(&hv, "n1").await[0].disk_io, Some((4096, 8192)));
        assert_eq!(s.sample(&hv, "n1").await[0].net_io, None, "no NIC");
        hv.set_net_io("tc-vm-a", 100, 200);
        assert_eq!(s.sample(&hv, "n1").await[0].net_io, Some((100, 200)));
        assert!(
            s.sample(&hv, "other-node").await.is_empty(),
            "only this node's domains"
        );
    }
}

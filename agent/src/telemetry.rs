//! Host and instance usage. Host numbers come from procfs (/proc/stat, /proc/meminfo,
//! /proc/loadavg) and statvfs of the data dir; capacity is detected the same way and each value
//! can be overridden. Per-instance numbers come from one-shot runtime stats.
//!
//! `HostProbe` is the seam: `ProcfsProbe` reads this machine, `StaticProbe` serves fixed
//! numbers for simulated nodes.

use crate::config::CapacityOverride;
use crate::model::{
    Capacity, HostUsage, InstanceObservation, InstanceState, InstanceUsage, TelemetryReport,
};
use crate::runtime::ContainerRuntime;
use futures::StreamExt;
use procfs::{Current, CurrentSI};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * 1024 * 1024;

/// Errors reading host facts.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot read {what}: {message}")]
    Proc { what: &'static str, message: String },
    #[error("statvfs {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn proc_err(what: &'static str) -> impl FnOnce(procfs::ProcError) -> TelemetryError {
    move |e| TelemetryError::Proc {
        what,
        message: e.to_string(),
    }
}

/// Source of host capacity and usage.
pub trait HostProbe: Send + Sync {
    /// Detected capacity (before overrides).
    fn capacity(&self) -> Result<Capacity, TelemetryError>;
    /// Usage now. CPU percent covers the time since the previous call.
    fn sample(&self) -> Result<HostUsage, TelemetryError>;
}

/// Cumulative CPU ticks: busy and total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// From the aggregate `cpu` line of /proc/stat. Idle and iowait count as not busy; guest
    /// time is already included in user/nice and is not added twice.
    pub fn from_procfs(t: &procfs::CpuTime) -> Self {
        let idle = t.idle + t.iowait.unwrap_or(0);
        let busy = t.user
            + t.nice
            + t.system
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        Self {
            busy,
            total: busy + idle,
        }
    }
}

/// Percentage of busy time between two samples (0–100). 0 when no time has passed.
pub fn cpu_percent(prev: CpuTimes, cur: CpuTimes) -> f64 {
    let total = cur.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    let busy = cur.busy.saturating_sub(prev.busy).min(total);
    busy as f64 / total as f64 * 100.0
}

/// (used MiB, total MiB) from meminfo: used = total − available (older kernels: free +
/// buffers + cached).
pub fn memory_mb(m: &procfs::Meminfo) -> (u64, u64) {
    let available = m.mem_available.unwrap_or(m.mem_free + m.buffers + m.cached);
    (
        m.mem_total.saturating_sub(available) / MIB,
        m.mem_total / MIB,
    )
}

/// (used GiB, total GiB) of a filesystem from statvfs numbers.
pub fn disk_gb(blocks: u64, blocks_free: u64, fragment_size: u64) -> (u64, u64) {
    let total = blocks.saturating_mul(fragment_size);
    let used = blocks
        .saturating_sub(blocks_free)
        .saturating_mul(fragment_size);
    (used / GIB, total / GIB)
}

/// Applies manual values over detected ones.
pub fn apply_override(detected: Capacity, ov: &CapacityOverride) -> Capacity {
    Capacity {
        cpu_millis: ov.cpu_millis.unwrap_or(detected.cpu_millis),
        memory_mb: ov.memory_mb.unwrap_or(detected.memory_mb),
        disk_gb: ov.disk_gb.unwrap_or(detected.disk_gb),
    }
}

/// Reads this machine through procfs; disk numbers are those of `data_dir`'s filesystem.
pub struct ProcfsProbe {
    data_dir: PathBuf,
    prev_cpu: Mutex<Option<CpuTimes>>,
}

impl ProcfsProbe {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            prev_cpu: Mutex::new(None),
        }
    }

    fn disk(&self) -> Result<(u64, u64), TelemetryError> {
        let st = rustix::fs::statvfs(&self.data_dir).map_err(|e| TelemetryError::Statvfs {
            path: self.data_dir.clone(),
            source: e.into(),
        })?;
        Ok(disk_gb(st.f_blocks, st.f_bfree, st.f_frsize))
    }
}

impl HostProbe for ProcfsProbe {
    fn capacity(&self) -> Result<Capacity, TelemetryError> {
        let stats = procfs::KernelStats::current().map_err(proc_err("/proc/stat"))?;
        let cpus = u64::try_from(stats.cpu_time.len()).unwrap_or(1).max(1);
        let mem = procfs::Meminfo::current().map_err(proc_err("/proc/meminfo"))?;
        let (_, disk_total) = self.disk()?;
        Ok(Capacity {
            cpu_millis: cpus * 1000,
            memory_mb: mem.mem_total / MIB,
            disk_gb: disk_total,
        })
    }

    fn sample(&self) -> Result<HostUsage, TelemetryError> {
        let stats = procfs::KernelStats::current().map_err(proc_err("/proc/stat"))?;
        let cur = CpuTimes::from_procfs(&stats.total);
        let prev = {
            let mut guard = self.prev_cpu.lock().unwrap_or_else(|p| p.into_inner());
            guard.replace(cur)
        };
        let cpu = prev.map_or(0.0, |p| cpu_percent(p, cur));
        let mem = procfs::Meminfo::current().map_err(proc_err("/proc/meminfo"))?;
        let (mem_used, mem_total) = memory_mb(&mem);
        let load = procfs::LoadAverage::current().map_err(proc_err("/proc/loadavg"))?;
        let (disk_used, disk_total) = self.disk()?;
        Ok(HostUsage {
            cpu_percent: cpu,
            memory_used_mb: mem_used,
            memory_total_mb: mem_total,
            disk_used_gb: disk_used,
            disk_total_gb: disk_total,
            load1: f64::from(load.one),
            load5: f64::from(load.five),
            load15: f64::from(load.fifteen),
        })
    }
}

/// Fixed numbers, for simulated nodes and tests.
#[derive(Debug, Clone, Copy)]
pub struct StaticProbe {
    pub capacity: Capacity,
    pub usage: HostUsage,
}

impl HostProbe for StaticProbe {
    fn capacity(&self) -> Result<Capacity, TelemetryError> {
        Ok(self.capacity)
    }
    fn sample(&self) -> Result<HostUsage, TelemetryError> {
        Ok(self.usage)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One telemetry report: host usage plus stats of every RUNNING instance in `observed`.
pub async fn collect(
    probe: &dyn HostProbe,
    runtime: &dyn ContainerRuntime,
    volumes: Option<&dyn crate::storage::VolumeBackend>,
    observed: &[InstanceObservation],
) -> TelemetryReport {
    let host = probe.sample().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot sample host usage");
        HostUsage::default()
    });
    let running: Vec<(String, String)> = observed
        .iter()
        .filter(|o| o.state == InstanceState::Running && !o.runtime_id.is_empty())
        .map(|o| (o.instance_id.clone(), o.runtime_id.clone()))
        .collect();
    let instances = futures::stream::iter(running)
        .map(|(instance_id, runtime_id)| async move {
            match runtime.stats(&runtime_id).await {
                Ok(s) => Some(InstanceUsage {
                    instance_id,
                    cpu_percent: s.cpu_percent,
                    memory_used_bytes: s.memory_used_bytes,
                    memory_limit_bytes: s.memory_limit_bytes,
                    disk_io: None,
                    net_io: None,
                }),
                Err(e) => {
                    tracing::debug!(instance_id = %instance_id, error = %e, "no stats");
                    None
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect::<Vec<_>>()
        .await;
    let mut instances = instances;
    instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let pool = match volumes {
        None => None,
        Some(v) => match v.capacity().await {
            Ok(c) => Some((v.kind(), c)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the volume pool's capacity");
                None
            }
        },
    };
    TelemetryReport {
        sampled_at_unix_ms: now_ms(),
        host,
        instances,
        pool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerSpec, ContainerStats, FakeRuntime, labels};
    use procfs::{ExplicitSystemInfo, FromRead, FromReadSI};

    const STAT_1: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 0\nctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
    const STAT_2: &str = "cpu  250 0 100 1100 50 0 0 0 0 0\ncpu0 125 0 50 550 25 0 0 0 0 0\ncpu1 125 0 50 550 25 0 0 0 0 0\nintr 0\nctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";

    fn si() -> ExplicitSystemInfo {
        ExplicitSystemInfo {
            boot_time_secs: 1,
            ticks_per_second: 100,
            page_size: 4096,
            is_little_endian: true,
        }
    }

    #[test]
    fn cpu_percent_from_two_proc_stat_samples() {
        let a = procfs::KernelStats::from_read(STAT_1.as_bytes(), &si()).unwrap();
        let b = procfs::KernelStats::from_read(STAT_2.as_bytes(), &si()).unwrap();
        assert_eq!(a.cpu_time.len(), 2, "two online CPUs");
        let (pa, pb) = (
            CpuTimes::from_procfs(&a.total),
            CpuTimes::from_procfs(&b.total),
        );
        assert_eq!(
            pa,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        // Between samples: busy +200 (user 150, system 50), idle +300 → 40 %.
        let p = cpu_percent(pa, pb);
        assert!((p - 40.0).abs() < 1e-9, "got {p}");
        assert_eq!(cpu_percent(pb, pb), 0.0);
        assert_eq!(
            cpu_percent(pb, pa),
            0.0,
            "a counter going backwards is not negative"
        );
    }

    #[test]
    fn memory_used_is_total_minus_available() {
        let text = "MemTotal:        2048000 kB\nMemFree:          512000 kB\nMemAvailable:    1024000 kB\nBuffers:           10000 kB\nCached:           100000 kB\nSwapCached:            0 kB\nActive:                0 kB\nInactive:              0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nDirty:                 0 kB\nWriteback:             0 kB\nMapped:                0 kB\nShmem:                 0 kB\nSlab:                  0 kB\nCommitLimit:           0 kB\nCommitted_AS:          0 kB\nVmallocTotal:          0 kB\nVmallocUsed:           0 kB\nVmallocChunk:          0 kB\n";
        let m = procfs::Meminfo::from_read(text.as_bytes()).unwrap();
        // 2048000 kB = 2000 MiB total; used = (2048000 - 1024000) kB = 1000 MiB.
        assert_eq!(memory_mb(&m), (1000, 2000));
    }

    #[test]
    fn disk_and_overrides() {
        // 100 GiB filesystem of 4 KiB fragments, 25 % free.
        let blocks = 100 * GIB / 4096;
        assert_eq!(disk_gb(blocks, blocks / 4, 4096), (75, 100));
        let detected = Capacity {
            cpu_millis: 2000,
            memory_mb: 24000,
            disk_gb: 100,
        };
        let ov = CapacityOverride {
            cpu_millis: Some(500),
            memory_mb: None,
            disk_gb: Some(10),
        };
        assert_eq!(
            apply_override(detected, &ov),
            Capacity {
                cpu_millis: 500,
                memory_mb: 24000,
                disk_gb: 10
            }
        );
    }

    #[test]
    fn procfs_probe_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let probe = ProcfsProbe::new(dir.path());
        let cap = probe.capacity().unwrap();
        assert!(cap.cpu_millis >= 1000 && cap.cpu_millis.is_multiple_of(1000));
        assert!(cap.memory_mb > 0 && cap.disk_gb > 0);
        let u = probe.sample().unwrap();
        assert_eq!(u.cpu_percent, 0.0, "first sample has no previous one");
        assert!(u.memory_used_mb <= u.memory_total_mb && u.memory_total_mb > 0);
        let u2 = probe.sample().unwrap();
        assert!((0.0..=100.0).contains(&u2.cpu_percent));
    }

    #[tokio::test]
    async fn collects_stats_of_running_instances_only() {
        let rt = FakeRuntime::with_images(["img"]);
        let spec = |id: &str| ContainerSpec {
            name: format!("tc-{id}"),
            image: "img".into(),
            labels: [(labels::INSTANCE_ID.to_owned(), id.to_owned())].into(),
            memory_bytes: 64 << 20,
            ..ContainerSpec::default()
        };
        let a = rt.insert_container(&spec("a"), true);
        rt.set_stats(
            "a",
            ContainerStats {
                cpu_percent: 12.5,
                memory_used_bytes: 1000,
                memory_limit_bytes: 64 << 20,
            },
        );
        let observed = vec![
            InstanceObservation {
                runtime_id: a,
                ..InstanceObservation::new("a", InstanceState::Running, "")
            },
            InstanceObservation::new("b", InstanceState::Stopped, ""),
        ];
        let probe = StaticProbe {
            capacity: Capacity::default(),
            usage: HostUsage {
                cpu_percent: 3.0,
                ..HostUsage::default()
            },
        };
        let r = collect(&probe, &rt, None, &observed).await;
        assert!(r.pool.is_none(), "no volume backend, no pool");
        let volumes = crate::storage::FakeVolumes::new(10 << 30);
        let with_pool = collect(&probe, &rt, Some(&volumes), &observed).await;
        let (kind, cap) = with_pool.pool.expect("pool reported");
        assert_eq!((kind, cap.total_bytes), ("file", 10 << 30));
        assert_eq!(r.host.cpu_percent, 3.0);
        assert_eq!(r.instances.len(), 1);
        assert_eq!(r.instances[0].instance_id, "a");
        assert_eq!(r.instances[0].cpu_percent, 12.5);
        assert!(r.sampled_at_unix_ms > 0);
    }
}

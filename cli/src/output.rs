//! Rendering: tables, key/value views and JSON of API objects, plus ages and quantities.
//!
//! Every renderer takes data (and `now`, for ages) and returns a `String`, so it is testable.

use crate::output_network::{GroupNames, group_list};
use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use cloud_api::{Instance, Node, Resources};
use serde::Serialize;
use std::io::Write;

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    // Human-readable tables and key/value views.
    #[default]
    Table,
    // The API objects as JSON (lists are arrays).
    Json,
}

/// Writes to stdout; a closed pipe (`cloud instance logs web | head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Pretty JSON with a final newline.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

// ---------------------------------------------------------------------------- primitives

/// Columns separated by two spaces, each as wide as its widest cell.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(width(cell));
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Key:  value` lines with the values aligned.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (k, v) in rows {
        let label = format!("{k}:");
        out.push_str(format!("{label:<w$}  {v}").trim_end());
        out.push('\n');
    }
    out
}

/// `5s`, `3m`, `2h`, `4d`; `0s` for times in the future (clock skew).
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `2026-05-01T10:00:00Z (3m ago)`, or `-`.
pub fn timestamp(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => format!(
            "{} ({} ago)",
            t.to_rfc3339_opts(SecondsFormat::Secs, true),
            age(t, now)
        ),
        None => "-".into(),
    }
}

/// Millicores as the CLI accepts them: `250m`.
pub fn cpu(millis: u64) -> String {
    format!("{millis}m")
}

/// MiB as the CLI accepts them: `64Mi`, or `2Gi` for whole GiB.
pub fn memory(mb: u64) -> String {
    if mb >= 1024 && mb.is_multiple_of(1024) {
        format!("{}Gi", mb / 1024)
    } else {
        format!("{mb}Mi")
    }
}

/// At most `max` characters, the last one `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Quotes an argument for a POSIX shell when it needs it.
pub fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@,+%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".into(),
    }
}

// ---------------------------------------------------------------------------- instances

const REASON_WIDTH: usize = 48;

fn instance_node(i: &Instance) -> String {
    match (&i.node_name, &i.node_id) {
        (Some(name), _) => name.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => "-".into(),
    }
}

/// `cloud instance list`; a REASON column appears when some instance has a status reason.
pub fn instance_table(items: &[Instance], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No instances. Launch one with `cloud instance launch --image IMAGE`.\n".into();
    }
    let with_reason = items
        .iter()
        .any(|i| i.status_reason.as_deref().is_some_and(|r| !r.is_empty()));
    let mut headers = vec![
        "NAME", "STATUS", "NODE", "IP", "IMAGE", "CPU", "MEMORY", "AGE",
    ];
    if with_reason {
        headers.push("REASON");
    }
    let mut t = Table::new(&headers);
    for i in items {
        let mut row = vec![
            i.name.clone(),
            i.status.to_string(),
            instance_node(i),
            or_dash(i.private_ip.as_deref()),
            i.image.clone(),
            cpu(i.cpu_millis),
            memory(i.memory_mb),
            age(i.created_at, now),
        ];
        if with_reason {
            row.push(truncate(
                i.status_reason.as_deref().unwrap_or(""),
                REASON_WIDTH,
            ));
        }
        t.row(row);
    }
    t.render()
}

/// `cloud instance show`: every field; env keys only (values need `-o json`). Network fields
/// appear when the instance is in a subnet or has security groups; `names` turns security
/// group ids into names.
pub fn instance_detail(i: &Instance, now: DateTime<Utc>, names: &GroupNames) -> String {
    let command = if i.command.is_empty() {
        "(image default)".to_string()
    } else {
        i.command
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let env = if i.env.is_empty() {
        "-".to_string()
    } else {
        format!(
            "{} (values hidden; use -o json)",
            i.env.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let node = match (&i.node_name, &i.node_id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        _ => instance_node(i),
    };
    let mut rows = vec![
        ("Name", i.name.clone()),
        ("ID", i.id.to_string()),
        ("Kind", i.kind.as_str().to_string()),
        ("Status", i.status.to_string()),
        ("Status reason", or_dash(i.status_reason.as_deref())),
        ("Desired state", i.desired_state.as_str().to_string()),
        ("Image", i.image.clone()),
        ("Command", command),
        ("Env", env),
        ("CPU", cpu(i.cpu_millis)),
        ("Memory", memory(i.memory_mb)),
        ("Restart policy", i.restart_policy.to_string()),
        ("Node", node),
    ];
    if i.subnet_id.is_some() || i.private_ip.is_some() || !i.security_groups.is_empty() {
        rows.extend([
            (
                "Subnet",
                i.subnet_id.map_or_else(|| "-".into(), |id| id.to_string()),
            ),
            ("Private IP", or_dash(i.private_ip.as_deref())),
            ("MAC", or_dash(i.mac.as_deref())),
            ("Security groups", group_list(&i.security_groups, names)),
        ]);
    }
    if !i.volumes.is_empty() {
        let list: Vec<String> = i
            .volumes
            .iter()
            .map(|m| format!("{} at {}", m.volume, m.mount_path))
            .collect();
        rows.push(("Volumes", list.join(", ")));
    }
    rows.extend([
        ("Runtime ID", or_dash(i.runtime_id.as_deref())),
        ("Started", timestamp(i.started_at, now)),
        (
            "Exit code",
            i.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
        ),
        ("Usage", instance_usage(i)),
        ("Created", timestamp(Some(i.created_at), now)),
        ("Updated", timestamp(Some(i.updated_at), now)),
    ]);
    key_values(&rows)
}

/// `12.5% CPU, 3.2/64.0 MiB` from the latest sample, or `-`.
fn instance_usage(i: &Instance) -> String {
    match &i.usage {
        Some(u) => {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let disk = match (u.disk_read_bytes, u.disk_write_bytes) {
                (Some(r), Some(w)) => {
                    format!(", disk {:.1} MiB read/{:.1} MiB written", mib(r), mib(w))
                }
                _ => String::new(),
            };
            let net = match (u.net_rx_bytes, u.net_tx_bytes) {
                (Some(r), Some(t)) => {
                    format!(", network {:.1} MiB in/{:.1} MiB out", mib(r), mib(t))
                }
                _ => String::new(),
            };
            format!(
                "{:.1}% CPU, {:.1}/{:.1} MiB memory{disk}{net}",
                u.cpu_percent,
                mib(u.memory_used_bytes),
                mib(u.memory_limit_bytes)
            )
        }
        None => "-".into(),
    }
}

// ---------------------------------------------------------------------------- nodes

fn used_of(alloc: u64, cap: u64, fmt: fn(u64) -> String) -> String {
    format!("{}/{}", fmt(alloc), fmt(cap))
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn heartbeat(n: &Node, now: DateTime<Utc>) -> String {
    n.last_heartbeat_at
        .map_or_else(|| "never".into(), |t| format!("{} ago", age(t, now)))
}

/// `cloud node list`.
pub fn node_table(items: &[Node], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No nodes. Start an agent on a compute host to add one.\n".into();
    }
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "CPU",
        "MEMORY",
        "DRIVERS",
        "AGE",
        "LAST HEARTBEAT",
        "CONNECTED",
    ]);
    for n in items {
        t.row(vec![
            n.name.clone(),
            n.status.to_string(),
            used_of(n.allocated.cpu_millis, n.capacity.cpu_millis, cpu),
            used_of(n.allocated.memory_mb, n.capacity.memory_mb, memory),
            or_dash(Some(&n.drivers.join(","))),
            age(n.created_at, now),
            heartbeat(n, now),
            yes_no(n.connected),
        ]);
    }
    t.render()
}

fn resources(r: &Resources) -> String {
    format!(
        "cpu {}, memory {}, disk {}G",
        cpu(r.cpu_millis),
        memory(r.memory_mb),
        r.disk_gb
    )
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return String::new();
    }
    format!(" ({:.0}%)", part as f64 * 100.0 / whole as f64)
}

/// `cloud node show`: every field, with the latest host usage when the agent reported one.
pub fn node_detail(n: &Node, now: DateTime<Utc>) -> String {
    let labels = if n.labels.is_empty() {
        "-".to_string()
    } else {
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        ("Name", n.name.clone()),
        ("ID", n.id.to_string()),
        ("Hostname", n.hostname.clone()),
        ("Status", n.status.to_string()),
        (
            "Drained",
            match n.drain {
                None => "no".to_owned(),
                Some(cloud_api::DrainMode::Evacuate) => "yes, instances move elsewhere".to_owned(),
                Some(cloud_api::DrainMode::KeepInstances) => {
                    "yes, instances keep running here".to_owned()
                }
            },
        ),
        ("Connected", yes_no(n.connected)),
        ("Agent version", or_dash(n.agent_version.as_deref())),
        ("Drivers", or_dash(Some(&n.drivers.join(", ")))),
        ("Labels", labels),
        ("Capacity", resources(&n.capacity)),
        ("Allocated", resources(&n.allocated)),
        (
            "Last heartbeat",
            n.last_heartbeat_at
                .map_or_else(|| "never".into(), |t| timestamp(Some(t), now)),
        ),
        ("Created", timestamp(Some(n.created_at), now)),
    ];
    match &n.usage {
        Some(u) => rows.extend([
            ("CPU usage", format!("{:.1}%", u.cpu_percent)),
            (
                "Memory usage",
                format!(
                    "{}/{}{}",
                    memory(u.memory_used_mb),
                    memory(u.memory_total_mb),
                    percent(u.memory_used_mb, u.memory_total_mb)
                ),
            ),
            (
                "Disk usage",
                format!(
                    "{}G/{}G{}",
                    u.disk_used_gb,
                    u.disk_total_gb,
                    percent(u.disk_used_gb, u.disk_total_gb)
                ),
            ),
            (
                "Load",
                format!("{:.2} {:.2} {:.2}", u.load1, u.load5, u.load15),
            ),
            (
                "Volume pool",
                match &u.volume_pool {
                    Some(p) => {
                        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
                        format!(
                            "{}: {:.1}G free of {:.1}G",
                            p.kind,
                            gib(p.free_bytes),
                            gib(p.total_bytes)
                        )
                    }
                    None => "- (no volume backend)".into(),
                },
            ),
            ("Usage sampled", timestamp(Some(u.sampled_at), now)),
        ]),
        None => rows.push(("Usage", "- (no telemetry yet)".into())),
    }
    key_values(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{instance, node, now};
    use chrono::Duration;
    use cloud_api::{HostUsage, InstanceStatus, NodeStatus};

    #[test]
    fn ages() {
        let t = now();
        assert_eq!(age(t - Duration::seconds(5), t), "5s");
        assert_eq!(age(t - Duration::seconds(59), t), "59s");
        assert_eq!(age(t - Duration::seconds(180), t), "3m");
        assert_eq!(age(t - Duration::hours(2), t), "2h");
        assert_eq!(age(t - Duration::hours(23), t), "23h");
        assert_eq!(age(t - Duration::days(4), t), "4d");
        assert_eq!(age(t + Duration::seconds(30), t), "0s");
    }

    #[test]
    fn quantities_round_trip_through_the_parsers() {
        assert_eq!(cpu(250), "250m");
        assert_eq!(memory(64), "64Mi");
        assert_eq!(memory(2048), "2Gi");
        assert_eq!(memory(1536), "1536Mi");
        for mb in [1, 64, 1024, 1536, 4096] {
            assert_eq!(cloud_api::quantity::parse_memory_mb(&memory(mb)), Ok(mb));
        }
        assert_eq!(cloud_api::quantity::parse_cpu_millis(&cpu(250)), Ok(250));
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide-cell".into(), "x".into()]);
        t.row(vec!["é".into(), "".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide-cell  x\né\n");
    }

    #[test]
    fn instance_table_columns_and_values() {
        let items = vec![
            instance("web", InstanceStatus::Running, 5),
            instance("batch", InstanceStatus::Pending, 180),
        ];
        let out = instance_table(&items, now());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME", "STATUS", "NODE", "IP", "IMAGE", "CPU", "MEMORY", "AGE"
            ]
        );
        let web: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            web,
            [
                "web",
                "running",
                "node-1",
                "-",
                "local/busybox:latest",
                "250m",
                "64Mi",
                "5s"
            ]
        );
        assert!(lines[2].ends_with("3m"), "{out}");
        assert!(!out.contains("hunter2"), "env values never in tables");
        // Columns line up.
        let col = lines[0].find("STATUS").unwrap();
        assert_eq!(&lines[1][col..col + 7], "running");
    }

    #[test]
    fn instance_table_shows_reasons_only_when_present() {
        let mut failed = instance("bad", InstanceStatus::Failed, 10);
        failed.status_reason = Some(format!("image pull failed: {}", "x".repeat(100)));
        failed.node_name = None;
        failed.node_id = None;
        let out = instance_table(&[instance("ok", InstanceStatus::Running, 1), failed], now());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("REASON"), "{out}");
        assert!(lines[2].contains("image pull failed"), "{out}");
        assert!(lines[2].contains(" - "), "unplaced node is '-': {out}");
        let reason = lines[2].rsplit("  ").next().unwrap();
        assert_eq!(reason.chars().count(), REASON_WIDTH);
        assert!(reason.ends_with('…'));
        assert!(instance_table(&[], now()).contains("No instances"));
    }

    #[test]
    fn instance_detail_hides_env_values() {
        let i = instance("web", InstanceStatus::Running, 5);
        let out = instance_detail(&i, now(), &GroupNames::new());
        assert!(out.contains("DB_PASSWORD, GREETING"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("hello"), "{out}");
        assert!(out.contains(&i.id.to_string()));
        assert!(out.contains("sh -c 'echo hi; sleep 1'"), "{out}");
        for key in [
            "Name:",
            "Status:",
            "Image:",
            "CPU:",
            "Memory:",
            "Restart policy:",
            "Node:",
            "Created:",
        ] {
            assert!(out.contains(key), "{key} missing: {out}");
        }
        assert!(out.contains("250m") && out.contains("64Mi"));
        assert!(out.contains("node-1 ("));
        assert!(out.contains("(5s ago)"), "{out}");
        assert!(
            !out.contains("Private IP"),
            "no network rows without a subnet: {out}"
        );
    }

    #[test]
    fn json_output_prints_the_api_objects() {
        let items = vec![instance("web", InstanceStatus::Running, 5)];
        let v: serde_json::Value = serde_json::from_str(&to_json(&items).unwrap()).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 1);
        assert_eq!(arr[0]["name"], "web");
        assert_eq!(arr[0]["status"], "running");
        assert_eq!(arr[0]["cpu_millis"], 250);
        assert_eq!(arr[0]["env"]["DB_PASSWORD"], "hunter2-very-secret");
        let back: Vec<Instance> = serde_json::from_value(v).unwrap();
        assert_eq!(back, items);

        let n = node("n1");
        let v: serde_json::Value = serde_json::from_str(&to_json(&n).unwrap()).unwrap();
        assert!(v.is_object());
        assert_eq!(v["capacity"]["cpu_millis"], 2000);
        assert_eq!(serde_json::from_value::<Node>(v).unwrap(), n);
        assert!(to_json(&Vec::<Node>::new()).unwrap().starts_with("[]"));
    }

    #[test]
    fn node_table_columns_and_values() {
        let mut down = node("n2");
        down.status = NodeStatus::Down;
        down.connected = false;
        down.last_heartbeat_at = None;
        let out = node_table(&[node("n1"), down], now());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0]
                .split("  ")
                .filter(|s| !s.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>(),
            [
                "NAME",
                "STATUS",
                "CPU",
                "MEMORY",
                "DRIVERS",
                "AGE",
                "LAST HEARTBEAT",
                "CONNECTED"
            ]
        );
        let n1: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            n1,
            [
                "n1",
                "ready",
                "250m/2000m",
                "64Mi/4Gi",
                "docker,libvirt",
                "4d",
                "2s",
                "ago",
                "yes"
            ]
        );
        assert!(lines[2].contains("down") && lines[2].contains("never"));
        assert!(lines[2].ends_with("no"));
        assert!(node_table(&[], now()).contains("No nodes"));
    }

    #[test]
    fn node_detail_includes_usage_when_present() {
        let mut n = node("n1");
        let out = node_detail(&n, now());
        assert!(out.contains("no telemetry"), "{out}");
        assert!(out.contains("zone=a"));
        assert!(out.contains("cpu 2000m, memory 4Gi, disk 100G"), "{out}");
        n.usage = Some(HostUsage {
            cpu_percent: 12.345,
            memory_used_mb: 1024,
            memory_total_mb: 4096,
            disk_used_gb: 10,
            disk_total_gb: 100,
            load1: 0.5,
            load5: 0.25,
            load15: 0.75,
            sampled_at: now() - Duration::seconds(3),
            volume_pool: Some(cloud_api::VolumePool {
                kind: "file".into(),
                total_bytes: 100 << 30,
                free_bytes: 40 << 30,
            }),
        });
        let out = node_detail(&n, now());
        assert!(out.contains("CPU usage:"), "{out}");
        assert!(out.contains("12.3%"), "{out}");
        assert!(out.contains("1Gi/4Gi (25%)"), "{out}");
        assert!(out.contains("10G/100G (10%)"), "{out}");
        assert!(out.contains("0.50 0.25 0.75"), "{out}");
        assert!(out.contains("file: 40.0G free of 100.0G"), "{out}");
    }

    #[test]
    fn helpers() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            key_values(&[("A", "1".into()), ("Long", "".into())]),
            "A:     1\nLong:\n"
        );
    }
}

//! Rendering of volumes: the table of `cloud volume list` and the key/value view of
//! `cloud volume show`.
//!
//! Like `output`, every renderer takes data (and `now`, for ages) and returns a `String`.

use crate::output::{Table, age, key_values, timestamp};
use chrono::{DateTime, Utc};
use cloud_api::{Snapshot, Volume};

/// GB as `--size` accepts them: `10G`.
pub fn size(gb: u64) -> String {
    format!("{gb}G")
}

/// The node's name, else its id, else `-` (not placed yet).
fn node(v: &Volume) -> String {
    match (&v.node_name, &v.node_id) {
        (Some(name), _) => name.clone(),
        (None, Some(id)) => id.to_string(),
        (None, None) => "-".into(),
    }
}

/// `cloud volume list`.
pub fn volume_table(items: &[Volume], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No volumes. Create one with `cloud volume create NAME --size 10G`.\n".into();
    }
    let mut t = Table::new(&["NAME", "ID", "SIZE", "NODE", "STATUS", "AGE"]);
    for v in items {
        t.row(vec![
            v.name.clone(),
            v.id.to_string(),
            size(v.size_gb),
            node(v),
            v.status.to_string(),
            age(v.created_at, now),
        ]);
    }
    t.render()
}

/// `cloud volume show` (and `create`): every field.
pub fn volume_detail(v: &Volume, now: DateTime<Utc>) -> String {
    let node = match (&v.node_name, &v.node_id) {
        (Some(name), Some(id)) => format!("{name} ({id})"),
        _ => node(v),
    };
    let reason = match v.status_reason.as_deref() {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => "-".into(),
    };
    key_values(&[
        ("Name", v.name.clone()),
        ("ID", v.id.to_string()),
        ("Size", size(v.size_gb)),
        ("Node", node),
        ("Status", v.status.to_string()),
        ("Status reason", reason),
        (
            "Mounted in",
            match (&v.instance_id, &v.mount_path) {
                (Some(i), Some(p)) => format!("{i} at {p}"),
                (Some(i), None) => i.to_string(),
                _ => "-".into(),
            },
        ),
        (
            "Restored from",
            v.source_snapshot_id
                .map_or_else(|| "-".into(), |s| s.to_string()),
        ),
        ("Created", timestamp(Some(v.created_at), now)),
        ("Updated", timestamp(Some(v.updated_at), now)),
    ])
}

/// `cloud snapshot list`.
pub fn snapshot_table(items: &[Snapshot], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No snapshots. Take one with `cloud snapshot create NAME --volume VOLUME`.\n"
            .into();
    }
    let mut t = Table::new(&["NAME", "ID", "VOLUME", "SIZE", "NODE", "STATUS", "AGE"]);
    for s in items {
        t.row(vec![
            s.name.clone(),
            s.id.to_string(),
            snapshot_volume(s),
            size(s.size_gb),
            s.node_name.clone().unwrap_or_else(|| "-".into()),
            s.status.to_string(),
            age(s.created_at, now),
        ]);
    }
    t.render()
}

/// The source volume's name, else its id (deleted since).
fn snapshot_volume(s: &Snapshot) -> String {
    s.volume_name
        .clone()
        .unwrap_or_else(|| format!("{} (deleted)", s.volume_id))
}

/// `cloud snapshot show` (and `create`): every field.
pub fn snapshot_detail(s: &Snapshot, now: DateTime<Utc>) -> String {
    key_values(&[
        ("Name", s.name.clone()),
        ("ID", s.id.to_string()),
        ("Volume", snapshot_volume(s)),
        ("Size", size(s.size_gb)),
        ("Node", s.node_name.clone().unwrap_or_else(|| "-".into())),
        ("Status", s.status.to_string()),
        (
            "Status reason",
            s.status_reason
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "-".into()),
        ),
        ("Created", timestamp(Some(s.created_at), now)),
        ("Updated", timestamp(Some(s.updated_at), now)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{now, volume};
    use cloud_api::VolumeStatus;

    #[test]
    fn volume_table_columns() {
        let mut pending = volume("logs", 50, VolumeStatus::Creating, 180);
        pending.node_name = None;
        pending.node_id = None;
        let data = volume("data", 10, VolumeStatus::Available, 60);
        let out = volume_table(&[data.clone(), pending], now());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, ["NAME", "ID", "SIZE", "NODE", "STATUS", "AGE"]);
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "data",
                data.id.to_string().as_str(),
                "10G",
                "node-1",
                "available",
                "1m"
            ]
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(row[2..], ["50G", "-", "creating", "3m"]);
        // Columns line up.
        let col = lines[0].find("STATUS").unwrap();
        assert_eq!(&lines[1][col..col + 9], "available");
        assert_eq!(&lines[2][col..col + 8], "creating");
        assert!(volume_table(&[], now()).contains("cloud volume create"));
    }

    #[test]
    fn unnamed_nodes_show_their_id() {
        let mut v = volume("data", 10, VolumeStatus::Available, 5);
        v.node_name = None;
        let id = v.node_id.unwrap().to_string();
        let out = volume_table(std::slice::from_ref(&v), now());
        assert!(out.lines().nth(1).unwrap().contains(&id), "{out}");
        let out = volume_detail(&v, now());
        assert!(out.lines().any(|l| l.ends_with(&id)), "{out}");
    }

    #[test]
    fn volume_detail_shows_every_field() {
        let mut v = volume("data", 16384, VolumeStatus::Failed, 5);
        v.status_reason = Some("not enough space in the volume pool".into());
        let out = volume_detail(&v, now());
        let value = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{key} missing: {out}"))
                .to_string()
        };
        assert_eq!(value("Name"), "data");
        assert_eq!(value("ID"), v.id.to_string());
        assert_eq!(value("Size"), "16384G");
        assert_eq!(value("Node"), format!("node-1 ({})", v.node_id.unwrap()));
        assert_eq!(value("Status"), "failed");
        assert_eq!(
            value("Status reason"),
            "not enough space in the volume pool"
        );
        assert!(value("Created").ends_with("(5s ago)"), "{out}");
        assert!(value("Updated").ends_with("(1s ago)"), "{out}");

        v.status_reason = None;
        v.node_id = None;
        v.node_name = None;
        let out = volume_detail(&v, now());
        assert!(out.contains("Status reason:  -"), "{out}");
        assert!(out.lines().any(|l| l == "Node:           -"), "{out}");
    }

    #[test]
    fn sizes_round_trip_through_the_parser() {
        for gb in [1, 10, 1024, 16384] {
            assert_eq!(crate::cli_volume::parse_size_gb(&size(gb)), Ok(gb));
        }
    }

    #[test]
    fn json_output_prints_the_api_objects() {
        let items = vec![volume("data", 10, VolumeStatus::InUse, 5)];
        let v: serde_json::Value =
            serde_json::from_str(&crate::output::to_json(&items).unwrap()).unwrap();
        assert_eq!(v[0]["name"], "data");
        assert_eq!(v[0]["size_gb"], 10);
        assert_eq!(v[0]["status"], "in-use");
        assert_eq!(v[0]["node_name"], "node-1");
    }

    #[test]
    fn snapshot_views_name_the_volume_or_say_it_is_gone() {
        let mut s = crate::testutil::snapshot("monday", cloud_api::SnapshotStatus::Available);
        let t = snapshot_table(std::slice::from_ref(&s), now());
        assert!(t.starts_with("NAME"), "{t}");
        assert!(
            t.contains("monday") && t.contains("data") && t.contains("10G"),
            "{t}"
        );
        s.volume_name = None;
        let d = snapshot_detail(&s, now());
        assert!(d.contains("(deleted)"), "{d}");
        assert!(snapshot_table(&[], now()).contains("cloud snapshot create"));
    }
}

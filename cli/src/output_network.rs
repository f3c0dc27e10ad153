//! Rendering of VPCs, subnets and security groups: tables and key/value views.
//!
//! Like `output`, every renderer takes data (and `now`, for ages) and returns a `String`.

use crate::output::{Table, age, key_values, timestamp};
use crate::rulespec::{format_ports, format_remote, format_rule};
use chrono::{DateTime, Utc};
use cloud_api::{SecurityGroup, SecurityGroupId, Subnet, Vpc};
use std::collections::BTreeMap;

/// Security group ids (as strings) → names, for showing names where the API stores ids.
pub type GroupNames = BTreeMap<String, String>;

pub fn group_names(groups: &[SecurityGroup]) -> GroupNames {
    groups
        .iter()
        .map(|g| (g.id.to_string(), g.name.clone()))
        .collect()
}

/// `web, ssh` (ids whose name is unknown are shown as they are), or `-`.
pub fn group_list(ids: &[SecurityGroupId], names: &GroupNames) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter()
        .map(|id| {
            let id = id.to_string();
            names.get(&id).cloned().unwrap_or(id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

// ---------------------------------------------------------------------------- VPCs

/// `cloud vpc list`.
pub fn vpc_table(items: &[Vpc], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No VPCs. Create one with `cloud vpc create NAME --cidr 10.10.0.0/16`.\n".into();
    }
    let mut t = Table::new(&["NAME", "ID", "CIDR", "VNI", "AGE"]);
    for v in items {
        t.row(vec![
            v.name.clone(),
            v.id.to_string(),
            v.cidr.clone(),
            v.vni.to_string(),
            age(v.created_at, now),
        ]);
    }
    t.render()
}

/// `cloud vpc show`: the VPC, then its subnets.
pub fn vpc_detail(v: &Vpc, subnets: &[Subnet], now: DateTime<Utc>) -> String {
    let mut out = key_values(&[
        ("Name", v.name.clone()),
        ("ID", v.id.to_string()),
        ("CIDR", v.cidr.clone()),
        ("VNI", v.vni.to_string()),
        ("Created", timestamp(Some(v.created_at), now)),
    ]);
    out.push('\n');
    if subnets.is_empty() {
        out.push_str(&format!(
            "No subnets. Create one with `cloud subnet create NAME --vpc {} --cidr CIDR`.\n",
            v.name
        ));
    } else {
        out.push_str("Subnets:\n");
        out.push_str(&subnet_table(subnets, now));
    }
    out
}

// ---------------------------------------------------------------------------- subnets

/// `cloud subnet list`.
pub fn subnet_table(items: &[Subnet], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No subnets in this VPC. Create one with \
            `cloud subnet create NAME --vpc VPC --cidr CIDR`.\n"
            .into();
    }
    let mut t = Table::new(&["NAME", "ID", "CIDR", "GATEWAY", "NAT EGRESS", "AGE"]);
    for s in items {
        t.row(vec![
            s.name.clone(),
            s.id.to_string(),
            s.cidr.clone(),
            s.gateway.clone(),
            yes_no(s.nat_egress),
            age(s.created_at, now),
        ]);
    }
    t.render()
}

/// `cloud subnet show`; `vpc_name` when known.
pub fn subnet_detail(s: &Subnet, vpc_name: Option<&str>, now: DateTime<Utc>) -> String {
    let vpc = match vpc_name {
        Some(name) => format!("{name} ({})", s.vpc_id),
        None => s.vpc_id.to_string(),
    };
    key_values(&[
        ("Name", s.name.clone()),
        ("ID", s.id.to_string()),
        ("VPC", vpc),
        ("CIDR", s.cidr.clone()),
        ("Gateway", s.gateway.clone()),
        ("NAT egress", yes_no(s.nat_egress)),
        ("Created", timestamp(Some(s.created_at), now)),
    ])
}

// ---------------------------------------------------------------------------- security groups

/// `cloud sg list`.
pub fn sg_table(items: &[SecurityGroup], now: DateTime<Utc>) -> String {
    if items.is_empty() {
        return "No security groups. Create one with \
            `cloud sg create NAME --rule ingress:tcp:22:0.0.0.0/0`.\n"
            .into();
    }
    let mut t = Table::new(&["NAME", "ID", "RULES", "DESCRIPTION", "AGE"]);
    for g in items {
        t.row(vec![
            g.name.clone(),
            g.id.to_string(),
            g.rules.len().to_string(),
            crate::output::truncate(&g.description, 48),
            age(g.created_at, now),
        ]);
    }
    t.render()
}

/// `cloud sg show`: the group, then its rules as a table whose last column is the SPEC to
/// give `--rule`. `names` turns referenced group ids into names.
pub fn sg_detail(g: &SecurityGroup, names: &GroupNames, now: DateTime<Utc>) -> String {
    let description = if g.description.is_empty() {
        "-".to_string()
    } else {
        g.description.clone()
    };
    let mut out = key_values(&[
        ("Name", g.name.clone()),
        ("ID", g.id.to_string()),
        ("Description", description),
        ("Created", timestamp(Some(g.created_at), now)),
    ]);
    out.push('\n');
    out.push_str(&rules_table(g, names));
    out
}

/// The rules of a group, or a line saying it has none.
pub fn rules_table(g: &SecurityGroup, names: &GroupNames) -> String {
    if g.rules.is_empty() {
        return format!(
            "No rules: {} lets no traffic through. Add one with \
             `cloud sg rules add {} --rule ingress:tcp:22:0.0.0.0/0`.\n",
            g.name, g.name
        );
    }
    let lookup = |id: &str| names.get(id).cloned();
    let mut t = Table::new(&["DIRECTION", "PROTOCOL", "PORTS", "REMOTE", "SPEC"]);
    for r in &g.rules {
        let ports = format_ports(r);
        t.row(vec![
            r.direction.as_str().to_string(),
            r.protocol.as_str().to_string(),
            if ports.is_empty() {
                "all".into()
            } else {
                ports
            },
            format_remote(r, lookup),
            format_rule(r, lookup),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rulespec::parse_rule;
    use crate::testutil::{now, security_group, subnet, vpc};

    #[test]
    fn vpc_table_columns() {
        let out = vpc_table(&[vpc("prod", "10.10.0.0/16", 60)], now());
        let lines: Vec<&str> = out.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, ["NAME", "ID", "CIDR", "VNI", "AGE"]);
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(row[0], "prod");
        assert_eq!(row[2..], ["10.10.0.0/16", "4242", "1m"]);
        assert!(vpc_table(&[], now()).contains("cloud vpc create"));
    }

    #[test]
    fn vpc_detail_lists_subnets() {
        let v = vpc("prod", "10.10.0.0/16", 60);
        let out = vpc_detail(&v, &[], now());
        assert!(out.contains("VNI:"), "{out}");
        assert!(out.contains("No subnets"), "{out}");
        assert!(out.contains("--vpc prod"), "{out}");
        let s = subnet(&v, "web", "10.10.1.0/24");
        let out = vpc_detail(&v, &[s], now());
        assert!(out.contains("Subnets:"), "{out}");
        assert!(out.contains("10.10.1.1"), "{out}");
    }

    #[test]
    fn subnet_views() {
        let v = vpc("prod", "10.10.0.0/16", 60);
        let mut s = subnet(&v, "web", "10.10.1.0/24");
        s.nat_egress = true;
        let out = subnet_table(std::slice::from_ref(&s), now());
        let header: Vec<&str> = out.lines().next().unwrap().split("  ").collect();
        assert!(header.contains(&"NAT EGRESS"), "{out}");
        assert!(out.lines().nth(1).unwrap().contains(" yes "), "{out}");
        let out = subnet_detail(&s, Some("prod"), now());
        assert!(out.contains(&format!("prod ({})", v.id)), "{out}");
        assert!(out.contains("Gateway:"), "{out}");
        assert!(subnet_detail(&s, None, now()).contains(&v.id.to_string()));
        assert!(subnet_table(&[], now()).contains("No subnets"));
    }

    #[test]
    fn sg_views_print_copyable_specs() {
        let web = security_group("web", &[]);
        let mut db = security_group(
            "db",
            &[
                "ingress:tcp:5432:sg=WEB",
                "egress:all::0.0.0.0/0",
                "ingress:icmp::10.0.0.0/8",
            ],
        );
        db.rules[0].source_group = Some(web.id.to_string());
        let names = group_names(&[web.clone(), db.clone()]);
        let out = sg_detail(&db, &names, now());
        for spec in [
            "ingress:tcp:5432:sg=web",
            "egress:all::0.0.0.0/0",
            "ingress:icmp::10.0.0.0/8",
        ] {
            let line = out.lines().find(|l| l.ends_with(spec));
            assert!(line.is_some(), "{spec} missing: {out}");
            assert!(parse_rule(spec).is_ok());
        }
        assert!(out.contains("DIRECTION"), "{out}");
        // Unknown ids are printed as ids, which parse too.
        let out = sg_detail(&db, &GroupNames::new(), now());
        assert!(out.contains(&format!("sg={}", web.id)), "{out}");
        let out = sg_detail(&web, &names, now());
        assert!(out.contains("No rules"), "{out}");

        let out = sg_table(&[web, db], now());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{out}");
        assert!(
            lines[2].starts_with("db") && lines[2].contains(" 3 "),
            "{out}"
        );
        assert!(sg_table(&[], now()).contains("No security groups"));
    }

    #[test]
    fn group_lists_use_names() {
        let web = security_group("web", &[]);
        let other = SecurityGroupId::new();
        let names = group_names(std::slice::from_ref(&web));
        assert_eq!(
            group_list(&[web.id, other], &names),
            format!("web, {other}")
        );
        assert_eq!(group_list(&[], &names), "-");
    }

    #[test]
    fn instances_in_a_subnet_show_their_network() {
        let mut i = crate::testutil::instance("web", cloud_api::InstanceStatus::Running, 5);
        let subnet = cloud_api::SubnetId::new();
        let (web, other) = (
            cloud_api::SecurityGroupId::new(),
            cloud_api::SecurityGroupId::new(),
        );
        i.subnet_id = Some(subnet);
        i.private_ip = Some("10.10.1.5".into());
        i.mac = Some("02:00:0a:0a:01:05".into());
        i.security_groups = vec![web, other];
        let names = GroupNames::from([(web.to_string(), "web".to_string())]);
        let out = crate::output::instance_detail(&i, now(), &names);
        let value = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{key} missing: {out}"))
                .to_string()
        };
        assert_eq!(value("Subnet"), subnet.to_string());
        assert_eq!(value("Private IP"), "10.10.1.5");
        assert_eq!(value("MAC"), "02:00:0a:0a:01:05");
        assert_eq!(value("Security groups"), format!("web, {other}"));

        let plain = crate::testutil::instance("batch", cloud_api::InstanceStatus::Running, 5);
        let out = crate::output::instance_table(&[i, plain], now());
        let lines: Vec<&str> = out.lines().collect();
        let col = lines[0].find("IP").unwrap();
        assert_eq!(&lines[1][col..col + 9], "10.10.1.5", "{out}");
        assert_eq!(&lines[2][col..col + 2], "- ", "{out}");
    }
}

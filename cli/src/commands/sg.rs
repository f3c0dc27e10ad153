//! `cloud sg …` (security groups and their rules) and `cloud instance sg …` (the groups of an
//! instance).

use super::Ctx;
use crate::cli_network::{InstanceSgArgs, InstanceSgCmd, RuleChange, SgCmd, SgRulesCmd};
use crate::output::{self, OutputFormat, emit};
use crate::output_network::{self as net, GroupNames};
use crate::rulespec::{format_rule, same_rule};
use anyhow::{Context, Result};
use chrono::Utc;
use cloud_api::{
    Client, CreateSecurityGroupRequest, Instance, ReplaceRulesRequest, SecurityGroup,
    SecurityGroupId, SecurityGroupRule,
};

pub async fn run(ctx: &Ctx, cmd: SgCmd) -> Result<()> {
    let client = ctx.client()?;
    let now = Utc::now();
    let text = match cmd {
        SgCmd::Create {
            name,
            description,
            rules,
        } => {
            let req = CreateSecurityGroupRequest {
                name,
                description: description.unwrap_or_default(),
                rules: rules.rules,
            };
            let group = client.sg_create(&req).await?;
            render_group(ctx.output, &client, &group).await?
        }
        SgCmd::List => {
            let items = client.sg_list().await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&items)?,
                OutputFormat::Table => net::sg_table(&items, now),
            }
        }
        SgCmd::Show(t) => {
            let group = client.sg_get(&t.name).await?;
            render_group(ctx.output, &client, &group).await?
        }
        SgCmd::Rm(t) => {
            // Resolve the name first and delete by id: what is printed is what was deleted.
            let group = client.sg_get(&t.name).await?;
            client.sg_delete(&group.id.to_string()).await?;
            match ctx.output {
                OutputFormat::Json => output::to_json(&group)?,
                OutputFormat::Table => format!("{}\n", group.name),
            }
        }
        SgCmd::Rules(cmd) => rules(ctx, &client, cmd).await?,
    };
    emit(&text)
}

/// JSON, or the detail view with referenced groups by name.
async fn render_group(
    format: OutputFormat,
    client: &Client,
    group: &SecurityGroup,
) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => output::to_json(group)?,
        OutputFormat::Table => {
            let names = rule_names(client, group, &[]).await;
            net::sg_detail(group, &names, Utc::now())
        }
    })
}

/// Names of the groups the rules of `group` (and `extra`) refer to, best effort: ids are
/// shown when the list cannot be fetched.
async fn rule_names(
    client: &Client,
    group: &SecurityGroup,
    extra: &[SecurityGroupRule],
) -> GroupNames {
    let mut names = net::group_names(std::slice::from_ref(group));
    let others = group
        .rules
        .iter()
        .chain(extra)
        .filter_map(|r| r.source_group.as_deref())
        .any(|g| !names.contains_key(g));
    if others && let Ok(groups) = client.sg_list().await {
        names.extend(net::group_names(&groups));
    }
    names
}

async fn rules(ctx: &Ctx, client: &Client, cmd: SgRulesCmd) -> Result<String> {
    let updated = match cmd {
        SgRulesCmd::Set { group, rules, none } => {
            let rules = if none { Vec::new() } else { rules.rules };
            client
                .sg_replace_rules(&group, &ReplaceRulesRequest { rules })
                .await?
        }
        SgRulesCmd::Add(change) => {
            let (group, wanted) = fetch_and_resolve(client, &change).await?;
            let (rules, already) = with_added(&group.rules, wanted);
            for r in &already {
                eprintln!("{}: already has {}", group.name, format_rule(r, |_| None));
            }
            if already.len() == change.rules.len() {
                group
            } else {
                replace(client, &group, rules).await?
            }
        }
        SgRulesCmd::Rm(change) => {
            let (group, unwanted) = fetch_and_resolve(client, &change).await?;
            match without(&group.rules, &unwanted) {
                Ok(rules) => replace(client, &group, rules).await?,
                Err(missing) => {
                    let names = rule_names(client, &group, &missing).await;
                    return Err(no_such_rules(&group, &missing, &names));
                }
            }
        }
    };
    render_group(ctx.output, client, &updated).await
}

async fn replace(
    client: &Client,
    group: &SecurityGroup,
    rules: Vec<SecurityGroupRule>,
) -> Result<SecurityGroup> {
    Ok(client
        .sg_replace_rules(&group.id.to_string(), &ReplaceRulesRequest { rules })
        .await?)
}

/// The group, and the rules of `--rule` with `sg=NAME` turned into the ids the API stores,
/// so they compare with the group's rules.
async fn fetch_and_resolve(
    client: &Client,
    change: &RuleChange,
) -> Result<(SecurityGroup, Vec<SecurityGroupRule>)> {
    let group = client.sg_get(&change.group).await?;
    let mut rules = change.rules.clone();
    for rule in &mut rules {
        let Some(reference) = rule.source_group.clone() else {
            continue;
        };
        let id = match reference.parse::<SecurityGroupId>() {
            Ok(id) => id,
            Err(_) if reference == group.name => group.id,
            Err(_) => {
                client
                    .sg_get(&reference)
                    .await
                    .with_context(|| format!("cannot resolve sg={reference}"))?
                    .id
            }
        };
        rule.source_group = Some(id.to_string());
    }
    Ok((group, rules))
}

/// `existing` plus those of `new` it does not have yet; and the ones it already had.
pub fn with_added(
    existing: &[SecurityGroupRule],
    new: Vec<SecurityGroupRule>,
) -> (Vec<SecurityGroupRule>, Vec<SecurityGroupRule>) {
    let mut rules = existing.to_vec();
    let mut already = Vec::new();
    for rule in new {
        if rules.iter().any(|r| same_rule(r, &rule)) {
            already.push(rule);
        } else {
            rules.push(rule);
        }
    }
    (rules, already)
}

/// `existing` without every rule matching one of `unwanted`; or the unwanted rules that match
/// nothing (then nothing is removed).
pub fn without(
    existing: &[SecurityGroupRule],
    unwanted: &[SecurityGroupRule],
) -> Result<Vec<SecurityGroupRule>, Vec<SecurityGroupRule>> {
    let missing: Vec<SecurityGroupRule> = unwanted
        .iter()
        .filter(|u| !existing.iter().any(|r| same_rule(r, u)))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    Ok(existing
        .iter()
        .filter(|r| !unwanted.iter().any(|u| same_rule(r, u)))
        .cloned()
        .collect())
}

/// The error of `rules rm` for rules the group does not have, listing the ones it has.
fn no_such_rules(
    group: &SecurityGroup,
    missing: &[SecurityGroupRule],
    names: &GroupNames,
) -> anyhow::Error {
    let lookup = |id: &str| names.get(id).cloned();
    let missing: Vec<String> = missing.iter().map(|r| format_rule(r, lookup)).collect();
    let mut msg = format!(
        "security group {} has no rule {}; nothing was changed",
        group.name,
        missing.join(", ")
    );
    if group.rules.is_empty() {
        msg.push_str(" (it has no rules)");
    } else {
        msg.push_str("\nits rules are:");
        for r in &group.rules {
            msg.push_str(&format!("\n  {}", format_rule(r, lookup)));
        }
    }
    anyhow::anyhow!(msg)
}

pub async fn instance_sg(ctx: &Ctx, client: &Client, cmd: InstanceSgCmd) -> Result<()> {
    let inst = match &cmd {
        InstanceSgCmd::Add(InstanceSgArgs { instance, group }) => {
            client.instance_sg_attach(instance, group).await?
        }
        InstanceSgCmd::Rm(InstanceSgArgs { instance, group }) => {
            client.instance_sg_detach(instance, group).await?
        }
    };
    emit(&match ctx.output {
        OutputFormat::Json => output::to_json(&inst)?,
        OutputFormat::Table => {
            let names = names_of(client, &inst.security_groups).await;
            instance_groups_line(&inst, &names)
        }
    })
}

/// `web: security groups ssh, web`.
fn instance_groups_line(inst: &Instance, names: &GroupNames) -> String {
    format!(
        "{}: security groups {}\n",
        inst.name,
        net::group_list(&inst.security_groups, names)
    )
}

/// Names of these groups, best effort: when the list cannot be fetched, ids are shown.
pub async fn names_of(client: &Client, ids: &[SecurityGroupId]) -> GroupNames {
    if ids.is_empty() {
        return GroupNames::new();
    }
    client
        .sg_list()
        .await
        .map(|groups| net::group_names(&groups))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rulespec::parse_rule;
    use crate::testutil::{instance, security_group};
    use cloud_api::InstanceStatus;

    fn rules(specs: &[&str]) -> Vec<SecurityGroupRule> {
        specs.iter().map(|s| parse_rule(s).unwrap()).collect()
    }

    #[test]
    fn adding_keeps_order_and_skips_duplicates() {
        let existing = rules(&["ingress:tcp:22:0.0.0.0/0"]);
        let (all, already) = with_added(
            &existing,
            rules(&["ingress:tcp:22:0.0.0.0/0", "ingress:tcp:80:0.0.0.0/0"]),
        );
        assert_eq!(
            all,
            rules(&["ingress:tcp:22:0.0.0.0/0", "ingress:tcp:80:0.0.0.0/0"])
        );
        assert_eq!(already, rules(&["ingress:tcp:22:0.0.0.0/0"]));
    }

    #[test]
    fn removing_drops_matches_or_names_the_missing() {
        let existing = rules(&[
            "ingress:tcp:22:0.0.0.0/0",
            "ingress:tcp:80:0.0.0.0/0",
            "egress:all::0.0.0.0/0",
        ]);
        let left = without(&existing, &rules(&["ingress:tcp:22:0.0.0.0/0"])).unwrap();
        assert_eq!(
            left,
            rules(&["ingress:tcp:80:0.0.0.0/0", "egress:all::0.0.0.0/0"])
        );
        let missing = without(
            &existing,
            &rules(&["ingress:tcp:80:0.0.0.0/0", "ingress:udp:53:0.0.0.0/0"]),
        )
        .unwrap_err();
        assert_eq!(missing, rules(&["ingress:udp:53:0.0.0.0/0"]));
    }

    #[test]
    fn missing_rule_errors_list_the_rules_there_are() {
        let g = security_group("web", &["ingress:tcp:80:0.0.0.0/0"]);
        let err = no_such_rules(
            &g,
            &rules(&["ingress:tcp:22:0.0.0.0/0"]),
            &GroupNames::new(),
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("security group web has no rule ingress:tcp:22:0.0.0.0/0"),
            "{msg}"
        );
        assert!(msg.contains("nothing was changed"), "{msg}");
        assert!(msg.contains("\n  ingress:tcp:80:0.0.0.0/0"), "{msg}");
        let empty = security_group("empty", &[]);
        let msg = no_such_rules(&empty, &g.rules, &GroupNames::new()).to_string();
        assert!(msg.ends_with("(it has no rules)"), "{msg}");
    }

    #[test]
    fn instance_group_changes_print_the_groups() {
        let web = security_group("web", &[]);
        let mut i = instance("api", InstanceStatus::Running, 5);
        i.security_groups = vec![web.id];
        let names = net::group_names(std::slice::from_ref(&web));
        assert_eq!(
            instance_groups_line(&i, &names),
            "api: security groups web\n"
        );
        i.security_groups.clear();
        assert_eq!(instance_groups_line(&i, &names), "api: security groups -\n");
    }
}

//! `cloud config …`: set, unset and show the endpoint and key.

use super::Ctx;
use crate::cli::ConfigCmd;
use crate::config::{self as cfg, ConfigKey, Resolved, Setting, Source};
use crate::output::{OutputFormat, emit, key_values, to_json};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub fn run(ctx: &Ctx, cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Set { key, value } => {
            let key = ConfigKey::parse(&key)?;
            let path = require_path(ctx)?;
            cfg::set(&path, key, &value)?;
            let shown = match key {
                ConfigKey::ApiKey => cfg::redact(&value),
                ConfigKey::ApiUrl => value,
            };
            emit(&format!(
                "{} = {shown} (saved to {})\n",
                key.cli_name(),
                path.display()
            ))
        }
        ConfigCmd::Unset { key } => {
            let key = ConfigKey::parse(&key)?;
            let path = require_path(ctx)?;
            let msg = if cfg::unset(&path, key)? {
                format!("{} removed from {}\n", key.cli_name(), path.display())
            } else {
                format!("{} was not set in {}\n", key.cli_name(), path.display())
            };
            emit(&msg)
        }
        ConfigCmd::Show => emit(&render_show(
            ctx.config_path.as_deref(),
            &ctx.resolved,
            ctx.output,
        )?),
    }
}

fn require_path(ctx: &Ctx) -> Result<PathBuf> {
    ctx.config_path
        .clone()
        .context("cannot locate the config file: set HOME, XDG_CONFIG_HOME or CLOUD_CONFIG")
}

#[derive(Serialize)]
struct ShownSetting {
    value: String,
    source: Source,
}

#[derive(Serialize)]
struct Shown {
    config_file: Option<String>,
    api_url: ShownSetting,
    /// Redacted: its first 8 characters.
    api_key: Option<ShownSetting>,
}

/// `cloud config show`: the effective settings and their sources; the key is redacted.
pub fn render_show(
    path: Option<&Path>,
    resolved: &Resolved,
    format: OutputFormat,
) -> Result<String> {
    let shown = |s: &Setting, secret: bool| ShownSetting {
        value: if secret {
            cfg::redact(&s.value)
        } else {
            s.value.clone()
        },
        source: s.source,
    };
    let view = Shown {
        config_file: path.map(|p| p.display().to_string()),
        api_url: shown(&resolved.api_url, false),
        api_key: resolved.api_key.as_ref().map(|k| shown(k, true)),
    };
    if format == OutputFormat::Json {
        return to_json(&view);
    }
    let file = match path {
        Some(p) if p.exists() => p.display().to_string(),
        Some(p) => format!("{} (not created yet)", p.display()),
        None => "- (set HOME, XDG_CONFIG_HOME or CLOUD_CONFIG)".into(),
    };
    let from = |s: &ShownSetting| format!("{} (from {})", s.value, s.source);
    Ok(key_values(&[
        ("Config file", file),
        ("API URL", from(&view.api_url)),
        (
            "API key",
            view.api_key
                .as_ref()
                .map_or_else(|| "(not set)".into(), from),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::GlobalArgs;
    use crate::config::{ENV_API_KEY, ENV_CONFIG};

    const KEY: &str = "tc_0123456789abcdefSECRETPART";

    #[test]
    fn show_redacts_the_key_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        cfg::set(&path, ConfigKey::ApiKey, KEY).unwrap();
        let p = path.display().to_string();
        let env = move |k: &str| (k == ENV_CONFIG).then(|| p.clone());
        let ctx = Ctx::new(&GlobalArgs::default(), &env).unwrap();

        let table = render_show(
            ctx.config_path.as_deref(),
            &ctx.resolved,
            OutputFormat::Table,
        )
        .unwrap();
        assert!(!table.contains("SECRETPART"), "{table}");
        assert!(table.contains("tc_01234…"), "{table}");
        assert!(table.contains("from config file"), "{table}");
        assert!(
            table.contains("http://127.0.0.1:8080 (from default)"),
            "{table}"
        );
        assert!(table.contains(&path.display().to_string()), "{table}");

        let json = render_show(
            ctx.config_path.as_deref(),
            &ctx.resolved,
            OutputFormat::Json,
        )
        .unwrap();
        assert!(!json.contains("SECRETPART"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["api_key"]["value"], "tc_01234…");
        assert_eq!(v["api_key"]["source"], "file");
        assert_eq!(v["api_url"]["source"], "default");
    }

    #[test]
    fn ctx_applies_flag_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        cfg::set(&path, ConfigKey::ApiUrl, "http://file:1").unwrap();
        cfg::set(&path, ConfigKey::ApiKey, "filekey").unwrap();
        let p = path.display().to_string();
        let env = move |k: &str| match k {
            ENV_CONFIG => Some(p.clone()),
            ENV_API_KEY => Some("envkey".to_string()),
            _ => None,
        };
        let flags = GlobalArgs {
            api_url: Some("http://flag:1".into()),
            ..GlobalArgs::default()
        };
        let ctx = Ctx::new(&flags, &env).unwrap();
        assert_eq!(ctx.resolved.api_url.value, "http://flag:1");
        assert_eq!(ctx.resolved.api_key.as_ref().unwrap().value, "envkey");
        assert_eq!(ctx.config_path.as_deref(), Some(path.as_path()));
        assert!(ctx.client().is_ok());
        let table = render_show(None, &ctx.resolved, OutputFormat::Table).unwrap();
        assert!(table.contains("(from flag)") && table.contains("(from environment)"));
    }
}

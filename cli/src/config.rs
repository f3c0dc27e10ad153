//! Where the CLI finds its endpoint and key: flags > environment > config file > default.
//!
//! The config file is TOML (`api_url`, `api_key`) at `$CLOUD_CONFIG`, else
//! `$XDG_CONFIG_HOME/thecloud/config.toml`, else `~/.config/thecloud/config.toml`. It holds a
//! key, so it is always written with mode 0600.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
pub const ENV_API_URL: &str = "CLOUD_API_URL";
pub const ENV_API_KEY: &str = "CLOUD_API_KEY";
pub const ENV_CONFIG: &str = "CLOUD_CONFIG";

/// Reads one environment variable; empty values count as unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values treated as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub source: Source,
}

/// The endpoint and key the CLI will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub api_url: Setting,
    pub api_key: Option<Setting>,
}

/// The keys `cloud config set` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKey {
    ApiUrl,
    ApiKey,
}

impl ConfigKey {
    pub const ALL: [ConfigKey; 2] = [ConfigKey::ApiUrl, ConfigKey::ApiKey];

    /// Accepts `api-url` and `api_url` spellings.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().replace('_', "-").as_str() {
            "api-url" => Ok(ConfigKey::ApiUrl),
            "api-key" => Ok(ConfigKey::ApiKey),
            _ => bail!(
                "unknown config key {s:?}: valid keys are {}",
                Self::ALL.map(|k| k.cli_name()).join(", ")
            ),
        }
    }

    pub fn cli_name(self) -> &'static str {
        match self {
            ConfigKey::ApiUrl => "api-url",
            ConfigKey::ApiKey => "api-key",
        }
    }

    /// The key's name inside the TOML file.
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigKey::ApiUrl => "api_url",
            ConfigKey::ApiKey => "api_key",
        }
    }
}

/// The parts of the config file the CLI reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
}

/// `$CLOUD_CONFIG`, else `$XDG_CONFIG_HOME/thecloud/config.toml`, else
/// `$HOME/.config/thecloud/config.toml`; `None` when none of these is set.
pub fn config_path(env: EnvLookup<'_>) -> Option<PathBuf> {
    if let Some(p) = env(ENV_CONFIG) {
        return Some(PathBuf::from(p));
    }
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("thecloud").join("config.toml"))
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(toml::Table::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.parse::<toml::Table>()
        .with_context(|| format!("invalid config file {}", path.display()))
}

/// Reads the config file; a missing file is an empty config.
pub fn load(path: Option<&Path>) -> Result<ConfigFile> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let table = read_table(path)?;
    let get = |key: ConfigKey| -> Result<Option<String>> {
        match table.get(key.file_name()) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!(
                "invalid config file {}: `{}` must be a string",
                path.display(),
                key.file_name()
            ),
        }
    };
    Ok(ConfigFile {
        api_url: get(ConfigKey::ApiUrl)?,
        api_key: get(ConfigKey::ApiKey)?,
    })
}

/// Applies the precedence flag > environment > file > default.
pub fn resolve(
    flag_url: Option<&str>,
    flag_key: Option<&str>,
    env: EnvLookup<'_>,
    file: &ConfigFile,
) -> Resolved {
    let pick = |flag: Option<&str>, var: &str, file: &Option<String>| -> Option<Setting> {
        let setting = |value: String, source| Setting { value, source };
        flag.filter(|v| !v.is_empty())
            .map(|v| setting(v.to_string(), Source::Flag))
            .or_else(|| env(var).map(|v| setting(v, Source::Env)))
            .or_else(|| file.clone().map(|v| setting(v, Source::File)))
    };
    Resolved {
        api_url: pick(flag_url, ENV_API_URL, &file.api_url).unwrap_or(Setting {
            value: DEFAULT_API_URL.to_string(),
            source: Source::Default,
        }),
        api_key: pick(flag_key, ENV_API_KEY, &file.api_key),
    }
}

/// Checks a value before it is stored.
pub fn validate(key: ConfigKey, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        bail!(
            "empty value for {}: use `cloud config unset {}` to remove it",
            key.cli_name(),
            key.cli_name()
        );
    }
    if key == ConfigKey::ApiUrl {
        cloud_api::Client::new(value, None)?;
    }
    Ok(())
}

/// Sets one key in the config file (creating it), keeping the other keys.
pub fn set(path: &Path, key: ConfigKey, value: &str) -> Result<()> {
    validate(key, value)?;
    let mut table = read_table(path)?;
    table.insert(
        key.file_name().to_string(),
        toml::Value::String(value.to_string()),
    );
    write_private(path, &toml::to_string(&table)?)
}

/// Removes one key from the config file; `false` when it was not set.
pub fn unset(path: &Path, key: ConfigKey) -> Result<bool> {
    let mut table = read_table(path)?;
    if table.remove(key.file_name()).is_none() {
        return Ok(false);
    }
    write_private(path, &toml::to_string(&table)?)?;
    Ok(true)
}

/// Writes `contents` to `path` with mode 0600 (via a temporary file and a rename, so a
/// crash never leaves a half-written file), creating the parent directory with mode 0700.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// The first 8 characters of a key, then `…`: enough to tell keys apart, not to use one.
pub fn redact(key: &str) -> String {
    let n = key.chars().count();
    // Short keys: still hide half of them.
    let shown = if n <= 8 { n / 2 } else { 8 };
    format!("{}…", key.chars().take(shown).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned().filter(|v| !v.is_empty())
    }

    fn file(url: Option<&str>, key: Option<&str>) -> ConfigFile {
        ConfigFile {
            api_url: url.map(String::from),
            api_key: key.map(String::from),
        }
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let f = file(Some("http://file:1"), Some("filekey"));
        let env = env_of(&[(ENV_API_URL, "http://env:1"), (ENV_API_KEY, "envkey")]);
        let none = env_of(&[]);

        let r = resolve(Some("http://flag:1"), Some("flagkey"), &env, &f);
        assert_eq!(r.api_url.value, "http://flag:1");
        assert_eq!(r.api_url.source, Source::Flag);
        assert_eq!(
            r.api_key.as_ref().map(|k| k.value.as_str()),
            Some("flagkey")
        );

        let r = resolve(None, None, &env, &f);
        assert_eq!(r.api_url.value, "http://env:1");
        assert_eq!(r.api_url.source, Source::Env);
        assert_eq!(
            r.api_key.map(|k| (k.value, k.source)),
            Some(("envkey".into(), Source::Env))
        );

        let r = resolve(None, None, &none, &f);
        assert_eq!(r.api_url.value, "http://file:1");
        assert_eq!(r.api_url.source, Source::File);
        assert_eq!(r.api_key.map(|k| k.source), Some(Source::File));

        let r = resolve(None, None, &none, &ConfigFile::default());
        assert_eq!(r.api_url.value, DEFAULT_API_URL);
        assert_eq!(r.api_url.source, Source::Default);
        assert_eq!(r.api_key, None);

        // Each setting resolves on its own.
        let r = resolve(None, None, &env_of(&[(ENV_API_KEY, "envkey")]), &f);
        assert_eq!(r.api_url.source, Source::File);
        assert_eq!(r.api_key.map(|k| k.source), Some(Source::Env));
    }

    #[test]
    fn precedence_with_a_real_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        set(&path, ConfigKey::ApiUrl, "http://from-file:9").unwrap();
        set(&path, ConfigKey::ApiKey, "key-from-file").unwrap();
        let loaded = load(Some(&path)).unwrap();
        let r = resolve(None, None, &env_of(&[]), &loaded);
        assert_eq!(r.api_url.value, "http://from-file:9");
        assert_eq!(r.api_key.map(|k| k.value), Some("key-from-file".into()));
        let r = resolve(
            None,
            None,
            &env_of(&[(ENV_API_URL, "http://from-env:9")]),
            &loaded,
        );
        assert_eq!(r.api_url.value, "http://from-env:9");
        let r = resolve(
            Some("http://from-flag:9"),
            None,
            &env_of(&[(ENV_API_URL, "http://from-env:9")]),
            &loaded,
        );
        assert_eq!(r.api_url.value, "http://from-flag:9");
    }

    #[test]
    fn config_path_resolution() {
        let p = config_path(&env_of(&[
            (ENV_CONFIG, "/tmp/c.toml"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]));
        assert_eq!(p, Some(PathBuf::from("/tmp/c.toml")));
        let p = config_path(&env_of(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/u")]));
        assert_eq!(p, Some(PathBuf::from("/xdg/thecloud/config.toml")));
        let p = config_path(&env_of(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]));
        assert_eq!(
            p,
            Some(PathBuf::from("/home/u/.config/thecloud/config.toml"))
        );
        assert_eq!(config_path(&env_of(&[])), None);
    }

    #[test]
    fn config_file_is_written_0600_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("config.toml");
        set(&path, ConfigKey::ApiKey, "secret-key-123").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // An existing, too-open file is tightened on the next write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("future_key = 3\n");
        std::fs::write(&path, text).unwrap();
        set(&path, ConfigKey::ApiUrl, "https://cloud.example:443").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("future_key = 3"), "{text}");
        let loaded = load(Some(&path)).unwrap();
        assert_eq!(
            loaded,
            file(Some("https://cloud.example:443"), Some("secret-key-123"))
        );

        assert!(unset(&path, ConfigKey::ApiKey).unwrap());
        assert!(!unset(&path, ConfigKey::ApiKey).unwrap());
        assert_eq!(load(Some(&path)).unwrap().api_key, None);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let err = ConfigKey::parse("api-token").unwrap_err().to_string();
        assert!(err.contains("api-token"), "{err}");
        assert!(err.contains("api-url") && err.contains("api-key"), "{err}");
        assert_eq!(ConfigKey::parse("api_url").unwrap(), ConfigKey::ApiUrl);
        assert_eq!(ConfigKey::parse("api-key").unwrap(), ConfigKey::ApiKey);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(set(&path, ConfigKey::ApiUrl, "not a url").is_err());
        assert!(set(&path, ConfigKey::ApiUrl, "ftp://x").is_err());
        assert!(set(&path, ConfigKey::ApiKey, "").is_err());
        assert!(!path.exists(), "nothing written on a rejected value");
    }

    #[test]
    fn missing_file_is_empty_and_broken_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(load(Some(&path)).unwrap(), ConfigFile::default());
        assert_eq!(load(None).unwrap(), ConfigFile::default());
        std::fs::write(&path, "api_url = [").unwrap();
        let err = format!("{:#}", load(Some(&path)).unwrap_err());
        assert!(err.contains("config.toml"), "{err}");
        std::fs::write(&path, "api_url = 3").unwrap();
        assert!(load(Some(&path)).is_err());
    }

    #[test]
    fn redaction_shows_at_most_eight_characters() {
        assert_eq!(redact("0123456789abcdef"), "01234567…");
        assert_eq!(redact("abcd"), "ab…");
        assert!(!redact("secretsecret").contains("secretsecret"));
    }
}

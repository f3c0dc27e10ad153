//! Scheduler configuration: a TOML file (`--config`, unknown keys rejected) overridden by
//! command-line flags, with defaults that run a single-host platform.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The file format. Every key is optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub http_listen: Option<SocketAddr>,
    pub grpc_listen: Option<SocketAddr>,
    /// e.g. "10s", "500ms", "2m".
    pub node_down_after: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub telemetry_interval: Option<String>,
    /// Extra DNS names / IPs for the agent-facing TLS certificate.
    pub tls_san: Option<Vec<String>>,
    /// "text" (default) or "json".
    pub log_format: Option<String>,
    /// "binpack" (default) or "spread": how to choose among nodes that fit.
    pub placement_strategy: Option<String>,
    /// How long a node stays down before its `always`/`on-failure` instances move, e.g. "2s".
    pub reschedule_after: Option<String>,
    /// Down or draining nodes whose instances are moved, per second (rate limit).
    pub evictions_per_second: Option<f64>,
    /// When more than this fraction of nodes is down, nothing is moved (a partitioned
    /// scheduler must not reschedule the fleet), e.g. 0.5.
    pub max_down_fraction: Option<f64>,
    /// Whether anyone may create an account and a project (`POST /v1/auth/register`).
    pub allow_registration: Option<bool>,
    /// Requests per second each API key may make (token bucket; 0 disables), e.g. 100.
    pub rate_limit_per_second: Option<f64>,
    /// Requests a key may make at once above its rate, e.g. 200.
    pub rate_limit_burst: Option<u32>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// The resolved configuration the scheduler runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `None`: SQLite in the data dir.
    pub database_url: Option<String>,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub node_down_after: Duration,
    pub heartbeat_interval: Duration,
    pub telemetry_interval: Duration,
    pub tls_san: Vec<String>,
    pub log_json: bool,
    pub spread_by_default: bool,
    pub reschedule_after: Duration,
    pub evictions_per_second: f64,
    pub max_down_fraction: f64,
    pub allow_registration: bool,
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: u32,
}

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_GRPC: &str = "127.0.0.1:7443";

impl Config {
    /// Defaults for a data dir: loopback listeners, SQLite, 10 s down detection.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            node_down_after: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            telemetry_interval: Duration::from_secs(5),
            tls_san: Vec::new(),
            log_json: false,
            spread_by_default: false,
            reschedule_after: Duration::from_secs(2),
            evictions_per_second: 5.0,
            max_down_fraction: 0.5,
            allow_registration: false,
            rate_limit_per_second: 100.0,
            rate_limit_burst: 200,
        }
    }

    /// Applies a config file over the defaults. `data_dir` must come from somewhere.
    pub fn from_file(
        file: ConfigFile,
        data_dir_flag: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let data_dir = data_dir_flag
            .or(file.data_dir)
            .ok_or(ConfigError::Invalid {
                field: "data_dir",
                message: "required (flag --data-dir or `data_dir` in the config file)".into(),
            })?;
        let mut c = Self::with_data_dir(data_dir);
        c.database_url = file.database_url;
        if let Some(a) = file.http_listen {
            c.http_listen = a;
        }
        if let Some(a) = file.grpc_listen {
            c.grpc_listen = a;
        }
        if let Some(s) = file.node_down_after {
            c.node_down_after = parse_duration("node_down_after", &s)?;
        }
        if let Some(s) = file.heartbeat_interval {
            c.heartbeat_interval = parse_duration("heartbeat_interval", &s)?;
        }
        if let Some(s) = file.telemetry_interval {
            c.telemetry_interval = parse_duration("telemetry_interval", &s)?;
        }
        c.tls_san = file.tls_san.unwrap_or_default();
        match file.placement_strategy.as_deref() {
            None | Some("binpack") => {}
            Some("spread") => c.spread_by_default = true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "placement_strategy",
                    message: format!("{other:?}: expected \"binpack\" or \"spread\""),
                });
            }
        }
        if let Some(s) = file.reschedule_after {
            c.reschedule_after = parse_duration("reschedule_after", &s)?;
        }
        if let Some(v) = file.evictions_per_second {
            c.evictions_per_second = v;
        }
        if let Some(v) = file.max_down_fraction {
            c.max_down_fraction = v;
        }
        if let Some(v) = file.allow_registration {
            c.allow_registration = v;
        }
        if let Some(v) = file.rate_limit_per_second {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ConfigError::Invalid {
                    field: "rate_limit_per_second",
                    message: format!("{v} must be 0 (off) or a positive number"),
                });
            }
            c.rate_limit_per_second = v;
        }
        if let Some(v) = file.rate_limit_burst {
            c.rate_limit_burst = v.max(1);
        }
        match file.log_format.as_deref() {
            None | Some("text") => {}
            Some("json") => c.log_json = true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    field: "log_format",
                    message: format!("{other:?}: expected \"text\" or \"json\""),
                });
            }
        }
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "heartbeat_interval",
                message: "must be greater than zero".into(),
            });
        }
        if self.node_down_after < self.heartbeat_interval * 2 {
            return Err(ConfigError::Invalid {
                field: "node_down_after",
                message: format!(
                    "must be at least twice heartbeat_interval ({:?})",
                    self.heartbeat_interval
                ),
            });
        }
        if !(self.evictions_per_second > 0.0 && self.evictions_per_second.is_finite()) {
            return Err(ConfigError::Invalid {
                field: "evictions_per_second",
                message: "must be a positive number".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.max_down_fraction) {
            return Err(ConfigError::Invalid {
                field: "max_down_fraction",
                message: "must be between 0 and 1".into(),
            });
        }
        if self.telemetry_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "telemetry_interval",
                message: "must be greater than zero".into(),
            });
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| crate::store::Store::sqlite_url_for(&self.data_dir))
    }
}

/// `"10s"`, `"500ms"`, `"2m"`, `"1h"` → Duration.
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Invalid {
        field,
        message: format!("{s:?}: expected a duration like \"10s\", \"500ms\" or \"2m\""),
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let f = ConfigFile::parse(
            r#"
            data_dir = "/var/lib/thecloud"
            database_url = "postgres://u:p@db/thecloud"
            http_listen = "0.0.0.0:8080"
            grpc_listen = "0.0.0.0:7443"
            node_down_after = "30s"
            heartbeat_interval = "500ms"
            telemetry_interval = "10s"
            tls_san = ["cloud.example.com", "10.0.0.5"]
            log_format = "json"
            placement_strategy = "spread"
            reschedule_after = "5s"
            evictions_per_second = 2.5
            max_down_fraction = 0.3
            "#,
        )
        .unwrap();
        let c = Config::from_file(f, None).unwrap();
        assert_eq!(c.node_down_after, Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.http_listen.port(), 8080);
        assert!(c.log_json);
        assert_eq!(c.tls_san.len(), 2);
        assert!(c.spread_by_default);
        assert_eq!(c.reschedule_after, Duration::from_secs(5));
        assert_eq!((c.evictions_per_second, c.max_down_fraction), (2.5, 0.3));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let err = ConfigFile::parse("data_dir = \"/x\"\nnode_down_afer = \"5s\"\n").unwrap_err();
        assert!(err.contains("node_down_afer"), "{err}");
        let f = ConfigFile::parse("node_down_after = \"soon\"").unwrap();
        let err = Config::from_file(f, Some("/x".into())).unwrap_err();
        assert!(err.to_string().contains("node_down_after"), "{err}");
        let f = ConfigFile::parse("log_format = \"xml\"").unwrap();
        assert!(Config::from_file(f, Some("/x".into())).is_err());
        let f = ConfigFile::parse("max_down_fraction = 1.5").unwrap();
        assert!(Config::from_file(f, Some("/x".into())).is_err());
        let f = ConfigFile::parse("placement_strategy = \"random\"").unwrap();
        assert!(Config::from_file(f, Some("/x".into())).is_err());
        let f = ConfigFile::parse("node_down_after = \"1s\"").unwrap();
        let err = Config::from_file(f, Some("/x".into())).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn data_dir_is_required_and_flags_win() {
        assert!(Config::from_file(ConfigFile::default(), None).is_err());
        let f = ConfigFile::parse("data_dir = \"/from-file\"").unwrap();
        let c = Config::from_file(f, Some("/from-flag".into())).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-flag"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x", "10").is_err());
        assert!(parse_duration("x", "s").is_err());
        assert!(parse_duration("x", "10 parsecs").is_err());
    }
}

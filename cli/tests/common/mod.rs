//! The `cloud` binary as the end-to-end tests drive it: run it against a scheduler with a
//! given endpoint, key and config file, and check its exit code and output.

#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::process::Output;

/// Runs the `cloud` binary built for these tests.
pub struct Cli<'a> {
    pub url: String,
    pub key: String,
    pub config: &'a Path,
}

impl Cli<'_> {
    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cloud"))
            .args(args)
            .env("CLOUD_API_URL", &self.url)
            .env("CLOUD_API_KEY", &self.key)
            .env("CLOUD_CONFIG", self.config)
            .output()
            .await
            .expect("run cloud")
    }

    /// Stdout and stderr of a successful run.
    pub async fn ok_with_log(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "cloud {args:?} failed: {stdout}\n{stderr}"
        );
        (stdout, stderr)
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        self.ok_with_log(args).await.0
    }

    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.ok(&full).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Exit code 1 and the stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "cloud {args:?}: {err}");
        assert!(
            err.starts_with("error: ") || err.contains("\nerror: "),
            "{err}"
        );
        err
    }
}

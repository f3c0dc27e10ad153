//! Running storage tools: an argument vector, never a shell; the program found on PATH or in
//! the usual sbin directories (agents started with a minimal PATH still find `mkfs.ext4`);
//! `LC_ALL=C` so messages can be matched; failures become `StorageError::Command` with a
//! shortened stderr.

use super::StorageError;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Directories searched after PATH.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// At most this much of a failing command's stderr ends up in an error.
const MAX_STDERR: usize = 800;

/// Absolute path of `program`, or `Unsupported` saying which tool is missing.
pub(crate) fn resolve(program: &str) -> Result<PathBuf, StorageError> {
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_dirs)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .filter(|d| d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| StorageError::Unsupported(format!("{program} is not installed")))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One command to run: program name plus arguments.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    program: &'static str,
    args: Vec<OsString>,
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    pub fn new(program: &'static str) -> Self {
        Self {
            program,
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The command line for messages (arguments are ids, sizes and the agent's own paths).
    pub fn display(&self) -> String {
        let mut s = self.program.to_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs the command to completion, whatever its exit status.
    pub async fn finish(&self) -> Result<Finished, StorageError> {
        let program = resolve(self.program)?;
        let out = tokio::process::Command::new(&program)
            .args(&self.args)
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| StorageError::Io(format!("running {}: {e}", self.display())))?;
        Ok(Finished {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs the command; stdout when it exits 0, `StorageError::Command` otherwise.
    pub async fn run(&self) -> Result<String, StorageError> {
        let f = self.finish().await?;
        if f.code == Some(0) {
            Ok(f.stdout)
        } else {
            Err(self.failed(&f))
        }
    }

    /// The `Command` error for a finished run.
    pub fn failed(&self, f: &Finished) -> StorageError {
        StorageError::Command {
            cmd: self.display(),
            status: match f.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_owned(),
            },
            stderr: shorten(&f.stderr),
        }
    }
}

/// The meaningful part of a tool's stderr: LVM's routine activation warnings dropped, the
/// rest joined on one line and cut to [`MAX_STDERR`] bytes (keeping the end, where tools put
/// the actual error).
pub(crate) fn shorten(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING: Activation disabled"))
        .collect();
    let joined = lines.join(" | ");
    if joined.len() <= MAX_STDERR {
        return joined;
    }
    let mut start = joined.len() - MAX_STDERR;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &joined[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_cleaned_and_shortened() {
        let s = "  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n  Can't create snapshot without using device-mapper kernel driver.\n";
        assert_eq!(
            shorten(s),
            "Can't create snapshot without using device-mapper kernel driver."
        );
        let long = format!("{}\nthe end", "é".repeat(2000));
        let short = shorten(&long);
        assert!(short.len() <= MAX_STDERR + 4);
        assert!(short.ends_with("the end"));
    }

    #[tokio::test]
    async fn runs_argument_vectors_and_reports_failures() {
        let out = Cmd::new("echo")
            .args(["a; rm -rf /", "$(b)"])
            .run()
            .await
            .unwrap();
        assert_eq!(out, "a; rm -rf / $(b)\n");
        let e = Cmd::new("false").run().await.unwrap_err();
        assert!(
            matches!(&e, StorageError::Command { cmd, status, .. } if cmd == "false" && status == "exit status 1"),
            "{e:?}"
        );
        let e = Cmd::new("no-such-tool-xyz").run().await.unwrap_err();
        assert!(matches!(e, StorageError::Unsupported(_)), "{e:?}");
    }
}

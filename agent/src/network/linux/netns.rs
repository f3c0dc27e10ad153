//! Network-namespace plumbing: named namespaces under /run/netns (created like `ip netns add`)
//! and worker threads that live inside one namespace and run rtnetlink requests, sysctl writes
//! and `nft` transactions there.
//!
//! A netlink socket acts in the namespace of the thread that created it, and a child process
//! inherits the namespace of the thread that spawned it. So each namespace we act in gets one
//! OS thread that entered it with `setns` (or created it with `unshare`), owns a current-thread
//! tokio runtime plus one rtnetlink connection, and executes jobs sent over a channel. Jobs of
//! one namespace are therefore serialised, which keeps concurrent attaches in one VPC simple.
//! The agent's async tasks only await a oneshot reply, so they stay `Send`.

use super::super::NetworkError;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::Handle;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::runtime::Runtime;

/// Where named namespaces live (same place as iproute2, so `ip netns exec` works).
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Which namespace a worker thread enters.
#[derive(Debug, Clone)]
pub(crate) enum NsTarget {
    /// Stay in the namespace the agent runs in.
    Current,
    /// Enter an existing namespace file (`/run/netns/x`, `/proc/<pid>/ns/net`).
    Path(PathBuf),
    /// Create a fresh namespace, bind-mounted at this path, and stay in it.
    Create(PathBuf),
}

type Job = Box<dyn FnOnce(&Handle, &Runtime) + Send>;

/// A thread inside one network namespace. Dropping it stops and joins the thread, which
/// releases the thread's reference on the namespace.
pub(crate) struct NsWorker {
    label: String,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsWorker {
    /// Starts the thread and waits until it is inside `target` with a netlink connection.
    pub(crate) async fn start(label: &str, target: NsTarget) -> Result<Self, NetworkError> {
        let (init_tx, init_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_label = label.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{label}"))
            .spawn(move || {
                let ctx = enter(&thread_label, &target).and_then(|()| connect(&thread_label));
                let (rt, handle) = match ctx {
                    Ok(c) => {
                        let _ = init_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = init_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&handle, &rt);
                }
            })
            .map_err(|e| NetworkError::Host(format!("spawning a thread for {label}: {e}")))?;
        let worker = Self {
            label: label.to_owned(),
            tx: Some(tx),
            thread: Some(thread),
        };
        match init_rx.await {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NetworkError::Host(format!(
                "thread for namespace {label} died while starting"
            ))),
        }
    }

    /// Runs `f` on the worker thread (inside the namespace) and returns its result.
    pub(crate) async fn run<T, F, Fut>(&self, f: F) -> Result<T, NetworkError>
    where
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NetworkError>>,
        T: Send + 'static,
    {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |handle, rt| {
            let result = rt.block_on(f(handle.clone()));
            let _ = reply_tx.send(result);
        });
        let stopped = || NetworkError::Host(format!("thread for namespace {} stopped", self.label));
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| stopped())?
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for NsWorker {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // Jobs are short netlink/nft calls; the thread ends as soon as its queue drains.
            let _ = t.join();
        }
    }
}

fn enter(label: &str, target: &NsTarget) -> Result<(), NetworkError> {
    match target {
        NsTarget::Current => Ok(()),
        NsTarget::Path(path) => {
            let file = File::open(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    NetworkError::NamespaceGone(path.display().to_string())
                } else {
                    NetworkError::Host(format!("opening namespace {}: {e}", path.display()))
                }
            })?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetworkError::Host(format!(
                    "entering namespace {} ({label}): {e}",
                    path.display()
                ))
            })
        }
        NsTarget::Create(path) => create_here(path),
    }
}

fn connect(label: &str) -> Result<(Runtime, Handle), NetworkError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetworkError::Host(format!("runtime for namespace {label}: {e}")))?;
    let handle = rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetworkError::Netlink(format!("socket in namespace {label}: {e}")))?;
        tokio::spawn(conn);
        Ok::<_, NetworkError>(handle)
    })?;
    Ok((rt, handle))
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespace bind mounts propagate
/// to other mount namespaces.
fn prepare_netns_dir() -> Result<(), NetworkError> {
    let host = |what: &str, e: &dyn std::fmt::Display| {
        NetworkError::Host(format!("{what} {NETNS_DIR}: {e}"))
    };
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| host("creating", &e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(Some(NETNS_DIR), NETNS_DIR, Some("none"), bind, None::<&str>)
                .map_err(|e| host("bind-mounting", &e))?;
            mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)
                .map_err(|e| host("making shared", &e))
        }
        Err(e) => Err(host("making shared", &e)),
    }
}

/// Moves the calling thread into a new network namespace and bind-mounts it at `path`.
fn create_here(path: &Path) -> Result<(), NetworkError> {
    prepare_netns_dir()?;
    let name = path.display();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(path)
        .map_err(|e| NetworkError::Host(format!("creating namespace file {name}: {e}")))?;
    let result = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetworkError::Host(format!("unshare for namespace {name}: {e}")))
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| NetworkError::Host(format!("bind-mounting namespace {name}: {e}")))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Removes a named namespace (like `ip netns del`). The namespace itself disappears once no
/// thread or process uses it any more. Missing namespaces are fine.
pub(crate) fn delete_named(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::Host(format!(
                "unmounting namespace {}: {e}",
                path.display()
            )));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::Host(format!(
            "removing namespace file {}: {e}",
            path.display()
        ))),
    }
}

/// Names of the namespaces in /run/netns (empty when the directory does not exist).
pub(crate) fn list_named() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// Writes a sysctl of the calling thread's network namespace (`/proc/sys/net/...` resolves
/// against the opener's namespace).
pub(crate) fn write_sysctl(key: &str, value: &str, ns: &str) -> Result<(), NetworkError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value)
        .map_err(|e| NetworkError::Host(format!("setting {key}={value} in namespace {ns}: {e}")))
}

/// Runs a command (program + argument vector, never a shell string) in the calling thread's
/// namespace, feeding `stdin`; returns stdout or an error built by `err` from stderr.
pub(crate) fn run_command(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    err: impl Fn(String) -> NetworkError,
) -> Result<String, NetworkError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("running {program}: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| err(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for {program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

//! An in-memory `ContainerRuntime` with Docker's behaviour and wording: known images, name
//! conflicts, container states, restart policies, logs and stats. Used by unit tests and by
//! simulated nodes. Test helpers inject exits, OOM kills, missing executables and outages;
//! [`FakeDelays`] make pulls, creates, starts and stops take time (without blocking a thread).

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStats, ContainerStatus,
    EngineRestartPolicy, LogOptions, LogStream, RuntimeError, labels,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// A call the runtime received that changes something (for assertions in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Pull { image: String },
    Create { name: String },
    Start { id: String },
    Stop { id: String },
    Remove { id: String },
}

/// How long operations take. All zero by default (instant). Delays are `tokio::time::sleep`s
/// taken without holding the engine's lock, so a slow start on one node never blocks another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FakeDelays {
    /// Pulling an image.
    pub pull: Duration,
    /// Creating a container.
    pub create: Duration,
    /// Starting a container that is not running (a container that is already running starts
    /// instantly, as with Docker).
    pub start: Duration,
    /// Stopping a running container.
    pub stop: Duration,
}

struct FakeContainer {
    info: ContainerInfo,
    spec: ContainerSpec,
    logs: Vec<u8>,
    log_tx: Option<broadcast::Sender<Bytes>>,
}

#[derive(Default)]
struct State {
    images: BTreeSet<String>,
    pullable: BTreeSet<String>,
    missing_executables: BTreeSet<String>,
    containers: BTreeMap<String, FakeContainer>,
    stats: BTreeMap<String, ContainerStats>,
    next_id: u64,
    calls: Vec<FakeCall>,
    /// Mutating calls are not recorded (long-running simulations).
    calls_off: bool,
    /// Every image can be pulled.
    pull_any: bool,
    delays: FakeDelays,
    unavailable: bool,
}

impl State {
    fn record(&mut self, call: FakeCall) {
        if !self.calls_off {
            self.calls.push(call);
        }
    }

    fn check_up(&self) -> Result<(), RuntimeError> {
        if self.unavailable {
            return Err(RuntimeError::Unavailable(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?".into(),
            ));
        }
        Ok(())
    }

    /// Finds a container by id, id prefix or name, like Docker.
    fn find(&self, id_or_name: &str) -> Result<String, RuntimeError> {
        let name = id_or_name.trim_start_matches('/');
        self.containers
            .values()
            .find(|c| c.info.id == id_or_name || c.info.name == name)
            .or_else(|| {
                self.containers
                    .values()
                    .find(|c| id_or_name.len() >= 12 && c.info.id.starts_with(id_or_name))
            })
            .map(|c| c.info.id.clone())
            .ok_or_else(|| RuntimeError::NotFound(format!("No such container: {id_or_name}")))
    }

    fn by_instance(&self, instance_id: &str) -> Option<String> {
        self.containers
            .values()
            .find(|c| c.info.label(labels::INSTANCE_ID) == Some(instance_id))
            .map(|c| c.info.id.clone())
    }

    fn container(&mut self, id: &str) -> Result<&mut FakeContainer, RuntimeError> {
        let id = self.find(id)?;
        self.containers
            .get_mut(&id)
            .ok_or_else(|| RuntimeError::NotFound(format!("No such container: {id}")))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `busybox` and `busybox:latest` name the same image.
fn normalize_image(image: &str) -> String {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    if image.contains('@') || image[slash..].contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// Fake PIDs, unique per run of any fake container in this process.
static NEXT_PID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(100_000);

fn run(c: &mut FakeContainer) {
    c.info.status = ContainerStatus::Running;
    c.info.pid = NEXT_PID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    c.info.started_at_unix_ms = now_ms();
    c.info.exit_code = Some(0);
    c.info.oom_killed = false;
    c.info.error.clear();
    let (tx, _) = broadcast::channel(256);
    c.log_tx = Some(tx);
}

/// Ends the current run; applies the restart policy like dockerd does (immediately).
fn end_run(c: &mut FakeContainer, code: i64, oom: bool, by_stop: bool) {
    c.info.status = ContainerStatus::Exited;
    c.info.pid = 0;
    c.info.exit_code = Some(code);
    c.info.oom_killed = oom;
    c.log_tx = None;
    let restart = !by_stop
        && match c.info.restart_policy {
            EngineRestartPolicy::No => false,
            EngineRestartPolicy::OnFailure => code != 0,
            EngineRestartPolicy::UnlessStopped => true,
        };
    if restart {
        c.info.restart_count += 1;
        run(c);
    }
}

/// In-memory container engine. Cheap to create; share it as `Arc<FakeRuntime>`.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    /// An engine with no images.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine with these images present locally.
    pub fn with_images<'a>(images: impl IntoIterator<Item = &'a str>) -> Self {
        let rt = Self::new();
        for i in images {
            rt.add_image(i);
        }
        rt
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `image` present locally.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(normalize_image(image));
    }

    /// Makes `image` pullable from a (pretend) registry.
    pub fn add_pullable_image(&self, image: &str) {
        self.lock().pullable.insert(normalize_image(image));
    }

    /// Starting a container whose command starts with `exe` fails like a missing binary.
    pub fn add_missing_executable(&self, exe: &str) {
        self.lock().missing_executables.insert(exe.to_owned());
    }

    /// Simulates dockerd being down (every call fails with `Unavailable`).
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// Makes every image pullable from the (pretend) registry, as for simulated nodes.
    pub fn set_pull_any(&self, on: bool) {
        self.lock().pull_any = on;
    }

    /// Sets how long operations take (see [`FakeDelays`]).
    pub fn set_delays(&self, delays: FakeDelays) {
        self.lock().delays = delays;
    }

    /// The operation delays in force.
    pub fn delays(&self) -> FakeDelays {
        self.lock().delays
    }

    /// Turns the recording of mutating calls on (the default) or off. Off keeps a long-lived
    /// simulated node's memory flat; [`FakeRuntime::calls`] then stays as it was.
    pub fn set_record_calls(&self, on: bool) {
        self.lock().calls_off = !on;
    }

    /// Number of containers in the `running` state.
    pub fn running_count(&self) -> usize {
        self.lock()
            .containers
            .values()
            .filter(|c| c.info.status == ContainerStatus::Running)
            .count()
    }

    /// Number of containers in any state.
    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

    /// The mutating calls received so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// All containers, sorted by name.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let st = self.lock();
        let mut v: Vec<_> = st.containers.values().map(|c| c.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The container of an instance (by the instance-id label), any node.
    pub fn container_of(&self, instance_id: &str) -> Option<ContainerInfo> {
        let st = self.lock();
        let id = st.by_instance(instance_id)?;
        st.containers.get(&id).map(|c| c.info.clone())
    }

    /// The spec an instance's container was created with (env, command, limits, labels).
    pub fn spec_of(&self, instance_id: &str) -> Option<ContainerSpec> {
        let st = self.lock();
        let id = st.by_instance(instance_id)?;
        st.containers.get(&id).map(|c| c.spec.clone())
    }

    /// Creates a container directly (e.g. one owned by another node), optionally running.
    pub fn insert_container(&self, spec: &ContainerSpec, running: bool) -> String {
        let mut st = self.lock();
        let id = Self::create_locked(&mut st, spec);
        if running && let Some(c) = st.containers.get_mut(&id) {
            run(c);
        }
        id
    }

    fn create_locked(st: &mut State, spec: &ContainerSpec) -> String {
        st.next_id += 1;
        let id = format!("{:064x}", 0xfa4e_0000_0000_u64 + st.next_id);
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            status: ContainerStatus::Created,
            exit_code: Some(0),
            oom_killed: false,
            error: String::new(),
            started_at_unix_ms: 0,
            restart_count: 0,
            memory_bytes: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
            restart_policy: spec.restart_policy,
            pid: 0,
        };
        st.containers.insert(
            id.clone(),
            FakeContainer {
                info,
                spec: spec.clone(),
                logs: Vec::new(),
                log_tx: None,
            },
        );
        id
    }

    fn with_instance<R>(
        &self,
        instance_id: &str,
        f: impl FnOnce(&mut FakeContainer) -> R,
    ) -> Option<R> {
        let mut st = self.lock();
        let id = st.by_instance(instance_id)?;
        st.containers.get_mut(&id).map(f)
    }

    /// The instance's process exits with `code` (the restart policy applies). Returns false
    /// when the instance has no running container.
    pub fn exit(&self, instance_id: &str, code: i64) -> bool {
        self.with_instance(instance_id, |c| {
            if c.info.status != ContainerStatus::Running {
                return false;
            }
            end_run(c, code, false, false);
            true
        })
        .unwrap_or(false)
    }

    /// The kernel OOM-kills the instance's process (exit 137, `OOMKilled`).
    pub fn oom_kill(&self, instance_id: &str) -> bool {
        self.with_instance(instance_id, |c| {
            if c.info.status != ContainerStatus::Running {
                return false;
            }
            end_run(c, 137, true, false);
            true
        })
        .unwrap_or(false)
    }

    /// Puts the instance's container in Docker's `restarting` state.
    pub fn set_restarting(&self, instance_id: &str, exit_code: i64) -> bool {
        self.with_instance(instance_id, |c| {
            c.info.status = ContainerStatus::Restarting;
            c.info.exit_code = Some(exit_code);
            c.info.restart_count += 1;
            true
        })
        .unwrap_or(false)
    }

    /// Appends output to the instance's logs (and to followers).
    pub fn push_log(&self, instance_id: &str, data: &[u8]) -> bool {
        self.with_instance(instance_id, |c| {
            c.logs.extend_from_slice(data);
            if let Some(tx) = &c.log_tx {
                let _ = tx.send(Bytes::copy_from_slice(data));
            }
            true
        })
        .unwrap_or(false)
    }

    /// Sets what `stats` answers for the instance.
    pub fn set_stats(&self, instance_id: &str, stats: ContainerStats) {
        self.lock().stats.insert(instance_id.to_owned(), stats);
    }
}

/// Sleeps `d` unless it is zero (a zero sleep would still yield to the scheduler).
async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// The last `n` lines of `logs` (all when `n` is 0).
fn tail_lines(logs: &[u8], n: u32) -> &[u8] {
    if n == 0 {
        return logs;
    }
    let body = logs.strip_suffix(b"\n").unwrap_or(logs);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &logs[i + 1..];
            }
        }
    }
    logs
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn driver(&self) -> &'static str {
        "docker"
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.lock().check_up()
    }

    async fn list(
        &self,
        want: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let st = self.lock();
        st.check_up()?;
        let mut v: Vec<_> = st
            .containers
            .values()
            .filter(|c| want.iter().all(|(k, v)| c.info.labels.get(k) == Some(v)))
            .map(|c| c.info.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let mut st = self.lock();
        st.check_up()?;
        Ok(st.container(id)?.info.clone())
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let st = self.lock();
        st.check_up()?;
        Ok(st.images.contains(&normalize_image(image)))
    }

    async fn pull_image(&self, image: &str) -> Result<(), RuntimeError> {
        let delay = {
            let st = self.lock();
            st.check_up()?;
            st.delays.pull
        };
        sleep(delay).await;
        let mut st = self.lock();
        st.check_up()?;
        st.record(FakeCall::Pull {
            image: image.to_owned(),
        });
        let norm = normalize_image(image);
        if st.pull_any || st.pullable.contains(&norm) {
            st.images.insert(norm);
            Ok(())
        } else {
            let repo = norm.rsplit_once(':').map_or(norm.as_str(), |(r, _)| r);
            Err(RuntimeError::ImageNotFound(format!(
                "pull access denied for {repo}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"
            )))
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let delay = {
            let st = self.lock();
            st.check_up()?;
            st.delays.create
        };
        sleep(delay).await;
        let mut st = self.lock();
        st.check_up()?;
        st.record(FakeCall::Create {
            name: spec.name.clone(),
        });
        if !st.images.contains(&normalize_image(&spec.image)) {
            return Err(RuntimeError::ImageNotFound(format!(
                "No such image: {}",
                spec.image
            )));
        }
        if let Ok(other) = st.find(&spec.name) {
            return Err(RuntimeError::Conflict(format!(
                "Conflict. The container name \"/{}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name.",
                spec.name
            )));
        }
        Ok(Self::create_locked(&mut st, spec))
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let delay = {
            let mut st = self.lock();
            st.check_up()?;
            let delay = st.delays.start;
            let idle = !matches!(
                st.container(id)?.info.status,
                ContainerStatus::Running | ContainerStatus::Restarting
            );
            if idle { delay } else { Duration::ZERO }
        };
        sleep(delay).await;
        let mut st = self.lock();
        st.check_up()?;
        let missing = st.missing_executables.clone();
        let c = st.container(id)?;
        let cid = c.info.id.clone();
        let exe = c.spec.command.first().cloned();
        let result = match c.info.status {
            ContainerStatus::Running | ContainerStatus::Restarting => Ok(()),
            _ => match exe.filter(|e| missing.contains(e)) {
                Some(exe) => {
                    let msg = format!(
                        "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{exe}\": executable file not found in $PATH: unknown"
                    );
                    c.info.status = ContainerStatus::Created;
                    c.info.exit_code = Some(127);
                    c.info.error = msg.clone();
                    Err(RuntimeError::Engine {
                        status: 400,
                        message: msg,
                    })
                }
                None => {
                    run(c);
                    Ok(())
                }
            },
        };
        st.record(FakeCall::Start { id: cid });
        result
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let delay = {
            let mut st = self.lock();
            st.check_up()?;
            let delay = st.delays.stop;
            let running = matches!(
                st.container(id)?.info.status,
                ContainerStatus::Running | ContainerStatus::Restarting | ContainerStatus::Paused
            );
            if running { delay } else { Duration::ZERO }
        };
        sleep(delay).await;
        let mut st = self.lock();
        st.check_up()?;
        let c = st.container(id)?;
        let cid = c.info.id.clone();
        if matches!(
            c.info.status,
            ContainerStatus::Running | ContainerStatus::Restarting | ContainerStatus::Paused
        ) {
            end_run(c, 143, false, true);
        }
        st.record(FakeCall::Stop { id: cid });
        Ok(())
    }

    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut st = self.lock();
        st.check_up()?;
        let cid = st.find(id)?;
        let running = st
            .containers
            .get(&cid)
            .is_some_and(|c| c.info.status == ContainerStatus::Running);
        if running && !force {
            return Err(RuntimeError::Conflict(format!(
                "You cannot remove a running container {cid}. Stop the container before attempting removal or force remove"
            )));
        }
        st.containers.remove(&cid);
        st.record(FakeCall::Remove { id: cid });
        Ok(())
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<LogStream, RuntimeError> {
        let mut st = self.lock();
        st.check_up()?;
        let c = st.container(id)?;
        let snapshot = Bytes::copy_from_slice(tail_lines(&c.logs, options.tail));
        let head = futures::stream::iter((!snapshot.is_empty()).then_some(Ok(snapshot)));
        match (&c.log_tx, options.follow) {
            (Some(tx), true) => {
                let live = BroadcastStream::new(tx.subscribe())
                    .filter_map(|r| async move { r.ok().map(Ok) });
                Ok(head.chain(live).boxed())
            }
            _ => Ok(head.boxed()),
        }
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let mut st = self.lock();
        st.check_up()?;
        let c = st.container(id)?;
        let instance = c.info.label(labels::INSTANCE_ID).unwrap_or("").to_owned();
        let running = c.info.status == ContainerStatus::Running;
        let limit = u64::try_from(c.info.memory_bytes)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(1 << 30);
        if let Some(s) = st.stats.get(&instance) {
            return Ok(*s);
        }
        Ok(if running {
            ContainerStats {
                cpu_percent: 0.5,
                memory_used_bytes: 8 << 20,
                memory_limit_bytes: limit,
            }
        } else {
            ContainerStats {
                memory_limit_bytes: limit,
                ..ContainerStats::default()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_lines() {
        let logs = b"a\nb\nc\n";
        assert_eq!(tail_lines(logs, 0), b"a\nb\nc\n");
        assert_eq!(tail_lines(logs, 1), b"c\n");
        assert_eq!(tail_lines(logs, 2), b"b\nc\n");
        assert_eq!(tail_lines(logs, 9), b"a\nb\nc\n");
        assert_eq!(tail_lines(b"a\nb", 1), b"b");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_take_time_without_blocking_other_calls() {
        use std::sync::Arc;
        use tokio::time::Instant;
        let rt = Arc::new(FakeRuntime::with_images(["img"]));
        rt.set_delays(FakeDelays {
            create: Duration::from_millis(50),
            start: Duration::from_millis(200),
            ..FakeDelays::default()
        });
        assert_eq!(rt.delays().start, Duration::from_millis(200));
        let spec = ContainerSpec {
            name: "tc-a".into(),
            image: "img".into(),
            ..ContainerSpec::default()
        };
        let t = Instant::now();
        let id = rt.create(&spec).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(50));
        let t = Instant::now();
        let starting = tokio::spawn({
            let rt = rt.clone();
            let id = id.clone();
            async move { rt.start(&id).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Mid-start: other calls answer at once; the container is not running yet.
        assert_eq!(
            rt.inspect(&id).await.unwrap().status,
            ContainerStatus::Created
        );
        assert_eq!(rt.running_count(), 0);
        starting.await.unwrap().unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(200));
        assert_eq!(rt.running_count(), 1);
        // Starting a running container is instant, as with Docker.
        let t = Instant::now();
        rt.start(&id).await.unwrap();
        assert_eq!(t.elapsed(), Duration::ZERO);
        // A container removed during its start fails the start.
        rt.stop(&id, Duration::ZERO).await.unwrap();
        let starting = tokio::spawn({
            let rt = rt.clone();
            let id = id.clone();
            async move { rt.start(&id).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        rt.remove(&id, true).await.unwrap();
        assert!(matches!(
            starting.await.unwrap(),
            Err(RuntimeError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn call_recording_can_be_turned_off_and_any_image_pulled() {
        let rt = FakeRuntime::new();
        assert!(rt.pull_image("x/y:1").await.is_err());
        rt.set_pull_any(true);
        rt.pull_image("x/y:1").await.unwrap();
        assert!(rt.image_present("x/y:1").await.unwrap());
        assert_eq!(rt.calls().len(), 2);
        rt.set_record_calls(false);
        rt.pull_image("x/z:1").await.unwrap();
        assert_eq!(rt.calls().len(), 2);
        assert_eq!(rt.container_count(), 0);
    }

    #[test]
    fn normalizes_image_names() {
        assert_eq!(normalize_image("busybox"), "busybox:latest");
        assert_eq!(normalize_image("local/busybox:1"), "local/busybox:1");
        assert_eq!(normalize_image("reg:5000/x"), "reg:5000/x:latest");
    }
}

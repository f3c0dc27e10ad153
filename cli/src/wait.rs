//! Waiting for an instance to settle after launch, stop, start or rm, with progress on stderr.
//!
//! The decisions (`judge`, `Progress::observe`) are pure; the loop takes a fetch function so
//! it can be tested without a server.

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use cloud_api::{Client, ClientError, ErrorCode, Instance, InstanceStatus};
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

/// How often the instance is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The status a command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Running,
    Stopped,
    Gone,
}

impl Goal {
    fn describe(self) -> &'static str {
        match self {
            Goal::Running => "running",
            Goal::Stopped => "stopped",
            Goal::Gone => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// Why it will not get there, to follow the instance's name: `failed: image not found`.
    Failed(String),
    Waiting,
}

/// Decides whether `inst` reached `goal`. `baseline` is the `updated_at` of the instance as the
/// request answered it: a failure status that is not newer than that is the old state (e.g.
/// `start` of a failed instance), not the outcome of this request.
pub fn judge(goal: Goal, inst: &Instance, baseline: Option<DateTime<Utc>>) -> Verdict {
    let fresh = baseline.is_none_or(|b| inst.updated_at > b);
    let reason = || {
        let mut r = inst
            .status_reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| match inst.status {
                InstanceStatus::Stopped => "the process exited".into(),
                _ => "no reason given".into(),
            });
        if let Some(code) = inst.exit_code {
            r.push_str(&format!(" (exit code {code})"));
        }
        format!("{}: {r}", inst.status)
    };
    match (goal, inst.status) {
        (Goal::Running, InstanceStatus::Running) => Verdict::Done,
        (Goal::Stopped, InstanceStatus::Stopped) => Verdict::Done,
        (Goal::Running, InstanceStatus::Failed | InstanceStatus::Stopped) if fresh => {
            Verdict::Failed(reason())
        }
        (Goal::Stopped, InstanceStatus::Failed) if fresh => Verdict::Failed(reason()),
        (Goal::Running | Goal::Stopped, InstanceStatus::Deleting) => {
            Verdict::Failed("is being deleted".into())
        }
        _ => Verdict::Waiting,
    }
}

/// Turns a sequence of observations into `web: pending … scheduled on node-1 … running`.
#[derive(Debug)]
pub struct Progress {
    name: String,
    last: Option<(InstanceStatus, Option<String>)>,
}

impl Progress {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            last: None,
        }
    }

    /// The text to print for this observation, if anything changed.
    pub fn observe(&mut self, inst: &Instance) -> Option<String> {
        let key = (
            inst.status,
            inst.status_reason.clone().filter(|r| !r.is_empty()),
        );
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        let mut word = inst.status.to_string();
        match inst.status {
            InstanceStatus::Scheduled => {
                if let Some(node) = inst.node_name.as_ref() {
                    word = format!("scheduled on {node}");
                }
            }
            InstanceStatus::Lost => word.push_str(" (node down)"),
            _ => {}
        }
        // Terminal reasons are printed by the caller's error; transient ones help here.
        if let (Some(r), false) = (
            &key.1,
            matches!(
                inst.status,
                InstanceStatus::Failed | InstanceStatus::Stopped
            ),
        ) {
            word = format!("{word} ({r})");
        }
        let text = match self.last {
            None => format!("{}: {word}", self.name),
            Some(_) => format!(" … {word}"),
        };
        self.last = Some(key);
        Some(text)
    }

    /// Called once when the instance disappeared (rm).
    pub fn gone(&mut self) -> String {
        let text = match self.last {
            None => format!("{}: deleted", self.name),
            Some(_) => " … deleted".to_string(),
        };
        self.last = None;
        text
    }
}

/// `1.2 s`.
pub fn elapsed(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What one poll saw: the instance, or nothing (404).
pub type Observation = std::result::Result<Option<Instance>, ClientError>;

/// What the polling loop needs to know about the thing it waits on (an instance, a volume):
/// the pure decisions, and how to name it in messages.
pub trait Watch {
    type Item: Clone;
    /// Its name, for messages.
    fn name(item: &Self::Item) -> &str;
    /// Its status word, for the timeout message.
    fn status(item: &Self::Item) -> String;
    /// Prefix of its name in errors: "" for instances ("web failed"), "volume " for volumes.
    const NOUN: &'static str;
    /// The CLI command that shows it (`cloud <SHOW> show NAME`).
    const SHOW: &'static str;
    fn judge(&self, item: &Self::Item) -> Verdict;
    /// The progress text for this observation, if anything changed.
    fn observe(&mut self, item: &Self::Item) -> Option<String>;
    /// The progress text when it disappeared.
    fn gone(&mut self) -> String;
    /// Whether disappearing is the goal (rm), and the goal's word for the timeout message.
    fn waits_for_gone(&self) -> bool;
    fn goal_word(&self) -> &'static str;
}

/// Polls `fetch` until the watcher is satisfied, it fails, or `timeout` passes; progress goes
/// to `log`. The one loop behind every `--wait`.
pub async fn poll<W, F, Fut>(
    mut w: W,
    first: &W::Item,
    timeout: Duration,
    interval: Duration,
    mut fetch: F,
    log: &mut dyn Write,
) -> Result<Option<W::Item>>
where
    W: Watch,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<W::Item>, ClientError>>,
{
    let start = Instant::now();
    let mut current = first.clone();
    loop {
        if let Some(text) = w.observe(&current) {
            write(log, &text);
        }
        match w.judge(&current) {
            Verdict::Done => {
                write(log, &format!(" ({})\n", elapsed(start.elapsed())));
                return Ok(Some(current));
            }
            Verdict::Failed(reason) => {
                write(log, "\n");
                bail!("{}{} {reason}", W::NOUN, W::name(&current));
            }
            Verdict::Waiting => {}
        }
        if start.elapsed() >= timeout {
            write(log, "\n");
            let name = W::name(&current);
            bail!(
                "timed out after {} waiting for {}{name} to be {} (still {}); \
                 check later with `cloud {} show {name}`",
                elapsed(timeout),
                W::NOUN,
                w.goal_word(),
                W::status(&current),
                W::SHOW,
            );
        }
        tokio::time::sleep(interval).await;
        match fetch().await? {
            Some(item) => current = item,
            None if w.waits_for_gone() => {
                write(
                    log,
                    &format!("{} ({})\n", w.gone(), elapsed(start.elapsed())),
                );
                return Ok(None);
            }
            None => {
                write(log, "\n");
                return Err(anyhow!(
                    "{}{} was deleted while waiting",
                    W::NOUN,
                    W::name(&current)
                ));
            }
        }
    }
}

/// Waiting on an instance.
struct InstanceWatch {
    goal: Goal,
    baseline: Option<DateTime<Utc>>,
    progress: Progress,
}

impl Watch for InstanceWatch {
    type Item = Instance;
    const NOUN: &'static str = "";
    const SHOW: &'static str = "instance";
    fn name(item: &Instance) -> &str {
        &item.name
    }
    fn status(item: &Instance) -> String {
        item.status.to_string()
    }
    fn judge(&self, item: &Instance) -> Verdict {
        judge(self.goal, item, self.baseline)
    }
    fn observe(&mut self, item: &Instance) -> Option<String> {
        self.progress.observe(item)
    }
    fn gone(&mut self) -> String {
        self.progress.gone()
    }
    fn waits_for_gone(&self) -> bool {
        self.goal == Goal::Gone
    }
    fn goal_word(&self) -> &'static str {
        self.goal.describe()
    }
}

/// Polls `fetch` until `goal` is reached, it fails, or `timeout` passes; progress goes to `log`.
pub async fn until<F, Fut>(
    goal: Goal,
    first: &Instance,
    timeout: Duration,
    interval: Duration,
    fetch: F,
    log: &mut dyn Write,
) -> Result<Option<Instance>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Observation>,
{
    let baseline = if goal == Goal::Running && first.status == InstanceStatus::Pending {
        // A new instance: every failure is news.
        None
    } else {
        Some(first.updated_at)
    };
    let w = InstanceWatch {
        goal,
        baseline,
        progress: Progress::new(&first.name),
    };
    poll(w, first, timeout, interval, fetch, log).await
}

/// Progress is best effort: a closed stderr must not fail the command.
pub fn write(log: &mut dyn Write, text: &str) {
    let _ = log.write_all(text.as_bytes());
    let _ = log.flush();
}

/// `GET /v1/instances/{id}`, a 404 being `None`.
pub async fn fetch(client: &Client, id: &str) -> Observation {
    match client.instance_get(id).await {
        Ok(i) => Ok(Some(i)),
        Err(e) if e.code() == Some(ErrorCode::NotFound) || e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits on the real API, progress on stderr.
pub async fn wait_for(
    client: &Client,
    goal: Goal,
    first: &Instance,
    timeout: Duration,
) -> Result<Option<Instance>> {
    let id = first.id.to_string();
    let mut stderr = std::io::stderr();
    until(
        goal,
        first,
        timeout,
        POLL_INTERVAL,
        || fetch(client, &id),
        &mut stderr,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::instance;
    use std::collections::VecDeque;

    fn at(status: InstanceStatus, tick: i64) -> Instance {
        let mut i = instance("web", status, 10);
        i.updated_at = crate::testutil::now() + chrono::Duration::seconds(tick);
        i
    }

    async fn run(
        goal: Goal,
        first: Instance,
        rest: Vec<Option<Instance>>,
        timeout: Duration,
    ) -> (Result<Option<Instance>>, String) {
        let mut queue: VecDeque<Option<Instance>> = rest.into();
        let last = queue.back().cloned().flatten();
        let mut log = Vec::new();
        let r = until(
            goal,
            &first,
            timeout,
            Duration::from_millis(1),
            || {
                let next = queue.pop_front().unwrap_or_else(|| last.clone());
                async move { Ok(next) }
            },
            &mut log,
        )
        .await;
        (r, String::from_utf8(log).unwrap())
    }

    #[test]
    fn judge_running() {
        let b = Some(crate::testutil::now());
        assert_eq!(
            judge(Goal::Running, &at(InstanceStatus::Running, 0), b),
            Verdict::Done
        );
        assert_eq!(
            judge(Goal::Running, &at(InstanceStatus::Starting, 1), b),
            Verdict::Waiting
        );
        // The old state the request answered with is not a failure…
        assert_eq!(
            judge(Goal::Running, &at(InstanceStatus::Stopped, 0), b),
            Verdict::Waiting
        );
        // …a newer one is.
        let mut failed = at(InstanceStatus::Failed, 1);
        failed.status_reason = Some("image not found".into());
        assert_eq!(
            judge(Goal::Running, &failed, b),
            Verdict::Failed("failed: image not found".into())
        );
        let mut exited = at(InstanceStatus::Stopped, 1);
        exited.exit_code = Some(3);
        assert_eq!(
            judge(Goal::Running, &exited, b),
            Verdict::Failed("stopped: the process exited (exit code 3)".into())
        );
        assert_eq!(
            judge(Goal::Running, &at(InstanceStatus::Lost, 2), b),
            Verdict::Waiting
        );
        assert!(matches!(
            judge(Goal::Running, &at(InstanceStatus::Deleting, 2), b),
            Verdict::Failed(_)
        ));
        // Without baseline (launch), any failure counts.
        assert!(matches!(
            judge(Goal::Running, &at(InstanceStatus::Failed, 0), None),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn judge_stopped() {
        let b = Some(crate::testutil::now());
        assert_eq!(
            judge(Goal::Stopped, &at(InstanceStatus::Stopped, 0), b),
            Verdict::Done
        );
        assert_eq!(
            judge(Goal::Stopped, &at(InstanceStatus::Stopping, 1), b),
            Verdict::Waiting
        );
        assert_eq!(
            judge(Goal::Stopped, &at(InstanceStatus::Failed, 0), b),
            Verdict::Waiting
        );
        assert!(matches!(
            judge(Goal::Stopped, &at(InstanceStatus::Failed, 1), b),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn progress_prints_changes_only() {
        let mut p = Progress::new("web");
        let mut pending = at(InstanceStatus::Pending, 0);
        pending.node_name = None;
        assert_eq!(p.observe(&pending).as_deref(), Some("web: pending"));
        assert_eq!(p.observe(&pending), None);
        pending.status_reason = Some("no node fits".into());
        assert_eq!(
            p.observe(&pending).as_deref(),
            Some(" … pending (no node fits)")
        );
        assert_eq!(
            p.observe(&at(InstanceStatus::Scheduled, 1)).as_deref(),
            Some(" … scheduled on node-1")
        );
        assert_eq!(
            p.observe(&at(InstanceStatus::Lost, 2)).as_deref(),
            Some(" … lost (node down)")
        );
        assert_eq!(p.gone(), " … deleted");
    }

    #[tokio::test]
    async fn launch_waits_until_running() {
        let (r, log) = run(
            Goal::Running,
            at(InstanceStatus::Pending, 0),
            vec![
                Some(at(InstanceStatus::Pending, 0)),
                Some(at(InstanceStatus::Scheduled, 1)),
                Some(at(InstanceStatus::Starting, 2)),
                Some(at(InstanceStatus::Running, 3)),
            ],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.unwrap().unwrap().status, InstanceStatus::Running);
        assert!(
            log.starts_with("web: pending … scheduled on node-1 … starting … running ("),
            "{log}"
        );
        assert!(log.ends_with(" s)\n"), "{log}");
    }

    #[tokio::test]
    async fn launch_reports_failure_reason() {
        let mut failed = at(InstanceStatus::Failed, 2);
        failed.status_reason = Some("image local/nope:latest not found".into());
        let (r, _) = run(
            Goal::Running,
            at(InstanceStatus::Pending, 0),
            vec![Some(failed)],
            Duration::from_secs(5),
        )
        .await;
        let err = r.unwrap_err().to_string();
        assert_eq!(err, "web failed: image local/nope:latest not found");
    }

    #[tokio::test]
    async fn waiting_times_out() {
        let (r, _) = run(
            Goal::Running,
            at(InstanceStatus::Pending, 0),
            vec![Some(at(InstanceStatus::Starting, 1))],
            Duration::from_millis(20),
        )
        .await;
        let err = r.unwrap_err().to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("still starting"), "{err}");
    }

    #[tokio::test]
    async fn rm_waits_until_gone() {
        let (r, log) = run(
            Goal::Gone,
            at(InstanceStatus::Deleting, 0),
            vec![Some(at(InstanceStatus::Deleting, 0)), None],
            Duration::from_secs(5),
        )
        .await;
        assert!(r.unwrap().is_none());
        assert!(log.starts_with("web: deleting … deleted ("), "{log}");
    }

    #[tokio::test]
    async fn disappearing_while_starting_is_an_error() {
        let (r, _) = run(
            Goal::Running,
            at(InstanceStatus::Pending, 0),
            vec![None],
            Duration::from_secs(5),
        )
        .await;
        assert!(r.unwrap_err().to_string().contains("deleted while waiting"));
    }
}

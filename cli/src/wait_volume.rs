//! Waiting for a volume to be created (`available`) or deleted (gone), with progress on stderr
//! the way `wait` does it for instances: `data: creating on node-1 … available (0.4 s)`.
//!
//! The decisions (`judge`, `Progress::observe`) are pure; the loop takes a fetch function so
//! it can be tested without a server.

use crate::wait::{POLL_INTERVAL, Verdict, Watch, poll};
use anyhow::Result;
use chrono::{DateTime, Utc};
use cloud_api::{Client, ClientError, ErrorCode, Volume, VolumeStatus};
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// The state a volume command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Created: `available` (or already attached).
    Available,
    /// Deleted: the API answers 404.
    Gone,
}

impl Goal {
    fn describe(self) -> &'static str {
        match self {
            Goal::Available => "available",
            Goal::Gone => "deleted",
        }
    }
}

/// Decides whether `vol` reached `goal`. `baseline` is the `updated_at` of the volume as the
/// request answered it: a `failed` status not newer than that is the old state (e.g. `rm` of
/// a failed volume), not the outcome of this request.
pub fn judge(goal: Goal, vol: &Volume, baseline: Option<DateTime<Utc>>) -> Verdict {
    let fresh = baseline.is_none_or(|b| vol.updated_at > b);
    let reason = || {
        let r = vol
            .status_reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "no reason given".into());
        format!("{}: {r}", vol.status)
    };
    match (goal, vol.status) {
        (
            Goal::Available,
            VolumeStatus::Available
            | VolumeStatus::Attaching
            | VolumeStatus::InUse
            | VolumeStatus::Detaching,
        ) => Verdict::Done,
        (Goal::Available, VolumeStatus::Deleting) => Verdict::Failed("is being deleted".into()),
        (_, VolumeStatus::Failed) if fresh => Verdict::Failed(reason()),
        _ => Verdict::Waiting,
    }
}

/// Turns a sequence of observations into `data: creating … creating on node-1 … available`.
#[derive(Debug)]
pub struct Progress {
    name: String,
    last: Option<(VolumeStatus, Option<String>, Option<String>)>,
}

impl Progress {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            last: None,
        }
    }

    /// The text to print for this observation, if anything changed.
    pub fn observe(&mut self, vol: &Volume) -> Option<String> {
        let key = (
            vol.status,
            vol.status_reason.clone().filter(|r| !r.is_empty()),
            vol.node_name.clone(),
        );
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        let mut word = vol.status.to_string();
        if let (VolumeStatus::Creating, Some(node)) = (vol.status, &vol.node_name) {
            word = format!("creating on {node}");
        }
        // The failure reason is printed by the caller's error; transient ones help here.
        if let (Some(r), false) = (&key.1, vol.status == VolumeStatus::Failed) {
            word = format!("{word} ({r})");
        }
        let text = match self.last {
            None => format!("{}: {word}", self.name),
            Some(_) => format!(" … {word}"),
        };
        self.last = Some(key);
        Some(text)
    }

    /// Called once when the volume disappeared (rm).
    pub fn gone(&mut self) -> String {
        let text = match self.last {
            None => format!("{}: deleted", self.name),
            Some(_) => " … deleted".to_string(),
        };
        self.last = None;
        text
    }
}

/// What one poll saw: the volume, or nothing (404).
pub type Observation = std::result::Result<Option<Volume>, ClientError>;

/// Waiting on a volume.
struct VolumeWatch {
    goal: Goal,
    baseline: Option<DateTime<Utc>>,
    progress: Progress,
}

impl Watch for VolumeWatch {
    type Item = Volume;
    const NOUN: &'static str = "volume ";
    const SHOW: &'static str = "volume";
    fn name(item: &Volume) -> &str {
        &item.name
    }
    fn status(item: &Volume) -> String {
        item.status.to_string()
    }
    fn judge(&self, item: &Volume) -> Verdict {
        judge(self.goal, item, self.baseline)
    }
    fn observe(&mut self, item: &Volume) -> Option<String> {
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
    first: &Volume,
    timeout: Duration,
    interval: Duration,
    fetch: F,
    log: &mut dyn Write,
) -> Result<Option<Volume>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Observation>,
{
    let baseline = match goal {
        // A new volume: every failure is news.
        Goal::Available => None,
        Goal::Gone => Some(first.updated_at),
    };
    let w = VolumeWatch {
        goal,
        baseline,
        progress: Progress::new(&first.name),
    };
    poll(w, first, timeout, interval, fetch, log).await
}

/// `GET /v1/volumes/{id}`, a 404 being `None`.
pub async fn fetch(client: &Client, id: &str) -> Observation {
    match client.volume_get(id).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(ErrorCode::NotFound) || e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits on the real API, progress on stderr.
pub async fn wait_for(
    client: &Client,
    goal: Goal,
    first: &Volume,
    timeout: Duration,
) -> Result<Option<Volume>> {
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
    use crate::testutil::volume;
    use std::collections::VecDeque;

    fn at(status: VolumeStatus, tick: i64) -> Volume {
        let mut v = volume("data", 10, status, 10);
        v.updated_at = crate::testutil::now() + chrono::Duration::seconds(tick);
        v
    }

    async fn run(
        goal: Goal,
        first: Volume,
        rest: Vec<Option<Volume>>,
        timeout: Duration,
    ) -> (Result<Option<Volume>>, String) {
        let mut queue: VecDeque<Option<Volume>> = rest.into();
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
    fn judge_available() {
        assert_eq!(
            judge(Goal::Available, &at(VolumeStatus::Available, 1), None),
            Verdict::Done
        );
        assert_eq!(
            judge(Goal::Available, &at(VolumeStatus::InUse, 1), None),
            Verdict::Done,
            "attached already: it was created"
        );
        assert_eq!(
            judge(Goal::Available, &at(VolumeStatus::Creating, 1), None),
            Verdict::Waiting
        );
        let mut failed = at(VolumeStatus::Failed, 1);
        failed.status_reason = Some("volume pool full".into());
        assert_eq!(
            judge(Goal::Available, &failed, None),
            Verdict::Failed("failed: volume pool full".into())
        );
        failed.status_reason = None;
        assert_eq!(
            judge(Goal::Available, &failed, None),
            Verdict::Failed("failed: no reason given".into())
        );
        assert!(matches!(
            judge(Goal::Available, &at(VolumeStatus::Deleting, 1), None),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn judge_gone() {
        let b = Some(crate::testutil::now());
        assert_eq!(
            judge(Goal::Gone, &at(VolumeStatus::Deleting, 1), b),
            Verdict::Waiting
        );
        // The old state the request answered with is not a failure…
        assert_eq!(
            judge(Goal::Gone, &at(VolumeStatus::Failed, 0), b),
            Verdict::Waiting
        );
        // …a newer one is.
        assert!(matches!(
            judge(Goal::Gone, &at(VolumeStatus::Failed, 1), b),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn progress_prints_changes_only() {
        let mut p = Progress::new("data");
        let mut creating = at(VolumeStatus::Creating, 0);
        creating.node_name = None;
        assert_eq!(p.observe(&creating).as_deref(), Some("data: creating"));
        assert_eq!(p.observe(&creating), None);
        creating.status_reason = Some("no node has room".into());
        assert_eq!(
            p.observe(&creating).as_deref(),
            Some(" … creating (no node has room)")
        );
        creating.status_reason = None;
        creating.node_name = Some("node-1".into());
        assert_eq!(
            p.observe(&creating).as_deref(),
            Some(" … creating on node-1")
        );
        let mut failed = at(VolumeStatus::Failed, 1);
        failed.status_reason = Some("lvcreate failed".into());
        assert_eq!(p.observe(&failed).as_deref(), Some(" … failed"));
        assert_eq!(p.gone(), " … deleted");
        assert_eq!(p.gone(), "data: deleted");
    }

    #[tokio::test]
    async fn create_waits_until_available() {
        let (r, log) = run(
            Goal::Available,
            at(VolumeStatus::Creating, 0),
            vec![
                Some(at(VolumeStatus::Creating, 0)),
                Some(at(VolumeStatus::Creating, 1)),
                Some(at(VolumeStatus::Available, 2)),
            ],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.unwrap().unwrap().status, VolumeStatus::Available);
        assert!(
            log.starts_with("data: creating on node-1 … available ("),
            "{log}"
        );
        assert!(log.ends_with(" s)\n"), "{log}");
    }

    #[tokio::test]
    async fn create_reports_the_failure_reason() {
        let mut failed = at(VolumeStatus::Failed, 2);
        failed.status_reason = Some("not enough space in the volume pool".into());
        let (r, log) = run(
            Goal::Available,
            at(VolumeStatus::Creating, 0),
            vec![Some(failed)],
            Duration::from_secs(5),
        )
        .await;
        let err = r.unwrap_err().to_string();
        assert_eq!(
            err,
            "volume data failed: not enough space in the volume pool"
        );
        assert!(log.ends_with(" … failed\n"), "{log}");
    }

    #[tokio::test]
    async fn waiting_times_out() {
        let (r, _) = run(
            Goal::Available,
            at(VolumeStatus::Creating, 0),
            vec![Some(at(VolumeStatus::Creating, 1))],
            Duration::from_millis(20),
        )
        .await;
        let err = r.unwrap_err().to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("still creating"), "{err}");
        assert!(err.contains("cloud volume show data"), "{err}");
    }

    #[tokio::test]
    async fn rm_waits_until_gone() {
        let (r, log) = run(
            Goal::Gone,
            at(VolumeStatus::Deleting, 0),
            vec![Some(at(VolumeStatus::Deleting, 0)), None],
            Duration::from_secs(5),
        )
        .await;
        assert!(r.unwrap().is_none());
        assert!(log.starts_with("data: deleting … deleted ("), "{log}");
    }

    #[tokio::test]
    async fn disappearing_while_creating_is_an_error() {
        let (r, _) = run(
            Goal::Available,
            at(VolumeStatus::Creating, 0),
            vec![None],
            Duration::from_secs(5),
        )
        .await;
        assert!(r.unwrap_err().to_string().contains("deleted while waiting"));
    }
}

//! Waiting for a snapshot to be taken (`available`) or deleted (gone), with progress on
//! stderr like volumes: `monday: creating on node-1 … available (0.4 s)`.

use crate::wait::{POLL_INTERVAL, Verdict, Watch, poll};
use anyhow::Result;
use chrono::{DateTime, Utc};
use cloud_api::{Client, ClientError, ErrorCode, Snapshot, SnapshotStatus};
use std::time::Duration;

/// Whether to wait until taken or until gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Available,
    Gone,
}

/// Decides whether `s` reached `goal`; a `failed` status not newer than `baseline` is the old
/// state the request answered with (e.g. `rm` of a failed snapshot), not its outcome.
pub fn judge(goal: Goal, s: &Snapshot, baseline: Option<DateTime<Utc>>) -> Verdict {
    let fresh = baseline.is_none_or(|b| s.updated_at > b);
    match (goal, s.status) {
        (Goal::Available, SnapshotStatus::Available) => Verdict::Done,
        (Goal::Available, SnapshotStatus::Deleting) => Verdict::Failed("is being deleted".into()),
        (_, SnapshotStatus::Failed) if fresh => Verdict::Failed(format!(
            "failed: {}",
            s.status_reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given")
        )),
        _ => Verdict::Waiting,
    }
}

struct SnapshotWatch {
    goal: Goal,
    baseline: Option<DateTime<Utc>>,
    last: Option<(SnapshotStatus, Option<String>)>,
    name: String,
}

impl Watch for SnapshotWatch {
    type Item = Snapshot;
    const NOUN: &'static str = "snapshot ";
    const SHOW: &'static str = "snapshot";
    fn name(item: &Snapshot) -> &str {
        &item.name
    }
    fn status(item: &Snapshot) -> String {
        item.status.to_string()
    }
    fn judge(&self, item: &Snapshot) -> Verdict {
        judge(self.goal, item, self.baseline)
    }
    fn observe(&mut self, s: &Snapshot) -> Option<String> {
        let key = (s.status, s.node_name.clone());
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        let word = match (s.status, &s.node_name) {
            (SnapshotStatus::Creating, Some(node)) => format!("creating on {node}"),
            (status, _) => status.to_string(),
        };
        let text = match self.last {
            None => format!("{}: {word}", self.name),
            Some(_) => format!(" … {word}"),
        };
        self.last = Some(key);
        Some(text)
    }
    fn gone(&mut self) -> String {
        match self.last.take() {
            None => format!("{}: deleted", self.name),
            Some(_) => " … deleted".to_string(),
        }
    }
    fn waits_for_gone(&self) -> bool {
        self.goal == Goal::Gone
    }
    fn goal_word(&self) -> &'static str {
        match self.goal {
            Goal::Available => "available",
            Goal::Gone => "deleted",
        }
    }
}

/// Waits on the real API, progress on stderr.
pub async fn wait_for(
    client: &Client,
    goal: Goal,
    first: &Snapshot,
    timeout: Duration,
) -> Result<Option<Snapshot>> {
    let id = first.id.to_string();
    let w = SnapshotWatch {
        goal,
        baseline: (goal == Goal::Gone).then_some(first.updated_at),
        last: None,
        name: first.name.clone(),
    };
    let fetch = || async {
        match client.snapshot_get(&id).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) || e.status() == Some(404) => Ok(None),
            Err(e) => Err::<Option<Snapshot>, ClientError>(e),
        }
    };
    poll(
        w,
        first,
        timeout,
        POLL_INTERVAL,
        fetch,
        &mut std::io::stderr(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::snapshot;

    #[test]
    fn judge_waits_for_available_and_reports_fresh_failures() {
        let mut s = snapshot("monday", SnapshotStatus::Creating);
        assert_eq!(judge(Goal::Available, &s, None), Verdict::Waiting);
        s.status = SnapshotStatus::Available;
        assert_eq!(judge(Goal::Available, &s, None), Verdict::Done);
        s.status = SnapshotStatus::Failed;
        s.status_reason = Some("not enough space".into());
        assert_eq!(
            judge(Goal::Available, &s, None),
            Verdict::Failed("failed: not enough space".into())
        );
        // rm of a snapshot that had failed before: its old state is not news.
        assert_eq!(judge(Goal::Gone, &s, Some(s.updated_at)), Verdict::Waiting);
    }
}

//! The simulator's line commands, read from stdin by `cloud-agent sim`: one command per line,
//! one reply line each (errors start with `error:`). Nodes are named by index (`3`), by an
//! inclusive index range (`0-9`), or by node name or id (`sim-3`).
//!
//! ```text
//! kill I        abort the node's agent like kill -9 (its containers keep running)
//! restart I     start it again over the same fake runtime and data dir (re-adoption)
//! partition I   cut the node's link to the scheduler (the reconciler keeps running)
//! heal I        restore the link; the node reconnects
//! status        connected/total, alive, partitioned, running fake containers, RSS, CPU
//! help          this list
//! quit          stop every node and exit (so do SIGINT and SIGTERM; end of input does not)
//! ```

use super::{Sim, process_usage};
use futures::{Stream, StreamExt};
use std::future::Future;
use std::io::{self, Write};
use std::ops::RangeInclusive;

/// Help text of the console.
pub const HELP: &str = "commands (I = index, A-B = index range, or node name/id):
  kill I        abort the node's agent like kill -9 (its containers keep running)
  restart I     start it again over the same fake runtime and data dir (re-adoption)
  partition I   cut the node's link to the scheduler (the reconciler keeps running)
  heal I        restore the link; the node reconnects
  status        connected/total, alive, partitioned, running fake containers, RSS, CPU
  help          this list
  quit          stop every node and exit";

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Kill(String),
    Restart(String),
    Partition(String),
    Heal(String),
    Status,
    Help,
    Quit,
}

/// Parses one line. `Ok(None)` for a blank line or a `#` comment.
pub fn parse_command(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default().to_ascii_lowercase();
    let arg = words.next().map(str::to_owned);
    if let Some(extra) = words.next() {
        return Err(format!("unexpected {extra:?} after the node"));
    }
    let target = |make: fn(String) -> Command| {
        arg.clone()
            .map(make)
            .ok_or_else(|| format!("{verb} needs a node: {verb} I"))
    };
    let cmd = match verb.as_str() {
        "kill" => target(Command::Kill)?,
        "restart" => target(Command::Restart)?,
        "partition" => target(Command::Partition)?,
        "heal" => target(Command::Heal)?,
        "status" | "help" | "quit" | "exit" if arg.is_some() => {
            return Err(format!("{verb} takes no argument"));
        }
        "status" => Command::Status,
        "help" | "?" => Command::Help,
        "quit" | "exit" => Command::Quit,
        other => return Err(format!("unknown command {other:?} (try help)")),
    };
    Ok(Some(cmd))
}

/// Node indexes named by `target`: `3`, `0-9` or a node name/id.
pub fn resolve(sim: &Sim, target: &str) -> Result<RangeInclusive<usize>, String> {
    let len = sim.len();
    let check = |i: usize| {
        if i < len {
            Ok(i)
        } else {
            Err(format!("no node {i}: the simulator has {len} node(s)"))
        }
    };
    if let Ok(i) = target.parse::<usize>() {
        let i = check(i)?;
        return Ok(i..=i);
    }
    if let Some((a, b)) = target.split_once('-')
        && let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>())
    {
        if a > b {
            return Err(format!("empty range {target}"));
        }
        return Ok(check(a)?..=check(b)?);
    }
    sim.index_of(target)
        .map(|i| i..=i)
        .ok_or_else(|| format!("no node named {target:?}"))
}

fn describe(sim: &Sim, range: &RangeInclusive<usize>) -> String {
    let (a, b) = (*range.start(), *range.end());
    if a == b {
        format!("{a} ({})", sim.node_name(a))
    } else {
        format!("{a}-{b} ({} nodes)", b - a + 1)
    }
}

/// The `status` reply.
pub fn status_line(sim: &Sim) -> String {
    let mut line = format!("status {}", sim.status());
    if let Some((rss, cpu)) = process_usage() {
        line.push_str(&format!(
            " rss_mib {} cpu_s {:.1}",
            rss / (1024 * 1024),
            cpu.as_secs_f64()
        ));
    }
    line
}

/// Runs one command; the reply line (an `error: ...` line on failure).
pub async fn execute(sim: &mut Sim, cmd: &Command) -> String {
    match run_command(sim, cmd).await {
        Ok(reply) => reply,
        Err(e) => format!("error: {e}"),
    }
}

async fn run_command(sim: &mut Sim, cmd: &Command) -> Result<String, String> {
    Ok(match cmd {
        Command::Kill(t) => {
            let r = resolve(sim, t)?;
            for i in r.clone() {
                sim.kill(i);
            }
            format!("killed {}", describe(sim, &r))
        }
        Command::Restart(t) => {
            let r = resolve(sim, t)?;
            for i in r.clone() {
                sim.restart(i).await.map_err(|e| {
                    let mut m = crate::tls::error_chain(&e);
                    if let Some(h) = e.hint() {
                        m.push_str(&format!(" (hint: {h})"));
                    }
                    m
                })?;
            }
            let how = if r.clone().all(|i| sim.is_partitioned(i)) {
                "started, partitioned"
            } else {
                "connected"
            };
            format!("restarted {}: {how}", describe(sim, &r))
        }
        Command::Partition(t) => {
            let r = resolve(sim, t)?;
            for i in r.clone() {
                sim.partition(i, true);
            }
            format!("partitioned {}", describe(sim, &r))
        }
        Command::Heal(t) => {
            let r = resolve(sim, t)?;
            for i in r.clone() {
                sim.partition(i, false);
            }
            format!("healed {}", describe(sim, &r))
        }
        Command::Status => status_line(sim),
        Command::Help => HELP.to_owned(),
        Command::Quit => "bye".to_owned(),
    })
}

/// How the console ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A `quit` command.
    Quit,
    /// The `stop` future completed (a signal).
    Stopped,
}

/// Reads commands from `input` and writes replies to `out` until `quit` or until `stop`
/// completes. The end of `input` does not end the console (the simulator keeps running in
/// the background until stopped).
pub async fn run<S, W, F>(sim: &mut Sim, mut input: S, out: &mut W, stop: F) -> io::Result<End>
where
    S: Stream<Item = String> + Unpin,
    W: Write,
    F: Future<Output = ()>,
{
    tokio::pin!(stop);
    let mut input_open = true;
    loop {
        let line = tokio::select! {
            _ = &mut stop => return Ok(End::Stopped),
            l = input.next(), if input_open => l,
        };
        let Some(line) = line else {
            input_open = false;
            continue;
        };
        let cmd = match parse_command(&line) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                writeln!(out, "error: {e}")?;
                out.flush()?;
                continue;
            }
        };
        let reply = tokio::select! {
            _ = &mut stop => return Ok(End::Stopped),
            r = execute(sim, &cmd) => r,
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
        if cmd == Command::Quit {
            return Ok(End::Quit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse_command("kill 3"), Ok(Some(Command::Kill("3".into()))));
        assert_eq!(
            parse_command("  RESTART sim-4 "),
            Ok(Some(Command::Restart("sim-4".into())))
        );
        assert_eq!(
            parse_command("partition 0-9"),
            Ok(Some(Command::Partition("0-9".into())))
        );
        assert_eq!(parse_command("heal 2"), Ok(Some(Command::Heal("2".into()))));
        assert_eq!(parse_command("status"), Ok(Some(Command::Status)));
        assert_eq!(parse_command("quit"), Ok(Some(Command::Quit)));
        assert_eq!(parse_command("exit"), Ok(Some(Command::Quit)));
        assert_eq!(parse_command("help"), Ok(Some(Command::Help)));
        assert_eq!(parse_command(""), Ok(None));
        assert_eq!(parse_command("# note"), Ok(None));
        assert!(parse_command("kill").unwrap_err().contains("needs a node"));
        assert!(parse_command("kill 1 2").is_err());
        assert!(parse_command("status 1").is_err());
        assert!(
            parse_command("reboot 1")
                .unwrap_err()
                .contains("unknown command")
        );
    }
}

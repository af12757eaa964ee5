//! Starting and stopping one child process.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::ReplicaCommand;

pub(super) fn spawn(cmd: &ReplicaCommand, generation: u32) -> anyhow::Result<Child> {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .args((cmd.per_generation)(generation))
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Ctrl-C in a terminal goes to the foreground process group; in their own group the
        // children hear it only from the supervisor, in order (payment first).
        .process_group(0)
        .kill_on_drop(true);
    Ok(c.spawn()?)
}

/// SIGKILL, then reap (bounded).
pub(super) async fn force_kill(child: &mut Child, bound: Duration) -> String {
    let _ = child.start_kill();
    match tokio::time::timeout(bound, child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => "did not exit after SIGKILL".to_owned(),
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub async fn terminate(child: &mut Child, grace: Duration) -> String {
    // `id()` is None once the child was reaped, so the signal never reaches a recycled pid.
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => format!(
            "no exit {} s after SIGTERM, {}",
            grace.as_secs(),
            force_kill(child, grace).await
        ),
    }
}

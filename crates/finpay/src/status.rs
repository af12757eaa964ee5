//! `finpay status`: what `finpay up` last wrote to `<data-dir>/cluster.json`, as a table or JSON.

use std::path::Path;

use anyhow::Context as _;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::cluster::{self, ClusterState};

/// A state file older than this, from a supervisor that claims to run, is stale.
pub const STALE_AFTER_MS: i64 = 5_000;

/// Whether the supervisor process named in the state file is alive (signal 0 probes without
/// sending anything).
pub fn supervisor_alive(state: &ClusterState) -> bool {
    i32::try_from(state.supervisor_pid)
        .ok()
        .is_some_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

/// `finpay status`: the replicas of a running `finpay up`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[arg(long, default_value = ".finpay")]
    pub data_dir: std::path::PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut state = cluster::read(data_dir)?;
    // The token stays in the file (mode 0600); what status prints may end up in a paste.
    state.admin_token.clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state).context("encode cluster state")?
        );
        return Ok(());
    }
    let age_ms = cluster::now_ms().saturating_sub(state.updated_at_ms);
    println!(
        "cluster {}: {}{}, payments at {}",
        state.data_dir.display(),
        state.phase,
        if state.ready {
            ", ready"
        } else {
            ", NOT ready"
        },
        state.payment_url
    );
    if state.phase != "stopped" && (!supervisor_alive(&state) || age_ms > STALE_AFTER_MS) {
        println!(
            "warning: supervisor pid {} is not running or not updating (last update {} ms ago); this state is stale",
            state.supervisor_pid, age_ms
        );
    }
    print!("{}", state.table());
    Ok(())
}

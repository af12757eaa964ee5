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
    /// One JSON object; with `--watch`, one per line.
    #[arg(long)]
    pub json: bool,
    /// Print the state again every `--interval` seconds, as `kubectl get --watch` does, until
    /// Ctrl-C or `--count` prints.
    #[arg(long)]
    pub watch: bool,
    #[arg(long, default_value_t = 1.0, requires = "watch", value_parser = interval)]
    pub interval: f64,
    /// Stop after this many prints (default: until Ctrl-C).
    #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// `--interval`: 0.1 to 3600 seconds.
fn interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.1..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between 0.1 and 3600 seconds, got {v}"))
    }
}

impl StatusArgs {
    /// Prints once, or every `interval` seconds with `--watch`. A state file that cannot be read
    /// ends a single print with an error; a watch keeps going and says so, since `finpay up` may
    /// be starting.
    pub fn run(&self) -> anyhow::Result<()> {
        if !self.watch {
            return run(&self.data_dir, self.json);
        }
        let mut printed = 0u64;
        loop {
            if !self.json {
                // Clear the screen and go home, as `watch` does, so the table stays in place.
                print!("\x1b[2J\x1b[H");
            }
            if let Err(e) = run(&self.data_dir, self.json) {
                if self.json {
                    let line = serde_json::json!({ "error": format!("{e:#}") });
                    println!("{line}");
                } else {
                    println!("{e:#}");
                }
            }
            printed += 1;
            if self.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_secs_f64(self.interval));
        }
    }
}

pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut state = cluster::read(data_dir)?;
    // The token stays in the file (mode 0600); what status prints may end up in a paste.
    state.admin_token.clear();
    if json {
        println!(
            "{}",
            serde_json::to_string(&state).context("encode cluster state")?
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

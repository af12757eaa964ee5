//! `finpay serve <service>`: one service in this process, through `finpay_services::serve`.
//!
//! The flags become settings overrides (dotted key = TOML value) after the config file and the
//! `FINPAY_*` environment, so a flag always wins.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use finpay_services::{ServeError, ServiceKind};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, getppid};

use crate::EXIT_CONFIG;

/// `finpay serve`: run one service in the foreground.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    pub service: ServiceKind,
    /// TOML settings file (then FINPAY_* env vars, then the flags below, win in that order).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A settings override, `key=value` with a TOML value: `--set faults.error_rate=0.3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Load and validate the settings, then exit 0 (or 64 naming the bad field) without listening.
    #[arg(long)]
    pub check_config: bool,
    /// Shut down gracefully when the parent process goes away (set by `finpay up`, so that a
    /// supervisor killed with SIGKILL leaves no orphans serving stale ports).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

impl ServeArgs {
    /// Serves until SIGTERM or Ctrl-C; a bad configuration exits 64.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let overrides = overrides(&self)?;
        let result = if self.check_config {
            finpay_services::check_config(self.service, self.config.clone(), overrides)
        } else {
            if self.exit_with_parent {
                watch_parent();
            }
            finpay_services::serve(self.service, self.config.clone(), overrides).await
        };
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                let code = if matches!(e, ServeError::Config(..)) {
                    EXIT_CONFIG
                } else {
                    1
                };
                eprintln!(
                    "finpay serve {}: {:#}",
                    self.service,
                    anyhow::Error::from(e)
                );
                Ok(ExitCode::from(code))
            }
        }
    }
}

/// Turns the flags into the override list of `finpay_services::serve`.
pub fn overrides(args: &ServeArgs) -> Result<Vec<(String, String)>, crate::ConfigError> {
    let mut out = Vec::with_capacity(args.set.len() + 2);
    for kv in &args.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            crate::ConfigError(format!(
                "--set {kv:?} must be key=value, e.g. faults.error_rate=0.3"
            ))
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(crate::ConfigError(format!("--set {kv:?} has an empty key")));
        }
        out.push((k.to_owned(), v.trim().to_owned()));
    }
    if let Some(port) = args.port {
        out.push(("http.port".into(), port.to_string()));
    }
    if let Some(dir) = &args.data_dir {
        let dir = dir.to_str().ok_or_else(|| {
            crate::ConfigError(format!("--data-dir {} is not valid UTF-8", dir.display()))
        })?;
        out.push((
            "data_dir".into(),
            toml::Value::String(dir.to_owned()).to_string(),
        ));
    }
    Ok(out)
}

/// Sends SIGTERM to this process once its parent is gone (it was re-parented). Polls twice a second;
/// ends with the process.
pub fn watch_parent() {
    let parent = getppid();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if getppid() != parent {
                // Our stdout and stderr were pipes to the parent, now closed: any write fails, and
                // tracing reports a failed write with `eprintln!`, which panics. Point both at
                // /dev/null first so the graceful shutdown can log without falling over.
                silence_output();
                tracing::warn!("parent process went away; shutting down");
                let _ = kill(getpid(), Signal::SIGTERM);
                return;
            }
        }
    });
}

fn silence_output() {
    use std::os::fd::AsRawFd as _;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(set: &[&str]) -> ServeArgs {
        ServeArgs {
            service: ServiceKind::Fraud,
            config: None,
            check_config: false,
            port: Some(9001),
            data_dir: Some(PathBuf::from("/tmp/d x")),
            set: set.iter().map(|s| (*s).to_owned()).collect(),
            exit_with_parent: false,
        }
    }

    #[test]
    fn flags_become_overrides_after_set_pairs() {
        let o = overrides(&args(&[
            "faults.error_rate=0.3",
            "fraud.urls=[\"http://a=b\"]",
        ]))
        .expect("valid");
        assert_eq!(
            o,
            vec![
                ("faults.error_rate".into(), "0.3".into()),
                ("fraud.urls".into(), "[\"http://a=b\"]".into()),
                ("http.port".into(), "9001".into()),
                ("data_dir".into(), "\"/tmp/d x\"".into()),
            ]
        );
    }

    #[test]
    fn a_set_without_equals_is_a_config_error() {
        assert!(overrides(&args(&["faults.error_rate"])).is_err());
        assert!(overrides(&args(&["=1"])).is_err());
    }
}

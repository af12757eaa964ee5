//! A child's stdout and stderr, copied into its log file.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::cluster;

/// Largest log file before it is rotated to `<name>.log.1`.
pub const LOG_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Copies a child's stdout and stderr, line by line, into its log file (rotated at
/// [`LOG_BYTES_MAX`]), and checks the listening line against the planned port.
pub(super) async fn forward_output(
    name: String,
    port: u16,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
    log_path: PathBuf,
) {
    let mut out = BufReader::new(stdout).lines();
    let mut err = BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut file = LogFile::open(&log_path).await;
    if let Some(f) = file.as_mut() {
        // A marker per start, so a person reading the log sees where each process begins.
        f.write_line(&format!(
            "# finpay up: {name} started at {} (unix ms)",
            cluster::now_ms()
        ))
        .await;
    }
    let mut seen_listening = false;
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => l,
                _ => { out_open = false; continue; }
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => l,
                _ => { err_open = false; continue; }
            },
        };
        if !seen_listening {
            if let Some(addr) = listening_addr(&line) {
                seen_listening = true;
                if !addr.ends_with(&format!(":{port}")) {
                    tracing::warn!(replica = %name, %addr, port, "replica listens on an unexpected address");
                } else {
                    tracing::debug!(replica = %name, %addr, "listening");
                }
            }
        }
        if let Some(f) = file.as_mut() {
            f.write_line(&line).await;
        }
    }
}

/// The `addr` of a `{"event":"listening",...}` line.
pub fn listening_addr(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("event")?.as_str()? != "listening" {
        return None;
    }
    Some(v.get("addr")?.as_str()?.to_owned())
}

struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    bytes: u64,
}

impl LogFile {
    async fn open(path: &Path) -> Option<Self> {
        let file = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open log file; output dropped");
                return None;
            }
        };
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        Some(Self {
            path: path.to_owned(),
            file,
            bytes,
        })
    }

    async fn write_line(&mut self, line: &str) {
        if self.bytes >= LOG_BYTES_MAX {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = tokio::fs::rename(&self.path, &rotated).await;
            if let Some(fresh) = LogFile::open(&self.path).await {
                *self = fresh;
            }
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if self.file.write_all(&buf).await.is_ok() {
            self.bytes += buf.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_recognised() {
        assert_eq!(
            listening_addr(
                r#"{"event":"listening","service":"fraud","addr":"127.0.0.1:40123","pid":1}"#
            ),
            Some("127.0.0.1:40123".into())
        );
        assert_eq!(listening_addr(r#"{"event":"other"}"#), None);
        assert_eq!(listening_addr("not json"), None);
    }
}

//! `finpay probe URL`: one HTTP GET, exit 0 on a 2xx answer within the timeout and 1 otherwise.
//! It is the container image's `HEALTHCHECK`, so the image needs no curl: the probe is the binary
//! it already ships.

use std::process::ExitCode;
use std::time::Duration;

/// `finpay probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// What to GET, e.g. `http://127.0.0.1:8080/health/live`.
    pub url: String,
    /// How long the answer may take, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
}

impl ProbeArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err(crate::ConfigError(format!(
                "{:?}: the URL must start with http:// or https://",
                self.url
            ))
            .into());
        }
        let timeout = Duration::from_millis(self.timeout_ms.clamp(1, 600_000));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(match client.get(&self.url).send().await {
            Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
            Ok(r) => {
                eprintln!("finpay probe {}: {}", self.url, r.status());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("finpay probe {}: {e}", self.url);
                ExitCode::FAILURE
            }
        })
    }
}

//! `finpay scale <service> <replicas>`: change the number of replicas of one service of a running
//! `finpay up`, as `kubectl scale deployment` does. The supervisor starts the new replicas and
//! answers once they are ready, or drains and stops the surplus; payment's clients get the new set
//! without a restart.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use finpay_services::ServiceKind;

use crate::cluster::{self, ClusterState};
use crate::up::control::ScaleRequest;

/// `finpay scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    pub service: ServiceKind,
    pub replicas: u16,
    #[arg(long, default_value = ".finpay")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

impl ScaleArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let state = cluster::read(&self.data_dir)?;
        let control = state.control_url.with_context(|| {
            format!(
                "the cluster in {} has no control port: is its `finpay up` running and ready?",
                self.data_dir.display()
            )
        })?;
        let http = reqwest::Client::builder()
            // New replicas must start and pass their probes; removed ones drain first.
            .timeout(Duration::from_secs(180))
            .build()?;
        let resp = http
            .post(format!("{control}/v1/scale"))
            .json(&ScaleRequest {
                service: self.service,
                replicas: self.replicas,
            })
            .send()
            .await
            .with_context(|| format!("ask the supervisor at {control}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.context("read the supervisor's answer")?;
        if !status.is_success() {
            let why = body["error"].as_str().unwrap_or("no reason given");
            if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
                return Err(crate::ConfigError(why.to_owned()).into());
            }
            anyhow::bail!("scale {} to {}: {why}", self.service, self.replicas);
        }
        let state: ClusterState =
            serde_json::from_value(body).context("parse the cluster state")?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&state)?);
        } else {
            println!("{} scaled to {}", self.service, self.replicas);
            print!("{}", state.table());
        }
        Ok(ExitCode::SUCCESS)
    }
}

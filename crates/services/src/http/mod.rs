//! The HTTP plumbing the four services share: settings, problem+json errors, JSON extraction, fault
//! injection, health, metrics, request ids, deadlines and graceful shutdown.

pub mod admin;
pub mod config;
pub mod faults;
pub mod json;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod storage;

pub use config::{CommonSettings, FaultSettings, Secret, StorageBackend};
pub use json::{json_response, ApiJson};
pub use problem::ApiError;
pub use server::{RequestDeadline, Server};

//! The operational routes every service serves, beside its business routes.

/// Liveness: the process answers. On the business port and the admin listener.
pub const LIVE: &str = "/health/live";
/// Readiness: the service's own storage answers. On the business port and the admin listener.
pub const READY: &str = "/health/ready";
/// The service's OpenAPI 3.1 document. On the business port and the admin listener.
pub const OPENAPI: &str = "/openapi.json";
/// Prometheus metrics. On the admin listener only.
pub const METRICS: &str = "/metrics";

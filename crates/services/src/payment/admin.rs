//! Payment's own admin route: `PUT /admin/dependencies/{service}` replaces the replica set of one
//! dependency at run time, so a scaled-up fraud service is used without a restart (`finpay scale`).
//! Endpoints kept keep their statistics; a removed one takes no new tries.

use super::deps::Dependencies;
use crate::http::{json_response, ApiError, ApiJson};
use crate::ServiceKind;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::put;
use axum::Router;

pub use finpay_api::admin::{Endpoints, DEPENDENCY, ENDPOINTS_MAX};

pub fn router(deps: Dependencies) -> Router {
    Router::new()
        .route(DEPENDENCY, put(put_endpoints))
        .with_state(deps)
}

async fn put_endpoints(
    State(deps): State<Dependencies>,
    Path(service): Path<String>,
    ApiJson(body): ApiJson<Endpoints>,
) -> Result<Response, ApiError> {
    let kind: ServiceKind = service
        .parse()
        .map_err(|e: String| ApiError::bad_request("service", format!("service: {e}")))?;
    let Some(client) = deps.get(kind) else {
        return Err(ApiError::bad_request(
            "service",
            "service: payment has no client of its own",
        ));
    };
    let uris = parse(&body.urls)?;
    client
        .update_endpoints(uris)
        .map_err(|e| ApiError::invalid_request("urls", format!("urls: {}", e.reason)))?;
    tracing::info!(dependency = %kind, urls = ?body.urls, "dependency endpoints replaced");
    Ok(json_response(StatusCode::OK, &body))
}

/// The URLs as absolute `http://` URIs, 1 to 64 of them; the error names the offending entry.
fn parse(urls: &[String]) -> Result<Vec<http::Uri>, ApiError> {
    if urls.is_empty() || urls.len() > ENDPOINTS_MAX {
        return Err(ApiError::invalid_request(
            "urls",
            format!("urls: must list 1 to {ENDPOINTS_MAX} URLs"),
        ));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            let field = format!("urls[{i}]");
            match u.parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(uri),
                _ => Err(ApiError::invalid_request(
                    field.clone(),
                    format!("{field}: {u:?} must be an absolute http:// URL"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_must_be_absolute_http_urls_and_the_error_names_the_entry() {
        let ok = parse(&["http://127.0.0.1:9001".into()]).expect("valid");
        assert_eq!(ok.len(), 1);
        let e = parse(&["http://a:1".into(), "ftp://b".into()]).expect_err("refused");
        assert_eq!(e.field(), Some("urls[1]"));
        assert!(parse(&[]).is_err());
    }
}

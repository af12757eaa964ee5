//! The admin routes' one guard: `Authorization: Bearer <admin_token>`, compared in constant time.
//!
//! Every `/admin/*` route of every service sits behind [`require_admin`]: the fault switches of
//! [`super::faults`] and a service's own (payment's dependency endpoints). The check runs before the
//! body is read, so an anonymous caller learns nothing about a route's shape.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::config::Secret;
use super::problem::ApiError;

/// The middleware: 401 without a bearer token, 403 with a wrong one.
pub async fn require_admin(State(token): State<Secret>, req: Request, next: Next) -> Response {
    match authorize(req.headers(), &token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn authorize(headers: &HeaderMap, token: &Secret) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized());
    };
    let Some(given) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(ApiError::unauthorized());
    };
    if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn admin_token_must_match() {
        let token = Secret::new("s3cret");
        let mut h = HeaderMap::new();
        assert_eq!(
            authorize(&h, &token).map_err(|e| e.status()),
            Err(StatusCode::UNAUTHORIZED)
        );
        h.insert(
            header::AUTHORIZATION,
            "Bearer nope".parse().expect("header"),
        );
        assert_eq!(
            authorize(&h, &token).map_err(|e| e.status()),
            Err(StatusCode::FORBIDDEN)
        );
        h.insert(
            header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("header"),
        );
        assert!(authorize(&h, &token).is_ok());
    }
}

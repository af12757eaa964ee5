//! What every document shares: the problem responses, the headers, the operational routes (probes,
//! `/openapi.json`, `/metrics`, `/admin/faults`), the admin security scheme, and [`Doc`], which
//! collects paths and the schemas they name.
//!
//! Every service runs behind the same edge (finpay-services' `http/server.rs`), so what that edge
//! can answer is written here once: a business route can always answer 500 and 503 (injected
//! faults, `service-down`) and 504 (a spent `finpay-deadline-ms`), and a route with a body can
//! always answer 400, 413, 415 and 422.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr, Required};
use utoipa::ToSchema;

use crate::admin::{FaultSettings, FAULTS};
use crate::problem::{slug, Problem, PROBLEM_JSON};
use crate::{headers, ops};

/// The name of the admin bearer scheme in `components.securitySchemes`.
pub const ADMIN_SCHEME: &str = "admin_token";
/// The tag of every route on the admin listener.
pub const ADMIN_TAG: &str = "admin";
/// The tag of the probes and the document itself, served on both listeners.
pub const OPS_TAG: &str = "operations";

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

/// A `$ref` to the component schema of `T`.
pub fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// A document under construction: its paths, tags and the schemas they reference.
pub struct Doc {
    title: &'static str,
    description: String,
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
    tags: BTreeMap<&'static str, &'static str>,
}

impl Doc {
    pub fn new(title: &'static str, description: &str) -> Self {
        let description = format!(
            "{description}\n\nErrors are RFC 9457 `application/problem+json` documents whose `type` is \
             `urn:finpay:problem:<slug>`; clients branch on the slug, never on `detail`. Routes \
             tagged `{ADMIN_TAG}` are served on the admin listener only (`http.admin_host`:`http.admin_port`), \
             behind `Authorization: Bearer <admin token>`; the `{OPS_TAG}` routes on both listeners."
        );
        let mut doc = Self {
            title,
            description,
            paths: Paths::new(),
            schemas: Vec::new(),
            tags: BTreeMap::new(),
        };
        doc.schema::<Problem>();
        doc
    }

    /// Adds `T` and every schema it names to the components.
    pub fn schema<T: ToSchema>(&mut self) -> RefOr<Schema> {
        self.schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.schemas);
        schema_ref::<T>()
    }

    pub fn tag(&mut self, name: &'static str, description: &'static str) {
        self.tags.insert(name, description);
    }

    /// Adds the operation `op` at `method path`, beside the path's other methods.
    pub fn path(&mut self, path: &str, method: HttpMethod, op: OperationBuilder) {
        self.paths.add_path_operation(path, vec![method], op);
    }

    /// The document: OpenAPI 3.1, the admin bearer scheme in the components.
    pub fn build(mut self) -> OpenApi {
        self.operational_routes();
        let admin = SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token (`admin_token`, at least 32 characters) every replica of a \
                     cluster shares; `finpay up` writes it to `cluster.json`.",
                ))
                .build(),
        );
        let mut components = ComponentsBuilder::new().security_scheme(ADMIN_SCHEME, admin);
        self.schemas.sort_by(|a, b| a.0.cmp(&b.0));
        self.schemas.dedup_by(|a, b| a.0 == b.0);
        components = components.schemas_from_iter(self.schemas);
        let tags = self.tags.into_iter().map(|(name, description)| {
            TagBuilder::new()
                .name(name)
                .description(Some(description))
                .build()
        });
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title(self.title)
                    .version(env!("CARGO_PKG_VERSION"))
                    .description(Some(self.description))
                    .build(),
            )
            .paths(self.paths)
            .components(Some(components.build()))
            .tags(Some(tags))
            .build()
    }

    /// The probes, the document itself and `/metrics`, and the fault switches: every service has
    /// them.
    fn operational_routes(&mut self) {
        self.tag(
            OPS_TAG,
            "Probes and this document; on the business port and the admin listener.",
        );
        self.tag(
            ADMIN_TAG,
            "The admin listener: metrics and run-time switches.",
        );
        let status = |word: &str| {
            ObjectBuilder::new()
                .property(
                    "status",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([word])),
                )
                .required("status")
                .build()
        };
        let live = ops_op("Liveness: the process answers.")
            .response("200", json_response("Live.", status("live").into()));
        self.path(ops::LIVE, HttpMethod::Get, live);
        let ready = Problems::new()
            .add(503, &[slug::NOT_READY])
            .apply(ops_op(
                "Readiness: the service's own storage answers (never a downstream service).",
            ))
            .response("200", json_response("Ready.", status("ready").into()));
        self.path(ops::READY, HttpMethod::Get, ready);
        let openapi = ops_op("This document.").response(
            "200",
            json_response(
                "The OpenAPI 3.1 document of this service.",
                ObjectBuilder::new().schema_type(Type::Object).into(),
            ),
        );
        self.path(ops::OPENAPI, HttpMethod::Get, openapi);
        let metrics = OperationBuilder::new()
            .tag(ADMIN_TAG)
            .summary(Some("Prometheus metrics (admin listener, no token)."))
            .operation_id(Some("get_metrics"))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The Prometheus text exposition format, version 0.0.4.")
                    .content(TEXT, ContentBuilder::new().schema(Some(string())).build()),
            );
        self.path(ops::METRICS, HttpMethod::Get, metrics);
        self.fault_routes();
    }

    fn fault_routes(&mut self) {
        let faults = self.schema::<FaultSettings>();
        let ok = |what: &str| json_response(what, faults.clone());
        let get = admin_op("get_faults", "The fault set now in force.")
            .response("200", ok("The fault set."));
        let put = admin_body_op(
            "put_faults",
            "Replaces the whole fault set; omitted fields take their defaults.",
            faults.clone(),
        )
        .response("200", ok("The fault set now in force."));
        let patch = admin_body_op(
            "patch_faults",
            "Changes only the fields the body names; nothing changes when one is refused.",
            faults.clone(),
        )
        .response("200", ok("The fault set now in force."));
        self.path(FAULTS, HttpMethod::Get, get);
        self.path(FAULTS, HttpMethod::Put, put);
        self.path(FAULTS, HttpMethod::Patch, patch);
    }
}

fn string() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn ops_op(summary: &str) -> OperationBuilder {
    OperationBuilder::new().tag(OPS_TAG).summary(Some(summary))
}

/// An admin operation: tagged, behind the bearer scheme, 401 and 403 before anything else.
pub fn admin_op(id: &str, summary: &str) -> OperationBuilder {
    let op = OperationBuilder::new()
        .tag(ADMIN_TAG)
        .operation_id(Some(id))
        .summary(Some(summary))
        .security(SecurityRequirement::new(ADMIN_SCHEME, Vec::<String>::new()));
    Problems::new()
        .add(401, &[slug::UNAUTHORIZED])
        .add(403, &[slug::FORBIDDEN])
        .apply(op)
}

/// An admin operation with a JSON body (not faulted, not deadlined).
pub fn admin_body_op(id: &str, summary: &str, body: RefOr<Schema>) -> OperationBuilder {
    let op = admin_op(id, summary).request_body(Some(json_body(body)));
    Problems::new().body().apply(op)
}

/// A required JSON request body.
pub fn json_body(schema: RefOr<Schema>) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
        .build()
}

/// A JSON answer.
pub fn json_response(description: &str, schema: RefOr<Schema>) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(JSON, ContentBuilder::new().schema(Some(schema)).build())
}

/// A `text/plain` answer.
pub fn text_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(TEXT, ContentBuilder::new().schema(Some(string())).build())
}

/// The `Retry-After` header, as the services send it: whole seconds, at least one.
pub fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .description(Some(
            "Seconds to wait before a retry. Sent with every 503 except an `injected-fault` one, \
             and with 409 `request-in-progress`.",
        ))
        .build()
}

/// `Idempotent-Replayed: true` on an answer replayed from a stored outcome.
pub fn replayed() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["true"])),
        )
        .description(Some(
            "Present, `true`, when the answer is the stored outcome of an earlier request with the \
             same key and body.",
        ))
        .build()
}

/// The operation of a business route: behind the deadline and the fault injection.
pub fn business_op(id: &str, tag: &str, summary: &str) -> OperationBuilder {
    let deadline = ParameterBuilder::new()
        .name(headers::DEADLINE)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The caller's deadline, absolute Unix epoch milliseconds. The work here is bounded by \
             it: 504 `deadline-exceeded` when it is spent; 400 when it is not an integer.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(u64::MAX as usize)),
        ))
        .build();
    let request_id = ParameterBuilder::new()
        .name(headers::REQUEST_ID)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "A request id to log this request under; one is made when absent. Echoed on the answer \
             and passed to every service the request reaches.",
        ))
        .schema(Some(string()))
        .build();
    OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(id))
        .summary(Some(summary))
        .parameter(deadline)
        .parameter(request_id)
}

/// Problem answers by status, each with the slugs it can carry.
#[derive(Default)]
pub struct Problems {
    by_status: BTreeMap<u16, Vec<&'static str>>,
    replayed: bool,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(mut self, status: u16, slugs: &[&'static str]) -> Self {
        let list = self.by_status.entry(status).or_default();
        for s in slugs {
            if !list.contains(s) {
                list.push(s);
            }
        }
        self
    }

    /// What a business route's edge can answer whatever the handler: injected faults, a down
    /// service, a spent or malformed deadline.
    pub fn business(self) -> Self {
        self.add(400, &[slug::INVALID_REQUEST])
            .add(500, &[slug::INJECTED_FAULT])
            .add(503, &[slug::SERVICE_DOWN, slug::INJECTED_FAULT])
            .add(504, &[slug::DEADLINE_EXCEEDED])
    }

    /// What reading a JSON body can answer.
    pub fn body(self) -> Self {
        self.add(400, &[slug::MALFORMED_JSON, slug::INVALID_REQUEST])
            .add(413, &[slug::PAYLOAD_TOO_LARGE])
            .add(415, &[slug::UNSUPPORTED_MEDIA_TYPE])
            .add(422, &[slug::INVALID_REQUEST])
    }

    /// A problem that is the stored outcome of an earlier request can carry `Idempotent-Replayed`.
    pub fn replayable(mut self) -> Self {
        self.replayed = true;
        self
    }

    pub fn apply(self, mut op: OperationBuilder) -> OperationBuilder {
        for (status, slugs) in self.by_status {
            let list = slugs
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let content = ContentBuilder::new()
                .schema(Some(schema_ref::<Problem>()))
                .build();
            let mut resp = ResponseBuilder::new()
                .description(format!("{}: {list}.", reason(status)))
                .content(PROBLEM_JSON, content);
            if status == 503 || slugs.contains(&slug::REQUEST_IN_PROGRESS) {
                resp = resp.header("Retry-After", retry_after());
            }
            if status == 401 {
                resp = resp.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(string())
                        .description(Some("`Bearer`."))
                        .build(),
                );
            }
            if self.replayed && status == 503 {
                resp = resp.header(headers::IDEMPOTENT_REPLAYED, replayed());
            }
            op = op.response(status.to_string(), resp);
        }
        op
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not found",
        409 => "Conflict",
        413 => "Payload too large",
        415 => "Unsupported media type",
        422 => "Unprocessable content",
        500 => "Internal error",
        503 => "Unavailable",
        504 => "Gateway timeout",
        _ => "Problem",
    }
}

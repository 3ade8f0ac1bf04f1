//! Request-path errors, mapped to HTTP in exactly one place.
//!
//! Every variant names the side that caused it (`side()`), whether another
//! attempt may fix it (`retryable()`) and its status (`status()`), each an
//! exhaustive match, so a new kind does not compile until someone decides
//! all three. Every error status the gateway sends, the admin listener's
//! included, comes from here. The body is always OpenAI-shaped JSON and
//! never carries internals beyond a short description.

use bytes::BytesMut;

use crate::http::{
    Version,
    request::HeadError,
    respond::{Head, To},
};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What the client sent, or is allowed.
    Client,
    /// The gateway's configuration or state.
    Gateway,
    /// The provider.
    Upstream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    // === the client's doing ===
    /// Syntax or framing the gateway refuses (RFC 9112); the connection closes.
    BadRequest(&'static str),
    HeadTooLarge,
    BodyTooLarge {
        limit: usize,
    },
    ExpectationFailed,
    /// The client was too slow to send its head or body.
    RequestTimeout,
    NoSuchRoute {
        name: String,
    },
    /// A unified endpoint called with the wrong method.
    MethodNotAllowed {
        allowed: &'static str,
    },
    /// A route used as a path prefix whose targets speak different APIs.
    BadRouteUse {
        name: String,
        why: &'static str,
    },
    /// The unified endpoint: `model` names no route and no `provider/model`.
    ModelNotFound {
        model: String,
    },
    /// A request body field the gateway cannot honour (unified endpoint).
    InvalidBody {
        param: &'static str,
        why: String,
    },
    /// A guardrail policy found what it blocks in the request (nothing was
    /// sent upstream). Names the detector, never the matched text.
    /// `anthropic`: the request came to the Messages API, whose SDKs read
    /// Anthropic's error shape.
    ContentBlocked {
        policy: String,
        detector: String,
        anthropic: bool,
    },
    /// A field the target provider's API has no equivalent for: refused
    /// rather than silently dropped.
    UnsupportedField {
        field: String,
        provider_kind: &'static str,
    },
    /// A path that would leave the provider it addresses (dot or empty
    /// segments): refused before anything is sent.
    InvalidPath {
        why: &'static str,
    },
    /// A gateway control header (`x-aigw-*`) the gateway cannot honour.
    InvalidHeader {
        name: &'static str,
        why: String,
    },

    // === access control ===
    /// No gateway key, or not a valid one (auth mode "keys").
    Unauthorized(crate::auth::AuthError),
    /// A valid key that may not use this provider or model.
    Forbidden(crate::auth::AuthError),
    /// A `[[rate_limits]]` rule or the key's own rpm/tpm refused it.
    RateLimited {
        rule: String,
        unit: &'static str,
        retry_after_s: u64,
        /// The `x-ratelimit-*` lines for the refusing bucket.
        headers: String,
    },
    /// The key's budget refuses models without a price
    /// (`on_unpriced = "deny"`).
    UnpricedModel {
        model: String,
    },
    /// The key's daily or monthly spend would pass its budget.
    BudgetExceeded {
        period: &'static str,
        limit_usd: String,
        retry_after_s: u64,
    },

    // === configuration / gateway state ===
    ProviderUnavailable {
        provider: String,
        reason: String,
    },
    ShuttingDown,

    // === the upstream's doing ===
    UpstreamConnect {
        provider: String,
        detail: String,
    },
    UpstreamTls {
        provider: String,
        detail: String,
    },
    /// The upstream answered with something that is not valid HTTP.
    UpstreamProtocol {
        provider: String,
        detail: &'static str,
    },
    /// The upstream closed or reset before a complete response head.
    UpstreamClosed {
        provider: String,
    },
    UpstreamTimeout {
        provider: String,
        phase: &'static str,
    },
    /// The provider's body ended or failed before it was whole (an answer
    /// translated whole, so nothing had gone to the client).
    UpstreamCutShort {
        provider: String,
    },
    /// A provider answer the unified endpoint cannot translate (not JSON,
    /// or not the shape the provider's API documents), or that the
    /// response guardrails cannot read.
    Untranslatable {
        provider: String,
        detail: &'static str,
    },

    // === the admin listener ===
    /// An admin route without the admin token.
    AdminTokenRequired,
    /// No admin token is set and `Host` names another host (DNS
    /// rebinding: a web page reaching the loopback listener).
    AdminHostRefused,
    /// A state-changing admin route without a token or `x-aigw-admin`.
    AdminHeaderRequired,
    /// No such admin route (or the feature behind it is off).
    AdminNotFound {
        what: &'static str,
    },
    /// An admin query the gateway cannot honour.
    AdminBadQuery {
        why: &'static str,
    },
    /// The cache backend (Redis) failed an admin operation.
    CacheBackend {
        detail: String,
    },
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::InvalidHeader { .. }
            | GatewayError::InvalidPath { .. }
            | GatewayError::BadRouteUse { .. }
            | GatewayError::InvalidBody { .. }
            | GatewayError::ContentBlocked { .. }
            | GatewayError::UnsupportedField { .. } => 400,
            GatewayError::ModelNotFound { .. } => 404,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::Unauthorized(_) => 401,
            GatewayError::Forbidden(_) | GatewayError::UnpricedModel { .. } => 403,
            GatewayError::NoSuchRoute { .. } => 404,
            GatewayError::RequestTimeout => 408,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::ExpectationFailed => 417,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded { .. } => 429,
            GatewayError::HeadTooLarge => 431,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamProtocol { .. }
            | GatewayError::UpstreamClosed { .. } => 502,
            GatewayError::ProviderUnavailable { .. } | GatewayError::ShuttingDown => 503,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::UpstreamCutShort { .. } | GatewayError::Untranslatable { .. } => 502,
            GatewayError::AdminTokenRequired => 401,
            GatewayError::AdminHostRefused | GatewayError::AdminHeaderRequired => 403,
            GatewayError::AdminNotFound { .. } => 404,
            GatewayError::AdminBadQuery { .. } => 400,
            GatewayError::CacheBackend { .. } => 502,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::HeadTooLarge
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::ExpectationFailed
            | GatewayError::RequestTimeout
            | GatewayError::NoSuchRoute { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::BadRouteUse { .. }
            | GatewayError::ModelNotFound { .. }
            | GatewayError::InvalidBody { .. }
            | GatewayError::ContentBlocked { .. }
            | GatewayError::UnsupportedField { .. }
            | GatewayError::InvalidHeader { .. }
            | GatewayError::InvalidPath { .. }
            | GatewayError::Unauthorized(_)
            | GatewayError::Forbidden(_)
            | GatewayError::UnpricedModel { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::AdminTokenRequired
            | GatewayError::AdminHostRefused
            | GatewayError::AdminHeaderRequired
            | GatewayError::AdminNotFound { .. }
            | GatewayError::AdminBadQuery { .. } => Side::Client,
            GatewayError::ProviderUnavailable { .. }
            | GatewayError::ShuttingDown
            | GatewayError::CacheBackend { .. } => Side::Gateway,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamProtocol { .. }
            | GatewayError::UpstreamClosed { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamCutShort { .. }
            | GatewayError::Untranslatable { .. } => Side::Upstream,
        }
    }

    /// Whether another attempt (the same upstream after a backoff, or the
    /// route's next target) may succeed where this one failed. Only failures
    /// before the response head qualify: nothing of the answer was used.
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamClosed { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol { .. } => true,
            // The answer's head was taken (and its attempt counted).
            GatewayError::UpstreamCutShort { .. } | GatewayError::Untranslatable { .. } => false,
            GatewayError::BadRequest(_)
            | GatewayError::HeadTooLarge
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::ExpectationFailed
            | GatewayError::RequestTimeout
            | GatewayError::NoSuchRoute { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::BadRouteUse { .. }
            | GatewayError::ModelNotFound { .. }
            | GatewayError::InvalidBody { .. }
            | GatewayError::ContentBlocked { .. }
            | GatewayError::UnsupportedField { .. }
            | GatewayError::InvalidHeader { .. }
            | GatewayError::InvalidPath { .. }
            | GatewayError::Unauthorized(_)
            | GatewayError::Forbidden(_)
            | GatewayError::UnpricedModel { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::ProviderUnavailable { .. }
            | GatewayError::ShuttingDown
            | GatewayError::AdminTokenRequired
            | GatewayError::AdminHostRefused
            | GatewayError::AdminHeaderRequired
            | GatewayError::AdminNotFound { .. }
            | GatewayError::AdminBadQuery { .. }
            | GatewayError::CacheBackend { .. } => false,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// Stable machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::InvalidHeader { .. } => "invalid_header",
            GatewayError::InvalidPath { .. } => "invalid_path",
            GatewayError::HeadTooLarge => "request_header_fields_too_large",
            GatewayError::BodyTooLarge { .. } => "request_too_large",
            GatewayError::ExpectationFailed => "expectation_failed",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::NoSuchRoute { .. } => "unknown_route",
            GatewayError::BadRouteUse { .. } => "route_not_a_prefix",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::ModelNotFound { .. } => "model_not_found",
            GatewayError::InvalidBody { .. } => "invalid_request_body",
            GatewayError::ContentBlocked { .. } => "content_blocked",
            GatewayError::UnsupportedField { .. } => "unsupported_parameter",
            GatewayError::Unauthorized(crate::auth::AuthError::Missing) => "missing_api_key",
            GatewayError::Unauthorized(crate::auth::AuthError::Expired) => "expired_api_key",
            GatewayError::Unauthorized(_) => "invalid_api_key",
            GatewayError::Forbidden(_) => "permission_denied",
            GatewayError::UnpricedModel { .. } => "model_not_priced",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::BudgetExceeded { .. } => "budget_exceeded",
            GatewayError::ProviderUnavailable { .. } => "provider_unavailable",
            GatewayError::ShuttingDown => "shutting_down",
            GatewayError::UpstreamConnect { .. } => "upstream_unreachable",
            GatewayError::UpstreamTls { .. } => "upstream_tls_error",
            GatewayError::UpstreamProtocol { .. } => "upstream_invalid_response",
            GatewayError::UpstreamClosed { .. } => "upstream_closed",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamCutShort { .. } => "upstream_cut_short",
            GatewayError::Untranslatable { .. } => "upstream_invalid_response",
            GatewayError::AdminTokenRequired => "invalid_admin_token",
            GatewayError::AdminHostRefused => "host_not_allowed",
            GatewayError::AdminHeaderRequired => "admin_header_required",
            GatewayError::AdminNotFound { .. } => "not_found",
            GatewayError::AdminBadQuery { .. } => "bad_query",
            GatewayError::CacheBackend { .. } => "cache_backend_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            GatewayError::BadRequest(why) => format!("malformed HTTP request: {why}"),
            GatewayError::InvalidHeader { name, why } => format!("invalid {name} header: {why}"),
            GatewayError::InvalidPath { why } => format!("invalid path: {why}"),
            GatewayError::HeadTooLarge => "request head is larger than the gateway accepts".into(),
            GatewayError::BodyTooLarge { limit } => {
                format!("request body is larger than the gateway accepts ({limit} bytes)")
            }
            GatewayError::ExpectationFailed => "only `Expect: 100-continue` is supported".into(),
            GatewayError::RequestTimeout => "the client did not send a complete request in time".into(),
            GatewayError::NoSuchRoute { name } => {
                format!("no provider or route named `{name}`: use /{{provider}}/{{path}}")
            }
            GatewayError::MethodNotAllowed { allowed } => format!("this endpoint takes {allowed} only"),
            GatewayError::BadRouteUse { name, why } => format!("route `{name}` cannot be used as a path prefix: {why}"),
            GatewayError::ModelNotFound { model } => {
                format!("model `{model}` is neither a route nor \"provider/model\" with a configured provider")
            }
            GatewayError::InvalidBody { param, why } => format!("invalid `{param}`: {why}"),
            GatewayError::ContentBlocked { policy, detector, .. } => match detector.as_str() {
                "moderation" => {
                    format!("blocked by guardrail policy \"{policy}\": the moderation check flagged the request")
                }
                "moderation_error" => format!(
                    "blocked by guardrail policy \"{policy}\": the moderation check failed or timed out, and its on_error is block"
                ),
                _ => format!("blocked by guardrail policy \"{policy}\": the request contains {detector}"),
            },
            GatewayError::UnsupportedField { field, provider_kind } => {
                format!("`{field}` is not supported when the target is a {provider_kind} provider")
            }
            GatewayError::Unauthorized(e) | GatewayError::Forbidden(e) => {
                use crate::auth::AuthError;
                match e {
                    AuthError::Missing => "no gateway key: send `Authorization: Bearer KEY` or `x-api-key: KEY`".into(),
                    AuthError::Invalid => "the gateway key is not valid".into(),
                    AuthError::Expired => "the gateway key has expired".into(),
                    AuthError::ProviderNotAllowed(p) => format!("this key may not use provider `{p}`"),
                    AuthError::ModelNotAllowed(m) => format!("this key may not use model `{m}`"),
                    AuthError::UnknownPolicy(p) => {
                        format!("this key names guardrail policy `{p}`, which the gateway does not define")
                    }
                }
            }
            GatewayError::RateLimited { rule, unit, retry_after_s, .. } => {
                format!("rate limit `{rule}` reached ({unit}); try again in {retry_after_s} s")
            }
            GatewayError::UnpricedModel { model } => {
                format!("model `{model}` has no price, and this key's budget refuses models it cannot count")
            }
            GatewayError::BudgetExceeded { period, limit_usd, retry_after_s } => {
                format!("the key's {period} budget of ${limit_usd} is spent; it resets in {retry_after_s} s")
            }
            GatewayError::ProviderUnavailable { provider, reason } => {
                format!("provider `{provider}` is unavailable: {reason}")
            }
            GatewayError::ShuttingDown => "the gateway is shutting down".into(),
            GatewayError::UpstreamConnect { provider, detail } => {
                format!("cannot connect to provider `{provider}`: {detail}")
            }
            GatewayError::UpstreamTls { provider, detail } => {
                format!("TLS with provider `{provider}` failed: {detail}")
            }
            GatewayError::UpstreamProtocol { provider, detail } => {
                format!("provider `{provider}` sent an invalid response: {detail}")
            }
            GatewayError::UpstreamClosed { provider } => {
                format!("provider `{provider}` closed the connection before responding")
            }
            GatewayError::UpstreamTimeout { provider, phase } => {
                format!("provider `{provider}` timed out ({phase})")
            }
            GatewayError::UpstreamCutShort { provider } => format!("provider `{provider}` broke off its answer"),
            GatewayError::Untranslatable { provider, detail } => format!("provider `{provider}`: {detail}"),
            GatewayError::AdminTokenRequired => "admin token required: Authorization: Bearer TOKEN".into(),
            GatewayError::AdminHostRefused => {
                "the Host header does not name this admin listener (set an admin token to reach it by name)".into()
            }
            GatewayError::AdminHeaderRequired => {
                "changing state takes the admin token or an `x-aigw-admin: 1` header".into()
            }
            GatewayError::AdminNotFound { what } => (*what).into(),
            GatewayError::AdminBadQuery { why } => (*why).into(),
            GatewayError::CacheBackend { detail } => detail.clone(),
        }
    }

    /// Whether the connection to the client must close after this answer:
    /// after a framing error the rest of the stream cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::HeadTooLarge
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::ExpectationFailed
            | GatewayError::RequestTimeout
            | GatewayError::ShuttingDown => true,
            GatewayError::NoSuchRoute { .. }
            | GatewayError::BadRouteUse { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::ModelNotFound { .. }
            | GatewayError::InvalidBody { .. }
            | GatewayError::ContentBlocked { .. }
            | GatewayError::UnsupportedField { .. }
            | GatewayError::Unauthorized(_)
            | GatewayError::Forbidden(_)
            | GatewayError::UnpricedModel { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::InvalidHeader { .. }
            | GatewayError::InvalidPath { .. }
            | GatewayError::ProviderUnavailable { .. }
            | GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamProtocol { .. }
            | GatewayError::UpstreamClosed { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamCutShort { .. }
            | GatewayError::Untranslatable { .. }
            | GatewayError::AdminTokenRequired
            | GatewayError::AdminHostRefused
            | GatewayError::AdminHeaderRequired
            | GatewayError::AdminNotFound { .. }
            | GatewayError::AdminBadQuery { .. }
            | GatewayError::CacheBackend { .. } => false,
        }
    }

    /// The JSON body: `{"error":{"message","type","param","code"}}`
    /// (a guardrail block on the Messages API: Anthropic's
    /// `{"type":"error","error":{"type","message"}}`).
    pub fn body(&self) -> String {
        if let GatewayError::ContentBlocked { anthropic: true, .. } = self {
            let m = serde_json::Value::from(self.message());
            return format!(r#"{{"type":"error","error":{{"type":"invalid_request_error","message":{m}}}}}"#);
        }
        let param = match self {
            GatewayError::InvalidBody { param, .. } => Some(*param),
            GatewayError::ContentBlocked { policy, .. } => Some(policy.as_str()),
            GatewayError::UnsupportedField { field, .. } => Some(field.as_str()),
            GatewayError::ModelNotFound { .. } => Some("model"),
            _ => None,
        };
        match param {
            Some(p) => {
                let (m, p) = (serde_json::Value::from(self.message()), serde_json::Value::from(p));
                format!(
                    r#"{{"error":{{"message":{m},"type":"{}","param":{p},"code":"{}"}}}}"#,
                    self.error_type(),
                    self.code()
                )
            }
            None => json_error(&self.message(), self.error_type(), self.code()),
        }
    }

    /// Headers the error response carries besides the usual ones.
    fn extra_headers(&self) -> String {
        match self {
            GatewayError::RateLimited { retry_after_s, headers, .. } => {
                format!("Retry-After: {retry_after_s}\r\n{headers}")
            }
            GatewayError::BudgetExceeded { retry_after_s, .. } => format!("Retry-After: {retry_after_s}\r\n"),
            GatewayError::Unauthorized(_) | GatewayError::AdminTokenRequired => "WWW-Authenticate: Bearer\r\n".into(),
            _ => String::new(),
        }
    }

    /// A whole response: head and JSON body.
    pub fn response(&self, version: Version, request_id: Option<&[u8]>, close: bool) -> BytesMut {
        json_response_with(self.status(), &self.body(), version, request_id, close, self.extra_headers().as_bytes())
    }
}

impl From<HeadError> for GatewayError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::Malformed(why) => GatewayError::BadRequest(why),
            HeadError::TooLarge | HeadError::TooManyHeaders => GatewayError::HeadTooLarge,
            HeadError::UnsupportedExpect => GatewayError::ExpectationFailed,
        }
    }
}

pub fn json_error(message: &str, error_type: &str, code: &str) -> String {
    let message = serde_json::Value::from(message);
    format!(r#"{{"error":{{"message":{message},"type":"{error_type}","param":null,"code":"{code}"}}}}"#)
}

/// A complete JSON response with Content-Length.
pub fn json_response(status: u16, body: &str, version: Version, request_id: Option<&[u8]>, close: bool) -> BytesMut {
    json_response_with(status, body, version, request_id, close, b"")
}

/// The same, with extra pre-rendered header lines.
pub fn json_response_with(
    status: u16,
    body: &str,
    version: Version,
    request_id: Option<&[u8]>,
    close: bool,
    extra: &[u8],
) -> BytesMut {
    Head::with_body(
        status,
        b"application/json",
        body.as_bytes(),
        &[extra],
        To { version, keep_alive: !close, request_id },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped_and_escaped() {
        let e = GatewayError::NoSuchRoute { name: "a\"b".into() };
        let v: serde_json::Value = serde_json::from_str(&e.body()).expect("json");
        assert_eq!(v["error"]["code"], "unknown_route");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("a\"b")));
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn statuses() {
        assert_eq!(GatewayError::from(HeadError::TooManyHeaders).status(), 431);
        assert_eq!(GatewayError::from(HeadError::UnsupportedExpect).status(), 417);
        assert_eq!(GatewayError::UpstreamTimeout { provider: "p".into(), phase: "x" }.status(), 504);
        assert_eq!(GatewayError::UpstreamTimeout { provider: "p".into(), phase: "x" }.error_type(), "api_error");
    }
}

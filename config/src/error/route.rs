//! What can be wrong in a route's options — `public`, `set_request_headers`,
//! `remove_request_headers`, `prefix_rewrite` ([`RouteProblem`]); becomes a [`super::Problem`]
//! like every other configuration error.

/// What is wrong in a route's options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteProblem {
    /// `public: true` with a `policy`.
    #[error(
        "a public route lets everyone in without signing in, so its policy would never be evaluated; remove `policy` or `public: true`"
    )]
    PublicWithPolicy,
    /// `public: true` with a `mode`.
    #[error(
        "a public route evaluates no policy, so `mode` would never apply; remove `mode` or `public: true`"
    )]
    PublicWithMode,
    /// `public: true` with `pass_identity_headers: true`.
    #[error(
        "a public route has no signed-in user whose identity could be passed; remove `pass_identity_headers: true` or `public: true`"
    )]
    PublicWithIdentity,
    /// An empty header name.
    #[error("a header name must not be empty")]
    HeaderNameEmpty,
    /// A header name with characters that are not HTTP token characters.
    #[error("`{0}` is not a valid HTTP header name")]
    HeaderName(String),
    /// `Host` in `remove_request_headers` or `set_request_headers`.
    #[error(
        "`{0}` cannot be {1}: sekisho sets `Host` on every forwarded request (the upstream's own, or the client's with `preserve_host: true`)"
    )]
    Host(String, &'static str),
    /// `Content-Length` in `set_request_headers`.
    #[error(
        "`{0}` cannot be set: it frames the request body, so only the body itself may decide it"
    )]
    ContentLength(String),
    /// A hop-by-hop header in `set_request_headers`.
    #[error(
        "`{0}` cannot be set: it is a hop-by-hop header (it describes one connection and is never forwarded)"
    )]
    HopByHop(String),
    /// A forwarding header in `set_request_headers`.
    #[error(
        "`{0}` cannot be set: it tells the upstream who the client is or what it asked for; sekisho strips such headers and builds `X-Forwarded-For`, `-Proto` and `-Host` itself from the connection"
    )]
    Forwarding(String),
    /// `X-Request-Id` in `set_request_headers`.
    #[error(
        "`{0}` cannot be set: sekisho sets it to the request's id, the one on its error pages and in the audit log"
    )]
    RequestId(String),
    /// One of the configured identity header names in `set_request_headers`.
    #[error(
        "`{name}` cannot be set: it is sekisho's identity header `identity_headers.{field}`, and a route must not be able to forge identity"
    )]
    Identity {
        /// As written.
        name: String,
        /// The `identity_headers` key that names it.
        field: &'static str,
    },
    /// A name the built-in strip list covers in `set_request_headers`.
    #[error(
        "`{name}` cannot be set: sekisho strips `{pattern}` from every request as an identity, client-address or original-URL header an upstream may believe, and a route must not be able to forge one"
    )]
    Stripped {
        /// As written.
        name: String,
        /// The built-in entry that covers it (`x-pomerium-*`, `x-user`).
        pattern: String,
    },
    /// A `set_request_headers` value with a character HTTP does not allow (the value itself is
    /// not repeated: it may be a credential).
    #[error(
        "a header value may hold only visible ASCII characters, spaces and tabs; character {position} is {what}"
    )]
    HeaderValue {
        /// 1-based position of the character.
        position: usize,
        /// What it is, like `a line feed (LF)`.
        what: String,
    },
    /// The same header twice in one list, up to case and `_`/`-`.
    #[error(
        "`{name}` is the same header as `{first}`, listed before (names are compared ignoring case, and many upstreams read `_` as `-`)"
    )]
    RepeatedHeader {
        /// As written here.
        name: String,
        /// As written first.
        first: String,
    },
    /// A header both removed and set.
    #[error(
        "`{0}` is also in `set_request_headers`, which already replaces every copy the client sent; list it in one of the two"
    )]
    RemovedAndSet(String),
    /// `prefix_rewrite` that is no path sekisho would forward.
    #[error("`{given}` is not a path sekisho could forward: {reason}")]
    PrefixRewritePath {
        /// As written.
        given: String,
        /// Why the normaliser refuses it.
        #[source]
        reason: crate::path::PathError,
    },
    /// `prefix_rewrite` not in path normal form.
    #[error(
        "`{given}` is not in sekisho's path normal form; write it as `{normal}` (dot segments, `//` and escapes are resolved like request paths)"
    )]
    PrefixRewriteNotNormal {
        /// As written.
        given: String,
        /// Its normal form.
        normal: String,
    },
    /// `prefix_rewrite` on a route whose path test is not a prefix.
    #[error(
        "`prefix_rewrite` replaces the route's path prefix, but this route's path test is {test}; match with `path: {{prefix: ...}}` or a path in `from`"
    )]
    PrefixRewriteWithoutPrefix {
        /// The path test, rendered (`exact "/x"`, `regex "^/v1/"`).
        test: String,
    },
}

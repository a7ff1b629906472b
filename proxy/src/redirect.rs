//! Return-to targets after login and logout: only a path on the request's own origin, or a URL
//! on an explicitly allowed origin. Everything else — `//evil`, `/\evil`, encoded variants,
//! `user@host`, other schemes — is refused, so sekisho is never an open redirect.

use percent_encoding::percent_decode_str;
use sekisho_config::{Origin, Scheme};
use url::Url;

/// Why a return-to target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// Empty, too long, or containing characters no legitimate target has.
    #[error("malformed return-to target")]
    Malformed,
    /// The target points at an origin that is neither the request's nor allowed.
    #[error("return-to target leaves the allowed origins")]
    ForeignOrigin,
}

/// Longest return-to target accepted.
const MAX_LEN: usize = 2048;

/// Validates `target` for a request served on `own`. Returns the URL to redirect to: a
/// relative path (`/x?y`) for same-origin targets, or an absolute URL on an allowed origin.
pub fn validate_return_to(
    target: &str,
    own: &Origin,
    allowed: &[Origin],
) -> Result<String, RedirectError> {
    if target.is_empty() || target.len() > MAX_LEN {
        return Err(RedirectError::Malformed);
    }
    // Decode repeatedly: a target that decodes to something dangerous at any depth is refused,
    // whatever the browser or upstream would make of it.
    let mut layers = vec![target.to_owned()];
    for _ in 0..3 {
        let Some(last) = layers.last() else { break };
        let decoded = percent_decode_str(last).decode_utf8_lossy().into_owned();
        if &decoded == last {
            break;
        }
        layers.push(decoded);
    }
    for layer in &layers {
        if layer
            .chars()
            .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
        {
            return Err(RedirectError::Malformed);
        }
    }
    if target.starts_with('/') {
        for layer in &layers {
            if layer.starts_with("//") || layer.starts_with("/\\") || !layer.starts_with('/') {
                return Err(RedirectError::Malformed);
            }
        }
        // Resolve against our own origin and insist the origin did not change.
        let base = origin_url(own).ok_or(RedirectError::Malformed)?;
        let resolved = base.join(target).map_err(|_| RedirectError::Malformed)?;
        if origin_of(&resolved).as_ref() != Some(own) {
            return Err(RedirectError::ForeignOrigin);
        }
        let mut relative = resolved.path().to_owned();
        // "/.//evil" resolves to the path "//evil", which a browser reads as another host.
        if relative.starts_with("//") {
            return Err(RedirectError::Malformed);
        }
        if let Some(query) = resolved.query() {
            relative.push('?');
            relative.push_str(query);
        }
        return Ok(relative);
    }
    let url = Url::parse(target).map_err(|_| RedirectError::Malformed)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::Malformed);
    }
    let origin = origin_of(&url).ok_or(RedirectError::Malformed)?;
    if &origin == own || allowed.contains(&origin) {
        Ok(url.to_string())
    } else {
        Err(RedirectError::ForeignOrigin)
    }
}

/// The origin of an absolute `http`/`https` URL.
pub fn origin_of(url: &Url) -> Option<Origin> {
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    Some(Origin {
        scheme,
        host: url.host_str()?.to_ascii_lowercase(),
        port: url.port_or_known_default()?,
    })
}

/// `scheme://host:port/` for an origin.
pub fn origin_url(origin: &Origin) -> Option<Url> {
    Url::parse(&origin_string(origin)).ok()
}

/// `scheme://host[:port]` with the port omitted when it is the scheme's default.
pub fn origin_string(origin: &Origin) -> String {
    let (scheme, default) = match origin.scheme {
        Scheme::Http => ("http", 80),
        Scheme::Https => ("https", 443),
    };
    if origin.port == default {
        format!("{scheme}://{}", origin.host)
    } else {
        format!("{scheme}://{}:{}", origin.host, origin.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Origin {
        Origin {
            scheme: Scheme::Https,
            host: "app.example.com".into(),
            port: 443,
        }
    }

    fn portal() -> Origin {
        Origin {
            scheme: Scheme::Https,
            host: "portal.example.com".into(),
            port: 443,
        }
    }

    #[test]
    fn same_origin_paths_are_accepted() {
        assert_eq!(validate_return_to("/", &own(), &[]), Ok("/".into()));
        assert_eq!(
            validate_return_to("/a/b?c=d", &own(), &[]),
            Ok("/a/b?c=d".into())
        );
        assert_eq!(
            validate_return_to("https://app.example.com/x", &own(), &[]),
            Ok("https://app.example.com/x".into())
        );
    }

    #[test]
    fn allowed_origins_are_accepted() {
        assert_eq!(
            validate_return_to("https://portal.example.com/home", &own(), &[portal()]),
            Ok("https://portal.example.com/home".into())
        );
    }

    #[test]
    fn open_redirect_vectors_are_refused() {
        let vectors = [
            "//evil.com",
            "//evil.com/path",
            "/\\evil.com",
            "\\\\evil.com",
            "/%2Fevil.com",
            "/%2fevil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/%252F%252Fevil.com",
            "https://evil.com",
            "http://app.example.com/",
            "https://app.example.com.evil.com/",
            "https://app.example.com@evil.com/",
            "https://evil.com@app.example.com/",
            "https://user:pw@app.example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "/\tevil",
            "/\r\nLocation: https://evil.com",
            " //evil.com",
            "evil.com",
            "",
            "https://portal.example.com/",
            "///evil.com",
            "/.//evil.com",
        ];
        for v in vectors {
            let result = validate_return_to(v, &own(), &[]);
            assert!(result.is_err(), "{v:?} accepted as {result:?}");
        }
    }
}

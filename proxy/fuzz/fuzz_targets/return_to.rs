//! `validate_return_to`: whatever the input, an accepted target is a path on the request's own
//! origin (resolving to that origin, as a browser would resolve it) or an absolute URL on an
//! allowed origin; never an error-free escape to somewhere else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho::redirect::validate_return_to;
use sekisho_config::{Origin, Scheme};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let own = Origin {
        scheme: Scheme::Https,
        host: "app.example.com".into(),
        port: 443,
    };
    let allowed = [Origin {
        scheme: Scheme::Https,
        host: "portal.example.com".into(),
        port: 443,
    }];
    let Ok(accepted) = validate_return_to(target, &own, &allowed) else {
        return;
    };
    let base = url::Url::parse("https://app.example.com/").expect("base URL");
    // How a browser reads the Location header.
    let resolved = base
        .join(&accepted)
        .unwrap_or_else(|e| panic!("accepted {target:?} as {accepted:?}, not a URL: {e}"));
    let origin = (
        resolved.scheme(),
        resolved.host_str(),
        resolved.port_or_known_default(),
    );
    let same = origin == ("https", Some("app.example.com"), Some(443));
    let allowed = origin == ("https", Some("portal.example.com"), Some(443));
    assert!(
        same || allowed,
        "{target:?} accepted as {accepted:?}, which leads to {resolved}"
    );
    assert!(resolved.username().is_empty() && resolved.password().is_none());
    if same {
        assert!(
            accepted.starts_with('/') && !accepted.starts_with("//"),
            "same-origin targets are returned as paths: {accepted:?}"
        );
    }
});

use super::*;

fn ok(raw: &str) -> String {
    match normalize_path(raw) {
        Ok(p) => p,
        Err(e) => panic!("{raw:?} rejected: {e}"),
    }
}

#[test]
fn plain_paths_are_unchanged() {
    assert_eq!(ok("/"), "/");
    assert_eq!(ok("/a/b"), "/a/b");
    assert_eq!(ok("/a/b/"), "/a/b/");
}

#[test]
fn dot_segments_and_duplicate_slashes_are_removed() {
    assert_eq!(ok("/a/./b"), "/a/b");
    assert_eq!(ok("/a/../b"), "/b");
    assert_eq!(ok("//admin"), "/admin");
    assert_eq!(ok("/public/..//admin"), "/admin");
    assert_eq!(ok("/a/b/.."), "/a/");
    assert_eq!(ok("/a/."), "/a/");
}

#[test]
fn encoded_dots_are_dot_segments() {
    assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
    assert_eq!(ok("/public/%2E%2E/admin"), "/admin");
    assert_eq!(ok("/public/.%2e/admin"), "/admin");
    assert_eq!(ok("/%61dmin"), "/admin");
}

#[test]
fn reserved_escapes_stay_encoded_in_upper_case() {
    assert_eq!(ok("/a%3fb"), "/a%3Fb");
    assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
    assert_eq!(ok("/a%20b"), "/a%20b");
    assert_eq!(ok("/a%3bb;c"), "/a%3Bb;c");
}

#[test]
fn raw_characters_outside_pchar_are_encoded() {
    assert_eq!(ok("/a<b>"), "/a%3Cb%3E");
    assert_eq!(ok("/a b\"{|}^`"), "/a%20b%22%7B%7C%7D%5E%60");
    assert_eq!(ok("/café"), "/caf%C3%A9");
    assert_eq!(ok("/x:y@z!$&'()*+,;="), "/x:y@z!$&'()*+,;=");
}

#[test]
fn paths_that_are_not_utf8_once_decoded_are_refused() {
    // An overlong '.' (old IIS and Tomcat read it as a dot), a lone continuation byte, a
    // truncated sequence.
    assert_eq!(
        normalize_path("/x/%c0%ae%c0%ae/admin/"),
        Err(PathError::NotUtf8)
    );
    assert_eq!(normalize_path("/%80"), Err(PathError::NotUtf8));
    assert_eq!(normalize_path("/%e2%82"), Err(PathError::NotUtf8));
    assert_eq!(normalize_path("/%ff"), Err(PathError::NotUtf8));
    assert_eq!(ok("/%e2%82%ac"), "/%E2%82%AC");
}

#[test]
fn ambiguous_input_is_rejected() {
    assert_eq!(normalize_path("/a%2fb"), Err(PathError::AmbiguousEscape));
    assert_eq!(normalize_path("/a%2Fb"), Err(PathError::AmbiguousEscape));
    assert_eq!(normalize_path("/a%5cb"), Err(PathError::AmbiguousEscape));
    assert_eq!(normalize_path("/a%00"), Err(PathError::AmbiguousEscape));
    assert_eq!(
        normalize_path("/a\\..\\admin"),
        Err(PathError::ForbiddenCharacter)
    );
    assert_eq!(normalize_path("/a%2"), Err(PathError::MalformedEscape));
    assert_eq!(normalize_path("/a%zz"), Err(PathError::MalformedEscape));
    assert_eq!(normalize_path("/../etc"), Err(PathError::AboveRoot));
    assert_eq!(normalize_path("/a/../../etc"), Err(PathError::AboveRoot));
    assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
    assert_eq!(
        normalize_path("/public/..;/admin"),
        Err(PathError::DotSegmentParameter)
    );
    assert_eq!(
        normalize_path("/public/.;x/admin"),
        Err(PathError::DotSegmentParameter)
    );
    assert_eq!(
        normalize_path("/public/%2e%2e;/admin"),
        Err(PathError::DotSegmentParameter)
    );
    assert_eq!(normalize_path("/a;b/c"), Ok("/a;b/c".into()));
    assert_eq!(normalize_path("/a\tb"), Err(PathError::ForbiddenCharacter));
}

#[test]
fn normalisation_is_idempotent_and_normal() {
    for raw in [
        "/a/./b/../c//d/",
        "/%7Euser/%41",
        "/x%3F/.",
        "/",
        "/a<b>/café",
        "/;/x;y=1/",
        "/%2561",
    ] {
        let once = ok(raw);
        assert_eq!(ok(&once), once, "{raw}");
        assert!(is_normal(&once), "{raw} → {once}");
    }
    for not_normal in [
        "/a//b", "/%41", "/%3f", "/a<", "/./a", "/a/..", "/..;/a", "a", "/%c0%ae",
    ] {
        assert!(!is_normal(not_normal), "{not_normal}");
    }
}

#[test]
fn prefix_matches_on_segment_boundaries() {
    assert!(path_has_prefix("/api", "/api"));
    assert!(path_has_prefix("/api/x", "/api"));
    assert!(!path_has_prefix("/apix", "/api"));
    assert!(path_has_prefix("/anything", "/"));
}

#[test]
fn case_folding_keeps_escapes_upper_case() {
    assert_eq!(fold_case("/ADMIN/%C3%A9Z"), "/admin/%C3%A9z");
    assert!(has_upper_case("/a/B"));
    assert!(!has_upper_case("/a/%C3%A9"));
}

#[test]
fn upstream_readings() {
    assert_eq!(strip_parameters("/admin;x=1/"), Ok("/admin/".into()));
    assert_eq!(strip_parameters("/;/admin/"), Ok("/admin/".into()));
    assert_eq!(decode_again("/%2561dmin/"), Ok("/admin/".into()));
    assert_eq!(decode_again("/x/%252E%252E/admin/"), Ok("/admin/".into()));
    assert_eq!(decode_again("/a%252F"), Err(PathError::AmbiguousEscape));
    assert_eq!(decode_again("/100%25"), Ok("/100%25".into()));

    let all = UpstreamPaths::default();
    assert!(upstream_views("/admin/x", all, false).is_empty());
    let views = upstream_views("/ADMIN;x/", all, false);
    let paths: Vec<(Result<String, PathError>, bool)> =
        views.iter().map(|v| (v.path.clone(), v.folded())).collect();
    assert_eq!(
        paths,
        [
            (Ok("/ADMIN/".into()), false),
            (Ok("/admin;x/".into()), true),
            (Ok("/admin/".into()), true),
        ]
    );
    assert!(upstream_views("/ADMIN;x/%2541", UpstreamPaths::strict(), true).is_empty());
    let folded = upstream_views("/admin", all, true);
    assert_eq!(folded.len(), 1);
    assert!(
        folded
            .iter()
            .all(|v| v.folded() && v.path.as_deref() == Ok("/admin"))
    );
    let unreadable = upstream_views("/a%252f", all, false);
    assert_eq!(unreadable.len(), 1);
    assert_eq!(
        unreadable.first().map(|v| v.path.clone()),
        Some(Err(PathError::AmbiguousEscape))
    );
}

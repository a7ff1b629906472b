//! Request-path normalisation: whatever it accepts comes out in the normal form (checked by the
//! independent `is_normal`), normalising again changes nothing, and the readings a lenient
//! upstream could take (case folded, `;` stripped, `%25XX` decoded again) are normal too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho_config::UpstreamPaths;
use sekisho_config::path::{fold_case, is_normal, normalize_path, upstream_views};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = normalize_path(raw) else {
        return;
    };
    assert!(
        is_normal(&once),
        "{raw:?} normalised to {once:?}, not normal"
    );
    assert_eq!(
        normalize_path(&once).as_deref(),
        Ok(once.as_str()),
        "not idempotent on {raw:?}"
    );
    let folded = fold_case(&once);
    assert!(
        is_normal(&folded),
        "{once:?} folded to {folded:?}, not normal"
    );
    assert_eq!(fold_case(&folded), folded, "folding {once:?} twice");
    for view in upstream_views(&once, UpstreamPaths::default(), true) {
        if let Ok(reading) = &view.path {
            assert!(
                is_normal(reading),
                "{once:?} read as {reading:?} ({:?}), not normal",
                view.leniencies
            );
        }
    }
});

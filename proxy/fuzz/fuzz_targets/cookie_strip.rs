//! `strip_own_cookies` on any `Cookie` bytes: no sekisho cookie (session, chunks, flows, of
//! either codec) survives, every other cookie pair does, in order, byte for byte; and the
//! session reader never panics.
#![no_main]

use http::header::{COOKIE, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sekisho::session::{CookieCodec, cookie_pairs, strip_own_cookies};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    for secure in [false, true] {
        let codec = CookieCodec::new("_sekisho", secure);
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, value.clone());
        let expected: Vec<(Vec<u8>, Vec<u8>)> = cookie_pairs(&headers)
            .filter(|(name, _)| !codec.owns_bytes(name))
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        let sealer = sekisho::seal::Sealer::new([[1u8; 32].as_slice()]).expect("key");
        let _ = codec.read(&sealer, &headers);
        strip_own_cookies(&mut headers, &codec);
        let kept: Vec<(Vec<u8>, Vec<u8>)> = cookie_pairs(&headers)
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        for (name, _) in &kept {
            let text = String::from_utf8_lossy(name);
            assert!(!codec.owns_bytes(name), "sekisho cookie {text:?} forwarded");
            assert!(
                !text.trim_start_matches("__Host-").starts_with("_sekisho"),
                "sekisho cookie {text:?} forwarded"
            );
        }
        if headers.get(COOKIE).is_some() || !expected.is_empty() {
            assert_eq!(kept, expected, "other cookies are kept as they came");
        }
    }
});

//! The cgroup path parser (`sekisho::attribution::identity::identify`) on any UTF-8 text. It
//! never panics, and what it reports comes from the path: a container id is 64 lowercase hex
//! digits found in the input, a pod UID has the UUID shape (`8-4-4-4-12` lowercase hex) and is
//! found in the input as written or with its dashes escaped as `_` (the systemd driver's form),
//! and a unit is one whole component of the path ending in `.service` or `.scope`.
//!
//! Input: UTF-8 text, in which U+0001, U+0002 and U+0003 stand for a container id, a pod UID
//! and the UID as a systemd slice name writes it, and U+0004 for `kubepods`, so that the fuzzer
//! reaches the container and pod layouts from an empty corpus (it finds the shorter fixed
//! names, `docker-`, `.scope`, `pod`, through libFuzzer's comparison tracing). The properties
//! hold of the expanded path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho::attribution::identity::identify;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const UID: &str = "01234567-89ab-cdef-0123-456789abcdef";
const UID_ESCAPED: &str = "01234567_89ab_cdef_0123_456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = text
        .replace('\u{1}', ID)
        .replace('\u{2}', UID)
        .replace('\u{3}', UID_ESCAPED)
        .replace('\u{4}', "kubepods");
    let path = path.as_str();
    let identity = identify(path);
    if let Some(id) = &identity.container_id {
        assert_eq!(id.len(), 64, "{id:?}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id:?}"
        );
        assert!(path.contains(id.as_str()), "{id:?} not in {path:?}");
    }
    if identity.runtime.is_some() {
        assert!(
            identity.container_id.is_some(),
            "a runtime without a container"
        );
    }
    if let Some(uid) = &identity.pod_uid {
        assert_eq!(uid.len(), 36, "{uid:?}");
        for (index, byte) in uid.bytes().enumerate() {
            if matches!(index, 8 | 13 | 18 | 23) {
                assert_eq!(byte, b'-', "{uid:?}");
            } else {
                assert!(
                    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
                    "{uid:?}"
                );
            }
        }
        let escaped = uid.replace('-', "_");
        assert!(
            path.contains(uid.as_str()) || path.contains(escaped.as_str()),
            "{uid:?} not in {path:?}"
        );
        assert!(identity.qos.is_some(), "a pod without a QoS class");
    }
    if let Some(unit) = &identity.unit {
        assert!(
            unit.ends_with(".service") || unit.ends_with(".scope"),
            "{unit:?}"
        );
        assert!(
            path.split('/').any(|name| name == unit),
            "{unit:?} not in {path:?}"
        );
    }
});

//! The sealer: anything sealed opens again to the same bytes under its purpose and under no
//! other; a tampered value never opens, nor does an arbitrary string under a key that never
//! sealed it (a forged cookie).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho::seal::{Purpose, Sealer};

const PURPOSES: [Purpose; 5] = [
    Purpose::Session,
    Purpose::LoginFlow,
    Purpose::IdpSession,
    Purpose::IdpInteraction,
    Purpose::LogoutConfirmation,
];

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new([[7u8; 32].as_slice(), [9u8; 32].as_slice()]).expect("keys");
    let Some((&selector, plain)) = data.split_first() else {
        return;
    };
    let purpose = PURPOSES[usize::from(selector) % PURPOSES.len()];
    let sealed = sealer
        .seal(purpose, plain)
        .expect("sealing never fails on input");
    assert_eq!(sealer.open(purpose, &sealed).ok().as_deref(), Some(plain));
    for other in PURPOSES.iter().filter(|p| **p != purpose) {
        assert!(
            sealer.open(*other, &sealed).is_err(),
            "opened under {other:?}"
        );
    }
    // One flipped character anywhere: refused.
    let mut tampered = sealed.clone().into_bytes();
    let at = usize::from(selector) % tampered.len();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    if let Ok(tampered) = String::from_utf8(tampered) {
        if tampered != sealed {
            assert!(
                sealer.open(purpose, &tampered).is_err(),
                "tampering went unseen"
            );
        }
    }
    // The raw input as a cookie value, opened by a sealer whose key never seals anything: the
    // fuzzer cannot have seen a genuine value of it (it does learn the values the other sealer
    // makes, through comparisons), so whatever opens here is a forgery.
    if let Ok(text) = std::str::from_utf8(data) {
        let never_seals = Sealer::new([[3u8; 32].as_slice()]).expect("key");
        for p in PURPOSES {
            assert!(never_seals.open(p, text).is_err(), "a forged value opened");
        }
    }
});

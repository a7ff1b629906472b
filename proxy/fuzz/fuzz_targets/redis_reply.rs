//! The shared-state link's inputs from Redis: RESP replies (`sekisho::shared::resp::parse`) and
//! stream messages (`sekisho::shared::Message::decode`). Neither panics; a parsed reply never
//! claims more bytes than it was given, and parsing its prefix asks for more or fails, never
//! yields another reply; a decoded message passes its own checks and survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sekisho::shared::Message;
use sekisho::shared::resp::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((value, used))) = parse(data) {
        assert!(used > 0 && used <= data.len());
        for cut in [used / 2, used.saturating_sub(1)] {
            if let Ok(Some((_, shorter))) = parse(&data[..cut]) {
                assert!(shorter <= cut, "a prefix parsed past its end");
                let _ = value.clone();
            }
        }
    }
    if let Ok(message) = Message::decode(data) {
        assert!(message.validate().is_ok());
        let again = serde_json::to_vec(&message).expect("a decoded message serialises");
        assert_eq!(Message::decode(&again).as_ref(), Ok(&message));
    }
});

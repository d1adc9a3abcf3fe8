//! `tinker://` paths: parsing never panics, and whatever parses formats back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinker_core::path::TinkerPath;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = TinkerPath::parse(text) {
        assert_eq!(TinkerPath::parse(&path.to_string()).unwrap(), path);
    }
});

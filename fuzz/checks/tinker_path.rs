//! `tinker://` paths: parsing never panics, and whatever parses formats back to itself.
use tinker_core::path::TinkerPath;

/// Runs one input; panics on a finding.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = TinkerPath::parse(text) {
        assert_eq!(TinkerPath::parse(&path.to_string()).unwrap(), path);
    }
}

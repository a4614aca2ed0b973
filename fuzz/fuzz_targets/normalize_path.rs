//! Any string: the normalizer never panics, and what it accepts comes out normal: starting with
//! `/`, without dot-segments, and unchanged by a second pass.
#![no_main]

use gatehouse::canonical::path::normalize;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&bits, rest)) = data.split_first() else { return };
    let Ok(path) = std::str::from_utf8(rest) else { return };
    let o = common::settings(bits);
    if let Ok(n) = normalize(path, &o) {
        let out = n.path.as_ref();
        assert!(out.starts_with('/'), "{path:?} -> {out:?}");
        for seg in out.split('/') {
            let name = seg.split(';').next().unwrap_or_default();
            assert!(name != "." && name != "..", "{path:?} -> {out:?}");
        }
        let again = normalize(out, &o).expect("a normal path is accepted");
        assert_eq!(again.path.as_ref(), out, "idempotent for {path:?}");
    }
});

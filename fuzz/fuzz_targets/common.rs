//! Settings chosen by the fuzzer's first byte, so every combination is explored.

use gatehouse_config::edge::{
    Backslash, EscapedDelimiters, EscapedSlashes, PathNormalization, PathParameters,
};

pub fn settings(bits: u8) -> PathNormalization {
    PathNormalization {
        merge_slashes: bits & 1 != 0,
        escaped_slashes: match (bits >> 1) & 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::Reject,
            2 => EscapedSlashes::Decode,
            _ => EscapedSlashes::Redirect,
        },
        backslash: if bits & 8 != 0 { Backslash::Separator } else { Backslash::Reject },
        path_parameters: if bits & 16 != 0 { PathParameters::Segment } else { PathParameters::Reject },
        escaped_delimiters: if bits & 32 != 0 { EscapedDelimiters::Keep } else { EscapedDelimiters::Reject },
        redirect: bits & 64 != 0,
    }
}

//! Fuzzes the whole loader (lexer, parser, evaluator, schema) on arbitrary text: it must
//! return Ok or Diagnostics, never panic, hang or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // A name in a directory of its own: imports of relative paths find nothing there.
        let _ = bcl::load_str(text, "/nonexistent-bcl-fuzz-dir/fuzz.bcl");
    }
});

//! Fuzz target `http_json`: see `confab_fuzz::http_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab_fuzz::http_json(data));
